"""The Neo4j store against the real test server: schema, batching, exactness,
parity with the embedded store through the whole pipeline, and faults.

Faults are injected two ways: the session server is really stopped in the
middle of a load (``neo4j_server.stop()``), and a small TCP proxy between the
store and the server cuts every connection, refuses new ones, or drops the
connection right after a transaction's COMMIT went through (the driver then
raises ``IncompleteCommit``: the commit's outcome is unknown to it).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from neo4j.exceptions import IncompleteCommit, ServiceUnavailable, SessionExpired
from polars.testing import assert_frame_equal

from attribution.contracts.graph import PropertyGraph
from attribution.contracts.results import RunRecord
from attribution.contracts.settings import Neo4jSettings
from attribution.store.embedded import EmbeddedStore
from attribution.store.neo4j import (
    CREATE_FIXED,
    CREATE_ROWS,
    CREATE_USES,
    FINISH_LOAD,
    MERGE_FIXED,
    MERGE_USES,
    NODE_IDS,
    RESERVED,
    SCHEMA,
    Neo4jStore,
    StoreError,
    StoreUnavailable,
    _fixed_columns,
)
from attribution.store.neo4j_codec import (
    OLD_MINUTES,
    OLD_NETWORKS,
    pack_activity,
    stored_frames,
    unpack_activity,
)
from attribution.store.neo4j_cypher import FRAME_LABEL
from tests.support.fake_neo4j import FakeDriver
from tests.support.store_world import (
    assert_graph_equal,
    record_queries,
    settings_of,
    tiny_graph,
    tiny_record,
    with_odd_accounts,
)


@pytest.fixture
def server(neo4j_clean: Any) -> Any:
    return neo4j_clean


def make_store(server: Any, **kw: Any) -> Neo4jStore:
    return Neo4jStore(settings_of(server), **kw)


# --------------------------------------------------------------------------- no server


def fake_store(*, fresh: bool = False, **kw: Any) -> tuple[Neo4jStore, FakeDriver]:
    """A store over a fake driver; ``fresh``: the database is empty (a first load CREATEs)."""
    from attribution.store.neo4j_cypher import GRAPH_EMPTY

    def respond(query: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        if query == GRAPH_EMPTY:
            return [{"empty": fresh}]
        if query == FINISH_LOAD:
            return [{"s": params["stamp"]}]
        if query.endswith(NODE_IDS):  # node batches give their nodes' element ids
            return [{"at": list(range(params["n"])),
                     "ids": [f"{params['label']}:{key}" for key in params["keys"]]}]
        return []

    driver = FakeDriver(responder=respond)
    settings = Neo4jSettings("bolt://fake:7687", "neo4j", "pw", "neo4j")
    return Neo4jStore(settings, driver=driver, **kw), driver  # type: ignore[arg-type]


def known_statements() -> set[str]:
    """Every query text the store module defines (constants and fixed-vocabulary dicts)."""
    from attribution.store import neo4j as module

    found: set[str] = set()
    for value in vars(module).values():
        items = value.values() if isinstance(value, dict) else value \
            if isinstance(value, tuple) else [value]
        found.update(v for v in items if isinstance(v, str))
    return found


def test_fake_load_sends_schema_first_then_batches_of_constant_statements() -> None:
    store, driver = fake_store(batch_size=3)
    graph = tiny_graph()
    store.load_snapshot(graph, digest="d")
    calls = driver.sent()
    first_rows = next(i for i, c in enumerate(calls) if "n" in c.params)
    assert {c.query for c in calls[:first_rows] if c.mode == "auto"} >= set(SCHEMA)
    assert all(c.params["n"] <= 3 for c in calls if "n" in c.params)
    assert not (set(c.query for c in calls) - known_statements())  # nothing composed at run time
    sent_accounts = [key for c in calls
                     if c.query == MERGE_FIXED["Account"] for key in c.params["keys"]]
    assert sorted(sent_accounts) == graph.accounts["account_id"].to_list()
    # columns travel as lists, one per column, as long as the batch: the built ones
    # (named in the statement's map) under fvals, the snapshot's extra ones under vals
    account_batch = next(c.params for c in calls if c.query == MERGE_FIXED["Account"])
    assert "account_id" not in account_batch["cols"]
    assert account_batch["cols"] == ["score_hint", "tags_n", "note"]
    assert all(len(v) == account_batch["n"]
               for v in (*account_batch["vals"], *account_batch["fvals"],
                         *account_batch["fsecs"]))
    # relationship ends travel as the element ids the node batches returned
    uses = [pair for c in calls if c.query == MERGE_USES["ip"]
            for pair in zip(c.params["a"], c.params["e"], strict=True)]
    ip_uses = graph.uses.filter(pl.col("kind") == "ip")
    assert sorted(uses) == sorted(
        (f"Account:{a}", f"IP:{e}")
        for a, e in zip(ip_uses["account_id"], ip_uses["entity_id"], strict=True))
    assert calls[-1].query == FINISH_LOAD


def test_a_first_load_creates_rows_with_fixed_maps_and_unstamped_relationships() -> None:
    """Into an empty database: node frames with the built columns go as one literal map
    per row (``CREATE_FIXED``), and relationships are CREATEd without a stamp."""
    store, driver = fake_store(fresh=True, batch_size=3)
    graph = tiny_graph()
    store.load_snapshot(graph, digest="d")
    calls = driver.sent()
    assert not (set(c.query for c in calls) - known_statements())
    used = {c.query for c in calls}
    assert set(CREATE_FIXED.values()) <= used
    assert not used & set(CREATE_ROWS.values()) & {CREATE_ROWS[k] for k in CREATE_FIXED}
    sent = [key for c in calls if c.query == CREATE_FIXED["Account"] for key in c.params["keys"]]
    assert sorted(sent) == graph.accounts["account_id"].to_list()
    assert all("_snapshot" not in q for q in CREATE_USES.values())
    assert CREATE_USES["ip"] in used


def test_built_frames_take_the_fixed_maps_and_others_the_dynamic_sets() -> None:
    frames, _ = stored_frames(tiny_graph(), RESERVED, StoreError)
    for name, label in FRAME_LABEL.items():
        assert _fixed_columns(frames[name], label) is not None, name
    accounts = frames["accounts"]
    assert _fixed_columns(accounts.with_columns(pl.lit(1).alias("extra")), "Account")
    for odd in (accounts.drop("plan"), accounts.with_columns(pl.col("created_at").dt.epoch("s")),
                accounts.with_columns(pl.lit(None, pl.Datetime("us")).alias("plan"))):
        assert _fixed_columns(odd, "Account") is None


def test_activity_travels_as_one_exact_json_text_and_old_lists_still_read() -> None:
    accounts = pl.DataFrame({"account_id": ["a", "b", "c"], "x": [1, 2, 3]})
    odd = ['asn:1', 'proxy:"Quote"; semi, comma', "net:é\n\\ tab\t", "", "x" * 300]
    activity = pl.DataFrame(
        {"account_id": ["a"] * 5 + ["c"], "minute": [5, 3, 3, 2**31 - 1, 0, -7],
         "network": [*odd, "asn:2"]},
        schema={"account_id": pl.String, "minute": pl.Int32, "network": pl.String})
    packed = pack_activity(accounts, activity)
    assert packed.schema["activity"] == pl.String
    assert packed["activity"].null_count() == 1  # b has none: no property at all
    back, again = unpack_activity(packed)
    assert_frame_equal(back, accounts)
    assert_frame_equal(again, activity.sort("account_id", "minute", "network"))
    old = activity.sort("account_id", "minute", "network").group_by(
        "account_id", maintain_order=True).agg(pl.col("minute").alias(OLD_MINUTES),
                                              pl.col("network").alias(OLD_NETWORKS))
    back, again = unpack_activity(accounts.join(old, on="account_id", how="left"))
    assert_frame_equal(back, accounts)
    assert_frame_equal(again, activity.sort("account_id", "minute", "network"))
    clash = tiny_graph()
    clash = PropertyGraph.from_frames({**clash.frames(), "accounts": clash.accounts.with_columns(
        pl.lit("x").alias("activity"))})
    with pytest.raises(StoreError, match="hold its activity"):
        stored_frames(clash, RESERVED, StoreError)


def test_a_load_reports_its_rows_rate_and_time_left() -> None:
    """Every row sent is counted against the total announced, and the last line says so."""
    store, driver = fake_store(batch_size=3)
    lines: list[str] = []
    store.load_snapshot(tiny_graph(), digest="d", progress=lines.append)
    sent = sum(c.params["n"] for c in driver.sent() if c.mode != "auto" and "n" in c.params)
    assert lines and lines[-1].startswith(f"load: {sent:,} of {sent:,} rows in ")
    assert lines[-1].endswith("rows/s")


def test_the_load_meter_says_rate_and_time_left_every_few_seconds() -> None:
    from attribution.store.neo4j import LoadMeter

    said: list[str] = []
    meter = LoadMeter(1000, said.append, every=0.0)
    meter.add(250)
    assert said[-1].startswith("load: 250 of 1,000 rows, ") and "s left" in said[-1]
    quiet = LoadMeter(1000, said.append, every=3600.0)
    quiet.add(999)
    assert len(said) == 1  # not before ``every`` seconds


def test_fake_unknown_commit_outcome_is_resent_a_few_times_then_unavailable(
        caplog: pytest.LogCaptureFixture) -> None:
    store, driver = fake_store(retries=2)
    driver.errors = [IncompleteCommit("lost during commit")]
    store._write("RETURN 1")
    assert [c.query for c in driver.sent("write")] == ["RETURN 1", "RETURN 1"]
    assert "commit outcome unknown" in caplog.text
    driver.errors = [IncompleteCommit("x")] * 3
    with pytest.raises(StoreUnavailable, match="bolt://fake:7687"):
        store._write("RETURN 2")


@pytest.mark.parametrize("error", [ServiceUnavailable("gone\nfor good"),
                                   SessionExpired("expired"), ConnectionRefusedError("no")])
def test_fake_connection_errors_are_one_line_store_unavailable(error: Exception) -> None:
    store, driver = fake_store()
    driver.errors = [error]
    with pytest.raises(StoreUnavailable) as info:
        store._read("RETURN 1")
    assert "\n" not in str(info.value) and str(info.value).startswith("Neo4j at bolt://fake")


def test_fake_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="keep_runs"):
        fake_store(keep_runs="some")
    with pytest.raises(ValueError, match="batch_size"):
        fake_store(batch_size=0)
    with pytest.raises(ValueError, match="workers"):
        fake_store(workers=0)
    with pytest.raises(StoreError, match="bad Neo4j settings"):
        Neo4jStore(Neo4jSettings("gopher://nowhere:1", "neo4j", "pw", "neo4j"))


# --------------------------------------------------------------------------- schema, batches


@pytest.mark.neo4j
def test_every_key_has_a_uniqueness_constraint(server: Any) -> None:
    with make_store(server) as store:
        store.ensure_schema()
    rows = server.query("SHOW CONSTRAINTS YIELD type, labelsOrTypes, properties")
    unique = {(r["labelsOrTypes"][0], tuple(r["properties"])) for r in rows
              if r["type"] == "UNIQUENESS"}
    assert unique >= {
        ("Account", ("account_id",)), ("PaymentMethod", ("fingerprint",)),
        ("Device", ("device_id",)), ("IP", ("ip",)), ("Proxy", ("proxy_id",)),
        ("ASN", ("asn",)), ("EmailDomain", ("domain",)), ("PromptTemplate", ("prompt_hash",)),
        ("Organization", ("org_id",)), ("Run", ("run_id",)),
        ("Fleet", ("fleet_id", "run_id")), ("Evidence", ("run_id", "seq")),
    }
    assert sum(s.startswith("CREATE CONSTRAINT") for s in SCHEMA) == len(unique)


@pytest.mark.neo4j
def test_batches_hold_at_most_batch_size_rows(server: Any) -> None:
    store = make_store(server, batch_size=4)
    sent: list[tuple[str, int]] = []
    real = store._write

    def spy(query: Any, *args: Any, **params: Any) -> Any:
        if "rows" in params or "n" in params:
            sent.append((query, len(params["rows"]) if "rows" in params else params["n"]))
        return real(query, *args, **params)

    store._write = spy  # type: ignore[method-assign]
    graph = tiny_graph()
    store.load_snapshot(graph, digest="d")
    store.write_run(tiny_record())
    assert sent and max(n for _, n in sent) == 4
    ip_rows = graph.uses.filter(pl.col("kind") == "ip").height
    # a first load into the empty database CREATEs; batches end in any order
    assert sorted(n for q, n in sent if q == CREATE_USES["ip"]) == sorted(
        [4] * (ip_rows // 4) + ([ip_rows % 4] if ip_rows % 4 else []))
    store.close()


@pytest.mark.neo4j
def test_reloading_merges_without_changing_anything(server: Any) -> None:
    graph = tiny_graph()
    with make_store(server, batch_size=5) as store:
        store.load_snapshot(graph, digest="g")
        before = store.stats()
        sent = record_queries(store, "_write")
        store.load_snapshot(graph, digest="g")
        assert sent == []  # already loaded whole under the same stamp: nothing sent
        store.load_snapshot(graph, digest="g", force=True)
        assert len(sent) > 10
        assert store.stats() == before
        assert_graph_equal(store.read_graph(), graph)
        # the same snapshot digest but another graph (say, a newer engine): loaded again
        other = PropertyGraph.from_frames({**graph.frames(),
                                           "devices": graph.devices.head(1)})
        store.load_snapshot(other, digest="g")
        assert_graph_equal(store.read_graph(), other)


@pytest.mark.neo4j
def test_a_rerun_of_the_loaded_graph_reads_nothing_back(server: Any) -> None:
    """The stamp that skips sending an unchanged graph also vouches for reading it back;
    another store object, or another graph loaded since, reads the database again."""
    graph = tiny_graph()
    with make_store(server) as first:
        first.load_snapshot(graph, digest="g")
    with make_store(server) as store:
        reads = record_queries(store, "_read")
        assert_graph_equal(store.read_graph(), graph)
        paged = len(reads)
        assert paged > 3
        reads.clear()
        store.load_snapshot(graph, digest="g")
        assert_graph_equal(store.read_graph(), graph)
        assert len(reads) == 2  # the graph state, once by the load and once by the read
        other = PropertyGraph.from_frames({**graph.frames(), "devices": graph.devices.head(1)})
        with make_store(server) as elsewhere:
            elsewhere.load_snapshot(other, digest="g")
        reads.clear()
        assert_graph_equal(store.read_graph(), other)  # the stamp moved on: read again
        assert len(reads) == paged


@pytest.mark.neo4j
def test_a_replaced_graph_leaves_nothing_behind(server: Any) -> None:
    """A -> B gives the same database as B alone (when no run points into A)."""
    a = tiny_graph(extra_account=True)
    b = tiny_graph()
    b = PropertyGraph.from_frames({**b.frames(),
                                   "ips": b.ips.filter(pl.col("ip") != "10.0.0.3")})
    with make_store(server, batch_size=5) as store:
        store.load_snapshot(b, digest="b")
        alone = store.stats()
        server.clear()
        store.load_snapshot(a, digest="a")
        store.load_snapshot(b, digest="b")
        assert store.stats() == alone
        assert_graph_equal(store.read_graph(), b)


@pytest.mark.neo4j
def test_odd_dtypes_and_old_timestamps_round_trip_exactly(server: Any) -> None:
    n = tiny_graph().accounts.height
    odd = with_odd_accounts(
        tiny_graph(),
        berlin=pl.Series("berlin", [dt.datetime(2026, 3, 29, 1, 30)] * n,
                         dtype=pl.Datetime("ms")).dt.replace_time_zone("Europe/Berlin"),
        ratio=pl.Series("ratio", [1.5] * n, dtype=pl.Float32),
        empty=pl.Series("empty", [[] for _ in range(n)], dtype=pl.List(pl.Int64)),
        words=pl.Series("words", [["a", "b"]] * n, dtype=pl.List(pl.String)))
    with make_store(server) as store:
        store.load_snapshot(odd, digest="odd")
        back = store.read_graph()
    assert back.accounts.schema == odd.accounts.schema
    assert_graph_equal(back, odd)


@pytest.mark.neo4j
def test_an_unfinished_load_is_refused_then_completed_by_a_rerun(server: Any) -> None:
    graph = tiny_graph()
    with make_store(server, batch_size=3) as store:
        calls = 0
        real = store._write

        def failing(query: Any, **params: Any) -> Any:
            nonlocal calls
            calls += 1
            if calls == 12:
                raise KeyboardInterrupt  # stands for any interruption mid-load
            return real(query, **params)

        store._write = failing  # type: ignore[method-assign]
        with pytest.raises(KeyboardInterrupt):
            store.load_snapshot(graph, digest="g")
        store._write = real  # type: ignore[method-assign]
        with pytest.raises(StoreError, match="did not finish"):
            store.read_graph()
        assert store.graph_digest() is None
        store.load_snapshot(graph, digest="g")
        assert store.graph_digest() == "g"
        assert_graph_equal(store.read_graph(), graph)


# --------------------------------------------------------------------------- parity


@pytest.fixture(scope="module")
def worlds(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    from fixtures.worldgen import generate_world

    root = tmp_path_factory.mktemp("worlds")
    return {seed: generate_world(root / f"w{seed}", accounts=accounts, seed=seed).snapshot
            for seed, accounts in ((1, 1500), (2, 1000), (3, 1000))}


@pytest.mark.neo4j
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_pipeline_parity_with_the_embedded_store(server: Any, worlds: dict[int, Path],
                                                 tmp_path: Path, seed: int) -> None:
    from attribution.job.jobs import run_job

    snapshot = worlds[seed]
    embedded = run_job(EmbeddedStore(tmp_path / "store"), home=tmp_path, snapshot=snapshot,
                       out=tmp_path / "e").record
    with make_store(server) as store:
        record = run_job(store, home=tmp_path, snapshot=snapshot, out=tmp_path / "n").record
        graph = store.read_graph()
        stored = store.read_results()
    assert_graph_equal(graph, EmbeddedStore(tmp_path / "store").read_graph())
    assert record.fleets.height > 0
    assert record.fleets["org_id"].is_not_null().any()
    for name in ("assignments", "fleets", "evidence"):
        assert_frame_equal(getattr(record, name), getattr(embedded, name),
                           check_exact=False, abs_tol=1e-9, rel_tol=0)
        assert stored is not None
        assert_frame_equal(getattr(stored, name), getattr(record, name), check_exact=True)
    assert stored is not None and stored.run_id == record.run_id


@pytest.mark.neo4j
def test_cli_runs_on_neo4j_when_configured(server: Any, worlds: dict[int, Path], tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    from attribution.cli import main

    for key, value in server.env().items():
        monkeypatch.setenv(key, value)
    assert main(["run", str(worlds[2]), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    with make_store(server) as store:
        current = store.read_results()
    assert current is not None
    assert current.run_id in capsys.readouterr().out
    assert_frame_equal(current.fleets, pl.read_parquet(tmp_path / "run" / "fleets.parquet"))


def test_cli_exits_1_with_one_line_when_neo4j_is_unreachable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from attribution.cli import main

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("NEO4J_URI", f"bolt://127.0.0.1:{port}")
    monkeypatch.setenv("NEO4J_PASSWORD", "x")
    (tmp_path / "snap").mkdir()
    started = time.monotonic()
    assert main(["run", str(tmp_path / "snap"), "--out", str(tmp_path / "run")]) == 1
    assert time.monotonic() - started < 20
    err = capsys.readouterr().err.strip()
    assert err.startswith("attribution: StoreUnavailable: Neo4j at bolt://127.0.0.1:")
    assert "\n" not in err
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------- faults

COMMIT = b"\x00\x02\xb0\x12\x00\x00"  # a Bolt COMMIT message, chunked


class ChaosProxy:
    """TCP proxy to the server that can cut, refuse, or drop a connection after COMMIT."""

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.refusing = False
        self.drop_next_commit = False
        self.dropped_commits = 0
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def settings(self, server: Any) -> Neo4jSettings:
        return Neo4jSettings(uri=f"bolt://127.0.0.1:{self.port}", user=server.user,
                             password=server.password, database=server.database)

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.refusing:
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            muted = threading.Event()  # set: the server's answers no longer reach the client
            threading.Thread(target=self._pump, args=(client, upstream, True, muted),
                             daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False, muted),
                             daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, outbound: bool,
              muted: threading.Event) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                if not outbound and muted.is_set():
                    continue
                if outbound and self.drop_next_commit and data.endswith(COMMIT):
                    self.drop_next_commit = False
                    muted.set()
                    dst.sendall(data)
                    time.sleep(0.3)  # the server commits; its answer never arrives
                    self.dropped_commits += 1
                    break
                dst.sendall(data)
        self._close(src, dst)

    def _close(self, *socks: socket.socket) -> None:
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def cut(self) -> None:
        """The server 'goes away': every connection dies and new ones are refused."""
        self.refusing = True
        with self._lock:
            conns, self._conns = self._conns, []
        self._close(*conns)

    def restore(self) -> None:
        self.refusing = False

    def close(self) -> None:
        self._closed = True
        self.cut()
        self.listener.close()


@pytest.fixture
def proxy(server: Any) -> Iterator[ChaosProxy]:
    p = ChaosProxy(server.port)
    yield p
    p.close()


def after_calls(store: Neo4jStore, n: int, action: Callable[[], None],
                when: Callable[[Any], bool] = lambda q: True) -> None:
    """Run ``action`` once, right after the n-th matching write transaction of ``store``."""
    real = store._write
    seen = 0

    def hooked(query: Any, **params: Any) -> Any:
        nonlocal seen
        out = real(query, **params)
        if when(query):
            seen += 1
            if seen == n:
                action()
        return out

    store._write = hooked  # type: ignore[method-assign]


@pytest.mark.neo4j
def test_an_unknown_commit_outcome_is_resent_and_counts_stay_exact(
        server: Any, proxy: ChaosProxy, caplog: pytest.LogCaptureFixture) -> None:
    graph = tiny_graph()
    with make_store(server) as clean:
        clean.load_snapshot(graph, digest="g")
        expected = clean.stats()
    server.clear()
    store = Neo4jStore(proxy.settings(server), batch_size=5, retry_seconds=2)

    def arm() -> None:
        proxy.drop_next_commit = True

    after_calls(store, 6, arm)
    with caplog.at_level(logging.WARNING, logger="attribution.store.neo4j"):
        store.load_snapshot(graph, digest="g")
    assert proxy.dropped_commits == 1
    assert "commit outcome unknown" in caplog.text
    assert store.stats() == expected
    assert_graph_equal(store.read_graph(), graph)
    store.close()


@pytest.mark.neo4j
def test_server_gone_mid_load_then_rerun_completes(server: Any, proxy: ChaosProxy) -> None:
    graph = tiny_graph()
    previous = tiny_record("run-0")
    with make_store(server) as clean:
        clean.load_snapshot(tiny_graph(extra_account=True), digest="old")
        clean.write_run(previous)
        clean.load_snapshot(graph, digest="g")
        expected = clean.stats()
    server.clear()
    with make_store(server) as setup:
        setup.load_snapshot(tiny_graph(extra_account=True), digest="old")
        setup.write_run(previous)
    store = Neo4jStore(proxy.settings(server), batch_size=3, retry_seconds=1)
    after_calls(store, 10, proxy.cut)
    started = time.monotonic()
    with pytest.raises(StoreUnavailable) as info:
        store.load_snapshot(graph, digest="g")
    assert time.monotonic() - started < 30
    message = str(info.value)
    assert "\n" not in message and "unavailable" in message and str(proxy.port) in message
    with make_store(server) as reader:
        kept = reader.read_results()
        assert kept is not None and kept.run_id == "run-0"
        assert_frame_equal(kept.assignments, previous.assignments)
        with pytest.raises(StoreError, match="did not finish"):
            reader.read_graph()
    proxy.restore()
    store._write = Neo4jStore._write.__get__(store)  # type: ignore[method-assign]
    store.load_snapshot(graph, digest="g")
    assert store.stats() == expected
    assert_graph_equal(store.read_graph(), graph)
    store.close()


@pytest.mark.neo4j
def test_server_stopped_mid_load(server: Any) -> None:
    """The real thing: the server process stops while batches are being written."""
    graph = tiny_graph()
    with make_store(server) as setup:
        setup.write_run(tiny_record("run-0"))
        setup.load_snapshot(graph, digest="g")
        expected = setup.stats()
    server.clear()
    with make_store(server) as setup:
        setup.write_run(tiny_record("run-0"))
    store = make_store(server, batch_size=3, retry_seconds=1)
    after_calls(store, 8, server.stop)
    with pytest.raises(StoreUnavailable) as info:
        store.load_snapshot(graph, digest="g")
    assert "\n" not in str(info.value)
    store.close()
    with pytest.raises(StoreUnavailable):
        make_store(server, retry_seconds=1)
    server.start()
    with make_store(server) as again:
        current = again.read_results()
        assert current is not None and current.run_id == "run-0"
        with pytest.raises(StoreError, match="did not finish"):
            again.read_graph()
        again.load_snapshot(graph, digest="g")
        assert again.stats() == expected
        assert_graph_equal(again.read_graph(), graph)


@pytest.mark.neo4j
def test_a_failed_write_leaves_the_previous_run_current(server: Any, proxy: ChaosProxy) -> None:
    with make_store(server) as setup:
        setup.load_snapshot(tiny_graph(), digest="g")
        setup.write_run(tiny_record("run-1"))
    store = Neo4jStore(proxy.settings(server), batch_size=2, retry_seconds=1)
    after_calls(store, 3, proxy.cut, when=lambda q: "SCORED" in q)
    with pytest.raises(StoreUnavailable):
        store.write_run(tiny_record("run-2", org=None, started="2026-02-02"))
    with make_store(server) as reader:
        current = reader.read_results()
        assert current is not None and current.run_id == "run-1"
        assert reader.read_results("run-2") is None
        assert [m["run_id"] for m in reader.list_runs()] == ["run-1"]
    proxy.restore()
    store._write = Neo4jStore._write.__get__(store)  # type: ignore[method-assign]
    second = tiny_record("run-2", org=None, started="2026-02-02")
    store.write_run(second)
    current = store.read_results()
    assert current is not None and current.run_id == "run-2"
    assert_frame_equal(current.assignments, second.assignments)
    assert [m["run_id"] for m in store.list_runs()] == ["run-1", "run-2"]
    store.close()


@pytest.mark.neo4j
@pytest.mark.parametrize("keep_runs", ["all", "current"])
def test_a_reader_never_sees_half_a_run(server: Any, keep_runs: Any) -> None:
    with make_store(server) as setup:
        setup.load_snapshot(tiny_graph(), digest="g")
        setup.write_run(tiny_record("run-1"))
    old, new = tiny_record("run-1"), tiny_record("run-2", org=None, started="2026-02-02")
    writer = make_store(server, batch_size=2, keep_runs=keep_runs)
    reader = make_store(server, page_size=3)
    seen: list[str] = []

    def check(*_: Any) -> None:
        got = reader.read_results()
        assert got is not None
        want = {"run-1": old, "run-2": new}[got.run_id]
        for name in ("assignments", "fleets", "evidence"):
            assert_frame_equal(getattr(got, name), getattr(want, name))
        seen.append(got.run_id)

    real = writer._write

    def hooked(query: Any, **params: Any) -> Any:
        out = real(query, **params)
        check()
        return out

    writer._write = hooked  # type: ignore[method-assign]
    real_auto = writer._auto

    def hooked_auto(query: Any, **params: Any) -> None:
        real_auto(query, **params)
        check()

    writer._auto = hooked_auto  # type: ignore[method-assign]
    writer.write_run(new)
    check()
    assert seen[0] == "run-1" and seen[-1] == "run-2"
    assert seen == sorted(seen)  # once switched, never back
    runs = [m["run_id"] for m in reader.list_runs()]
    assert runs == (["run-1", "run-2"] if keep_runs == "all" else ["run-2"])
    if keep_runs == "current":
        assert reader.read_results("run-1") is None
        stats = reader.stats()
        assert stats["nodes"]["Fleet"] == 2 and stats["nodes"]["Run"] == 1
        assert stats["relationships"]["SCORED"] == 12
    writer.close()
    reader.close()


def test_nothing_listening_is_store_unavailable_at_once() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(StoreUnavailable) as info:
        Neo4jStore(Neo4jSettings(f"bolt://127.0.0.1:{port}", "neo4j", "x", "neo4j"),
                   retry_seconds=1)
    assert time.monotonic() - started < 10
    assert "\n" not in str(info.value) and f"127.0.0.1:{port}" in str(info.value)


@pytest.mark.neo4j
def test_wrong_password_is_a_clear_error(server: Any) -> None:
    bad = Neo4jSettings(server.uri, server.user, "wrong-password", server.database)
    with pytest.raises(StoreUnavailable, match="refused the credentials"):
        Neo4jStore(bad, retry_seconds=1)


@pytest.mark.neo4j
def test_a_stored_run_is_not_overwritten(server: Any) -> None:
    with make_store(server) as store:
        store.load_snapshot(tiny_graph(), digest="g")
        store.write_run(tiny_record("run-1"))
        with pytest.raises(StoreError, match="already stored"):
            store.write_run(tiny_record("run-1"))


@pytest.mark.neo4j
def test_results_of_accounts_no_longer_in_the_graph_survive(server: Any) -> None:
    record: RunRecord = tiny_record("run-1")
    with make_store(server) as store:
        store.load_snapshot(tiny_graph(), digest="g")
        store.write_run(record)
        only_a01 = tiny_graph()
        frames = only_a01.frames()
        frames["accounts"] = frames["accounts"].filter(pl.col("account_id") == "a01")
        frames["uses"] = frames["uses"].filter(pl.col("account_id") == "a01")
        frames["activity"] = frames["activity"].filter(pl.col("account_id") == "a01")
        frames["known_links"] = frames["known_links"].filter(pl.col("kind") != "account")
        small = PropertyGraph.from_frames(frames)
        store.load_snapshot(small, digest="small")
        assert_graph_equal(store.read_graph(), small)
        back = store.read_results()
        assert back is not None
        assert_frame_equal(back.assignments, record.assignments)
        # the accounts gone from the graph are bare keys now
        rows = server.query("MATCH (a:Account {account_id: 'a12'}) RETURN properties(a) AS p")
        assert rows == [{"p": {"account_id": "a12"}}]
