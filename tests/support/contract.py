"""The run-directory contract (CONTRACT.md section 2), checked by our own tests.

A user's clone has no ``../shared``, so the contract the other teams' tools
rely on is asserted here too: required files, columns, types, nullability,
probabilities in 0..1, fleets of two or more whose sizes match the
assignments, and one assignment per snapshot account that was not rejected.
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

MANIFEST_KEYS = ("run_id", "started_at", "finished_at", "engine_version", "input", "params",
                 "counts", "timings")
COLUMNS: dict[str, dict[str, str]] = {
    "assignments.parquet": {"account_id": "str", "fleet_id": "str?", "sybil_score": "prob",
                            "org_id": "str?", "confidence": "prob?"},
    "fleets.parquet": {"fleet_id": "str", "size": "int", "sybil_score": "prob", "org_id": "str?",
                       "confidence": "prob?", "runner_up_org_id": "str?",
                       "runner_up_confidence": "prob?", "first_seen": "ts?", "last_seen": "ts?",
                       "exchanges": "int", "top_capabilities": "str?"},
    "evidence.parquet": {"fleet_id": "str", "org_id": "str?", "kind": "str", "detail": "str",
                         "weight": "float"},
}


def _check_column(where: str, kind: str, s: pl.Series) -> list[str]:
    problems = []
    nullable = kind.endswith("?")
    base = kind.rstrip("?")
    if not nullable and s.null_count():
        problems.append(f"{where}: nulls in a non-nullable column")
    ok = {
        "str": s.dtype in (pl.String, pl.Null),
        "int": s.dtype.is_integer(),
        "float": s.dtype.is_float(),
        "prob": s.dtype.is_float() or s.dtype == pl.Null,
        "ts": isinstance(s.dtype, pl.Datetime) or s.dtype == pl.Null,
    }[base]
    if not ok:
        problems.append(f"{where}: dtype {s.dtype} is not {base}")
    if base == "prob" and s.dtype.is_float():
        vals = s.drop_nulls()
        if ((vals < 0) | (vals > 1)).any():
            problems.append(f"{where}: values outside 0..1")
    return problems


def check_run_dir(run: Path, snapshot: Path | None = None) -> list[str]:
    """Every way ``run`` breaks the contract (empty when it conforms)."""
    problems: list[str] = []
    manifest_path = run / "manifest.json"
    if not manifest_path.is_file():
        return ["manifest.json missing"]
    manifest = json.loads(manifest_path.read_text())
    problems += [f"manifest: no {k}" for k in MANIFEST_KEYS if k not in manifest]
    frames = {}
    for name, cols in COLUMNS.items():
        if not (run / name).is_file():
            problems.append(f"{name} missing")
            continue
        frame = pl.read_parquet(run / name)
        frames[name] = frame
        for col, kind in cols.items():
            if col not in frame.columns:
                problems.append(f"{name}: no column {col}")
            else:
                problems += _check_column(f"{name}.{col}", kind, frame[col])
    a, f = frames.get("assignments.parquet"), frames.get("fleets.parquet")
    if a is not None and f is not None:
        if a["account_id"].is_duplicated().any():
            problems.append("assignments: duplicate account_id")
        if f["fleet_id"].is_duplicated().any():
            problems.append("fleets: duplicate fleet_id")
        sizes = a.drop_nulls("fleet_id").group_by("fleet_id").len()
        joined = f.join(sizes, on="fleet_id", how="full", coalesce=True)
        if joined.filter(pl.col("len").fill_null(0) != pl.col("size").fill_null(0)).height:
            problems.append("fleets: size differs from assignments")
        if (f["size"] < 2).any():
            problems.append("fleets: a fleet of fewer than two accounts")
        ev = frames.get("evidence.parquet")
        if ev is not None and not set(ev["fleet_id"].to_list()) <= set(f["fleet_id"].to_list()):
            problems.append("evidence: fleet_id not in fleets")
    if snapshot is not None and a is not None:
        src = next(p for p in (snapshot / "accounts.parquet", snapshot / "accounts.csv")
                   if p.is_file())
        ids = (pl.read_parquet(src) if src.suffix == ".parquet"
               else pl.read_csv(src, infer_schema=False))["account_id"].cast(pl.String)
        missing = set(ids.to_list()) - set(a["account_id"].to_list())
        rejected = run / "rejected" / "accounts.csv"
        if rejected.is_file():
            missing -= set(pl.read_csv(rejected, infer_schema=False)["account_id"].to_list())
        if missing:
            problems.append(f"assignments: {len(missing)} snapshot accounts have no row")
    return problems
