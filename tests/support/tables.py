"""Hand-made snapshot tables in the dtypes ingest produces, for unit tests."""

from __future__ import annotations

import datetime as dt
from typing import Any

import polars as pl

from attribution.contracts.schema import TABLES

DTYPES: dict[str, Any] = {
    "str": pl.String,
    "ip": pl.String,
    "int": pl.Int64,
    "float": pl.Float64,
    "bool": pl.Boolean,
    "ts": pl.Datetime("us", "UTC"),
}
T0 = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)


def ts(minutes: float) -> dt.datetime:
    """A timestamp ``minutes`` after the start of the fixture window."""
    return T0 + dt.timedelta(minutes=minutes)


def frame(name: str, rows: list[dict[str, Any]]) -> pl.DataFrame:
    """A table with every contract column (missing values null) in contract dtypes."""
    table = TABLES[name]
    schema = {c.name: DTYPES[c.kind] for c in table.columns}
    full = [{c: r.get(c) for c in schema} for r in rows]
    return pl.DataFrame(full, schema=schema, orient="row")


def tables(**rows: list[dict[str, Any]]) -> dict[str, pl.DataFrame]:
    """Every contract table, the given ones filled, the rest empty."""
    return {name: frame(name, rows.get(name, [])) for name in TABLES}
