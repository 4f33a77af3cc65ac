"""The batch re-attribution job: one locked, crash-safe run against a store.

A scheduler (cron, a systemd timer) runs ``attribution reattribute`` nightly.
Two jobs on one store would race for the graph and the CURRENT pointer, so
each job holds an exclusive ``flock`` on a lock file next to the store
(``<store>/.lock``; ``$ATTRIBUTION_HOME/neo4j-job.lock`` for Neo4j). The
kernel drops the lock when the process dies, even by ``kill -9``, so a crash
never leaves a stale lock behind.

Crash safety comes from the store: a run becomes current in one step (the
embedded store's CURRENT rename, which also commits the graph the run was
computed from; the Neo4j store's last transaction), so a job killed at any
point leaves the previous current run as it was, and served. The job only
tidies up what a killed predecessor left (``Store.recover``: temporary
directories, runs never made current, unused graphs) before it starts, under
the lock. ``attribution.progress.checkpoint`` names the points the crash
tests kill a job at.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO

from attribution.progress import Stages, checkpoint
from attribution.store import Store

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_LOCKED = 75  # EX_TEMPFAIL: another job holds the store; try again later


class JobLocked(RuntimeError):
    """Another job holds this store's lock: exit status 75."""


class JobLock:
    """An exclusive, non-blocking ``flock`` held for the life of one job."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._fh: IO[str] | None = None

    def acquire(self) -> JobLock:
        """Take the lock or raise ``JobLocked`` at once (never waits)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fh = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 (held until release)
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read_holder(fh)
            fh.close()
            if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise JobLocked(f"another job holds {self.path}{holder}; try again later") \
                    from None
            raise
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps({"pid": os.getpid(), "since": time.strftime(
            "%Y-%m-%dT%H:%M:%SZ", time.gmtime())}) + "\n")
        fh.flush()
        self._fh = fh
        return self

    def release(self) -> None:
        if self._fh is not None:
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None

    def __enter__(self) -> JobLock:
        return self.acquire()

    def __exit__(self, typ: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


def _read_holder(fh: IO[str]) -> str:
    """`` (pid N since T)`` from the lock file, for the refusal message."""
    try:
        fh.seek(0)
        info = json.loads(fh.read() or "{}")
        return f" (pid {info['pid']} since {info['since']})"
    except (ValueError, KeyError, OSError):
        return ""


def lock_path(store: Store, home: Path) -> Path:
    """The job lock of a store: beside an embedded store, in ``home`` for Neo4j."""
    root = getattr(store, "root", None)
    if store.name == "embedded" and root is not None:
        return Path(root) / ".lock"
    return Path(home) / "neo4j-job.lock"


def recover(store: Store) -> list[str]:
    """Undo what a killed job left in the store (call under the lock); one note per fix.

    The embedded store removes temporary directories, runs never made current and
    graphs no kept run uses; the Neo4j store drops incomplete runs.
    """
    return store.recover()


@dataclass(frozen=True)
class JobResult:
    """What the summary line reports."""

    run_id: str
    fleets: int
    attributed: int
    diff: dict[str, int] | None
    seconds: float
    out: Path | None
    verdicts: int


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


def reattribute(
    store: Store,
    *,
    home: Path,
    snapshot: Path | None = None,
    out: Path | None = None,
    quiet: bool = True,
    max_rejected: float = 0.01,
) -> JobResult:
    """Re-run the attribution under the store's job lock.

    Without ``snapshot`` the store's graph is re-read; with it the snapshot is
    loaded first. The store's current run is the previous run (stable fleet
    ids, diff), and the store's active verdicts are applied.
    """
    from attribution.pipeline import run, run_stored
    from attribution.settings import RunParams
    from attribution.verdicts import VerdictStore, verdict_path

    started = time.perf_counter()
    with JobLock(lock_path(store, home)):
        stages = JobStages(quiet=quiet)
        for note in recover(store):
            stages.say(f"recovery: {note}")
        checkpoint("locked")
        previous = store.read_results()
        verdicts = VerdictStore(verdict_path(store, home)).active()
        params = RunParams(max_rejected_share=max_rejected)
        if snapshot is not None:
            outcome = run(snapshot, out, store, params=params, stages=stages,
                          verdicts=verdicts, previous_record=previous)
        else:
            outcome = run_stored(store, out, params=params, stages=stages, verdicts=verdicts,
                                 previous_record=previous)
        record = outcome.record
        checkpoint("written")
    counts = record.manifest["counts"]
    return JobResult(
        run_id=record.run_id,
        fleets=int(counts["fleets"]),
        attributed=int(counts["attributed_fleets"]),
        diff={k: int(v) for k, v in record.diff["counts"].items()} if record.diff else None,
        seconds=time.perf_counter() - started,
        out=out,
        verdicts=len(record.manifest.get("verdicts", {}).get("applied", [])),
    )


class JobStages(Stages):
    """Stages with a kill point at the start of each (see ``checkpoint``)."""

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        checkpoint(name)
        with super().stage(name):
            yield
