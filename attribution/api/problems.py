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
from pydantic import BaseModel, ConfigDict, Field
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
    """An RFC 7807 problem details object."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "type": "about:blank", "title": "Not found", "status": 404,
        "detail": "no such account in the current run",
        "instance": "urn:request:5f0c3c1e9b2a4d0e8f7a6b5c4d3e2f10",
        "request_id": "5f0c3c1e9b2a4d0e8f7a6b5c4d3e2f10",
    }]})

    type: str = "about:blank"
    title: str
    status: int = Field(ge=400, le=599)
    detail: str | None = None
    instance: str | None = None
    request_id: str | None = None
    errors: list[FieldError] | None = None


class ApiProblem(Exception):
    """Raise to answer with a problem document."""

    def __init__(self, status: int, detail: str, *, title: str | None = None,
                 headers: dict[str, str] | None = None, type_: str = "about:blank") -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.title = title or TITLES.get(status, "Error")
        self.headers = headers
        self.type = type_


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
                            headers=exc.headers, type_=exc.type)


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
    """OpenAPI ``responses`` entries for the given error statuses."""
    return {
        s: {"model": Problem, "description": TITLES.get(s, "Error"),
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}}
        for s in statuses
    }
