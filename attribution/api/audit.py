"""Request ids and the audit log: one line per request, whatever happens.

A pure ASGI middleware (no per-request task or body buffering): it stamps a
request id, times the request, and after the response writes one JSON line to
the ``attribution.audit`` logger with the key id, the route template, the
parameters (personal data masked; credentials replaced by ``<redacted>``: a key
sent in a query string is refused, and its audit line is written without it),
rows returned, status and milliseconds. It
is also the last line of defence: an unhandled exception becomes a bare 500
problem document, and the traceback goes only to the server log.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import time
from typing import Any
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from attribution.api.credentials import REDACTED, is_credential, looks_like_key
from attribution.api.masking import mask_param
from attribution.api.problems import PROBLEM_JSON

audit = logging.getLogger("attribution.audit")
log = logging.getLogger("attribution.api")
REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._-]{8,64}$")


class AuditMiddleware:
    """Request id header, audit line, and a last-resort 500."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        incoming = _header(scope, b"x-request-id")
        rid = incoming if incoming and REQUEST_ID_RE.match(incoming) else secrets.token_hex(16)
        state = scope.setdefault("state", {})
        state["request_id"] = rid
        status = 500
        response_started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", rid.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception:
            log.exception("unhandled error in request %s", rid)
            status = 500
            if not response_started:
                body = json.dumps({"type": "about:blank", "title": "Internal server error",
                                   "status": 500, "detail": "the server failed; see its log",
                                   "instance": f"urn:request:{rid}",
                                   "request_id": rid}).encode()
                await send({"type": "http.response.start", "status": 500, "headers": [
                    (b"content-type", PROBLEM_JSON.encode()),
                    (b"content-length", str(len(body)).encode()),
                    (b"x-request-id", rid.encode())]})
                await send({"type": "http.response.body", "body": body})
        finally:
            if audit.isEnabledFor(logging.INFO):
                audit.info(json.dumps(_line(scope, state, rid, status, started), default=str))


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _line(scope: Scope, state: dict[str, Any], rid: str, status: int, started: float
          ) -> dict[str, Any]:
    route = scope.get("route")
    endpoint = getattr(route, "path", None) or "<unmatched>"
    params: dict[str, Any] = {}
    for key, value in (scope.get("path_params") or {}).items():
        params[key] = REDACTED if looks_like_key(value) else mask_param(key, value)
    for key, value in parse_qsl(scope.get("query_string", b"").decode("latin-1"),
                                keep_blank_values=True):
        params[key] = REDACTED if is_credential(key, value) else mask_param(key, value)
    return {
        "request_id": rid,
        "key_id": state.get("key_id"),
        "method": scope.get("method"),
        "endpoint": endpoint,
        "params": params,
        "rows": state.get("rows"),
        "status": status,
        "ms": round((time.perf_counter() - started) * 1000, 2),
    }
