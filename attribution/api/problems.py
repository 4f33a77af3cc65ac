"""RFC 7807 problem details for every error the API returns.

Error bodies never echo what the caller sent: a 404 for an account says
"no such account", not which one, and validation errors keep the location
and the rule but drop the offending input, which may be an email or an IP.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

PROBLEM_JSON = "application/problem+json"
log = logging.getLogger("attribution.api")

TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Payload too large",
    415: "Unsupported media type",
    422: "Invalid parameters",
    500: "Internal server error",
    501: "Not implemented",
    503: "Service unavailable",
}


class FieldError(BaseModel):
    """One rejected parameter: where it was and which rule it broke (not its value)."""

    loc: list[str | int]
    msg: str
    type: str


class Problem(BaseModel):
    """An RFC 7807 problem details object.

    Its examples are per response (``EXAMPLES``), not on the schema: one
    example here would stand for every status in the generated docs.
    """

    type: str = "about:blank"
    title: str
    status: int = Field(ge=400, le=599)
    detail: str | None = None
    instance: str | None = None
    request_id: str | None = None
    errors: list[FieldError] | None = None


# What each status says in the OpenAPI examples (a route may give its own).
EXAMPLE_DETAILS = {
    400: "an attribution verdict needs its org_id",
    401: "an API key is required",
    403: "this endpoint needs an admin key",
    404: "no such fleet in the current run",
    405: "Method Not Allowed",
    409: "another run is in progress; try again when it has finished",
    413: "the request body is larger than 1 MiB",
    415: "the body must be application/json",
    422: "one or more parameters are invalid",
    500: "the server failed; see its log",
    501: "named Cypher queries need the Neo4j store (set NEO4J_URI and restart the API)",
    503: "the result store is unavailable",
}
EXAMPLE_RID = "5f0c3c1e9b2a4d0e8f7a6b5c4d3e2f10"


def example(status: int, detail: str | None = None) -> dict[str, Any]:
    """A problem document as the docs show it for ``status``."""
    body: dict[str, Any] = {
        "type": "about:blank", "title": TITLES.get(status, "Error"), "status": status,
        "detail": detail or EXAMPLE_DETAILS.get(status, TITLES.get(status, "Error")),
        "instance": f"urn:request:{EXAMPLE_RID}", "request_id": EXAMPLE_RID,
    }
    if status == 422:
        body["errors"] = [{"loc": ["query", "limit"], "msg": "Input should be less than or "
                           "equal to 500", "type": "less_than_equal"}]
    return body


class ApiProblem(Exception):
    """Raise to answer with a problem document (``errors``: where each rejected part was)."""

    def __init__(self, status: int, detail: str, *, title: str | None = None,
                 headers: dict[str, str] | None = None, type_: str = "about:blank",
                 errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.title = title or TITLES.get(status, "Error")
        self.headers = headers
        self.type = type_
        self.errors = errors


class StoreUnavailable(ApiProblem):
    """The store cannot be reached or failed: 503, details only in the server log."""

    def __init__(self, detail: str = "the result store is unavailable") -> None:
        super().__init__(503, detail, headers={"Retry-After": "5"})


def problem_response(request: Request | None, status: int, detail: str | None, *,
                     title: str | None = None, headers: dict[str, str] | None = None,
                     errors: list[dict[str, Any]] | None = None,
                     type_: str = "about:blank") -> JSONResponse:
    """A problem+json response stamped with the request id."""
    rid = None
    if request is not None:
        rid = getattr(request.state, "request_id", None)
    body = Problem(type=type_, title=title or TITLES.get(status, "Error"), status=status,
                   detail=detail, instance=f"urn:request:{rid}" if rid else None,
                   request_id=rid,
                   errors=[FieldError(**e) for e in errors] if errors is not None else None)
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status,
                        headers=headers, media_type=PROBLEM_JSON)


async def _api_problem(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiProblem)
    return problem_response(request, exc.status, exc.detail, title=exc.title,
                            headers=exc.headers, type_=exc.type, errors=exc.errors)


async def _http_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    # Framework messages ("Not Found", "Method Not Allowed") never carry input.
    detail = exc.detail if isinstance(exc.detail, str) else None
    return problem_response(request, exc.status_code, detail,
                            headers=dict(exc.headers) if exc.headers else None)


async def _validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"loc": [p if isinstance(p, int) else str(p) for p in e.get("loc", ())],
         "msg": _safe_msg(e), "type": str(e.get("type", "value_error"))}
        for e in exc.errors()
    ]
    return problem_response(request, 422, "one or more parameters are invalid", errors=errors)


def _safe_msg(error: dict[str, Any]) -> str:
    """Pydantic's message, unless it quotes the input (custom validators can)."""
    msg = str(error.get("msg", "invalid value"))
    value = error.get("input")
    if isinstance(value, str) and value and value in msg:
        return "invalid value"
    return msg


def install(app: FastAPI) -> None:
    """Route every error through problem details."""
    app.add_exception_handler(ApiProblem, _api_problem)
    app.add_exception_handler(StarletteHTTPException, _http_exception)
    app.add_exception_handler(RequestValidationError, _validation)


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for the given error statuses, each with its example."""
    return {s: response(s) for s in statuses}


def response(status: int, description: str | None = None, detail: str | None = None
             ) -> dict[str, Any]:
    """One OpenAPI error response: the problem schema and an example of this status."""
    return {"model": Problem, "description": description or TITLES.get(status, "Error"),
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"},
                                       "example": example(status, detail)}}}
