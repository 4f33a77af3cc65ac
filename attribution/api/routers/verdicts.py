"""Analyst verdicts (admin): recorded append-only until verdict storage lands."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import anyio.to_thread
from fastapi import APIRouter, Request

from attribution.api.deps import AdminKey, ServiceDep, ViewDep, set_rows
from attribution.api.models import Verdict, VerdictIn
from attribution.api.problems import ApiProblem, responses

router = APIRouter(prefix="/verdicts", tags=["verdicts"],
                   responses=responses(401, 403, 404, 422, 503))


@router.post("", response_model=Verdict, status_code=201, summary="Record an analyst verdict",
             responses=responses(400))
async def record_verdict(request: Request, service: ServiceDep, view: ViewDep, key: AdminKey,
                         body: VerdictIn) -> dict[str, Any]:
    """Admin only. Appends the verdict, with who/when/why and the current run id, to
    ``$ATTRIBUTION_HOME/verdicts.jsonl``. Interim storage: a later issue gives verdicts
    their own store and lets them steer re-runs; nothing here rewrites a line.
    """
    known = (view.fleet_row(body.subject_id) if body.subject == "fleet"
             else view.account_row(body.subject_id))
    if known is None:
        raise ApiProblem(404, f"no such {body.subject} in the current run")
    record = {
        **body.model_dump(),
        "verdict_id": uuid.uuid4().hex,
        "run_id": view.run_id,
        "recorded_by": key.key_id,
        "recorded_by_name": key.name,
        "recorded_at": dt.datetime.now(dt.UTC),
    }
    await anyio.to_thread.run_sync(service.verdicts.append, record)
    set_rows(request, 1)
    return record
