"""Named Cypher queries from the ``queries/*.cypher`` library (Neo4j store only).

Only vetted library queries run, by name, with parameters checked against the
query's header (types, declared ranges, lengths) before the store is asked,
in a read transaction; no endpoint accepts Cypher text. A parameter that does
not fit is a 422 naming the parameter, on either store. On the embedded store
the library is listed but running a query answers 501.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request

from attribution.api.deps import AuthFirstRoute, ServiceDep, require_read, set_rows
from attribution.api.models import NamedQuery, QueryResult, QueryRun
from attribution.api.problems import ApiProblem, responses
from attribution.contracts.masking import mask_row, merge_duplicates, scrub_text

router = APIRouter(prefix="/queries", tags=["queries"], dependencies=[Depends(require_read)],
                   responses=responses(401, 403, 422, 503), route_class=AuthFirstRoute)
QueryName = Annotated[str, Path(min_length=1, max_length=100, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
NEEDS_NEO4J = "named Cypher queries need the Neo4j store (set NEO4J_URI and restart the API)"


def _library() -> dict[str, Any]:
    try:
        from attribution.store import named_queries as cypher
    except ImportError:  # pragma: no cover - the loader ships with the package
        return {}
    try:
        return dict(cypher.load_queries())
    except cypher.QueryError:
        return {}


def _describe(query: Any, runnable: bool) -> dict[str, Any]:
    params = [{"name": p.name, "type": p.type + ("?" if p.nullable else ""),
               "description": p.doc or None, "required": bool(p.required)}
              for p in query.params]
    return {"name": query.name, "description": query.description, "params": params,
            "runnable": runnable}


@router.get("", response_model=list[NamedQuery], summary="The named query library")
def list_queries(request: Request, service: ServiceDep) -> list[dict[str, Any]]:
    """Every library query with its parameters; ``runnable`` is false on the embedded store."""
    runnable = service.runs_named_queries()
    items = [_describe(q, runnable) for _, q in sorted(_library().items())]
    set_rows(request, len(items))
    return items


@router.post("/{name}", response_model=QueryResult, summary="Run a named query",
             responses=responses(400, 404, 413, 501))
def run_query(request: Request, service: ServiceDep, name: QueryName, body: QueryRun
              ) -> dict[str, Any]:
    """Run one library query read-only; personal identifiers in the rows are masked."""
    library = _library()
    if name not in library:
        raise ApiProblem(404, "no such named query")
    _check_params(library[name], body.params)
    if not service.runs_named_queries():
        service.call(lambda s: None)  # a store that is down is a 503, not a 501
        if not service.runs_named_queries():
            raise ApiProblem(501, NEEDS_NEO4J, title="Needs Neo4j")
    rows = service.call(lambda s: s.run_query(name, body.params), lock=False)
    columns, shown, truncated = _shown(rows, library[name].returns, body.limit)
    set_rows(request, len(shown))
    return {"name": name, "columns": columns, "rows": shown, "truncated": truncated}


def _shown(rows: list[dict[str, Any]], returns: tuple[str, ...], limit: int
           ) -> tuple[list[str], list[dict[str, Any]], bool]:
    """(columns, rows, truncated) as served: every value masked by its kind (nodes and paths
    by their labels, as small dicts), rows that masking made identical merged into one with
    a ``merged_rows`` count, then cut at ``limit``."""
    masked, _ = merge_duplicates(mask_row(row) for row in rows)
    shown = [{k: _jsonable(v) for k, v in row.items()} for row in masked[:limit]]
    columns = list(shown[0]) if shown else list(returns)
    return columns, shown, len(masked) > limit


def _check_params(query: Any, params: dict[str, Any]) -> None:
    """422 unless ``params`` fit the query's header, before any store is asked (Neo4j
    answered a limit of -1 with an error the API could only call a 503)."""
    from attribution.store import named_queries as cypher

    try:
        query.bind(params)
    except cypher.QueryError as exc:
        detail = _safe(str(exc))
        declared = {p.name for p in query.params}
        loc: list[str | int] = ["body", "params"]
        if exc.param is not None and exc.param in declared:  # an undeclared name is input
            loc.append(exc.param)
        raise ApiProblem(422, detail, errors=[{"loc": loc, "msg": detail,
                                               "type": "value_error"}]) from None


def _safe(message: str) -> str:
    """A parameter error without the offending value."""
    return scrub_text(re.split(r", got ", message, maxsplit=1)[0])


def _jsonable(value: Any) -> Any:
    """A masked value as JSON: times as ISO-8601, NaN as null."""
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    to_native = getattr(value, "to_native", None)
    if callable(to_native):
        return to_native().isoformat()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and value != value:
        return None
    return value
