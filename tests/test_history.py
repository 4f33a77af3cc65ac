"""Runs over time: stable fleet ids from T1 to T2, the diff file and command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from attribution.pipeline import run
from attribution.store.embedded import EmbeddedStore
from fixtures.stability import Stability, stability
from fixtures.worldgen import generate_world


@pytest.fixture(scope="module", params=(21, 22))
def two_runs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
             ) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp(f"t{request.param}")
    store = EmbeddedStore(root / "store")
    runs = []
    for day in (44, 58):
        world = root / f"t{day}"
        generate_world(world, accounts=5000, seed=request.param, days=58, as_of_day=day)
        out = world / "run"
        run(world / "snapshot", out, store, previous=runs[-1] if runs else None)
        runs.append(out)
    return runs[0], runs[1], root / "t58"


def test_fleet_ids_survive_two_weeks_of_growth(two_runs: tuple[Path, Path, Path]) -> None:
    result: Stability = stability(*two_runs)
    assert result.eligible_fleets >= 3
    assert result.kept_share >= 0.95
    assert result.new_campaign_accounts > 0
    assert result.joined_existing_share >= 0.5


def test_run_with_previous_writes_its_diff(two_runs: tuple[Path, Path, Path]) -> None:
    diff = json.loads((two_runs[1] / "diff.json").read_text())
    prev = json.loads((two_runs[0] / "manifest.json").read_text())
    assert diff["base"] == prev["run_id"]
    counts = diff["counts"]
    assert counts["grown"] + counts["created"] > 0
    assert counts["accounts_joined_fleet"] > 0
    assert len(diff["created"]) == counts["created"]


def test_diff_command_prints_the_same_counts(two_runs: tuple[Path, Path, Path]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "attribution.cli", "diff", str(two_runs[0]), str(two_runs[1])],
        capture_output=True, text=True, check=True,
    )
    printed = json.loads(done.stdout)
    stored = json.loads((two_runs[1] / "diff.json").read_text())
    assert printed["counts"] == stored["counts"]
