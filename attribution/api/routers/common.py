"""Pieces the routers share: page parameters, paging, masking of entity rows."""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any, Literal

import polars as pl
from fastapi import Path, Query
from pydantic import BeforeValidator

from attribution.api.masking import mask_entity

MAX_PAGE = 500
MAX_COUNT = 1_000_000_000  # bound of any count parameter (sizes, offsets)
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE, description=f"page size (at most {MAX_PAGE})")]
Offset = Annotated[int, Query(ge=0, le=MAX_COUNT, description="rows to skip")]
Order = Annotated[Literal["asc", "desc"], Query(description="sort direction")]
Score = Annotated[float | None, Query(ge=0, le=1)]
Id = Annotated[str, Path(min_length=1, max_length=200)]
ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}")


def _iso_only(value: Any) -> Any:
    """Refuse what pydantic would read as a Unix time: the schema says ISO-8601."""
    if isinstance(value, str) and not ISO_DATE.match(value):
        raise ValueError("expected an ISO-8601 date-time")
    return value


When = Annotated[dt.datetime | None, BeforeValidator(_iso_only),
                 Query(description="ISO-8601; UTC when no zone is given")]


def page(items: list[Any], *, total: int, limit: int, offset: int) -> dict[str, Any]:
    """The ``Page`` fields for ``items`` taken at ``offset``."""
    end = offset + len(items)
    return {"items": items, "total": total, "limit": limit, "offset": offset,
            "next_offset": end if end < total else None}


def utc(value: dt.datetime | None) -> dt.datetime | None:
    """Query datetimes without a zone are UTC, like every timestamp in the contract."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=dt.UTC)


def sorted_page(frame: pl.DataFrame, *, by: str, tiebreak: str, order: str, limit: int,
                offset: int) -> list[dict[str, Any]]:
    """Rows ``offset..offset+limit`` of ``frame`` sorted by ``by`` (nulls last, stable ids)."""
    if frame.height == 0 or offset >= frame.height:
        return []
    keys = [by] if by == tiebreak else [by, tiebreak]
    desc = [order == "desc"] + ([False] if by != tiebreak else [])
    return frame.sort(keys, descending=desc, nulls_last=True).slice(offset, limit).to_dicts()


def entity_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Replace each row's ``entity_id`` with its masked form."""
    for row in rows:
        row["entity"] = mask_entity(row["kind"], row.pop("entity_id"))
    return rows
