"""Runs: the stored runs, the difference between two, and (admin) starting a new one."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi import Path as PathParam

from attribution.api.deps import AdminKey, AuthFirstRoute, ServiceDep, require_read, set_rows
from attribution.api.jobs import job_dict
from attribution.api.models import JobInfo, Page, RunDetail, RunDiff, RunRequest, RunSummary
from attribution.api.problems import ApiProblem, response, responses
from attribution.api.routers.common import Limit, Offset, Order, page
from attribution.api.service import RUN_ID_PATTERN, NoCurrentRun, Service
from attribution.engine.diff import run_diff

router = APIRouter(prefix="/runs", tags=["runs"], responses=responses(401, 403, 422, 503),
                   route_class=AuthFirstRoute)
read = [Depends(require_read)]
RUN_ID_DOC = "a run id (run-<time>-<digest>), never a path"
RunId = Annotated[str | None, Query(min_length=5, max_length=104, pattern=RUN_ID_PATTERN,
                                    description=RUN_ID_DOC)]
OneRun = Annotated[str, PathParam(min_length=5, max_length=104, pattern=RUN_ID_PATTERN,
                             description=RUN_ID_DOC)]
# Job ids are 32 hex digits; the looser pattern keeps an old "nope" a 404, not a 422.
JobId = Annotated[str, PathParam(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
SNAPSHOT_MISSING = "snapshot is not a directory on the server"


def _summary(manifest: dict[str, Any], current: str | None) -> dict[str, Any]:
    source = manifest.get("input")
    counts = manifest.get("counts")
    return {
        "run_id": str(manifest["run_id"]),
        "started_at": _text(manifest.get("started_at")),
        "finished_at": _text(manifest.get("finished_at")),
        "engine_version": _text(manifest.get("engine_version")),
        "previous_run_id": _text(manifest.get("previous_run_id")),
        "current": str(manifest["run_id"]) == current,
        "input_digest": _text(source.get("digest")) if isinstance(source, dict) else None,
        "counts": counts if isinstance(counts, dict) else {},
    }


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _current_id(service: Service) -> str | None:
    try:
        return service.current_view().run_id
    except NoCurrentRun:
        return None


@router.get("", response_model=Page[RunSummary], summary="List runs", dependencies=read)
def list_runs(request: Request, service: ServiceDep, order: Order = "desc", limit: Limit = 50,
              offset: Offset = 0) -> dict[str, Any]:
    """Stored runs, newest first by default; ``current`` marks the one the API serves."""
    runs = service.list_runs()
    current = _current_id(service)
    ordered = runs if order == "asc" else list(reversed(runs))
    items = [_summary(m, current) for m in ordered[offset:offset + limit]]
    set_rows(request, len(items))
    return page(items, total=len(runs), limit=limit, offset=offset)


@router.get("/diff", response_model=RunDiff, summary="Difference between two runs",
            dependencies=read, responses=responses(404))
def diff_runs(
    request: Request,
    service: ServiceDep,
    base: Annotated[RunId, Query(description="earlier run (default: head's previous run)")]
    = None,
    head: Annotated[RunId, Query(description="later run (default: the current run)")] = None,
    threshold: Annotated[float, Query(ge=0, le=1, description="smallest confidence move")]
    = 0.1,
    limit: Limit = 100,
) -> dict[str, Any]:
    """Fleets created/dissolved/grown/shrunk and attributions gained/lost/changed."""
    head_id = head or _current_id(service)
    if head_id is None:
        raise ApiProblem(404, "there is no current run to compare")
    head_rec = service.record(head_id)
    if head_rec is None:
        raise ApiProblem(404, "no such run (head)")
    base_id = base or _previous_of(service, head_rec.manifest)
    if base_id is None:
        raise ApiProblem(404, "the head run has no previous run; give base")
    base_rec = service.record(base_id)
    if base_rec is None:
        raise ApiProblem(404, "no such run (base)")
    result = run_diff(base_rec, head_rec, threshold=threshold, limit=limit)
    set_rows(request, sum(len(v) for v in result.values() if isinstance(v, list)))
    return result


def _previous_of(service: Service, manifest: dict[str, Any]) -> str | None:
    if manifest.get("previous_run_id"):
        return str(manifest["previous_run_id"])
    ids = [str(m["run_id"]) for m in service.list_runs()]
    here = str(manifest["run_id"])
    if here in ids and ids.index(here) > 0:
        return ids[ids.index(here) - 1]
    return None


@router.post("", response_model=JobInfo, status_code=202, summary="Start a re-attribution run",
             responses={**responses(400, 409, 413),
                        422: response(422, "Invalid body, or the snapshot is not a directory "
                                      "on the server", SNAPSHOT_MISSING)})
async def start_run(request: Request, response: Response, service: ServiceDep, key: AdminKey,
                    body: RunRequest) -> dict[str, Any]:
    """Admin only. Runs the pipeline over ``snapshot`` in the background; poll the job."""
    snapshot = Path(body.snapshot)
    if not await anyio.to_thread.run_sync(_is_dir, snapshot):
        raise ApiProblem(422, SNAPSHOT_MISSING)
    job = service.jobs.start(snapshot, requested_by=key.key_id,
                             keep_fleet_ids=body.keep_fleet_ids,
                             max_rejected_share=body.max_rejected_share)
    response.headers["Location"] = f"/runs/jobs/{job.job_id}"
    set_rows(request, 1)
    return job_dict(job)


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except (OSError, ValueError):  # name too long, NUL byte
        return False


@router.get("/jobs/{job_id}", response_model=JobInfo, summary="A run job's status",
            responses=responses(404))
async def get_job(request: Request, service: ServiceDep, _key: AdminKey, job_id: JobId
                  ) -> dict[str, Any]:
    """Admin only. Queued, running, succeeded (with its run_id) or failed (with why)."""
    job = service.jobs.get(job_id)
    if job is None:
        raise ApiProblem(404, "no such job")
    set_rows(request, 1)
    return job_dict(job)


@router.get("/{run_id}", response_model=RunDetail, summary="One run's manifest",
            dependencies=read, responses=responses(404))
def get_run(request: Request, service: ServiceDep, run_id: OneRun) -> dict[str, Any]:
    """The run's manifest: counts, parameters, timings (fleet lineage left out)."""
    current = _current_id(service)
    for manifest in service.list_runs():
        if str(manifest.get("run_id")) == run_id:
            set_rows(request, 1)
            params, timings = manifest.get("params"), manifest.get("timings")
            return {**_summary(manifest, current),
                    "params": params if isinstance(params, dict) else {},
                    "timings": timings if isinstance(timings, dict) else {}}
    raise ApiProblem(404, "no such run")
