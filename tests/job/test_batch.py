"""The batch re-attribution job: lock, verdicts, run history, crash safety, exit statuses.

The job's tests run on both stores (``JobStore``: the embedded store in a
temporary folder, or the session's real Neo4j), through the same CLI with the
same assertions; only what is a store's own (where its files are, what a killed
write leaves behind) differs.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from attribution.cli import main
from attribution.contracts.results import RunRecord
from attribution.contracts.settings import Neo4jSettings
from attribution.contracts.verdicts import VerdictStore, make_verdict
from attribution.engine.attribute import mask
from attribution.job.jobs import EXIT_LOCKED, JobLock, JobLocked, recover
from attribution.job.killpoints import KILL_AT
from attribution.store import Store
from attribution.store.embedded import EmbeddedStore

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "fixtures" / "sample" / "snapshot"
STORES = ["embedded", pytest.param("neo4j", marks=pytest.mark.neo4j)]
# Everything the run results of the Neo4j store are made of (the graph stays).
DROP_RUNS = ("MATCH (n) WHERE n:Run OR n:Fleet OR n:Evidence "
             "CALL (n) { DETACH DELETE n } IN TRANSACTIONS OF 10000 ROWS")


# --- one store as the job sees it ----------------------------------------------------


@dataclass
class JobStore:
    """A store as the job's command line reaches it: ``--store DIR`` for the embedded
    store, ``NEO4J_*`` in the environment for Neo4j; ``ATTRIBUTION_HOME`` for both."""

    kind: str
    home: Path
    root: Path | None = None
    server_env: dict[str, str] = field(default_factory=dict)

    @property
    def args(self) -> list[str]:
        """The store options every subcommand takes."""
        return ["--store", str(self.root)] if self.root is not None else []

    def env(self, **extra: str) -> dict[str, str]:
        full = {**os.environ, "ATTRIBUTION_HOME": str(self.home), **self.server_env, **extra}
        if self.kind == "embedded":
            full.pop("NEO4J_URI", None)
        return full

    def cli(self, *args: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
        """The CLI in a new process (store options appended)."""
        return subprocess.run([sys.executable, "-m", "attribution.cli", *args, *self.args],
                              capture_output=True, text=True, cwd=ROOT, timeout=300,
                              env=self.env(**extra_env))

    def popen(self, *args: str, **extra_env: str) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-m", "attribution.cli", *args, *self.args],
                                cwd=ROOT, env=self.env(**extra_env), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)

    def inproc(self, *args: str) -> int:
        """The CLI in this process (no interpreter start-up): for the many quick runs."""
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("ATTRIBUTION_HOME", str(self.home))
            for key, value in self.server_env.items():
                mp.setenv(key, value)
            if self.kind == "embedded":
                mp.delenv("NEO4J_URI", raising=False)
            return main([*args, *self.args])

    @contextmanager
    def open(self) -> Iterator[Store]:
        if self.root is not None:
            yield EmbeddedStore(self.root)
            return
        from attribution.store.neo4j import Neo4jStore

        settings = Neo4jSettings(uri=self.server_env["NEO4J_URI"],
                                 user=self.server_env["NEO4J_USER"],
                                 password=self.server_env["NEO4J_PASSWORD"],
                                 database=self.server_env["NEO4J_DATABASE"])
        store = Neo4jStore(settings)
        try:
            yield store
        finally:
            store.close()

    def results(self, run_id: str | None = None) -> RunRecord:
        with self.open() as s:
            record = s.read_results(run_id)
        assert record is not None
        return record

    def current(self) -> str:
        return self.results().run_id

    def graph(self) -> Any:
        with self.open() as s:
            return s.read_graph()

    @property
    def lock(self) -> Path:
        with self.open() as s:
            return s.job_lock_path(self.home)

    @property
    def verdicts(self) -> Path:
        with self.open() as s:
            return s.verdict_log_path(self.home)


@pytest.fixture(scope="module")
def base_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An embedded store holding the sample world's graph and one current run."""
    store = tmp_path_factory.mktemp("base") / "store"
    assert JobStore("embedded", store.parent / "home", store).inproc(
        "reattribute", "--snapshot", str(SAMPLE), "--quiet") == 0
    return store


def neo4j_job_store(request: pytest.FixtureRequest, home: Path, snapshot: Path = SAMPLE
                    ) -> JobStore:
    """The session's Neo4j holding ``snapshot``'s graph and exactly one run, made by the job.

    Only the runs are deleted first: a graph already loaded under the same stamp is not
    sent again (a few seconds instead of fifteen for the sample).
    """
    server = request.getfixturevalue("neo4j_server")
    if not server.started or not server.running:
        server.start()  # an earlier fault test left it stopped
    with server.driver.session(database=server.database) as session:
        session.run(DROP_RUNS).consume()
    js = JobStore("neo4j", home, server_env=server.env())
    assert js.inproc("reattribute", "--snapshot", str(snapshot), "--quiet") == 0
    return js


@pytest.fixture(params=STORES)
def js(request: pytest.FixtureRequest, tmp_path: Path) -> JobStore:
    """Either store with the sample world's graph and one current run, made by the job."""
    if request.param == "embedded":
        copy = tmp_path / "store"
        shutil.copytree(request.getfixturevalue("base_store"), copy)
        return JobStore("embedded", tmp_path / "home", copy)
    return neo4j_job_store(request, tmp_path / "home")


# --- the job ------------------------------------------------------------------------


def test_reattribute_reuses_stored_graph_and_previous_run(js: JobStore, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]
                                                          ) -> None:
    before = js.results()
    assert js.inproc("reattribute", "--quiet", "--out", str(tmp_path / "out")) == 0
    line = capsys.readouterr().out.strip()
    assert len(line.splitlines()) == 1
    assert line.startswith("reattribute ok run=") and "created=0" in line and "seconds=" in line
    after = js.results()
    assert after.run_id != before.run_id == after.manifest["previous_run_id"]
    assert after.manifest["input"]["path"].startswith("store:")
    assert after.manifest["diff_counts"]["dissolved"] == 0
    diffs = [json.loads((tmp_path / "out" / "diff.json").read_text())]
    if js.root is not None:  # the embedded store keeps the diff beside the run too
        diffs.append(json.loads((js.root / "runs" / after.run_id / "diff.json").read_text()))
    for diff in diffs:
        assert diff["base"] == before.run_id and diff["counts"]["created"] == 0
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["run_id"] == after.run_id and manifest["previous_run_id"] == before.run_id
    # Same input twice: identical results apart from run ids and timestamps.
    assert after.assignments.equals(before.assignments)
    assert after.fleets.equals(before.fleets)
    assert after.evidence.equals(before.evidence)


def test_same_snapshot_twice_gives_identical_run_directories(tmp_path: Path) -> None:
    for name in ("a", "b"):
        store = JobStore("embedded", tmp_path / "home", tmp_path / f"s{name}")
        assert store.inproc("reattribute", "--snapshot", str(SAMPLE), "--out",
                            str(tmp_path / name), "--quiet") == 0
    for table in ("assignments.parquet", "fleets.parquet", "evidence.parquet"):
        assert pl.read_parquet(tmp_path / "a" / table).equals(
            pl.read_parquet(tmp_path / "b" / table)), table


def test_runs_history_and_stored_diff(js: JobStore, capsys: pytest.CaptureFixture[str]) -> None:
    first = js.current()
    assert js.inproc("reattribute", "--quiet") == 0
    capsys.readouterr()
    assert js.inproc("runs") == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[1].startswith("* ") and first in lines[0]
    assert "engine=" in lines[1] and f"previous={first}" in lines[1]
    assert js.inproc("diff") == 0  # the current run against its previous one
    diff = json.loads(capsys.readouterr().out)
    assert diff["base"] == first and diff["head"] == js.current()


# --- exit statuses and the lock -----------------------------------------------------


def test_exit_statuses(base_store: Path, tmp_path: Path) -> None:
    def emb(*args: str, store: Path = base_store) -> int:
        return JobStore("embedded", tmp_path / "home", store).inproc(*args)

    assert emb("reattribute", "--quiet", store=tmp_path / "empty") == 2
    assert emb("reattribute", "--snapshot", str(tmp_path / "missing")) == 2
    assert emb("reattribute", "--bogus") == 2
    assert emb("verdict", "confirm", "F0000000000", "--org", "o", "--by", "a",
               "--why", "x") == 2  # no such fleet in the current run
    assert emb("verdict", "hide", "planet", "x", "--by", "a", "--why", "x") == 2
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "runs").write_text("not a directory")
    assert emb("reattribute", "--snapshot", str(SAMPLE), "--quiet", store=broken) == 1


def test_second_job_is_refused_while_one_holds_the_lock(js: JobStore, tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from pathlib import Path; from attribution.job.jobs import JobLock\n"
         f"lock = JobLock(Path({str(js.lock)!r})).acquire()\n"
         "print('held', flush=True); time.sleep(120)"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        before = js.current()
        started = time.monotonic()
        # The batch job's scheduler retries on 75; `run` keeps to the contract's 0/1/2.
        for args, status in ((("reattribute", "--quiet"), EXIT_LOCKED),
                             (("run", str(SAMPLE), "--out", str(tmp_path / "r"), "--quiet"), 1)):
            done = js.cli(*args)
            assert done.returncode == status, done.stderr
            assert len(done.stderr.strip().splitlines()) == 1
            assert "another job holds" in done.stderr and f"pid {holder.pid}" in done.stderr
        assert time.monotonic() - started < 60  # refused at once, not after waiting
        assert js.current() == before and not (tmp_path / "r").exists()
    finally:
        holder.send_signal(signal.SIGKILL)  # kill -9: the kernel drops the lock
        holder.wait()
    assert js.inproc("reattribute", "--quiet") == 0
    assert js.current() != before


def test_lock_is_exclusive_within_one_process_too(tmp_path: Path) -> None:
    with JobLock(tmp_path / ".lock"), pytest.raises(JobLocked):
        JobLock(tmp_path / ".lock").acquire()
    JobLock(tmp_path / ".lock").acquire().release()


def test_neo4j_lock_and_verdicts_live_in_home(tmp_path: Path) -> None:
    from attribution.store.neo4j import Neo4jStore
    from tests.support.fake_neo4j import FakeDriver

    settings = Neo4jSettings(uri="bolt://127.0.0.1:1", user="u", password="p", database="d")
    neo4j = Neo4jStore(settings, driver=FakeDriver())
    assert neo4j.job_lock_path(tmp_path) == tmp_path / "neo4j-job.lock"
    assert neo4j.verdict_log_path(tmp_path) == tmp_path / "verdicts.jsonl"
    emb = EmbeddedStore(tmp_path / "s")
    assert emb.job_lock_path(tmp_path) == tmp_path / "s" / ".lock"
    assert emb.verdict_log_path(tmp_path) == tmp_path / "s" / "verdicts.jsonl"


# --- verdicts -----------------------------------------------------------------------


def _targets(js: JobStore) -> dict[str, str]:
    """Subjects for each verdict kind, found in the sample's current run."""
    rec = js.results()
    graph = js.graph()
    f, a = rec.fleets, rec.assignments
    attributed = f.filter(pl.col("org_id").is_not_null()).sort("fleet_id")
    reject_fleet = attributed.row(0, named=True)
    orgs = graph.organizations["org_id"].sort().to_list()
    unattributed = f.filter(pl.col("org_id").is_null() & (pl.col("sybil_score") >= 0.5)
                            ).sort(["size", "fleet_id"], descending=[True, False]).row(0, named=True)
    confirm_org = next(o for o in orgs if o != reject_fleet["org_id"])
    accused = a.filter(pl.col("org_id").is_not_null() & (pl.col("fleet_id") != reject_fleet[
        "fleet_id"])).sort("account_id").row(0, named=True)
    # Hide: a two-account fleet whose only shared identifier is one card.
    shared = rec.evidence.filter(pl.col("kind").str.starts_with("shared_")
                                 | (pl.col("kind") == "prompt_template"))
    only_card = shared.group_by("fleet_id").agg(pl.col("kind")).filter(
        pl.col("kind").list.len() == 1).explode("kind").filter(pl.col("kind") == "shared_payment")
    pair = f.filter(pl.col("fleet_id").is_in(only_card["fleet_id"].implode())
                    & (pl.col("size") == 2)).sort("fleet_id")["fleet_id"][0]
    pair_accounts = a.filter(pl.col("fleet_id") == pair)["account_id"].to_list()
    card = (graph.uses.filter(pl.col("account_id").is_in(pair_accounts)
                              & (pl.col("kind") == "payment"))
            .group_by("entity_id").agg(pl.len().alias("n")).filter(pl.col("n") == 2)
            .sort("entity_id")["entity_id"][0])
    # Pin: an IP shared by exactly two accounts in no fleet.
    lone = a.filter(pl.col("fleet_id").is_null())["account_id"]
    deg = graph.uses.filter(pl.col("kind") == "ip").group_by("entity_id").agg(
        pl.col("account_id").unique().alias("accs"))
    ip_row = deg.filter(pl.col("accs").list.len() == 2).explode("accs").filter(
        pl.col("accs").is_in(lone.implode())).group_by("entity_id").agg(pl.len().alias("k")
                                                                        ).filter(pl.col("k") == 2)
    ip = ip_row.sort("entity_id")["entity_id"][0]
    ip_accounts = sorted(graph.uses.filter((pl.col("kind") == "ip") & (pl.col("entity_id") == ip)
                                           )["account_id"].to_list())
    return {"reject_fleet": reject_fleet["fleet_id"], "reject_org": reject_fleet["org_id"],
            "confirm_fleet": unattributed["fleet_id"], "confirm_org": confirm_org,
            "legit": accused["account_id"], "legit_fleet": accused["fleet_id"],
            "card": card, "pair": pair, "ip": ip, "ip_a": ip_accounts[0], "ip_b": ip_accounts[1]}


def _verdict_rows(rec: RunRecord, fleet: str) -> pl.DataFrame:
    return rec.evidence.filter((pl.col("fleet_id") == fleet)
                               & (pl.col("kind") == "analyst_verdict"))


def _assert_verdicts_applied(rec: RunRecord, before: RunRecord, t: dict[str, str]) -> None:
    """Each verdict kind's effect on a run, and its evidence row."""
    fleets = {r["fleet_id"]: r for r in rec.fleets.iter_rows(named=True)}
    acc = {r["account_id"]: r for r in rec.assignments.iter_rows(named=True)}
    # confirm
    c = fleets[t["confirm_fleet"]]
    assert c["org_id"] == t["confirm_org"] and c["confidence"] >= 0.99
    members = rec.assignments.filter(pl.col("fleet_id") == t["confirm_fleet"])
    assert set(members["org_id"].drop_nulls().to_list()) == {t["confirm_org"]}
    assert _verdict_rows(rec, t["confirm_fleet"])["detail"].str.contains(
        "confirmed by alice on .*: matches case 1432").any()
    # reject
    r = fleets[t["reject_fleet"]]
    assert r["org_id"] != t["reject_org"] and r["runner_up_org_id"] != t["reject_org"]
    assert _verdict_rows(rec, t["reject_fleet"])["detail"].str.contains("rejected by alice").any()
    # legit
    assert acc[t["legit"]]["sybil_score"] <= 0.05 and acc[t["legit"]]["org_id"] is None
    assert _verdict_rows(rec, acc[t["legit"]]["fleet_id"])["detail"].str.contains(
        "marked legitimate by alice").any()
    # hide: the card links nobody and shows in no evidence but the verdict's own
    pair_now = {acc[a]["fleet_id"] for a in before.assignments.filter(
        pl.col("fleet_id") == t["pair"])["account_id"].to_list()}
    assert pair_now != {t["pair"]}
    masked = mask("payment", t["card"])
    other = rec.evidence.filter((pl.col("kind") != "analyst_verdict")
                                & pl.col("detail").str.contains(masked, literal=True))
    assert other.height == 0
    # pin: the two lone accounts sharing the IP are one fleet, with the verdict as evidence
    assert acc[t["ip_a"]]["fleet_id"] is not None
    assert acc[t["ip_a"]]["fleet_id"] == acc[t["ip_b"]]["fleet_id"]
    pinned = _verdict_rows(rec, acc[t["ip_a"]]["fleet_id"])
    assert pinned.filter(pl.col("detail").str.contains("pinned by alice")
                         & (pl.col("weight") == 1.0)).height == 1


def test_every_verdict_kind_changes_the_next_runs_and_revoke_undoes_it(
        js: JobStore, capsys: pytest.CaptureFixture[str]) -> None:
    t = _targets(js)
    before = js.results()
    by = ("--by", "alice")
    assert js.inproc("verdict", "confirm", t["confirm_fleet"], "--org", t["confirm_org"],
                     "--why", "matches case 1432", *by) == 0
    assert js.inproc("verdict", "reject", t["reject_fleet"], "--org", t["reject_org"],
                     "--why", "registry entry was stale", *by) == 0
    assert js.inproc("verdict", "legit", t["legit"], "--why", "verified by phone", *by) == 0
    assert js.inproc("verdict", "hide", "payment", t["card"], "--why", "company card pool",
                     *by) == 0
    assert js.inproc("verdict", "pin", "ip", t["ip"], "--why", "same office, same person",
                     *by) == 0
    capsys.readouterr()
    assert js.inproc("verdict", "list") == 0
    listed = capsys.readouterr().out.strip().splitlines()
    assert len(listed) == 5 and all("by=alice" in line for line in listed)
    ids = [line.split()[0] for line in listed]
    records = [json.loads(x) for x in js.verdicts.read_text().splitlines()]
    assert all(r["by"] == "alice" and r["at"].endswith("+00:00") and r["why"] for r in records)

    for _ in range(2):  # verdicts stick: applied in every later run, not just the next
        assert js.inproc("reattribute", "--quiet") == 0
        rec = js.results()
        assert sorted(rec.manifest["verdicts"]["applied"]) == sorted(ids)
        _assert_verdicts_applied(rec, before, t)

    for vid in ids:
        assert js.inproc("verdict", "revoke", vid, "--by", "bob", "--why", "undo") == 0
    assert js.inproc("verdict", "revoke", ids[0]) == 2  # already revoked
    capsys.readouterr()
    assert js.inproc("verdict", "list") == 0
    assert capsys.readouterr().out.strip() == ""
    assert js.inproc("reattribute", "--quiet") == 0
    rec = js.results()
    assert rec.manifest["verdicts"] == {"applied": [], "not_applied": []}
    assert rec.evidence.filter(pl.col("kind") == "analyst_verdict").height == 0
    acc = {r["account_id"]: r for r in rec.assignments.iter_rows(named=True)}
    assert acc[t["legit"]]["sybil_score"] > 0.05
    assert acc[t["ip_a"]]["fleet_id"] is None
    assert rec.fleets.filter(pl.col("fleet_id") == t["reject_fleet"])["org_id"][0] == t[
        "reject_org"]
    for name in ("assignments", "fleets", "evidence"):  # back to the run before the verdicts
        assert getattr(rec, name).equals(getattr(before, name)), name


def test_verdict_log_is_append_only_and_survives_a_torn_line(tmp_path: Path) -> None:
    log = VerdictStore(tmp_path / "verdicts.jsonl")
    v = log.add(make_verdict("legit", "a1", by="alice", why="checked"))
    with open(log.path, "a") as fh:
        fh.write('{"record": "verdict", "verdict_id": "Vtorn"')  # a crash mid-append
    assert [x.verdict_id for x in log.active()] == [v.verdict_id]
    log.revoke(v.verdict_id, by="bob")
    assert log.active() == [] and len(log.all()) == 1


# --- crash safety -------------------------------------------------------------------


@pytest.fixture(scope="module")
def day43(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample's world observed a day earlier: another snapshot, so a load really loads."""
    from fixtures.worldgen import generate_world

    root = tmp_path_factory.mktemp("day43")
    generate_world(root, accounts=5000, seed=7, days=44, as_of_day=43)
    return root / "snapshot"


def _state(js: JobStore) -> tuple[str, list[str], pl.DataFrame]:
    """The current run (read whole), every listed run read back whole, and, on the
    embedded store, the graph served is the one the current run was computed from."""
    with js.open() as s:
        rec = s.read_results()
        assert rec is not None
        for m in s.list_runs():
            whole = s.read_results(m["run_id"])
            assert whole is not None and whole.run_id == m["run_id"]
            assert whole.assignments.height == whole.manifest["counts"]["accounts"]
            assert whole.fleets.height == whole.manifest["counts"]["fleets"]
        if isinstance(s, EmbeddedStore):
            assert s.graph_digest() == rec.manifest["input"]["digest"]
            assert s.read_graph().accounts.height == rec.assignments.height
        return rec.run_id, sorted(m["run_id"] for m in s.list_runs()), rec.fleets


def _killed(js: JobStore, args: list[str], *, at: str | None = None, during: str | None = None,
            delay: float = 0.5) -> None:
    """Run the job and SIGKILL it: at its own kill point ``at`` (see
    ``attribution.job.killpoints.checkpoint``), or from outside ``delay`` seconds after its
    progress line says stage ``during`` began (no cooperation from the job)."""
    proc = js.popen(*args, **{KILL_AT: at or ""})
    if during is not None:
        assert proc.stderr is not None
        for line in proc.stderr:
            if line.rstrip().endswith(f"] {during} ..."):
                time.sleep(delay)
                proc.send_signal(signal.SIGKILL)
                break
    assert proc.wait(timeout=300) == -signal.SIGKILL, (args, at, during)


def _leftovers(js: JobStore) -> list[str]:
    """What a killed job left that a finished one would not have."""
    if js.root is not None:
        dotted = [str(p.relative_to(js.root)) for p in js.root.rglob(".*") if p.name != ".lock"]
        current = js.results()
        kept = [current.run_id, current.manifest["previous_run_id"]]
        used = {(js.root / "runs" / str(r) / "graph_id").read_text() for r in kept}
        return dotted + sorted({p.name for p in (js.root / "graphs").iterdir()} - used)
    with js.open() as s:
        rows = s._read(  # type: ignore[attr-defined]
            "MATCH (r:Run) WHERE NOT r.complete RETURN r.run_id AS run_id "
            "UNION MATCH (n) WHERE (n:Fleet OR n:Evidence) "
            "AND NOT EXISTS { MATCH (r:Run {run_id: n.run_id}) WHERE r.complete } "
            "RETURN DISTINCT n.run_id AS run_id")
    return [str(r["run_id"]) for r in rows]


def test_kill_9_at_any_stage_leaves_the_current_run_intact(js: JobStore, day43: Path) -> None:
    before = _state(js)
    neo4j = js.kind == "neo4j"
    job = ["reattribute"]
    load = [*job, "--snapshot", str(day43)]
    # Kills from outside come right after the job's own line for the stage (no race
    # with a fast machine finishing first), or 2 s into a Neo4j load (~10 s for 5k).
    kills: list[tuple[list[str], dict[str, Any]]] = [
        (job, {"at": "links"}),                           # computing links
        (job, {"during": "links", "delay": 0.0}),         # the same, from outside
        (job, {"at": "write"}),                           # everything computed, nothing written
        # Neo4j: fleets and evidence written, assignments not
        *([(job, {"at": "write:evidence"})] if neo4j else []),
        (job, {"at": "write:rows"}),                      # every row stored, not current yet
        (load, {"during": "load", "delay": 2.0 if neo4j else 0.0}),  # half a graph stored
        # The new graph stored whole (on Neo4j: the old one swept away), no run made from it.
        (load, {"at": "read_graph"}),
    ]
    for args, how in kills:
        _killed(js, args, **how)
        cur, runs, fleets = _state(js)
        assert cur == before[0] and runs == before[1], how
        assert fleets.equals(before[2])
        with JobLock(js.lock):  # the dead job's lock is gone
            pass
        if neo4j and how.get("during") == "load":  # the graph is unfinished: says so
            done = js.cli(*job, "--quiet")
            assert done.returncode == 2 and "load was interrupted" in done.stderr, done.stderr
    # The next night's job recovers and succeeds.
    done = js.cli(*load, "--quiet")
    assert done.returncode == 0, done.stderr
    cur, runs, _ = _state(js)
    assert cur != before[0] and runs == sorted([*before[1], cur])
    assert _leftovers(js) == []
    # Killed after the switch: the new run is current and whole; the next job tidies up.
    _killed(js, job, at="write:current")
    after, runs_after, _ = _state(js)
    assert after != cur and runs_after == sorted([*runs, after])
    done = js.cli(*job, "--quiet")
    assert done.returncode == 0, done.stderr
    assert _state(js)[0] not in (cur, after) and _leftovers(js) == []


def test_a_loaded_graph_is_served_only_with_its_run(tmp_path: Path) -> None:
    """Embedded store: CURRENT commits the graph with the run (a load is invisible until a
    run made from it is current), and recover() removes what never became current."""
    from tests.support.store_world import tiny_graph, tiny_record

    first, second = tiny_graph(), tiny_graph(extra_account=True)
    writer = EmbeddedStore(tmp_path / "s")
    writer.load_snapshot(first, digest="d1")
    writer.write_run(tiny_record("run-1"))
    # A second job loads a bigger graph and dies before its run is current.
    killed = EmbeddedStore(tmp_path / "s")
    killed.load_snapshot(second, digest="d2")
    assert killed.read_graph().accounts.height == 13  # the loading job reads its own graph
    reader = EmbeddedStore(tmp_path / "s")
    assert reader.graph_digest() == "d1" and reader.read_graph().accounts.height == 12
    record = tiny_record("run-2")
    record.manifest["previous_run_id"] = "run-1"
    (tmp_path / "s" / "runs" / "run-2").mkdir()  # as if killed at write:rows
    (tmp_path / "s" / "runs" / "run-2" / "manifest.json").write_text(json.dumps(record.manifest))
    (tmp_path / "s" / "runs" / "run-2" / ".pending").touch()
    assert [m["run_id"] for m in reader.list_runs()] == ["run-1"]
    assert reader.read_results("run-2") is None
    notes = recover(EmbeddedStore(tmp_path / "s"))
    assert any("never made current" in n for n in notes)
    assert any("removed graph" in n for n in notes)
    assert len(list((tmp_path / "s" / "graphs").iterdir())) == 1
    assert reader.graph_digest() == "d1"
    # The next job: its graph becomes the store's with its run, in one step.
    job = EmbeddedStore(tmp_path / "s")
    job.load_snapshot(second, digest="d2")
    record = tiny_record("run-3")
    record.manifest["previous_run_id"] = "run-1"
    job.write_run(record)
    assert reader.graph_digest() == "d2" and reader.read_graph().accounts.height == 13
    assert [m["run_id"] for m in reader.list_runs()] == ["run-1", "run-3"]
    kept = {(tmp_path / "s" / "runs" / r / "graph_id").read_text() for r in ("run-1", "run-3")}
    assert {p.name for p in (tmp_path / "s" / "graphs").iterdir()} == kept  # current, previous


def test_recover_puts_back_a_graph_left_mid_swap(tmp_path: Path) -> None:
    """A store written before graphs were versioned (one graph/ folder swapped in place)."""
    store = EmbeddedStore(tmp_path / "s")
    (tmp_path / "s" / ".graph.old").mkdir()
    (tmp_path / "s" / ".graph.old" / "graph.json").write_text('{"digest": "d0"}')
    (tmp_path / "s" / ".graph.tmpx").mkdir()
    (tmp_path / "s" / "runs" / ".run.tmpy").mkdir()
    notes = recover(store)
    assert (tmp_path / "s" / "graph" / "graph.json").is_file()
    assert not (tmp_path / "s" / ".graph.tmpx").exists()
    assert not (tmp_path / "s" / "runs" / ".run.tmpy").exists()
    assert len(notes) == 3
    assert store.graph_digest() == "d0"  # served until a run with a versioned graph is current


# --- the README's scripted week -------------------------------------------------------


def test_nightly_example_prints_each_nights_run_and_diff(tmp_path: Path) -> None:
    """``examples/nightly.sh``, shortened to two nights of a small world."""
    env = {**os.environ, "ACCOUNTS": "1000", "NIGHTS": "2", "PYTHON": sys.executable,
           "ATTRIBUTION": str(Path(sys.executable).with_name("attribution"))}
    done = subprocess.run(["bash", str(ROOT / "examples" / "nightly.sh"), str(tmp_path / "week")],
                          capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("night 45: reattribute ok run=") and "created=-" in lines[0]
    assert lines[1].startswith("night 46: reattribute ok run=")
    assert lines[2].startswith("  diff: created=") and "accounts_joined_fleet=" in lines[2]
    assert lines[3] == "history:" and len(lines) == 6 and lines[5].startswith("* run-")


def _out_state(out: Path) -> str:
    """The run id of the run directory ``out``, which must be whole (every file readable)."""
    from attribution.contracts.results import read_tables

    record = read_tables(out)
    assert record.assignments.height == record.manifest["counts"]["accounts"]
    assert record.fleets.height == record.manifest["counts"]["fleets"]
    return record.run_id


def test_kill_9_in_the_ordered_commit_leaves_a_whole_run_directory(js: JobStore,
                                                                    tmp_path: Path) -> None:
    """The store commits first, then the run directory: killed at each step of the write,
    ``--out`` holds a whole run (the old one until the exchange), and recovery (the next
    job does it under the locks) makes it hold the store's current run, leaving nothing."""
    from attribution.job.rundir import OutDir

    out = tmp_path / "out"
    assert js.inproc("reattribute", "--quiet", "--out", str(out)) == 0
    for at, switched in (("write:staged", False), ("write:rows", False),
                         ("write:current", False), ("write:committed", False),
                         ("write:switched", True)):
        before, current = _out_state(out), js.current()
        assert before == current
        _killed(js, ["reattribute", "--quiet", "--out", str(out)], at=at)
        assert (_out_state(out) != before) is switched, at
        with js.open() as store, OutDir(out, store_location=store.location) as outdir:
            recover(store, outdir)
            assert _out_state(out) == store.current_run_id(), at
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == [], at
