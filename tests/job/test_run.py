"""`attribution run` end to end: the contract, atomicity, exit statuses, the summary."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from tests.support.contract import check_run_dir

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "fixtures" / "sample" / "snapshot"


def attribution(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None
                ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "attribution.cli", *args],
        capture_output=True, text=True, cwd=cwd or ROOT, timeout=300,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sample") / "run"
    store = out.parent / "store"
    done = attribution("run", str(SAMPLE), "--out", str(out), "--store", str(store))
    assert done.returncode == 0, done.stderr
    assert "fleets" in done.stdout and "top fleets" in done.stdout
    assert "ingest" in done.stderr  # progress goes to stderr
    return out


def test_sample_run_conforms_to_the_contract(sample_run: Path) -> None:
    assert check_run_dir(sample_run, SAMPLE) == []


def test_manifest_has_counts_and_stage_timings(sample_run: Path) -> None:
    manifest = json.loads((sample_run / "manifest.json").read_text())
    tables = manifest["counts"]["tables"]
    for name, c in tables.items():
        assert c["loaded"] + c["rejected"] == c["read"], name
    assert manifest["counts"]["fleets"] == pl.read_parquet(sample_run / "fleets.parquet").height
    for stage in ("ingest", "graph", "load", "links", "fleets", "scores", "attribution", "write"):
        assert manifest["timings"][stage] >= 0
    assert len(manifest["input"]["digest"]) == 64


def test_evidence_reads_as_sentences_and_masks_identifiers(sample_run: Path) -> None:
    ev = pl.read_parquet(sample_run / "evidence.parquet")
    assert ev.height > 0
    assert ev["detail"].str.contains("@").sum() == 0  # no email addresses
    org_rows = ev.filter(pl.col("org_id").is_not_null())
    assert org_rows.height > 0
    assert org_rows["detail"].str.contains(r"accounts? (use|share|of the fleet)").all()


def test_same_snapshot_twice_gives_identical_results(sample_run: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    # One polars thread instead of the default: parallel sums must not change a bit.
    done = attribution("run", str(SAMPLE), "--out", str(again), "--store", str(tmp_path / "s"),
                       "--quiet", env={"POLARS_MAX_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    for name in ("assignments.parquet", "fleets.parquet", "evidence.parquet"):
        assert pl.read_parquet(again / name).equals(pl.read_parquet(sample_run / name)), name


def test_previous_run_keeps_fleet_ids(sample_run: Path, tmp_path: Path) -> None:
    nxt = tmp_path / "next"
    done = attribution("run", str(SAMPLE), "--out", str(nxt), "--previous", str(sample_run),
                       "--store", str(tmp_path / "s"), "--quiet")
    assert done.returncode == 0, done.stderr
    manifest = json.loads((nxt / "manifest.json").read_text())
    prev = json.loads((sample_run / "manifest.json").read_text())
    assert manifest["previous_run_id"] == prev["run_id"]
    a = set(pl.read_parquet(nxt / "fleets.parquet")["fleet_id"].to_list())
    b = set(pl.read_parquet(sample_run / "fleets.parquet")["fleet_id"].to_list())
    assert a == b


def test_quiet_prints_no_progress(tmp_path: Path) -> None:
    done = attribution("run", str(SAMPLE), "--out", str(tmp_path / "r"), "--store",
                       str(tmp_path / "s"), "--quiet")
    assert done.returncode == 0
    assert done.stderr == ""
    assert "run run-" in done.stdout


def test_bad_usage_exits_2_with_one_line(tmp_path: Path) -> None:
    done = attribution("run", str(tmp_path / "nope"), "--out", str(tmp_path / "r"))
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_failed_run_leaves_earlier_run_directory_intact(sample_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    shutil.copytree(sample_run, out)
    before = (out / "manifest.json").read_text()
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "accounts.csv").write_text("account_id,created_at,email\n")
    (broken / "exchanges.csv").write_text("account_id;ts\n")
    done = attribution("run", str(broken), "--out", str(out), "--store", str(tmp_path / "s"))
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert (out / "manifest.json").read_text() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
