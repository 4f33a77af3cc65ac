"""Running queries from a notebook (read-only) and turning their rows into masked polars
frames."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import polars as pl
from neo4j import ManagedTransaction, unit_of_work
from neo4j import time as neo4j_time
from neo4j.exceptions import DriverError, Neo4jError
from neo4j.graph import Node, Relationship
from neo4j.graph import Path as GraphPath

from attribution.contracts.masking import LABELS, label_kind, mask, mask_labelled, mask_node
from attribution.notebook.connection import QUERY_TIMEOUT, NotebookError, connected, one_line
from attribution.notebook.library import named_query
from attribution.store.named_queries import QueryError

if TYPE_CHECKING:
    pass

# Shipped as package data (``attribution/notebooks``, mapped from the repo's

# --------------------------------------------------------------------------- running queries


def query(name: str, /, **params: Any) -> pl.DataFrame:
    """Run a named read-only query with checked parameters; rows as a polars frame."""
    named = named_query(name)
    try:
        bound = named.bind({k: _param(v) for k, v in params.items()})
    except QueryError as exc:
        raise NotebookError(str(exc)) from exc
    return _run_read(named.text, bound, check=False, columns=named.returns)


def cypher(text: str, params: Mapping[str, Any] | None = None, *,
           timeout: float = QUERY_TIMEOUT) -> pl.DataFrame:
    """Run ad-hoc Cypher, refused unless ``EXPLAIN`` says it only reads; rows as a frame."""
    clean = text.strip().rstrip(";").strip()
    if not clean:
        raise NotebookError("empty Cypher")
    return _run_read(clean, {k: _param(v) for k, v in (params or {}).items()}, check=True,
                     timeout=timeout)


def _run_read(text: str, params: dict[str, Any], *, check: bool,
              columns: Iterable[str] = (), timeout: float = QUERY_TIMEOUT) -> pl.DataFrame:
    """One read transaction (after a read-only check for ad-hoc text)."""
    driver, where = connected()

    def work(tx: ManagedTransaction) -> tuple[list[str], list[list[Any]]]:
        if check:
            kind = tx.run("EXPLAIN " + text, params).consume().query_type
            if kind != "r":
                raise NotebookError(f"refused: this Cypher would write (query type {kind!r}); "
                                    "notebooks only read")
        result = tx.run(text, params)
        keys = list(result.keys())
        return keys, [[_plain(v) for v in record.values()] for record in result]

    try:
        with driver.session(database=where.database) as session:
            keys, rows = session.execute_read(unit_of_work(timeout=timeout)(work))
    except NotebookError:
        raise
    except Neo4jError as exc:
        raise NotebookError(f"{exc.code}: {one_line(exc)}") from exc
    except (DriverError, OSError) as exc:
        raise NotebookError(f"Neo4j at {where.uri}: {one_line(exc)}") from exc
    return to_frame(keys or list(columns), rows)


def to_frame(keys: list[str], rows: list[list[Any]]) -> pl.DataFrame:
    """Rows as a frame with the result's column order; mixed columns fall back to text."""
    series = []
    for i, key in enumerate(keys):
        values = [row[i] for row in rows]
        try:
            series.append(pl.Series(key, values, strict=False))
        except (TypeError, ValueError, pl.exceptions.PolarsError):
            series.append(pl.Series(key, [None if v is None else str(v) for v in values],
                                    dtype=pl.String))
    return pl.DataFrame(series, height=len(rows)) if series else pl.DataFrame()


def _plain(value: Any) -> Any:
    """Driver values as plain Python: temporal types native, nodes as the small masked dicts
    the API shows (``attribution.contracts.masking.mask_node``), relationships as their type, paths as
    readable text with masked keys."""
    if isinstance(value, neo4j_time.DateTime | neo4j_time.Date | neo4j_time.Time):
        return value.to_native()
    if isinstance(value, neo4j_time.Duration):
        months, days, seconds, nanos = value
        return dt.timedelta(days=days + 30 * months, seconds=seconds, microseconds=nanos // 1000)
    if isinstance(value, Node):
        return mask_node(value)
    if isinstance(value, Relationship):
        return value.type
    if isinstance(value, GraphPath):
        parts = [_node_text(value.start_node)]
        for rel, before, after in zip(value.relationships, value.nodes, value.nodes[1:],
                                      strict=False):
            forward = rel.start_node is not None and rel.start_node.element_id == before.element_id
            parts += [f"-[:{rel.type}]->" if forward else f"<-[:{rel.type}]-", _node_text(after)]
        return "".join(parts)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _node_text(node: Node | None) -> str:
    if node is None:
        return "()"
    label = next((lb for lb in LABELS if lb in node.labels), next(iter(node.labels), ""))
    key = node.get(LABELS[label][1]) if label in LABELS else None
    shown = mask_entity(label, str(key)) if key is not None else ""
    return f"(:{label} {shown})".replace(" )", ")")


def _param(value: Any) -> Any:
    """Notebook values the driver cannot send (numpy scalars, polars series...) as plain ones."""
    if isinstance(value, pl.Series):
        return value.to_list()
    if isinstance(value, pl.DataFrame):
        return value.to_dicts()
    if isinstance(value, tuple | set | frozenset):
        return [_param(v) for v in value]
    if isinstance(value, list):
        return [_param(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _param(v) for k, v in value.items()}
    if type(value).__module__ == "numpy":
        tolist = getattr(value, "tolist", None)
        if callable(tolist):
            return tolist()
    return value


# --------------------------------------------------------------------------- masking


def mask_entity(label: str, value: str | None) -> str | None:
    """An entity id as shown to people, by its node label's kind (``attribution.contracts.masking``:
    cards, devices and prompt hashes to the last 4, IPs to /24, accounts and ASNs in full)."""
    if value is None:
        return None
    return mask(label_kind(label) or "unknown", value)


def masked(frame: pl.DataFrame, id_column: str = "entity_id",
           label_column: str = "entity_label") -> pl.DataFrame:
    """``frame`` with its entity ids masked according to each row's label."""
    if frame.is_empty() or id_column not in frame.columns:
        return frame
    values = [mask_entity(str(label), None if v is None else str(v))
              for label, v in frame.select(label_column, id_column).iter_rows()]
    return frame.with_columns(pl.Series(id_column, values, dtype=pl.String))


def masked_labels(items: Iterable[str]) -> list[str]:
    """``"Label id"`` strings (as ``org_fleets`` returns them) with the ids masked."""
    return [mask_labelled(item) for item in items]
