"""The difference between two runs, fleet by fleet (fleet ids are stable across runs).

Used by the run directory (``diff.json`` when a run has ``--previous``), the
``attribution diff`` command and the API.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from attribution.contracts.results import RunRecord


def no_nan(frame: pl.DataFrame) -> pl.DataFrame:
    """NaN is not JSON: float columns carry nulls instead."""
    return frame.with_columns(
        [pl.col(c).fill_nan(None) for c, t in frame.schema.items() if t.is_float()]
    )


def run_diff(base: RunRecord, head: RunRecord, *, threshold: float, limit: int
             ) -> dict[str, Any]:
    """Fleets created, dissolved, grown and shrunk; attributions gained, lost, changed;
    confidence moves of at least ``threshold`` under the same organization.

    Lists hold at most ``limit`` rows each (largest changes first); ``counts``
    has the full numbers. Account-level counts say how many accounts joined or
    left a fleet or changed organization.
    """
    b = no_nan(base.conformed().fleets).select(
        "fleet_id", pl.col("size").alias("size_before"), pl.col("org_id").alias("org_before"),
        pl.col("confidence").alias("confidence_before"))
    h = no_nan(head.conformed().fleets).select(
        "fleet_id", pl.col("size").alias("size_after"), pl.col("org_id").alias("org_after"),
        pl.col("confidence").alias("confidence_after"))
    both = b.join(h, on="fleet_id", how="full", coalesce=True)
    present_b = pl.col("size_before").is_not_null()
    present_h = pl.col("size_after").is_not_null()
    sizes = ["fleet_id", "size_before", "size_after"]
    delta = (pl.col("size_after") - pl.col("size_before")).abs()

    created = both.filter(~present_b & present_h).sort(["size_after", "fleet_id"],
                                                       descending=[True, False])
    dissolved = both.filter(present_b & ~present_h).sort(["size_before", "fleet_id"],
                                                         descending=[True, False])
    kept = both.filter(present_b & present_h)
    grown = kept.filter(pl.col("size_after") > pl.col("size_before"))
    shrunk = kept.filter(pl.col("size_after") < pl.col("size_before"))
    unchanged = kept.height - grown.height - shrunk.height

    attr = ["fleet_id", "org_before", "org_after", "confidence_before", "confidence_after"]
    ob, oa = pl.col("org_before"), pl.col("org_after")
    gained = kept.filter(ob.is_null() & oa.is_not_null()).sort(
        ["confidence_after", "fleet_id"], descending=[True, False], nulls_last=True)
    lost = kept.filter(ob.is_not_null() & oa.is_null()).sort(
        ["confidence_before", "fleet_id"], descending=[True, False], nulls_last=True)
    changed = kept.filter(ob.is_not_null() & oa.is_not_null() & (ob != oa)).sort("fleet_id")
    move = (pl.col("confidence_after") - pl.col("confidence_before")).abs()
    moved = kept.filter((ob == oa) & (move >= threshold - 1e-12)).with_columns(
        move.alias("_m")).sort(["_m", "fleet_id"], descending=[True, False])

    ab = base.conformed().assignments.select("account_id", pl.col("fleet_id").alias("fb"),
                                              pl.col("org_id").alias("ob"))
    ah = head.conformed().assignments.select("account_id", pl.col("fleet_id").alias("fh"),
                                              pl.col("org_id").alias("oh"))
    acc = ab.join(ah, on="account_id", how="full", coalesce=True)
    joined = acc.filter(pl.col("fh").is_not_null() & (pl.col("fb") != pl.col("fh"))
                        .fill_null(True)).height
    left = acc.filter(pl.col("fb").is_not_null() & pl.col("fh").is_null()).height
    org_changed = acc.filter(pl.col("ob").ne_missing(pl.col("oh"))).height

    def rows(frame: pl.DataFrame, cols: list[str]) -> list[dict[str, Any]]:
        return frame.select(cols).head(limit).to_dicts()

    merged, split = _merges_and_splits(base, head)

    return {
        "base": base.run_id,
        "head": head.run_id,
        "threshold": threshold,
        "limit": limit,
        "counts": {
            "created": created.height, "dissolved": dissolved.height, "grown": grown.height,
            "shrunk": shrunk.height, "unchanged": unchanged,
            "attribution_gained": gained.height, "attribution_lost": lost.height,
            "attribution_changed": changed.height, "confidence_moved": moved.height,
            "accounts_joined_fleet": joined, "accounts_left_fleet": left,
            "accounts_changed_org": org_changed,
            "merged": merged.height, "split": split.height,
        },
        "created": rows(created, sizes),
        "dissolved": rows(dissolved, sizes),
        "grown": rows(grown.sort([delta, pl.col("fleet_id")], descending=[True, False]), sizes),
        "shrunk": rows(shrunk.sort([delta, pl.col("fleet_id")], descending=[True, False]), sizes),
        "attribution_gained": rows(gained, attr),
        "attribution_lost": rows(lost, attr),
        "attribution_changed": rows(changed, attr),
        "confidence_moved": rows(moved, attr),
        "merged": rows(merged, ["fleet_id", "merged_from"]),
        "split": rows(split, ["previous_fleet_id", "into"]),
    }


def _merges_and_splits(base: RunRecord, head: RunRecord) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Merges (a head fleet holding most of two or more base fleets) and splits
    (a base fleet whose members went to two or more head fleets), from members."""
    b = base.assignments.filter(pl.col("fleet_id").is_not_null()).select(
        "account_id", pl.col("fleet_id").alias("before"))
    h = head.assignments.filter(pl.col("fleet_id").is_not_null()).select(
        "account_id", pl.col("fleet_id").alias("after"))
    size = b.group_by("before").agg(pl.len().alias("n_before"))
    overlap = (
        b.join(h, on="account_id").group_by("before", "after").agg(pl.len().alias("shared"))
        .join(size, on="before")
    )
    mostly = overlap.filter(pl.col("shared") * 2 >= pl.col("n_before"))
    merged = (
        mostly.group_by("after").agg(
            pl.col("before").filter(pl.col("before") != pl.col("after")).sort()
            .alias("merged_from"),
            pl.len().alias("parents"),
        )
        .filter(pl.col("parents") >= 2)
        .rename({"after": "fleet_id"}).sort("fleet_id")
    )
    significant = overlap.filter(pl.col("shared") >= 2)
    split = (
        significant.group_by("before").agg(pl.col("after").sort().alias("into"))
        .filter(pl.col("into").list.len() >= 2)
        .rename({"before": "previous_fleet_id"}).sort("previous_fleet_id")
    )
    return merged, split
