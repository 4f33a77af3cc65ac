"""One suite, both stores: what ``attribution.store.Store`` promises.

Parametrized over the embedded store (a temporary folder) and the Neo4j store
(the session's real test server, emptied before each test).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from attribution.contracts.graph import PropertyGraph
from attribution.contracts.results import RunRecord
from attribution.store import Store
from attribution.store.embedded import EmbeddedStore
from tests.support.store_world import (
    assert_graph_equal,
    assert_record_equal,
    roundtrip_manifest,
    settings_of,
    tiny_graph,
    tiny_record,
)

# --------------------------------------------------------------------------- the stores

STORES = ["embedded", pytest.param("neo4j", marks=pytest.mark.neo4j)]


@pytest.fixture(params=STORES)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "embedded":
        s: Store = EmbeddedStore(tmp_path / "store")
    else:
        from attribution.store.neo4j import Neo4jStore

        request.getfixturevalue("neo4j_clean")
        server = request.getfixturevalue("neo4j_server")
        s = Neo4jStore(settings_of(server), batch_size=7, page_size=5)
    try:
        yield s
    finally:
        s.close()


# --------------------------------------------------------------------------- the suite


def test_read_graph_returns_what_was_loaded(store: Store) -> None:
    graph = tiny_graph()
    counts = store.load_snapshot(graph, digest="d1")
    assert counts == {name: frame.height for name, frame in graph.frames().items()}
    assert_graph_equal(store.read_graph(), graph)


def test_tiny_world_exercises_every_relationship_kind() -> None:
    graph = tiny_graph()
    assert set(graph.uses["kind"]) == {"payment", "device", "ip", "signup_ip", "email_domain",
                                       "prompt"}
    assert set(graph.known_links["kind"]) == {"payment", "prompt", "device", "asn",
                                              "email_domain", "account", "ip"}


def test_loading_twice_is_idempotent(store: Store) -> None:
    graph = tiny_graph()
    first = store.load_snapshot(graph, digest="d1")
    stats = _stats(store)
    second = store.load_snapshot(graph, digest="d1")
    assert first == second
    assert _stats(store) == stats
    assert_graph_equal(store.read_graph(), graph)


def test_a_different_snapshot_replaces_the_graph(store: Store) -> None:
    store.load_snapshot(tiny_graph(extra_account=True), digest="d1")
    smaller = tiny_graph()
    smaller = PropertyGraph.from_frames({
        **smaller.frames(),
        "devices": smaller.devices.filter(pl.col("device_id") != "d-3"),
        "known_links": smaller.known_links.filter(pl.col("entity_type") != "device"),
    })
    store.load_snapshot(smaller, digest="d2")
    assert_graph_equal(store.read_graph(), smaller)
    # and back: nothing of the smaller graph lingers
    bigger = tiny_graph(extra_account=True)
    store.load_snapshot(bigger, digest="d1")
    assert_graph_equal(store.read_graph(), bigger)


def test_write_run_then_read_results(store: Store) -> None:
    store.load_snapshot(tiny_graph(), digest="d1")
    assert store.read_results() is None
    assert store.list_runs() == []
    record = tiny_record()
    store.write_run(record)
    back = store.read_results()
    assert back is not None
    expected = RunRecord(manifest=roundtrip_manifest(record), assignments=record.assignments,
                         fleets=record.fleets, evidence=record.evidence)
    assert_record_equal(back, expected)
    assert_record_equal(store.read_results("run-1") or record, expected)
    assert store.read_results("no-such-run") is None


def test_the_last_written_run_is_current(store: Store) -> None:
    store.load_snapshot(tiny_graph(), digest="d1")
    first, second = tiny_record("run-1"), tiny_record("run-2", org=None, started="2026-02-02")
    store.write_run(first)
    store.write_run(second)
    current = store.read_results()
    assert current is not None and current.run_id == "run-2"
    assert current.fleets["org_id"].null_count() == 2
    older = store.read_results("run-1")
    assert older is not None and older.fleets["org_id"].to_list() == ["O1", None]
    assert [m["run_id"] for m in store.list_runs()] == ["run-1", "run-2"]
    assert store.list_runs()[0] == roundtrip_manifest(first)


def test_results_survive_a_new_snapshot(store: Store) -> None:
    store.load_snapshot(tiny_graph(), digest="d1")
    record = tiny_record()
    store.write_run(record)
    other = tiny_graph()
    other = PropertyGraph.from_frames({
        **other.frames(),
        "accounts": other.accounts.filter(pl.col("account_id") != "a12"),
        "uses": other.uses.filter(pl.col("account_id") != "a12"),
        "known_links": other.known_links.filter(pl.col("kind") != "account"),
        "organizations": other.organizations.filter(pl.col("org_id") != "O1"),
    })
    store.load_snapshot(other, digest="d2")
    assert_graph_equal(store.read_graph(), other)
    back = store.read_results()
    assert back is not None
    assert_frame_equal(back.assignments, record.assignments)
    assert_frame_equal(back.fleets, record.fleets)


def _stats(store: Store) -> Any:
    stats = getattr(store, "stats", None)
    if stats is not None:
        return stats()
    return copy.deepcopy({n: f.height for n, f in store.read_graph().frames().items()})
