"""Analyst verdicts (admin): recorded in the same append-only log the CLI writes.

``attribution.verdicts`` owns the log and its validation; the batch job
applies what is recorded here in every later run (attribution_confirmed ->
confirm, attribution_rejected -> reject, not_sybil on an account -> legit;
the other combinations are kept for the record only).
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import anyio.to_thread
from fastapi import APIRouter, Request

from attribution.api.deps import AdminKey, AuthFirstRoute, ServiceDep, ViewDep, set_rows
from attribution.api.models import Verdict, VerdictIn
from attribution.api.problems import ApiProblem, responses
from attribution.verdicts import (
    API_ACTIONS,
    VerdictError,
    VerdictStore,
    make_verdict,
    verdict_path,
)

router = APIRouter(prefix="/verdicts", tags=["verdicts"],
                   responses=responses(401, 403, 404, 422, 503), route_class=AuthFirstRoute)


@router.post("", response_model=Verdict, status_code=201, summary="Record an analyst verdict",
             responses=responses(400, 413))
async def record_verdict(request: Request, service: ServiceDep, view: ViewDep, key: AdminKey,
                         body: VerdictIn) -> dict[str, Any]:
    """Admin only. Appends the verdict, with who/when/why and the current run id, to the
    store's verdict log (``<store>/verdicts.jsonl`` for the embedded store,
    ``$ATTRIBUTION_HOME/verdicts.jsonl`` for Neo4j), the same one ``attribution verdict``
    writes; every later run applies it. Nothing here rewrites a line.
    """
    known = (view.fleet_row(body.subject_id) if body.subject == "fleet"
             else view.account_row(body.subject_id))
    if known is None:
        raise ApiProblem(404, f"no such {body.subject} in the current run")
    action = API_ACTIONS.get((body.subject, body.verdict))
    if action is not None:
        try:  # the CLI's validation (an attribution verdict needs its org_id)
            make_verdict(action, body.subject_id, by=key.name or key.key_id, why=body.reason,
                         org_id=body.org_id)
        except VerdictError as exc:
            raise ApiProblem(400, str(exc)) from None
    record = {
        **body.model_dump(),
        "verdict_id": uuid.uuid4().hex,
        "run_id": view.run_id,
        "recorded_by": key.key_id,
        "recorded_by_name": key.name,
        "recorded_at": dt.datetime.now(dt.UTC),
    }
    log = VerdictStore(verdict_path(service.store, service.home))
    await anyio.to_thread.run_sync(log.append_raw, record)
    set_rows(request, 1)
    return record
