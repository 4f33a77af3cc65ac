"""A run's results and the files of the contract's run directory."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

TS = pl.Datetime("us", "UTC")
ASSIGNMENTS_SCHEMA = {
    "account_id": pl.String,
    "fleet_id": pl.String,
    "sybil_score": pl.Float64,
    "org_id": pl.String,
    "confidence": pl.Float64,
}
FLEETS_SCHEMA = {
    "fleet_id": pl.String,
    "size": pl.Int64,
    "sybil_score": pl.Float64,
    "org_id": pl.String,
    "confidence": pl.Float64,
    "runner_up_org_id": pl.String,
    "runner_up_confidence": pl.Float64,
    "first_seen": TS,
    "last_seen": TS,
    "exchanges": pl.Int64,
    "top_capabilities": pl.String,
    "affiliated_org_id": pl.String,
    "affiliation_confidence": pl.Float64,
}
EVIDENCE_SCHEMA = {
    "fleet_id": pl.String,
    "org_id": pl.String,
    "kind": pl.String,
    "detail": pl.String,
    "weight": pl.Float64,
}


@dataclass
class RunRecord:
    """Everything one run produced: the manifest and the three result tables."""

    manifest: dict[str, Any]
    assignments: pl.DataFrame
    fleets: pl.DataFrame
    evidence: pl.DataFrame
    rejected: dict[str, pl.DataFrame] = field(default_factory=dict)
    diff: dict[str, Any] | None = None  # against the previous run, when there is one

    @property
    def run_id(self) -> str:
        return str(self.manifest["run_id"])

    def conformed(self) -> RunRecord:
        """The tables with exactly the contract's columns and dtypes, in order."""
        return RunRecord(
            manifest=self.manifest,
            assignments=_conform(self.assignments, ASSIGNMENTS_SCHEMA),
            fleets=_conform(self.fleets, FLEETS_SCHEMA),
            evidence=_conform(self.evidence, EVIDENCE_SCHEMA),
            rejected=self.rejected,
            diff=self.diff,
        )


def _conform(frame: pl.DataFrame, schema: Mapping[str, Any]) -> pl.DataFrame:
    cols = [
        (pl.col(c) if c in frame.columns else pl.lit(None)).cast(t).alias(c)
        for c, t in schema.items()
    ]
    return frame.select(cols)


def write_tables(record: RunRecord, directory: Path) -> None:
    """The three result tables and the manifest, into an existing directory."""
    record.assignments.write_parquet(directory / "assignments.parquet")
    record.fleets.write_parquet(directory / "fleets.parquet")
    record.evidence.write_parquet(directory / "evidence.parquet")
    (directory / "manifest.json").write_text(json.dumps(record.manifest, indent=2, default=str))


def read_tables(directory: Path) -> RunRecord:
    """A run written by ``write_tables`` (or ``write_run_files``)."""
    return RunRecord(
        manifest=json.loads((directory / "manifest.json").read_text()),
        assignments=pl.read_parquet(directory / "assignments.parquet"),
        fleets=pl.read_parquet(directory / "fleets.parquet"),
        evidence=pl.read_parquet(directory / "evidence.parquet"),
    )


def write_run_files(record: RunRecord, directory: Path) -> None:
    """Every file of the contract's run directory into an existing, empty ``directory``.

    Nothing here is atomic: ``attribution.job.rundir.OutDir`` stages the files in a
    hidden directory and switches it into place once the store has committed.
    """
    write_tables(record, directory)
    if record.diff is not None:
        (directory / "diff.json").write_text(json.dumps(record.diff, indent=2, default=str))
    if record.rejected:
        (directory / "rejected").mkdir()
        for name, frame in record.rejected.items():
            frame.write_csv(directory / "rejected" / f"{name}.csv")
