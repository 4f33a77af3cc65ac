"""Request dependencies: the service, the caller's key, the current run's view."""

from __future__ import annotations

from typing import Annotated

import anyio.to_thread
from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from attribution.api.keys import ApiKey
from attribution.api.problems import ApiProblem
from attribution.api.service import Service
from attribution.api.views import RunView

bearer = HTTPBearer(auto_error=False, scheme_name="bearer",
                    description="`Authorization: Bearer <key>` (keys: `attribution keys create`)")
api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, scheme_name="apiKey",
                              description="the same key in an `X-API-Key` header")
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="attribution"'}


async def get_service(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


ServiceDep = Annotated[Service, Depends(get_service)]


async def authenticate(
    request: Request,
    service: ServiceDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    header_key: Annotated[str | None, Depends(api_key_header)],
) -> ApiKey:
    """The caller's key from either header; 401 when missing, unknown or revoked."""
    presented = credentials.credentials if credentials is not None else header_key
    if not presented:
        raise ApiProblem(401, "an API key is required", headers=CHALLENGE)
    key = service.keys.verify(presented)
    if key is None:
        raise ApiProblem(401, "the API key is not valid", headers=CHALLENGE)
    request.state.key_id = key.key_id
    return key


async def require_read(key: Annotated[ApiKey, Depends(authenticate)]) -> ApiKey:
    """Any active key may read (admin implies read)."""
    if not key.allows("read"):
        raise ApiProblem(403, "this key may not read results")
    return key


async def require_admin(key: Annotated[ApiKey, Depends(authenticate)]) -> ApiKey:
    """Only admin keys may start runs or record verdicts."""
    if not key.allows("admin"):
        raise ApiProblem(403, "this endpoint needs an admin key")
    return key


ReadKey = Annotated[ApiKey, Depends(require_read)]
AdminKey = Annotated[ApiKey, Depends(require_admin)]


async def current_view(service: ServiceDep) -> RunView:
    """The current run's view; the store is asked only when the cache is due a check."""
    view = service.view
    if view is not None and not service.needs_check():
        return view
    return await anyio.to_thread.run_sync(service.current_view)


ViewDep = Annotated[RunView, Depends(current_view)]


def set_rows(request: Request, n: int) -> None:
    """Record how many rows a response carries, for the audit line."""
    request.state.rows = n
