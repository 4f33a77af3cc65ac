"""Organizations and what the current run attributes to each."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import polars as pl
from fastapi import APIRouter, Depends, Query, Request

from attribution.api.deps import AuthFirstRoute, ViewDep, require_read, set_rows
from attribution.api.models import Organization, OrganizationDetail, Page
from attribution.api.problems import ApiProblem, responses
from attribution.api.routers.common import Id, Limit, Offset, Order, page, sorted_page

router = APIRouter(prefix="/organizations", tags=["organizations"],
                   dependencies=[Depends(require_read)], responses=responses(401, 403, 422, 503),
                   route_class=AuthFirstRoute)
OrgSort = Literal["org_id", "name", "fleets", "accounts", "exchanges", "confidence_max"]


@router.get("", response_model=Page[Organization], summary="List organizations")
async def list_organizations(
    request: Request,
    view: ViewDep,
    kind: Annotated[str | None, Query(max_length=100)] = None,
    country: Annotated[str | None, Query(max_length=100)] = None,
    attributed: Annotated[bool | None, Query(description="only orgs with(out) fleets")] = None,
    sort: OrgSort = "org_id",
    order: Order = "asc",
    limit: Limit = 50,
    offset: Offset = 0,
) -> dict[str, Any]:
    """Known organizations (and any org a fleet is attributed to) with their totals."""
    conds: list[pl.Expr] = []
    if kind is not None:
        conds.append(pl.col("kind") == kind)
    if country is not None:
        conds.append(pl.col("country") == country)
    if attributed is not None:
        conds.append(pl.col("fleets") > 0 if attributed else pl.col("fleets") == 0)
    frame = view.orgs.filter(conds) if conds else view.orgs
    items = sorted_page(frame, by=sort, tiebreak="org_id", order=order, limit=limit,
                        offset=offset)
    set_rows(request, len(items))
    return page(items, total=frame.height, limit=limit, offset=offset)


@router.get("/{org_id}", response_model=OrganizationDetail, summary="One organization",
            responses=responses(404))
async def get_organization(request: Request, view: ViewDep, org_id: Id, limit: Limit = 50,
                           offset: Offset = 0) -> dict[str, Any]:
    """The organization's totals, confidence spread, and its fleets (most confident first)."""
    row = view.org_row(org_id)
    if row is None:
        raise ApiProblem(404, "no such organization")
    fleets = view.rows(view.org_fleet_rows, view.org_fleets, org_id)
    items = fleets.slice(offset, limit).to_dicts()
    set_rows(request, len(items) + 1)
    return {**row, "run_id": view.run_id,
            "fleets_page": page(items, total=fleets.height, limit=limit, offset=offset)}
