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
from attribution.stages.ranges import AccountRanges

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


def aggregate(exchanges: pl.DataFrame, *, rows_per_part: int = 6_000_000,
              ranges: AccountRanges | None = None) -> ExchangeAggregates:
    """All exchange aggregates, computed over ranges of accounts (``ranges.AccountRanges``,
    made here unless the caller shares its own).

    Every aggregate is per account, so splitting the accounts gives exact results
    while each pass holds only a slice of the table's working copies in memory (tens
    of millions of rows otherwise need several times the table's own size at the peak).
    """
    ranges = ranges if ranges is not None else AccountRanges.of(exchanges, rows_per_part)
    results: list[tuple[pl.DataFrame, ...]] = []
    for lo, hi, sub in ranges.parts(exchanges):
        names = ranges.names.slice(lo, hi - lo)
        sub = sub.with_columns(pl.col("code").cast(pl.Int64) - lo)
        results.append((
            _behaviour(sub, names, sub["code"].to_numpy()),
            prompt_edges(sub.lazy(), names),
            exchange_entity_edges(sub.lazy(), "ip", names),
            exchange_entity_edges(sub.lazy(), "device_id", names),
        ))
        del sub
    if not results:
        empty = exchanges.clear().lazy()
        results.append((account_behaviour(empty), prompt_edges(empty),
                        exchange_entity_edges(empty, "ip"),
                        exchange_entity_edges(empty, "device_id")))
    merged = [pl.concat([r[i] for r in results]) for i in range(4)]
    return ExchangeAggregates(
        accounts=merged[0].sort("account_id"),
        prompts=merged[1].sort("account_id", "entity_id"),
        ips=merged[2],
        devices=merged[3],
    )


def account_behaviour(exchanges: pl.LazyFrame) -> pl.DataFrame:
    """One row per account with its activity aggregates.

    Columns: account_id, exchanges, input_tokens, output_tokens, first_ts,
    last_ts, active_days, active_minutes, hours (24 counts, UTC), capabilities
    (counts in ``CAPABILITIES`` order), minute_sig (``MINHASH_K`` minima).
    """
    frame = exchanges.collect()
    names = frame["account_id"].unique().sort()
    return _behaviour(frame, names, names.search_sorted(frame["account_id"]).cast(pl.Int64)
                      .to_numpy())


def _behaviour(frame: pl.DataFrame, names: pl.Series, codes: npt.NDArray[np.int64]
               ) -> pl.DataFrame:
    """``account_behaviour`` of exchanges whose accounts have the integer ``codes`` (the
    rank of each row's account id among ``names``, the sorted distinct ids).

    Accounts are grouped by their code, never by the id string: signatures run over
    distinct (code, minute) keys packed into one integer and sorted, so each account's
    minutes are one run of them; histograms are counted by ``bincount`` on
    ``code * width + bucket``, and rows come out in code order, which is the order of
    the ids.
    """
    known = list(CAPABILITIES[:-1])
    n = names.len()
    base = frame.select(
        "ts",
        "input_tokens",
        "output_tokens",
        (pl.col("ts").dt.epoch("s") // 60).alias("minute"),
        pl.col("capability").str.to_lowercase()
        .replace_strict({c: i for i, c in enumerate(known)}, default=len(known),
                        return_dtype=pl.Int64)
        .fill_null(len(known)).alias("cap"),
    ).with_columns(pl.Series("code", codes))
    volume = base.lazy().select("code", "ts", "input_tokens", "output_tokens") \
        .group_by("code").agg(
            pl.len().cast(pl.Int64).alias("exchanges"),
            pl.col("input_tokens").sum().cast(pl.Int64),
            pl.col("output_tokens").sum().cast(pl.Int64),
            pl.col("ts").min().alias("first_ts"),
            pl.col("ts").max().alias("last_ts"),
        ).collect().sort("code")
    minute = base["minute"].to_numpy()
    hours = _counts(codes, (minute // 60) % 24, n, 24)
    caps = _counts(codes, base["cap"].to_numpy(), n, len(CAPABILITIES))
    # Distinct (account, minute): minutes since the epoch fit in 32 bits for millennia.
    keys = codes << 32
    keys |= minute
    keys = pl.Series(keys).sort().to_numpy()
    keys = keys[np.concatenate([[True], keys[1:] != keys[:-1]])] if len(keys) else keys
    days, minutes, signature = _minute_summary(keys >> 32, keys & 0xFFFFFFFF)
    return volume.select(
        names.gather(volume["code"]).alias("account_id"),
        "exchanges", "input_tokens", "output_tokens", "first_ts", "last_ts",
        pl.Series("active_days", days), pl.Series("active_minutes", minutes),
        pl.Series("hours", hours).arr.to_list(),
        pl.Series("capabilities", caps).arr.to_list(),
        pl.Series("minute_sig", signature).arr.to_list(),
    )


def _minute_summary(code: npt.NDArray[np.int64], minute: npt.NDArray[np.int64]
                    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64],
                               npt.NDArray[np.int64]]:
    """Per account (``code`` sorted, every code from 0 present, ``minute`` distinct within
    one): active days, active minutes and the ``MINHASH_K`` minima of its minutes.

    A hash of a minute is taken once per distinct minute of the range (a table over the
    span of minutes, about 60,000 for forty days) and gathered, not recomputed for every
    account-minute: the same values, without 32 passes of 64-bit modulo over millions
    of rows.
    """
    if not len(code):
        empty = np.empty(0, dtype=np.int64)
        return empty, empty, np.empty((0, MINHASH_K), dtype=np.int64)
    first = np.flatnonzero(np.concatenate([[True], code[1:] != code[:-1]]))
    minutes = np.diff(np.append(first, len(code))).astype(np.int64)
    day = minute // 1440
    new_day = np.concatenate([[True], (code[1:] != code[:-1]) | (day[1:] != day[:-1])])
    days = np.bincount(code[new_day], minlength=len(first)).astype(np.int64)
    signature = np.empty((len(first), MINHASH_K), dtype=np.int64)
    low = int(minute.min())
    span = int(minute.max()) - low + 1
    dense = span <= 8 * len(minute)
    at = minute - low if dense else minute
    for i, (a, b) in enumerate(_COEFFS):
        # hashes are below 2^31 - 1: int32 halves the bytes gathered and reduced
        values = ((np.arange(low, low + span, dtype=np.int64) * a + b) % _PRIME).astype(
            np.int32)[at] if dense else (minute * a + b) % _PRIME
        signature[:, i] = np.minimum.reduceat(values, first)
    return days, minutes, signature


def _counts(codes: npt.NDArray[np.int64], bucket: npt.NDArray[np.int64], n: int, width: int
            ) -> npt.NDArray[np.int64]:
    """Per account code, counts of ``bucket`` values 0..width-1 (an ``n`` x ``width`` array)."""
    flat = np.bincount(codes * width + bucket, minlength=n * width)
    return flat.reshape(n, width).astype(np.int64)


def prompt_edges(exchanges: pl.LazyFrame, names: pl.Series | None = None) -> pl.DataFrame:
    """Account-to-prompt-template usage: first and last use and how often (see
    ``exchange_entity_edges`` for ``names``)."""
    return exchange_entity_edges(exchanges, "prompt_hash", names).sort("account_id", "entity_id")


def exchange_entity_edges(exchanges: pl.LazyFrame, column: str,
                          names: pl.Series | None = None) -> pl.DataFrame:
    """Account-to-entity usage seen in exchanges (``column``: ip, device_id, prompt_hash).

    With ``names`` (the sorted ids of the accounts whose rank is the ``code`` column)
    rows are grouped by that integer, not by the id string, and named at the end.
    """
    by = "account_id" if names is None else "code"
    out = (
        exchanges.filter(pl.col(column).is_not_null())
        .group_by(by, column)
        .agg(
            pl.col("ts").min().alias("first_seen"),
            pl.col("ts").max().alias("last_seen"),
            pl.len().cast(pl.Int64).alias("count"),
        )
        .rename({column: "entity_id"})
        .collect()
    )
    if names is None:
        return out
    return out.select(names.gather(out["code"]).alias("account_id"), "entity_id", "first_seen",
                      "last_seen", "count")
