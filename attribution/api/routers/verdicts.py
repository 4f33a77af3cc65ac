"""Analyst verdicts (admin): recorded in the same append-only log the CLI writes.

``attribution.contracts.verdicts`` owns the log and its validation; the batch job
applies what is recorded here in every later run (attribution_confirmed ->
confirm, attribution_rejected -> reject, not_sybil on an account -> legit;
the other combinations are kept for the record only).
"""

from __future__ import annotations

from typing import Any

import anyio.to_thread
from fastapi import APIRouter, Request

from attribution.api.deps import AdminKey, AuthFirstRoute, ServiceDep, ViewDep, set_rows
from attribution.api.models import Verdict, VerdictIn
from attribution.api.problems import ApiProblem, responses
from attribution.contracts.verdicts import API_ACTIONS, VerdictError, VerdictStore, make_verdict

router = APIRouter(prefix="/verdicts", tags=["verdicts"],
                   responses=responses(401, 403, 404, 422, 503), route_class=AuthFirstRoute)


@router.post("", response_model=Verdict, status_code=201, summary="Record an analyst verdict",
             responses=responses(400, 413))
async def record_verdict(request: Request, service: ServiceDep, view: ViewDep, key: AdminKey,
                         body: VerdictIn) -> dict[str, Any]:
    """Admin only. Appends the verdict, with who/when/why and the current run id, to the
    store's verdict log (``<store>/verdicts.jsonl`` for the embedded store,
    ``$ATTRIBUTION_HOME/verdicts.jsonl`` for Neo4j), the same one ``attribution verdict``
    writes, in its one record format; every later run applies it (a verdict no run acts
    on is kept as a note). Nothing here rewrites a line.
    """
    known = (view.fleet_row(body.subject_id) if body.subject == "fleet"
             else view.account_row(body.subject_id))
    if known is None:
        raise ApiProblem(404, f"no such {body.subject} in the current run")
    action = API_ACTIONS.get((body.subject, body.verdict), "note")
    try:  # the CLI's validation (an attribution verdict needs its org_id)
        verdict = make_verdict(action, body.subject_id, by=key.name or key.key_id,
                               why=body.reason, org_id=body.org_id, run_id=view.run_id,
                               key_id=key.key_id, label=body.verdict,
                               kind=body.subject if action == "note" else None)
    except VerdictError as exc:
        raise ApiProblem(400, str(exc)) from None
    store = service.store
    if store is None:
        raise ApiProblem(503, "the result store is unavailable")
    log = VerdictStore(store.verdict_log_path(service.home))
    await anyio.to_thread.run_sync(log.add, verdict)
    set_rows(request, 1)
    return {"verdict_id": verdict.verdict_id, "subject": body.subject,
            "subject_id": verdict.subject, "verdict": body.verdict, "org_id": body.org_id,
            "reason": verdict.why, "run_id": view.run_id, "recorded_by": key.key_id,
            "recorded_by_name": key.name, "recorded_at": verdict.at}
