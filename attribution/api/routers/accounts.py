"""One account: its fleet, score, attribution, evidence and the entities it uses."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from attribution.api.deps import AuthFirstRoute, ViewDep, require_read, set_rows
from attribution.api.models import AccountDetail, AccountEntity, Page
from attribution.api.problems import ApiProblem, responses
from attribution.api.routers.common import Id, Limit, Offset, entity_rows, page
from attribution.api.views import RunView
from attribution.contracts.graph import UseKind

router = APIRouter(prefix="/accounts", tags=["accounts"], dependencies=[Depends(require_read)],
                   responses=responses(401, 403, 404, 422, 503), route_class=AuthFirstRoute)
ENTITIES_INLINE = 100


def _entities(view: RunView, account_id: str, *, kind: str | None = None, offset: int = 0,
              limit: int = ENTITIES_INLINE) -> tuple[list[dict[str, Any]], int]:
    """A page of the account's entities (masked) and how many there are."""
    frame = view.rows(view.uses, view.uses_at, account_id)
    if kind is None:
        return entity_rows(frame.slice(offset, limit).to_dicts()), frame.height
    rows = [r for r in frame.to_dicts() if r["kind"] == kind]
    return entity_rows(rows[offset:offset + limit]), len(rows)


@router.get("/{account_id}", response_model=AccountDetail, summary="One account")
async def get_account(request: Request, view: ViewDep, account_id: Id) -> dict[str, Any]:
    """Everything the current run says about one account, identifiers masked.

    The 404 for an unknown id does not repeat the id.
    """
    row = view.account_row(account_id)
    if row is None:
        raise ApiProblem(404, "no such account in the current run")
    fleet_id = row["fleet_id"]
    fleet = view.fleet_row(fleet_id) if fleet_id is not None else None
    evidence = (view.rows(view.evidence, view.evidence_at, fleet_id).to_dicts()
                if fleet_id is not None else [])
    attribution = None
    if row["org_id"] is not None:
        org = view.org_row(row["org_id"])
        attribution = {"org_id": row["org_id"], "org_name": org["name"] if org else None,
                       "confidence": row["confidence"]}
    entities, total = _entities(view, account_id)
    set_rows(request, 1)
    return {
        "account_id": account_id,
        "run_id": view.run_id,
        "sybil_score": row["sybil_score"],
        "fleet": fleet,
        "attribution": attribution,
        "evidence": evidence,
        "profile": view.profile(account_id),
        "entities": entities,
        "entities_total": total,
    }


@router.get("/{account_id}/entities", response_model=Page[AccountEntity],
            summary="Entities an account uses")
async def account_entities(
    request: Request,
    view: ViewDep,
    account_id: Id,
    kind: Annotated[UseKind | None, Query()] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> dict[str, Any]:
    """All the account's entities, most widely shared first, masked."""
    if view.account_row(account_id) is None:
        raise ApiProblem(404, "no such account in the current run")
    items, total = _entities(view, account_id, kind=kind, offset=offset, limit=limit)
    set_rows(request, len(items))
    return page(items, total=total, limit=limit, offset=offset)
