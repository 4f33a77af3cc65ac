"""Request dependencies: the service, the caller's key, the current run's view.

Keys are checked twice over, cheaply: ``AuthFirstRoute`` checks the key before
FastAPI reads and validates the request body (so an unauthenticated caller
learns nothing from a 422 about the body's shape), and the ``ReadKey`` /
``AdminKey`` dependencies check it again from the request state where a route
is not one of those.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any

import anyio.to_thread
from fastapi import Depends, Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from attribution.api.credentials import is_credential
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


KEY_IN_URL = ("API keys are not accepted in the URL, where proxies and logs keep them: "
              "send the key in the Authorization or X-API-Key header")


def _refuse_keys_in_url(request: Request) -> None:
    """401 for a key-like query parameter, whatever the headers say (the key is spent)."""
    for name, value in request.query_params.multi_items():
        if is_credential(name, value):
            raise ApiProblem(401, KEY_IN_URL, headers=CHALLENGE)


def _authenticate(request: Request, scope: Scope) -> ApiKey:
    """401 for a key in the URL, or when the key is missing, unknown or revoked; 403 when
    its scope is too small. The verified key is kept on the request for later checks."""
    key: ApiKey | None = getattr(request.state, "api_key", None)
    if key is None:
        _refuse_keys_in_url(request)
        presented = _presented(request)
        if not presented:
            raise ApiProblem(401, "an API key is required", headers=CHALLENGE)
        service: Service = request.app.state.service
        key = service.keys.verify(presented)
        if key is None:
            raise ApiProblem(401, "the API key is not valid", headers=CHALLENGE)
        request.state.api_key = key
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


def _needs(dependant: Dependant, call: Callable[..., Any]) -> bool:
    return any(d.call is call or _needs(d, call) for d in dependant.dependencies)


class AuthFirstRoute(APIRoute):
    """A route whose key is checked before its body is read or validated.

    FastAPI parses the JSON body before it solves dependencies, so without
    this an unauthenticated caller with a broken body got a 422 describing
    the body instead of a 401. The scope is admin when the route depends on
    ``require_admin``, read otherwise; every router but the probes uses it.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        scope: Scope = "admin" if _needs(self.dependant, require_admin) else "read"

        async def authenticated_first(request: Request) -> Response:
            _authenticate(request, scope)
            return await handler(request)

        return authenticated_first


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
