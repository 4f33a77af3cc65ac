"""Request dependencies: the service, the caller's key, the current run's view."""

from __future__ import annotations

from typing import Annotated

import anyio.to_thread
from fastapi import Depends, Request

from attribution.api.keys import ApiKey, Scope
from attribution.api.problems import ApiProblem
from attribution.api.service import Service
from attribution.api.views import RunView

CHALLENGE = {"WWW-Authenticate": 'Bearer realm="attribution"'}
# Declared in the OpenAPI document by ``app._openapi`` (the keys are read here
# straight from the headers: one dependency per request instead of a chain).
SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer",
               "description": "`Authorization: Bearer <key>` (keys: `attribution keys create`)"},
    "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key",
               "description": "the same key in an `X-API-Key` header"},
}


async def get_service(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


ServiceDep = Annotated[Service, Depends(get_service)]


def _presented(request: Request) -> str | None:
    """The key from ``Authorization: Bearer`` or, failing that, ``X-API-Key``."""
    header = request.headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return request.headers.get("x-api-key") or None


def _authenticate(request: Request, scope: Scope) -> ApiKey:
    """401 when the key is missing, unknown or revoked; 403 when its scope is too small."""
    presented = _presented(request)
    if not presented:
        raise ApiProblem(401, "an API key is required", headers=CHALLENGE)
    service: Service = request.app.state.service
    key = service.keys.verify(presented)
    if key is None:
        raise ApiProblem(401, "the API key is not valid", headers=CHALLENGE)
    request.state.key_id = key.key_id
    if not key.allows(scope):
        raise ApiProblem(403, "this endpoint needs an admin key" if scope == "admin"
                         else "this key may not read results")
    return key


async def require_read(request: Request) -> ApiKey:
    """Any active key may read (admin implies read)."""
    return _authenticate(request, "read")


async def require_admin(request: Request) -> ApiKey:
    """Only admin keys may start runs or record verdicts."""
    return _authenticate(request, "admin")


ReadKey = Annotated[ApiKey, Depends(require_read)]
AdminKey = Annotated[ApiKey, Depends(require_admin)]


async def current_view(request: Request) -> RunView:
    """The current run's view; the store is asked only when the cache is due a check."""
    service: Service = request.app.state.service
    view = service.view
    if view is not None and not service.needs_check():
        return view
    return await anyio.to_thread.run_sync(service.current_view)


ViewDep = Annotated[RunView, Depends(current_view)]


def set_rows(request: Request, n: int) -> None:
    """Record how many rows a response carries, for the audit line."""
    request.state.rows = n
