"""Per-group breakdown of a run against a world's truth: where the errors are."""

from __future__ import annotations

import sys
from pathlib import Path

import polars as pl


def main(run: Path, world: Path) -> None:
    pl.Config.set_tbl_rows(60)
    pl.Config.set_tbl_cols(20)
    pl.Config.set_tbl_width_chars(250)
    pl.Config.set_fmt_str_lengths(60)
    truth = pl.read_parquet(world / "truth" / "labels.parquet")
    groups = pl.read_parquet(world / "truth" / "groups.parquet")
    a = pl.read_parquet(run / "assignments.parquet").join(truth, on="account_id")
    per = (
        a.filter(pl.col("group_kind").is_in(["campaign", "company_team", "lab_employee"]))
        .group_by("group_id", "group_kind")
        .agg(
            pl.len().alias("n"),
            pl.col("fleet_id").is_not_null().mean().round(2).alias("in_fleet"),
            pl.col("fleet_id").n_unique().alias("fleets"),
            (pl.col("sybil_score") >= 0.5).mean().round(2).alias("flagged"),
            pl.col("sybil_score").median().round(2).alias("med_sybil"),
            pl.col("operator_org_id").first().alias("true_org"),
            pl.col("org_id").drop_nulls().mode().first().alias("named"),
            (pl.col("org_id") == pl.col("operator_org_id")).mean().round(2).alias("right"),
            pl.col("confidence").median().round(2).alias("conf"),
        )
        .join(groups.select("group_id", "tactic", "evidence"), on="group_id", how="left")
        .sort("group_kind", "n", descending=[False, True])
    )
    print(per)
    other = a.filter(~pl.col("group_kind").is_in(["campaign"]))
    print(other.group_by("group_kind").agg(
        pl.len(), pl.col("fleet_id").is_not_null().mean().alias("in_fleet"),
        (pl.col("sybil_score") >= 0.5).sum().alias("flagged"),
        pl.col("org_id").is_not_null().sum().alias("accused")))
    fleets = pl.read_parquet(run / "fleets.parquet")
    mixed = a.filter(pl.col("fleet_id").is_not_null()).group_by("fleet_id").agg(
        pl.col("group_kind").value_counts().alias("kinds"), pl.len()).join(
        fleets.select("fleet_id", "sybil_score", "org_id"), on="fleet_id").sort("len", descending=True)
    print(mixed.head(25))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
