"""The batch re-attribution job: lock, verdicts, run history, crash safety, exit statuses.

Embedded store only (the Neo4j store shares the code paths above the Store
protocol; its own lock file and verdict path are covered by unit tests here).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from attribution.attribute import mask
from attribution.cli import main
from attribution.jobs import EXIT_LOCKED, JobLock, JobLocked, lock_path, recover
from attribution.store.embedded import EmbeddedStore
from attribution.verdicts import VerdictStore, make_verdict, verdict_path

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "fixtures" / "sample" / "snapshot"
KILL_ACCOUNTS = int(os.environ.get("BATCH_KILL_ACCOUNTS", "50000"))


def cli(*args: str, env: dict[str, str] | None = None, wait: bool = True
        ) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, **(env or {})}
    full.pop("NEO4J_URI", None)
    return subprocess.run([sys.executable, "-m", "attribution.cli", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=300, env=full)


def inproc(*args: str) -> int:
    """The CLI in this process (no interpreter start-up): for the many quick runs."""
    return main(list(args))


@pytest.fixture(scope="module")
def base_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store holding the sample world's graph and one current run."""
    store = tmp_path_factory.mktemp("base") / "store"
    assert inproc("reattribute", "--store", str(store), "--snapshot", str(SAMPLE), "--quiet") == 0
    return store


@pytest.fixture
def store(base_store: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "store"
    shutil.copytree(base_store, copy)
    return copy


def current(store: Path) -> str:
    return (store / "CURRENT").read_text().strip()


def results(store: Path):  # type: ignore[no-untyped-def]
    record = EmbeddedStore(store).read_results()
    assert record is not None
    return record


# --- the job ------------------------------------------------------------------------


def test_reattribute_reuses_stored_graph_and_previous_run(store: Path,
                                                          capsys: pytest.CaptureFixture[str]
                                                          ) -> None:
    before = results(store)
    assert inproc("reattribute", "--store", str(store), "--quiet") == 0
    line = capsys.readouterr().out.strip()
    assert len(line.splitlines()) == 1
    assert line.startswith("reattribute ok run=") and "created=0" in line and "seconds=" in line
    after = results(store)
    assert after.run_id != before.run_id == after.manifest["previous_run_id"]
    assert after.manifest["input"]["path"].startswith("store:")
    run_dir = store / "runs" / after.run_id
    diff = json.loads((run_dir / "diff.json").read_text())
    assert diff["base"] == before.run_id and diff["counts"]["created"] == 0
    assert after.manifest["diff_counts"]["dissolved"] == 0
    # Same input twice: identical results apart from run ids and timestamps.
    assert after.assignments.equals(before.assignments)
    assert after.fleets.equals(before.fleets)
    assert after.evidence.equals(before.evidence)


def test_same_snapshot_twice_gives_identical_run_directories(tmp_path: Path) -> None:
    for name in ("a", "b"):
        assert inproc("reattribute", "--store", str(tmp_path / f"s{name}"), "--snapshot",
                      str(SAMPLE), "--out", str(tmp_path / name), "--quiet") == 0
    for table in ("assignments.parquet", "fleets.parquet", "evidence.parquet"):
        assert pl.read_parquet(tmp_path / "a" / table).equals(
            pl.read_parquet(tmp_path / "b" / table)), table


def test_runs_history_and_stored_diff(store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    first = current(store)
    assert inproc("reattribute", "--store", str(store), "--quiet") == 0
    capsys.readouterr()
    assert inproc("runs", "--store", str(store)) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[1].startswith("* ") and first in lines[0]
    assert "engine=" in lines[1] and f"previous={first}" in lines[1]
    assert inproc("diff", "--store", str(store)) == 0
    diff = json.loads(capsys.readouterr().out)
    assert diff["base"] == first and diff["head"] == current(store)


# --- exit statuses and the lock -----------------------------------------------------


def test_exit_statuses(store: Path, tmp_path: Path) -> None:
    assert inproc("reattribute", "--store", str(tmp_path / "empty"), "--quiet") == 2
    assert inproc("reattribute", "--store", str(store), "--snapshot",
                  str(tmp_path / "missing")) == 2
    assert inproc("reattribute", "--bogus") == 2
    assert inproc("verdict", "confirm", "F0000000000", "--org", "o", "--by", "a", "--why", "x",
                  "--store", str(store)) == 2  # no such fleet in the current run
    assert inproc("verdict", "hide", "planet", "x", "--by", "a", "--why", "x",
                  "--store", str(store)) == 2
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "runs").write_text("not a directory")
    assert inproc("reattribute", "--store", str(broken), "--snapshot", str(SAMPLE),
                  "--quiet") == 1


def test_second_job_is_refused_while_one_holds_the_lock(store: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from pathlib import Path; from attribution.jobs import JobLock\n"
         f"lock = JobLock(Path({str(store / '.lock')!r})).acquire()\n"
         "print('held', flush=True); time.sleep(60)"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        before = current(store)
        started = time.monotonic()
        for args in (("reattribute", "--store", str(store), "--quiet"),
                     ("run", str(SAMPLE), "--out", str(store.parent / "r"), "--store",
                      str(store), "--quiet")):
            done = cli(*args)
            assert done.returncode == EXIT_LOCKED, done.stderr
            assert len(done.stderr.strip().splitlines()) == 1
            assert "another job holds" in done.stderr and f"pid {holder.pid}" in done.stderr
        assert time.monotonic() - started < 30  # refused at once, not after waiting
        assert current(store) == before and not (store.parent / "r").exists()
    finally:
        holder.send_signal(signal.SIGKILL)  # kill -9: the kernel drops the lock
        holder.wait()
    assert inproc("reattribute", "--store", str(store), "--quiet") == 0


def test_lock_is_exclusive_within_one_process_too(tmp_path: Path) -> None:
    with JobLock(tmp_path / ".lock"), pytest.raises(JobLocked):
        JobLock(tmp_path / ".lock").acquire()
    JobLock(tmp_path / ".lock").acquire().release()


def test_neo4j_lock_and_verdicts_live_in_home(tmp_path: Path) -> None:
    class FakeNeo4j:
        name = "neo4j"

    assert lock_path(FakeNeo4j(), tmp_path) == tmp_path / "neo4j-job.lock"  # type: ignore[arg-type]
    assert verdict_path(FakeNeo4j(), tmp_path) == tmp_path / "verdicts.jsonl"
    emb = EmbeddedStore(tmp_path / "s")
    assert lock_path(emb, tmp_path) == tmp_path / "s" / ".lock"
    assert verdict_path(emb, tmp_path) == tmp_path / "s" / "verdicts.jsonl"


# --- verdicts -----------------------------------------------------------------------


def _targets(store: Path) -> dict[str, str]:
    """Subjects for each verdict kind, found in the sample's current run."""
    rec = results(store)
    graph = EmbeddedStore(store).read_graph()
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
    ip_accounts = graph.uses.filter((pl.col("kind") == "ip") & (pl.col("entity_id") == ip)
                                    )["account_id"].to_list()
    return {"reject_fleet": reject_fleet["fleet_id"], "reject_org": reject_fleet["org_id"],
            "confirm_fleet": unattributed["fleet_id"], "confirm_org": confirm_org,
            "legit": accused["account_id"], "legit_fleet": accused["fleet_id"],
            "card": card, "pair": pair, "ip": ip, "ip_a": ip_accounts[0], "ip_b": ip_accounts[1]}


def _verdict_rows(rec, fleet: str) -> pl.DataFrame:  # type: ignore[no-untyped-def]
    return rec.evidence.filter((pl.col("fleet_id") == fleet)
                               & (pl.col("kind") == "analyst_verdict"))


def test_every_verdict_kind_changes_the_next_runs_and_revoke_undoes_it(
        store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    t = _targets(store)
    before = results(store)
    s = str(store)
    common = ("--by", "alice", "--store", s)
    assert inproc("verdict", "confirm", t["confirm_fleet"], "--org", t["confirm_org"],
                  "--why", "matches case 1432", *common) == 0
    assert inproc("verdict", "reject", t["reject_fleet"], "--org", t["reject_org"],
                  "--why", "registry entry was stale", *common) == 0
    assert inproc("verdict", "legit", t["legit"], "--why", "verified by phone", *common) == 0
    assert inproc("verdict", "hide", "payment", t["card"], "--why", "company card pool",
                  *common) == 0
    assert inproc("verdict", "pin", "ip", t["ip"], "--why", "same office, same person",
                  *common) == 0
    capsys.readouterr()
    assert inproc("verdict", "list", "--store", s) == 0
    listed = capsys.readouterr().out.strip().splitlines()
    assert len(listed) == 5 and all("by=alice" in line for line in listed)
    ids = [line.split()[0] for line in listed]
    records = [json.loads(x) for x in (store / "verdicts.jsonl").read_text().splitlines()]
    assert all(r["by"] == "alice" and r["at"].endswith("+00:00") and r["why"] for r in records)

    for _ in range(2):  # verdicts stick: applied in every later run, not just the next
        assert inproc("reattribute", "--store", s, "--quiet") == 0
        rec = results(store)
        assert sorted(rec.manifest["verdicts"]["applied"]) == sorted(ids)
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
        assert acc[t["ip_a"]]["fleet_id"] is not None
        pair_now = {acc[a]["fleet_id"] for a in before.assignments.filter(
            pl.col("fleet_id") == t["pair"])["account_id"].to_list()}
        assert pair_now != {t["pair"]}
        masked = mask("payment", t["card"])
        other = rec.evidence.filter((pl.col("kind") != "analyst_verdict")
                                    & pl.col("detail").str.contains(masked, literal=True))
        assert other.height == 0
        # pin: the two lone accounts sharing the IP are one fleet, with the verdict as evidence
        assert acc[t["ip_a"]]["fleet_id"] == acc[t["ip_b"]]["fleet_id"]
        pinned = _verdict_rows(rec, acc[t["ip_a"]]["fleet_id"])
        assert pinned.filter(pl.col("detail").str.contains("pinned by alice")
                             & (pl.col("weight") == 1.0)).height == 1

    for vid in ids:
        assert inproc("verdict", "revoke", vid, "--by", "bob", "--why", "undo",
                      "--store", s) == 0
    assert inproc("verdict", "revoke", ids[0], "--store", s) == 2  # already revoked
    capsys.readouterr()
    assert inproc("verdict", "list", "--store", s) == 0
    assert capsys.readouterr().out.strip() == ""
    assert inproc("reattribute", "--store", s, "--quiet") == 0
    rec = results(store)
    assert rec.manifest["verdicts"] == {"applied": [], "not_applied": []}
    assert rec.evidence.filter(pl.col("kind") == "analyst_verdict").height == 0
    acc = {r["account_id"]: r for r in rec.assignments.iter_rows(named=True)}
    assert acc[t["legit"]]["sybil_score"] > 0.05
    assert acc[t["ip_a"]]["fleet_id"] is None
    assert rec.fleets.filter(pl.col("fleet_id") == t["reject_fleet"])["org_id"][0] == t[
        "reject_org"]


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
def big_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from fixtures.worldgen import generate_world

    root = tmp_path_factory.mktemp("big")
    generate_world(root / "world", accounts=KILL_ACCOUNTS, seed=3)
    store = root / "store"
    done = cli("reattribute", "--store", str(store), "--snapshot",
               str(root / "world" / "snapshot"), "--quiet")
    assert done.returncode == 0, done.stderr
    return store, root / "world" / "snapshot"


def _state(store: Path) -> tuple[str, list[str], pl.DataFrame]:
    s = EmbeddedStore(store)
    rec = s.read_results()
    assert rec is not None
    for m in s.list_runs():  # every listed run reads back whole
        whole = s.read_results(m["run_id"])
        assert whole is not None and whole.assignments.height > 0
    return current(store), sorted(m["run_id"] for m in s.list_runs()), rec.fleets


def _killed(args: list[str], *, at: str | None = None, during: str | None = None) -> None:
    """Run the job and SIGKILL it: by its own kill point (``at``), or from outside half a
    second after its progress line says stage ``during`` began (no cooperation from the job)."""
    env = {**os.environ, "ATTRIBUTION_KILL_AT": at or ""}
    env.pop("NEO4J_URI", None)
    proc = subprocess.Popen([sys.executable, "-m", "attribution.cli", *args], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if during is not None:
        assert proc.stderr is not None
        for line in proc.stderr:
            if line.rstrip().endswith(f"] {during} ..."):
                time.sleep(0.5)
                proc.send_signal(signal.SIGKILL)
                break
    assert proc.wait(timeout=300) == -signal.SIGKILL


def test_kill_9_at_any_stage_leaves_the_current_run_intact(big_store: tuple[Path, Path]) -> None:
    store, snapshot = big_store
    before = _state(store)
    job = ["reattribute", "--store", str(store)]
    kills = [
        (job, {"at": "links"}),                       # computing links
        (job, {"during": "links"}),                   # in the middle of links, from outside
        (job, {"at": "write"}),                       # everything computed, nothing written
        ([*job, "--snapshot", str(snapshot)], {"at": "read_graph"}),  # graph swapped, run not
    ]
    for args, how in kills:
        _killed(args, **how)  # type: ignore[arg-type]
        cur, runs, fleets = _state(store)
        assert cur == before[0] and runs == before[1]
        assert fleets.equals(before[2])
        with JobLock(store / ".lock"):  # the dead job's lock is gone
            pass
    done = cli(*job)
    assert done.returncode == 0, done.stderr
    cur, runs, _ = _state(store)
    assert cur != before[0] and len(runs) == len(before[1]) + 1
    assert not [p for p in store.rglob(".*") if p.name not in (".lock",)]


def test_recover_puts_back_a_graph_left_mid_swap(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path / "s")
    (tmp_path / "s" / ".graph.old").mkdir()
    (tmp_path / "s" / ".graph.old" / "graph.json").write_text("{}")
    (tmp_path / "s" / ".graph.tmpx").mkdir()
    (tmp_path / "s" / "runs" / ".run.tmpy").mkdir()
    notes = recover(store)
    assert (tmp_path / "s" / "graph" / "graph.json").is_file()
    assert not (tmp_path / "s" / ".graph.tmpx").exists()
    assert not (tmp_path / "s" / "runs" / ".run.tmpy").exists()
    assert len(notes) == 3


# --- the same job on Neo4j ----------------------------------------------------------


@pytest.mark.neo4j
def test_job_on_neo4j(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    server = request.getfixturevalue("neo4j_server")
    server.clear()
    env = {**os.environ, **server.env(), "ATTRIBUTION_HOME": str(tmp_path)}

    def neo(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "attribution.cli", *args],
                              capture_output=True, text=True, cwd=ROOT, timeout=300, env=env)

    done = neo("reattribute", "--snapshot", str(SAMPLE), "--quiet")
    assert done.returncode == 0, done.stderr
    first = done.stdout.split("run=")[1].split()[0]
    acc = pl.read_parquet(SAMPLE / "accounts.parquet")["account_id"].sort()[0] \
        if (SAMPLE / "accounts.parquet").is_file() else None
    if acc is not None:
        done = neo("verdict", "legit", acc, "--by", "alice", "--why", "checked")
        assert done.returncode == 0, done.stderr
        assert (tmp_path / "verdicts.jsonl").is_file()
    with JobLock(tmp_path / "neo4j-job.lock"):
        assert neo("reattribute", "--quiet").returncode == EXIT_LOCKED
    done = neo("reattribute", "--quiet", "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["previous_run_id"] == first and (tmp_path / "out" / "diff.json").is_file()
    assert len(manifest["verdicts"]["applied"]) == (1 if acc is not None else 0)
    runs = neo("runs")
    assert runs.returncode == 0 and len(runs.stdout.strip().splitlines()) == 2
