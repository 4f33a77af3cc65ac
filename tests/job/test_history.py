"""Runs over time: stable fleet ids from T1 to T2, the diff file and command.

The quality bar of the batch job, on both stores: one world observed at T1
(day 44) and again two weeks later (day 58), each observation loaded by the
job into one store, the second run using the store's current run as previous.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from attribution.job.jobs import reattribute
from attribution.store import Store
from attribution.store.embedded import EmbeddedStore
from fixtures.stability import Stability, stability
from fixtures.worldgen import generate_world

WORLDS = [
    pytest.param(("embedded", 21), id="embedded-21"),
    pytest.param(("embedded", 22), id="embedded-22"),
    # One world on Neo4j: the store gives back exactly what it was given (the parity tests of
    # test_neo4j_store.py), so the second would measure the same; this one checks the job's
    # path through Neo4j, where the previous run is read back from the database.
    pytest.param(("neo4j", 21), id="neo4j-21", marks=pytest.mark.neo4j),
]


@contextmanager
def _store(kind: str, root: Path, request: pytest.FixtureRequest) -> Iterator[Store]:
    if kind == "embedded":
        yield EmbeddedStore(root / "store")
        return
    from attribution.store.neo4j import Neo4jStore
    from tests.support.store_world import settings_of

    server = request.getfixturevalue("neo4j_server")
    if not server.started or not server.running:
        server.start()
    server.clear()  # T1 must have no previous run
    store = Neo4jStore(settings_of(server))
    try:
        yield store
    finally:
        store.close()


@pytest.fixture(scope="module", params=WORLDS)
def two_runs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
             ) -> tuple[Path, Path, Path]:
    kind, seed = request.param
    root = tmp_path_factory.mktemp(f"{kind}{seed}")
    runs = []
    with _store(kind, root, request) as store:
        for day in (44, 58):
            world = root / f"t{day}"
            generate_world(world, accounts=5000, seed=seed, days=58, as_of_day=day)
            out = world / "run"
            reattribute(store, home=root / "home", snapshot=world / "snapshot", out=out)
            runs.append(out)
    return runs[0], runs[1], root / "t58"


def test_fleet_ids_survive_two_weeks_of_growth(two_runs: tuple[Path, Path, Path]) -> None:
    result: Stability = stability(*two_runs)
    print(f"stability: {result}")
    assert result.eligible_fleets >= 3
    assert result.kept_share >= 0.95
    assert result.new_campaign_accounts > 0
    # measured 0.81-0.91 on seeds 21 and 22 before lockstep blocks and group-only timing
    # anchors (issue 13), 0.64-0.68 since: fewer week-two accounts link by minutes alone
    assert result.joined_existing_share >= 0.6


def test_run_with_previous_writes_its_diff(two_runs: tuple[Path, Path, Path]) -> None:
    diff = json.loads((two_runs[1] / "diff.json").read_text())
    prev = json.loads((two_runs[0] / "manifest.json").read_text())
    now = json.loads((two_runs[1] / "manifest.json").read_text())
    assert diff["base"] == prev["run_id"] == now["previous_run_id"]
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
