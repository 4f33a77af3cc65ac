"""``--out``: what a run may replace, the ordered commit with the store, leftovers, locking.

Every refusal happens before any work (exit 2, one line) and leaves the user's
files exactly as they were; a failed run leaves the earlier run directory and
the store's current run as they were.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from attribution.cli import main
from attribution.errors import UsageError
from attribution.job.rundir import OutDir, check_out
from attribution.store.embedded import EmbeddedStore
from tests.support.contract import check_run_dir

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "fixtures" / "sample" / "snapshot"


def cli(*args: str, cwd: Path = ROOT, env: dict[str, str] | None = None
        ) -> subprocess.CompletedProcess[str]:
    """The CLI in a new process: the embedded store and ``./.attribution`` unless told."""
    full = {k: v for k, v in os.environ.items() if k not in ("NEO4J_URI", "ATTRIBUTION_HOME")}
    return subprocess.run([sys.executable, "-m", "attribution.cli", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=300, env={**full, **(env or {})})


def tree(path: Path) -> dict[str, bytes]:
    """Every file under ``path`` with its bytes: what "left as it was" means."""
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*"))
            if p.is_file()}


@pytest.fixture(scope="module")
def earlier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with the sample's run current, and its run directory."""
    root = tmp_path_factory.mktemp("earlier")
    done = cli("run", str(SAMPLE), "--out", str(root / "run"), "--store", str(root / "store"),
               "--quiet")
    assert done.returncode == 0, done.stderr
    return root


def refused(done: subprocess.CompletedProcess[str], *words: str) -> None:
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "Traceback" not in done.stderr
    for word in words:
        assert word in done.stderr, done.stderr


# --- what --out may name ------------------------------------------------------------


def test_out_holding_the_users_files_is_refused_and_kept(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    (mine / "sub").mkdir(parents=True)
    (mine / "notes.txt").write_text("keep")
    (mine / "sub" / "data.csv").write_text("a,b\n")
    before = tree(mine)
    done = cli("run", str(SAMPLE), "--out", str(mine), "--store", str(tmp_path / "s"))
    refused(done, "not a run directory")
    assert tree(mine) == before
    assert "ingest" not in done.stderr  # refused before any work
    assert not (tmp_path / "s" / "graphs").exists()


def test_out_naming_the_snapshot_the_store_or_their_folder_is_refused(tmp_path: Path) -> None:
    snapshot = tmp_path / "snap"
    snapshot.mkdir()
    for f in SAMPLE.iterdir():
        (snapshot / f.name).write_bytes(f.read_bytes())
    store = tmp_path / "store"
    assert cli("run", str(snapshot), "--out", str(tmp_path / "r"), "--store", str(store),
               "--quiet").returncode == 0
    snap_before, store_before = tree(snapshot), tree(store)
    for out, word in ((snapshot, "the snapshot"), (store, "the store"),
                      (tmp_path, "the snapshot"), (store / "runs", "inside the store")):
        refused(cli("run", str(snapshot), "--out", str(out), "--store", str(store)), word)
    assert tree(snapshot) == snap_before and tree(store) == store_before


def test_out_dot_beside_the_default_store_is_refused(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "keep.txt").write_text("mine")
    assert cli("run", str(SAMPLE), "--out", "r", "--quiet", cwd=work).returncode == 0
    before = tree(work)
    refused(cli("run", str(SAMPLE), "--out", ".", cwd=work), "the store")
    assert tree(work) == before


def test_out_naming_a_file_is_refused_before_work_and_the_file_kept(tmp_path: Path) -> None:
    target = tmp_path / "report.txt"
    target.write_text("mine")
    done = cli("run", str(SAMPLE), "--out", str(target), "--store", str(tmp_path / "s"))
    refused(done, "existing file")
    assert target.read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.txt", "s"]


def test_out_symlink_and_run_directory_with_extra_files_are_refused(earlier: Path,
                                                                    tmp_path: Path) -> None:
    link = tmp_path / "link"
    link.symlink_to(earlier / "run")
    refused(cli("run", str(SAMPLE), "--out", str(link), "--store", str(tmp_path / "s")),
            "symbolic link")
    run = tmp_path / "run"
    run.mkdir()
    for name, data in tree(earlier / "run").items():
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_bytes(data)
    (run / "my-notes.md").write_text("analyst notes")
    refused(cli("run", str(SAMPLE), "--out", str(run), "--store", str(tmp_path / "s")),
            "did not write", "my-notes.md")
    assert (run / "my-notes.md").read_text() == "analyst notes"


def test_an_empty_directory_or_an_earlier_run_directory_is_replaced(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    store = tmp_path / "s"
    assert cli("run", str(SAMPLE), "--out", str(empty), "--store", str(store),
               "--quiet").returncode == 0
    first = json.loads((empty / "manifest.json").read_text())["run_id"]
    assert cli("run", str(SAMPLE), "--out", str(empty), "--store", str(store), "--previous",
               str(empty), "--quiet").returncode == 0
    second = json.loads((empty / "manifest.json").read_text())
    assert second["run_id"] != first and second["previous_run_id"] == first
    assert check_run_dir(empty, SAMPLE) == []
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_an_unwritable_parent_is_a_usage_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                               ) -> None:
    # As root (CI) a chmod stops nothing: ask the check what it would do if it did.
    monkeypatch.setattr(os, "access", lambda *_a, **_k: False)
    with pytest.raises(UsageError, match="cannot be written"):
        check_out(tmp_path / "new" / "run", protected={})


# --- a failed run leaves everything as it was ---------------------------------------


def _copy_store(earlier: Path, tmp_path: Path) -> tuple[Path, Path]:
    import shutil

    shutil.copytree(earlier / "store", tmp_path / "store")
    shutil.copytree(earlier / "run", tmp_path / "run")
    return tmp_path / "store", tmp_path / "run"


@pytest.mark.parametrize("failing", ["store", "directory"])
def test_a_failed_write_leaves_run_directory_and_store_as_they_were(
        earlier: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str) -> None:
    store, run = _copy_store(earlier, tmp_path)
    current = EmbeddedStore(store).current_run_id()
    before = tree(run)

    def boom(*_a: object, **_k: object) -> None:
        raise OSError(28, "No space left on device")

    if failing == "store":  # the store's runs/ cannot be written
        monkeypatch.setattr(EmbeddedStore, "write_run", boom)
    else:  # the run directory cannot be written
        monkeypatch.setattr("attribution.job.rundir.write_run_files", boom)
    monkeypatch.delenv("NEO4J_URI", raising=False)
    assert main(["run", str(SAMPLE), "--out", str(run), "--store", str(store), "--quiet"]) == 1
    assert tree(run) == before
    assert EmbeddedStore(store).current_run_id() == current
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_the_next_run_removes_what_killed_predecessors_left(earlier: Path, tmp_path: Path
                                                           ) -> None:
    store, run = _copy_store(earlier, tmp_path)
    ours = [tmp_path / ".run.k3j9x0q2", tmp_path / ".run.old", tmp_path / ".run.new-run-x"]
    for d in ours:  # an earlier version's temporaries, a half-staged run
        d.mkdir()
        (d / "assignments.parquet").write_bytes(b"half")
    theirs = [tmp_path / ".run.backup", tmp_path / ".run.a1b2c3d4"]
    theirs[0].mkdir()
    (theirs[0] / "x.txt").write_text("the user's")
    theirs[1].mkdir()
    (theirs[1] / "notes.txt").write_text("not ours either")
    done = cli("run", str(SAMPLE), "--out", str(run), "--store", str(store), "--quiet")
    assert done.returncode == 0, done.stderr
    assert not any(d.exists() for d in ours)
    assert all(d.exists() for d in theirs)


def test_a_half_done_switch_is_finished_or_undone_by_its_store(earlier: Path, tmp_path: Path
                                                              ) -> None:
    """The journal says staged: the store decides (committed: finish; not: undo)."""
    from attribution.contracts.results import read_tables

    store_dir, run = _copy_store(earlier, tmp_path)
    store = EmbeddedStore(store_dir)
    record = read_tables(run)
    for committed, expected in ((False, record.run_id), (True, "run-new")):
        staged = record.conformed()
        staged.manifest = {**record.manifest, "run_id": "run-new"}
        with OutDir(run, store_location=store.location) as outdir:
            outdir.stage(staged)  # killed here: journal says staged
        with OutDir(run, store_location=store.location) as outdir:
            notes = outdir.recover(lambda _r, c=committed: c)
        assert json.loads((run / "manifest.json").read_text())["run_id"] == expected, notes
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


# --- two runs, one --out ------------------------------------------------------------


def test_a_run_is_refused_while_another_writes_the_same_out(earlier: Path, tmp_path: Path
                                                           ) -> None:
    _store, run = _copy_store(earlier, tmp_path)
    before = tree(run)
    with OutDir(run, store_location="elsewhere"):
        done = cli("run", str(SAMPLE), "--out", str(run), "--store", str(tmp_path / "other"),
                   "--quiet")
    assert done.returncode == 1 and "another run is writing" in done.stderr, done.stderr
    assert "pid " in done.stderr
    assert tree(run) == before


def test_concurrent_runs_on_two_stores_never_break_the_out_directory(tmp_path: Path) -> None:
    out = tmp_path / "out"
    for _ in range(3):
        procs = [subprocess.Popen(
            [sys.executable, "-m", "attribution.cli", "run", str(SAMPLE), "--out", str(out),
             "--store", str(tmp_path / f"s{i}"), "--quiet"], cwd=ROOT, text=True,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for i in range(2)]
        for p in procs:
            _, err = p.communicate(timeout=300)
            assert p.returncode == 0 or (p.returncode == 1 and "another run is writing" in err), err
        assert check_run_dir(out, SAMPLE) == []
        assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


# --- valid input that is small, and the other exit statuses -------------------------


@pytest.mark.parametrize("rows", [0, 1, 2])
def test_an_empty_or_tiny_world_gives_an_empty_result(tmp_path: Path, rows: int) -> None:
    snap = tmp_path / "snap"
    snap.mkdir()
    lines = ["account_id,created_at,email"] + [
        f"a{i},2026-01-0{i + 1}T00:00:00Z,user{i}@example.test" for i in range(rows)]
    (snap / "accounts.csv").write_text("\n".join(lines) + "\n")
    done = cli("run", str(snap), "--out", str(tmp_path / "r"), "--store", str(tmp_path / "s"),
               "--quiet")
    assert done.returncode == 0, done.stderr
    assert check_run_dir(tmp_path / "r", snap) == []
    assignments = pl.read_parquet(tmp_path / "r" / "assignments.parquet")
    assert assignments.height == rows and assignments["fleet_id"].null_count() == rows
    assert pl.read_parquet(tmp_path / "r" / "fleets.parquet").height == 0


def test_an_http_neo4j_uri_is_a_usage_error(tmp_path: Path) -> None:
    done = cli("run", str(SAMPLE), "--out", str(tmp_path / "r"),
               env={"NEO4J_URI": "http://127.0.0.1:7474"})
    refused(done, "bolt://")
    assert not (tmp_path / "r").exists()


def test_run_on_a_locked_store_exits_1_naming_the_holder(earlier: Path, tmp_path: Path) -> None:
    from attribution.job.jobs import JobLock

    store, _run = _copy_store(earlier, tmp_path)
    with JobLock(store / ".lock"):
        done = cli("run", str(SAMPLE), "--out", str(tmp_path / "r2"), "--store", str(store))
    assert done.returncode == 1 and f"pid {os.getpid()}" in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) <= 2  # the stage line, then the refusal


def test_a_broken_previous_directory_is_bad_input(earlier: Path, tmp_path: Path) -> None:
    bad = tmp_path / "prev"
    bad.mkdir()
    (bad / "manifest.json").write_text("{not json")
    refused(cli("run", str(SAMPLE), "--out", str(tmp_path / "r"), "--previous", str(bad),
                "--store", str(tmp_path / "s")), "--previous")
    half = tmp_path / "half"
    half.mkdir()
    (half / "manifest.json").write_bytes((earlier / "run" / "manifest.json").read_bytes())
    refused(cli("run", str(SAMPLE), "--out", str(tmp_path / "r"), "--previous", str(half),
                "--store", str(tmp_path / "s")), "--previous")
    assert not (tmp_path / "r").exists()


def test_usage_errors_print_one_line(tmp_path: Path) -> None:
    for args in (["run", str(SAMPLE)], ["run"], ["bogus"], ["run", str(SAMPLE), "--out", "x",
                                                          "--max-rejected", "lots"]):
        done = cli(*args)
        assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_a_switch_killed_while_rewriting_the_manifest_leaves_no_stray_file(
        earlier: Path, tmp_path: Path) -> None:
    from attribution.contracts.results import read_tables

    _store_dir, run = _copy_store(earlier, tmp_path)
    record = read_tables(run).conformed()
    record.manifest = {**record.manifest, "run_id": "run-new"}
    with OutDir(run, store_location="s") as outdir:
        outdir.stage(record)
        (outdir.staged("run-new") / ".manifest.json.tmp").write_text("{half")  # killed here
        outdir._write_journal("run-new", "committed")
    with OutDir(run, store_location="s") as outdir:
        outdir.recover(lambda _r: True)
    assert json.loads((run / "manifest.json").read_text())["run_id"] == "run-new"
    assert sorted(p.name for p in run.iterdir()) == sorted(p.name for p in (earlier / "run")
                                                           .iterdir())
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
