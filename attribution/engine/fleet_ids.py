"""Fleet ids that mean the same thing from run to run.

Louvain's labels are arbitrary, so ids are assigned afterwards: a fleet that
holds at least half of a previous fleet's members inherits its id; where
several claim one id (a split) the largest overlap wins, and where one fleet
holds several previous fleets (a merge) it keeps its largest ancestor's id.
New ids are derived from the members (deterministic) and never reuse an id
seen before.
"""

from __future__ import annotations

import hashlib

import polars as pl

KEEP_SHARE = 0.5


def new_fleet_id(seed: str, taken: set[str]) -> str:
    """A short id from ``seed`` that is not in ``taken``."""
    counter = 0
    while True:
        digest = hashlib.sha256(f"{seed}#{counter}".encode()).hexdigest()[:10]
        fid = f"F{digest}"
        if fid not in taken:
            return fid
        counter += 1


def assign_fleet_ids(
    members: pl.DataFrame,
    previous: pl.DataFrame | None = None,
    retired: set[str] | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Give each fleet number of ``members`` (account_id, fleet) a stable id.

    ``previous`` is the earlier run's assignments (account_id, fleet_id);
    ``retired`` holds every id ever used. Returns (fleet, fleet_id, parent_id)
    and the lineage rows (fleet_id, previous_fleet_id, shared) of every
    overlap, from which merges and splits are read.
    """
    taken = set(retired or ())
    fleets = members.group_by("fleet").agg(
        pl.col("account_id").min().alias("first"), pl.len().alias("size")
    ).sort("fleet")
    lineage = pl.DataFrame(schema={"fleet": pl.Int64, "previous_fleet_id": pl.String,
                                   "shared": pl.UInt32})
    chosen: dict[int, str] = {}
    if previous is not None and previous.height:
        prev = previous.filter(pl.col("fleet_id").is_not_null()).select("account_id", "fleet_id")
        taken |= set(prev["fleet_id"].unique().to_list())
        prev_size = prev.group_by("fleet_id").agg(pl.len().alias("prev_size"))
        lineage = (
            members.join(prev, on="account_id")
            .group_by("fleet", "fleet_id")
            .agg(pl.len().alias("shared"))
            .rename({"fleet_id": "previous_fleet_id"})
        )
        ranked = (
            lineage.join(prev_size, left_on="previous_fleet_id", right_on="fleet_id")
            .filter(pl.col("shared") >= KEEP_SHARE * pl.col("prev_size"))
            .sort(["shared", "previous_fleet_id", "fleet"], descending=[True, False, False])
        )
        used: set[str] = set()
        for fleet, pid in zip(ranked["fleet"].to_list(), ranked["previous_fleet_id"].to_list(),
                              strict=True):
            if fleet in chosen or pid in used:
                continue
            chosen[fleet] = pid
            used.add(pid)
    ids = []
    for fleet, first in zip(fleets["fleet"].to_list(), fleets["first"].to_list(), strict=True):
        fid = chosen.get(fleet) or new_fleet_id(first, taken)
        taken.add(fid)
        ids.append(fid)
    mapping = fleets.select("fleet").with_columns(pl.Series("fleet_id", ids, dtype=pl.String))
    lineage = lineage.join(mapping, on="fleet").select(
        "fleet_id", "previous_fleet_id", pl.col("shared").cast(pl.Int64)
    )
    return mapping, lineage
