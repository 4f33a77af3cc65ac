"""Per-account behaviour aggregates computed from exchanges, columnar and lazily.

Exchanges are the big table (tens of millions of rows), so they never become
Python objects and never reach the store one by one: they are reduced here to
one row per account (volume, hours of activity, capability mix and a MinHash
signature of the minutes the account was active in, which lets link inference
estimate "active in the same minutes" for any pair without a pairwise join) and
to account-to-prompt-template edges.
"""

from __future__ import annotations

import polars as pl

from attribution.schema import CAPABILITIES

MINHASH_K = 32
_PRIME = (1 << 31) - 1
# Fixed universal-hash coefficients (a*x + b mod p): deterministic across runs and
# independent of polars' internal hash, so both stores see identical signatures.
_COEFFS: tuple[tuple[int, int], ...] = tuple(
    ((1_103_515_245 * (i + 1) + 12_345) % _PRIME | 1, (2_654_435_761 * (i + 7)) % _PRIME)
    for i in range(MINHASH_K)
)


def account_behaviour(exchanges: pl.LazyFrame) -> pl.DataFrame:
    """One row per account with its activity aggregates.

    Columns: account_id, exchanges, input_tokens, output_tokens, first_ts,
    last_ts, active_days, active_minutes, hours (24 counts, UTC), capabilities
    (counts in ``CAPABILITIES`` order), minute_sig (``MINHASH_K`` minima).
    """
    minute = (pl.col("ts").dt.epoch("s") // 60).alias("minute")
    lf = exchanges.select(
        "account_id",
        "ts",
        "input_tokens",
        "output_tokens",
        pl.col("capability").str.to_lowercase().alias("capability"),
        minute,
        pl.col("ts").dt.hour().alias("hour"),
    )
    minhashes = [((pl.col("minute") * a + b) % _PRIME).min().alias(f"mh{i}") for i, (a, b) in
                 enumerate(_COEFFS)]
    hours = [(pl.col("hour") == h).sum().alias(f"h{h}") for h in range(24)]
    caps = [(pl.col("capability") == c).sum().alias(f"c_{c}") for c in CAPABILITIES[:-1]]
    caps.append(
        (~pl.col("capability").is_in(list(CAPABILITIES[:-1])) | pl.col("capability").is_null())
        .sum()
        .alias("c_other")
    )
    agg = lf.group_by("account_id").agg(
        pl.len().cast(pl.Int64).alias("exchanges"),
        pl.col("input_tokens").sum().cast(pl.Int64),
        pl.col("output_tokens").sum().cast(pl.Int64),
        pl.col("ts").min().alias("first_ts"),
        pl.col("ts").max().alias("last_ts"),
        (pl.col("minute") // 1440).n_unique().cast(pl.Int64).alias("active_days"),
        pl.col("minute").n_unique().cast(pl.Int64).alias("active_minutes"),
        *minhashes,
        *hours,
        *caps,
    )
    out = agg.select(
        "account_id",
        "exchanges",
        "input_tokens",
        "output_tokens",
        "first_ts",
        "last_ts",
        "active_days",
        "active_minutes",
        pl.concat_list([f"h{h}" for h in range(24)]).cast(pl.List(pl.Int64)).alias("hours"),
        pl.concat_list([f"c_{c}" for c in CAPABILITIES]).cast(pl.List(pl.Int64))
        .alias("capabilities"),
        pl.concat_list([f"mh{i}" for i in range(MINHASH_K)]).cast(pl.List(pl.Int64))
        .alias("minute_sig"),
    )
    return out.collect().sort("account_id")


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
        .sort("account_id", "entity_id")
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
    )
