"""The one job path: every run (``attribution run``, ``attribution reattribute``,
``POST /runs``) goes through ``run_job``: check the paths, lock, recover, apply
verdicts, run, switch.

A scheduler (cron, a systemd timer) runs ``attribution reattribute`` nightly.
Two jobs on one store would race for the graph and the CURRENT pointer, so
each job holds an exclusive ``flock`` on a lock file next to the store
(``<store>/.lock``; ``$ATTRIBUTION_HOME/neo4j-job.lock`` for Neo4j), and a run
that writes a run directory also holds that directory's lock
(``attribution.job.rundir``). The kernel drops the locks when the process dies,
even by ``kill -9``, so a crash never leaves a stale lock behind.

Crash safety is one ordered commit: the store first (the embedded store's
CURRENT rename, which also commits the graph the run was computed from; the
Neo4j store's last transaction), then the run directory (a journaled exchange,
``attribution.job.rundir``). A job killed at any point leaves the previous current
run as it was, and served; the next job tidies up what a killed predecessor
left (``Store.recover`` and ``OutDir.recover``) under the locks before it
starts. ``attribution.job.killpoints.checkpoint`` names the points the crash tests
kill a job at.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from attribution.errors import UsageError
from attribution.job.killpoints import checkpoint
from attribution.job.locks import FileLock, JobLocked
from attribution.job.progress import Stages
from attribution.job.rundir import OutDir, check_out
from attribution.store import Store, run_ids

if TYPE_CHECKING:
    from attribution.contracts.results import RunRecord

__all__ = ["EXIT_LOCKED", "JobLock", "JobLocked", "JobResult", "reattribute",
           "recover", "run_job", "summary_line"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_LOCKED = 75  # EX_TEMPFAIL: another job holds the store; try again later


class JobLock(FileLock):
    """A store's job lock: refused with ``JobLocked`` (exit 75 for the batch job)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, busy=f"another job holds {path}", error=JobLocked)


def recover(store: Store, out: OutDir | None = None) -> list[str]:
    """Undo what a killed job left (call under the locks); one note per fix.

    The embedded store removes temporary directories, runs never made current and
    graphs no kept run uses; the Neo4j store drops incomplete runs. Then the run
    directory ``out`` finishes a switch its store committed or undoes one it did not.
    """
    notes = store.recover()
    if out is not None:
        committed = run_ids(store)
        notes += out.recover(lambda run_id: run_id in committed)
    return notes


@dataclass(frozen=True)
class JobResult:
    """What the summary lines report."""

    record: RunRecord
    seconds: float
    out: Path | None

    @property
    def run_id(self) -> str:
        return self.record.run_id

    @property
    def fleets(self) -> int:
        return int(self.record.manifest["counts"]["fleets"])

    @property
    def attributed(self) -> int:
        return int(self.record.manifest["counts"]["attributed_fleets"])

    @property
    def diff(self) -> dict[str, int] | None:
        diff = self.record.diff
        return {k: int(v) for k, v in diff["counts"].items()} if diff else None

    @property
    def verdicts(self) -> int:
        return len(self.record.manifest.get("verdicts", {}).get("applied", []))


def summary_line(result: JobResult) -> str:
    """One line a scheduler can log (key=value, stable order)."""
    d = result.diff or {}
    parts = [
        f"run={result.run_id}",
        f"fleets={result.fleets}",
        f"attributed={result.attributed}",
        *(f"{k}={d.get(k, 0) if result.diff is not None else '-'}"
          for k in ("created", "dissolved", "merged", "split")),
        f"verdicts={result.verdicts}",
        f"seconds={result.seconds:.1f}",
    ]
    return "reattribute ok " + " ".join(parts)


def run_job(
    store: Store,
    *,
    home: Path,
    snapshot: Path | None = None,
    out: Path | None = None,
    previous: Path | None = None,
    keep_fleet_ids: bool = False,
    max_rejected: float = 0.01,
    stages: Stages | None = None,
) -> JobResult:
    """One run against ``store``, the only way any surface starts one.

    Every path is checked before any work (``UsageError``); then, holding the
    store's job lock and the ``out`` directory's lock, what killed predecessors
    left is tidied up, the store's active verdicts are read and the pipeline
    runs over ``snapshot`` (loaded first) or over the store's graph. The
    previous run (stable fleet ids, diff) is the ``previous`` run directory, or
    with ``keep_fleet_ids`` the store's current run, else none.
    """
    from attribution.contracts.settings import RunParams
    from attribution.contracts.verdicts import VerdictStore
    from attribution.job.pipeline import run, run_stored

    started = time.perf_counter()
    stages = stages or JobStages(quiet=True)
    if snapshot is not None and not Path(snapshot).is_dir():
        raise UsageError(f"snapshot {snapshot} is not a directory")
    if not 0.0 <= max_rejected <= 1.0:
        raise UsageError("--max-rejected must be between 0 and 1")
    earlier = read_previous(previous) if previous is not None else None
    target = check_out(out, protected={"the snapshot": snapshot, "the store": store.path}) \
        if out is not None else None
    with ExitStack() as held:
        held.enter_context(JobLock(store.job_lock_path(home)))
        outdir = held.enter_context(OutDir(target, store_location=store.location)) \
            if target is not None else None
        for note in recover(store, outdir):
            stages.say(f"recovery: {note}")
        checkpoint("locked")
        if earlier is None and keep_fleet_ids:
            earlier = store.read_results()
        verdicts = VerdictStore(store.verdict_log_path(home)).applicable()
        params = RunParams(max_rejected_share=max_rejected)
        if snapshot is not None:
            record = run(snapshot, outdir, store, params=params, stages=stages,
                         verdicts=verdicts, previous=earlier)
        else:
            record = run_stored(store, outdir, params=params, stages=stages, verdicts=verdicts,
                                previous=earlier)
        checkpoint("written")
    return JobResult(record=record, seconds=time.perf_counter() - started, out=target)


def read_previous(path: Path) -> RunRecord:
    """An earlier run directory given as ``--previous``, or ``UsageError`` (bad input)."""
    import polars as pl

    from attribution.contracts.results import read_tables
    from attribution.job.rundir import is_run_dir

    if not is_run_dir(Path(path)):
        raise UsageError(f"--previous {path} is not a run directory (no readable manifest.json "
                         "of a run)")
    try:
        record = read_tables(Path(path))
        record.conformed()  # the contract's dtypes, as the diff reads them
    except (OSError, ValueError, pl.exceptions.PolarsError) as exc:
        raise UsageError(f"--previous {path} is not a whole run directory: "
                         f"{type(exc).__name__}") from None
    # What keeping fleet ids and the diff read from the earlier run.
    for name, frame, needed in (("assignments", record.assignments, ("account_id", "fleet_id")),
                                ("fleets", record.fleets, ("fleet_id",))):
        missing = [c for c in needed if c not in frame.columns]
        if missing:
            raise UsageError(f"--previous {path}: {name}.parquet lacks {', '.join(missing)}")
    return record


def reattribute(
    store: Store,
    *,
    home: Path,
    snapshot: Path | None = None,
    out: Path | None = None,
    quiet: bool = True,
    max_rejected: float = 0.01,
) -> JobResult:
    """The batch job: ``run_job`` with the store's current run as the previous run.

    Without ``snapshot`` the store's graph is re-read; with it the snapshot is
    loaded first.
    """
    return run_job(store, home=home, snapshot=snapshot, out=out, keep_fleet_ids=True,
                   max_rejected=max_rejected, stages=JobStages(quiet=quiet))


class JobStages(Stages):
    """Stages with a kill point at the start of each (see ``checkpoint``)."""

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        checkpoint(name)
        with super().stage(name):
            yield
