"""Fleets: list with filters, one fleet, its members, evidence and shared infrastructure."""

from __future__ import annotations

from typing import Annotated, Literal

import polars as pl
from fastapi import APIRouter, Depends, Query, Request

from attribution.api.deps import AuthFirstRoute, ViewDep, require_read, set_rows
from attribution.api.models import Evidence, FleetDetail, FleetSummary, Member, Page, SharedEntity
from attribution.api.problems import ApiProblem, responses
from attribution.api.routers.common import (
    MAX_COUNT,
    Id,
    Limit,
    Offset,
    Order,
    Score,
    When,
    entity_rows,
    page,
    sorted_page,
    utc,
)
from attribution.api.views import RunView
from attribution.contracts.graph import UseKind

router = APIRouter(prefix="/fleets", tags=["fleets"], dependencies=[Depends(require_read)],
                   responses=responses(401, 403, 422, 503), route_class=AuthFirstRoute)
FleetSort = Literal["sybil_score", "size", "confidence", "exchanges", "first_seen", "last_seen",
                    "fleet_id"]


def _fleet(view: RunView, fleet_id: str) -> dict[str, object]:
    row = view.fleet_row(fleet_id)
    if row is None:
        raise ApiProblem(404, "no such fleet in the current run")
    return row


@router.get("", response_model=Page[FleetSummary], summary="List fleets")
async def list_fleets(
    request: Request,
    view: ViewDep,
    org_id: Annotated[str | None, Query(max_length=200)] = None,
    attributed: Annotated[bool | None, Query(description="only (un)attributed fleets")] = None,
    min_sybil: Score = None,
    min_confidence: Score = None,
    min_size: Annotated[int | None, Query(ge=0, le=MAX_COUNT, description="accounts, at least")]
    = None,
    max_size: Annotated[int | None, Query(ge=0, le=MAX_COUNT, description="accounts, at most")]
    = None,
    first_seen_from: When = None,
    first_seen_to: When = None,
    last_seen_from: When = None,
    last_seen_to: When = None,
    sort: FleetSort = "sybil_score",
    order: Order = "desc",
    limit: Limit = 50,
    offset: Offset = 0,
) -> dict[str, object]:
    """Fleets of the current run, filtered and sorted (ties broken by fleet_id)."""
    conds: list[pl.Expr] = []
    col = pl.col
    if org_id is not None:
        conds.append(col("org_id") == org_id)
    if attributed is not None:
        conds.append(col("org_id").is_not_null() if attributed else col("org_id").is_null())
    if min_sybil is not None:
        conds.append(col("sybil_score") >= min_sybil)
    if min_confidence is not None:
        conds.append(col("confidence") >= min_confidence)
    if min_size is not None:
        conds.append(col("size") >= min_size)
    if max_size is not None:
        conds.append(col("size") <= max_size)
    for name, bound, op in (("first_seen", first_seen_from, "ge"), ("first_seen", first_seen_to,
                            "le"), ("last_seen", last_seen_from, "ge"),
                            ("last_seen", last_seen_to, "le")):
        value = utc(bound)
        if value is not None:
            conds.append(col(name) >= value if op == "ge" else col(name) <= value)
    frame = view.fleets.filter(conds) if conds else view.fleets
    items = sorted_page(frame, by=sort, tiebreak="fleet_id", order=order, limit=limit,
                        offset=offset)
    set_rows(request, len(items))
    return page(items, total=frame.height, limit=limit, offset=offset)


@router.get("/{fleet_id}", response_model=FleetDetail, summary="One fleet",
            responses=responses(404))
async def get_fleet(request: Request, view: ViewDep, fleet_id: Id) -> dict[str, object]:
    """The fleet's summary, all its evidence, and its shared entities counted per kind."""
    row = _fleet(view, fleet_id)
    evidence = view.rows(view.evidence, view.evidence_at, fleet_id).to_dicts()
    set_rows(request, 1)
    return {**row, "evidence": evidence, "shared_infrastructure": view.shared_kinds(fleet_id),
            "run_id": view.run_id}


@router.get("/{fleet_id}/members", response_model=Page[Member], summary="A fleet's accounts",
            responses=responses(404))
async def fleet_members(
    request: Request,
    view: ViewDep,
    fleet_id: Id,
    min_sybil: Score = None,
    sort: Literal["account_id", "sybil_score"] = "account_id",
    order: Order = "asc",
    limit: Limit = 100,
    offset: Offset = 0,
) -> dict[str, object]:
    """The fleet's member accounts with their scores, a page at a time."""
    _fleet(view, fleet_id)
    frame = view.rows(view.assignments, view.members, fleet_id)
    if min_sybil is not None:
        frame = frame.filter(pl.col("sybil_score") >= min_sybil)
    if sort == "account_id" and order == "asc":
        items = frame.slice(offset, limit).to_dicts()  # already in this order
    else:
        items = sorted_page(frame, by=sort, tiebreak="account_id", order=order, limit=limit,
                            offset=offset)
    set_rows(request, len(items))
    return page(items, total=frame.height, limit=limit, offset=offset)


@router.get("/{fleet_id}/evidence", response_model=Page[Evidence], summary="A fleet's evidence",
            responses=responses(404))
async def fleet_evidence(request: Request, view: ViewDep, fleet_id: Id, limit: Limit = 100,
                         offset: Offset = 0) -> dict[str, object]:
    """Why the fleet was found and attributed, heaviest evidence first."""
    _fleet(view, fleet_id)
    frame = view.rows(view.evidence, view.evidence_at, fleet_id)
    items = frame.slice(offset, limit).to_dicts()
    set_rows(request, len(items))
    return page(items, total=frame.height, limit=limit, offset=offset)


@router.get("/{fleet_id}/infrastructure", response_model=Page[SharedEntity],
            summary="Entities the fleet's accounts share", responses=responses(404))
async def fleet_infrastructure(
    request: Request,
    view: ViewDep,
    fleet_id: Id,
    kind: Annotated[UseKind | None, Query()] = None,
    min_accounts: Annotated[int, Query(ge=2, le=MAX_COUNT)] = 2,
    limit: Limit = 100,
    offset: Offset = 0,
) -> dict[str, object]:
    """Cards, devices, IP ranges, domains and prompts used by two or more members (masked)."""
    _fleet(view, fleet_id)
    frame = view.rows(view.infra, view.infra_at, fleet_id)
    if kind is None and min_accounts <= 2:
        rows, total = frame.slice(offset, limit).to_dicts(), frame.height
    else:
        matching = [r for r in frame.to_dicts() if (kind is None or r["kind"] == kind)
                    and r["accounts_in_fleet"] >= min_accounts]
        rows, total = matching[offset:offset + limit], len(matching)
    items = entity_rows(rows)
    set_rows(request, len(items))
    return page(items, total=total, limit=limit, offset=offset)
