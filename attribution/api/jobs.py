"""Re-attribution runs started over the API, one at a time, in a background thread.

A run loads a snapshot into the store and replaces its graph, so two at once
would race: an exclusive file lock (``api-runs/.run.lock``) admits one run at a
time across all server processes, and a second request gets 409. Each job
writes its run directory under ``$ATTRIBUTION_HOME/api-runs/<job_id>/`` and its
status to ``api-runs/<job_id>.json``, so any worker process can answer
``GET /runs/jobs/{id}``. With ``keep_fleet_ids`` the store's current run is
handed to the pipeline as the previous run, so fleet ids stay stable.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import logging
import os
import re
import threading
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal

from attribution.api.masking import scrub_text
from attribution.api.problems import ApiProblem

if TYPE_CHECKING:
    from attribution.api.service import Service

log = logging.getLogger("attribution.api")
JobStatus = Literal["queued", "running", "succeeded", "failed"]
JOB_ID = re.compile(r"^[0-9a-f]{32}$")


@dataclass
class Job:
    """One requested run and what became of it."""

    job_id: str
    snapshot: str
    requested_by: str
    keep_fleet_ids: bool
    max_rejected_share: float
    status: JobStatus = "queued"
    created_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    run_id: str | None = None
    out: str | None = None
    error: str | None = None


class Jobs:
    """The job table and the single worker thread."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @property
    def folder(self) -> Path:
        return self.service.home / "api-runs"

    def get(self, job_id: str) -> Job | None:
        """A job of this process, or one another worker process recorded."""
        if job_id in self._jobs:
            return self._jobs[job_id]
        if not JOB_ID.match(job_id):
            return None
        path = self.folder / f"{job_id}.json"
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        for key in ("created_at", "started_at", "finished_at"):
            if data.get(key):
                data[key] = dt.datetime.fromisoformat(data[key])
        return Job(**data)

    def start(self, snapshot: Path, *, requested_by: str, keep_fleet_ids: bool,
              max_rejected_share: float) -> Job:
        """Queue a run; 409 while another is running (in any server process)."""
        with self._lock:
            self.folder.mkdir(parents=True, exist_ok=True)
            lock = open(self.folder / ".run.lock", "a")  # noqa: SIM115 - held by the worker
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock.close()
                raise ApiProblem(409, "a run is already in progress; try again when it ends"
                                 ) from None
            job = Job(job_id=uuid.uuid4().hex, snapshot=str(snapshot), requested_by=requested_by,
                      keep_fleet_ids=keep_fleet_ids, max_rejected_share=max_rejected_share)
            self._jobs[job.job_id] = job
            self._save(job)
            self._thread = threading.Thread(target=self._work, args=(job, lock), daemon=True,
                                            name=f"attribution-run-{job.job_id[:8]}")
            self._thread.start()
        return job

    def _save(self, job: Job) -> None:
        tmp = self.folder / f".{job.job_id}.json.tmp"
        tmp.write_text(json.dumps(asdict(job), default=str))
        os.replace(tmp, self.folder / f"{job.job_id}.json")

    def wait(self, timeout: float | None = None) -> None:
        """Block until the running job (if any) ends (tests, shutdown)."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def shutdown(self) -> None:
        # The worker is a daemon: a run still going on is abandoned, and the
        # store keeps its previous current run (runs are written atomically).
        return None

    def _work(self, job: Job, lock: IO[str]) -> None:
        try:
            self._run(job)
        finally:
            lock.close()  # releases the run lock

    def _run(self, job: Job) -> None:
        from attribution.job.jobs import run_job

        job.status, job.started_at = "running", dt.datetime.now(dt.UTC)
        self._save(job)
        out = self.folder / job.job_id
        store = None
        try:
            store = self.service.store_factory()
            # The one job path of every run: the store's job lock (no run beside a
            # nightly job), recovery, analyst verdicts; with keep_fleet_ids the
            # store's current run is the previous run.
            result = run_job(store, home=self.service.home, snapshot=Path(job.snapshot),
                             out=out, keep_fleet_ids=job.keep_fleet_ids,
                             max_rejected=job.max_rejected_share)
            job.run_id, job.out, job.status = result.run_id, str(out), "succeeded"
        except BaseException as exc:  # a failed run must never take the server down
            log.warning("run job %s failed: %s", job.job_id, type(exc).__name__, exc_info=True)
            job.status = "failed"
            job.error = scrub_text(f"{type(exc).__name__}: {' '.join(str(exc).split())}")[:500]
        finally:
            job.finished_at = dt.datetime.now(dt.UTC)
            try:
                self._save(job)
            except OSError:
                log.warning("could not record the status of job %s", job.job_id)
            if store is not None:
                try:
                    store.close()
                except Exception:
                    log.warning("closing the job's store failed", exc_info=True)


def job_dict(job: Job) -> dict[str, Any]:
    """A job as the API shows it (no server paths beyond the run directory)."""
    return {
        "job_id": job.job_id, "status": job.status, "requested_by": job.requested_by,
        "created_at": job.created_at, "started_at": job.started_at,
        "finished_at": job.finished_at, "run_id": job.run_id, "error": job.error,
        "keep_fleet_ids": job.keep_fleet_ids,
    }
