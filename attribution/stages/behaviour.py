"""Per-account behaviour aggregates computed from exchanges, columnar and lazily.

Exchanges are the big table (tens of millions of rows), so they never become
Python objects and never reach the store one by one: they are reduced here to
one row per account (volume, hours of activity, capability mix and a MinHash
signature of the minutes the account was active in, which lets link inference
estimate "active in the same minutes" for any pair without a pairwise join) and
to account-to-prompt-template edges.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import polars as pl

from attribution.contracts.schema import CAPABILITIES
from attribution.stages.codes import coded, ranks

MINHASH_K = 32
_PRIME = (1 << 31) - 1
# Fixed universal-hash coefficients (a*x + b mod p): deterministic across runs and
# independent of polars' internal hash, so both stores see identical signatures.
_COEFFS: tuple[tuple[int, int], ...] = tuple(
    ((1_103_515_245 * (i + 1) + 12_345) % _PRIME | 1, (2_654_435_761 * (i + 7)) % _PRIME)
    for i in range(MINHASH_K)
)


@dataclass
class ExchangeAggregates:
    """Everything the graph takes from exchanges: per account, and per account and entity."""

    accounts: pl.DataFrame
    prompts: pl.DataFrame
    ips: pl.DataFrame
    devices: pl.DataFrame


def aggregate(exchanges: pl.DataFrame, *, rows_per_part: int = 6_000_000) -> ExchangeAggregates:
    """All exchange aggregates, computed over account partitions.

    Every aggregate is per account, so splitting the accounts by a hash of
    their id gives exact results while each pass holds only a slice of the
    table's working copies in memory (tens of millions of rows otherwise need
    several times the table's own size at the peak). Text columns are taken
    coded (:mod:`attribution.stages.codes`; ingest hands them over so), and
    the aggregates come out as text.
    """
    exchanges = coded(exchanges)
    parts = max(1, -(-exchanges.height // rows_per_part))
    # Each row's part, hashed once rather than once a pass (a filter per part would hash
    # every row of tens of millions again).
    part_of = (exchanges.get_column("account_id").hash(seed=11) % parts).cast(pl.UInt16)
    results: list[tuple[pl.DataFrame, ...]] = []
    for part in range(parts):
        sub = exchanges.filter(part_of == part) if parts > 1 else exchanges
        results.append((
            account_behaviour(sub.lazy()),
            prompt_edges(sub.lazy()),
            exchange_entity_edges(sub.lazy(), "ip"),
            exchange_entity_edges(sub.lazy(), "device_id"),
        ))
        del sub
    merged = [pl.concat([r[i] for r in results]) for i in range(4)]
    # (lazy sorts: polars' query engine sorts millions of rows faster than an eager sort)
    return ExchangeAggregates(
        accounts=merged[0].lazy().sort("account_id").collect(),
        prompts=merged[1].lazy().sort("account_id", "entity_id").collect(),
        ips=merged[2],
        devices=merged[3],
    )


def account_behaviour(exchanges: pl.LazyFrame) -> pl.DataFrame:
    """One row per account with its activity aggregates.

    Columns: account_id, exchanges, input_tokens, output_tokens, first_ts,
    last_ts, active_days, active_minutes, hours (24 counts, UTC), capabilities
    (counts in ``CAPABILITIES`` order), minute_sig (``MINHASH_K`` minima).
    Accounts are grouped by an integer code (their rank among the sorted ids),
    never by the id string: signatures run over distinct (code, minute) keys
    packed into one integer, histograms are counted by ``bincount`` on
    ``code * width + bucket``, and rows come out in code order, which is the
    order of the ids.
    """
    known = list(CAPABILITIES[:-1])
    # Capabilities are matched case-insensitively; lowercasing the few distinct spellings
    # instead of every row's string gives the same codes.
    spellings = (exchanges.select(pl.col("capability").unique().drop_nulls()).collect()
                 .to_series().cast(pl.String))
    cap_code = {spelling: known.index(lower)
                for spelling, lower in zip(spellings, spellings.str.to_lowercase(), strict=True)
                if lower in known}
    base = exchanges.select(
        "account_id",
        "ts",
        "input_tokens",
        "output_tokens",
        (pl.col("ts").dt.epoch("s") // 60).alias("minute"),
        pl.col("capability").cast(pl.String)
        .replace_strict(cap_code, default=len(known), return_dtype=pl.Int64)
        .fill_null(len(known)).alias("cap"),
    ).collect()
    names, ranked = ranks(base["account_id"])
    codes = ranked.astype(np.int64)
    n = names.len()
    code = pl.Series(codes)
    volume = base.lazy().select(code.alias("code"), "ts", "input_tokens", "output_tokens") \
        .group_by("code").agg(
            pl.len().cast(pl.Int64).alias("exchanges"),
            pl.col("input_tokens").sum().cast(pl.Int64),
            pl.col("output_tokens").sum().cast(pl.Int64),
            pl.col("ts").min().alias("first_ts"),
            pl.col("ts").max().alias("last_ts"),
        )
    minute = base["minute"].to_numpy()
    hours = _counts(codes, (minute // 60) % 24, n, 24)
    caps = _counts(codes, base["cap"].to_numpy(), n, len(CAPABILITIES))
    # Distinct (account, minute): minutes since the epoch fit in 32 bits for millennia.
    # Sorted, so the group-by below can take the codes as sorted runs instead of hashing them.
    keys = pl.Series((codes << 32) | minute).unique().sort().to_numpy()
    minutes = pl.DataFrame({"code": pl.Series(keys >> 32).set_sorted(), "minute": keys & 0xFFFFFFFF})
    signature = minutes.lazy().group_by("code").agg(
        (pl.col("minute") // 1440).n_unique().cast(pl.Int64).alias("active_days"),
        pl.len().cast(pl.Int64).alias("active_minutes"),
        *[((pl.col("minute") * a + b) % _PRIME).min().alias(f"mh{i}")
          for i, (a, b) in enumerate(_COEFFS)],
    ).select(
        "code", "active_days", "active_minutes",
        pl.concat_list([f"mh{i}" for i in range(MINHASH_K)]).cast(pl.List(pl.Int64))
        .alias("minute_sig"),
    )
    # Every code 0..n-1 has exchanges and so minutes: sorted by code, the frames line up
    # row for row and are put side by side instead of joined.
    volume_rows, signature_rows = pl.collect_all([volume.sort("code"), signature.sort("code")])
    out = pl.concat([
        volume_rows,
        signature_rows.drop("code"),
        pl.DataFrame({
            "hours": pl.Series(hours).arr.to_list(),
            "capabilities": pl.Series(caps).arr.to_list(),
        }),
    ], how="horizontal")
    return out.select(
        names.alias("account_id"),
        "exchanges", "input_tokens", "output_tokens", "first_ts", "last_ts",
        "active_days", "active_minutes", "hours", "capabilities", "minute_sig",
    )


def _counts(codes: npt.NDArray[np.int64], bucket: npt.NDArray[np.int64], n: int, width: int
            ) -> npt.NDArray[np.int64]:
    """Per account code, counts of ``bucket`` values 0..width-1 (an ``n`` x ``width`` array)."""
    flat = np.bincount(codes * width + bucket, minlength=n * width)
    return flat.reshape(n, width).astype(np.int64)


def prompt_edges(exchanges: pl.LazyFrame) -> pl.DataFrame:
    """Account-to-prompt-template usage: first and last use and how often."""
    return (
        exchanges.filter(pl.col("prompt_hash").is_not_null())
        .group_by("account_id", "prompt_hash")
        .agg(
            pl.col("ts").min().alias("first_seen"),
            pl.col("ts").max().alias("last_seen"),
            pl.len().cast(pl.Int64).alias("count"),
        )
        .rename({"prompt_hash": "entity_id"})
        .collect()
        .with_columns(pl.col("account_id", "entity_id").cast(pl.String))
    )


def exchange_entity_edges(exchanges: pl.LazyFrame, column: str) -> pl.DataFrame:
    """Account-to-IP or account-to-device usage seen in exchanges (``column``)."""
    return (
        exchanges.filter(pl.col(column).is_not_null())
        .group_by("account_id", column)
        .agg(
            pl.col("ts").min().alias("first_seen"),
            pl.col("ts").max().alias("last_seen"),
            pl.len().cast(pl.Int64).alias("count"),
        )
        .rename({column: "entity_id"})
        .collect()
        .with_columns(pl.col("account_id", "entity_id").cast(pl.String))
    )
