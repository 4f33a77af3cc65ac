"""Response headers, a request body limit, and documentation served without a CDN.

Every response says ``nosniff``, may not be framed, and carries a Content
Security Policy that allows nothing (JSON needs nothing); case data is never
to be cached (``no-store``). The documentation pages get their own policy,
which allows only their own scripts (the one inline script by its hash), and
their Swagger UI and ReDoc bundles come from the ``fastapi-offline`` package,
installed with the API, so ``/docs`` works on a machine without internet.

Request bodies are limited to ``MAX_BODY`` bytes: a larger ``Content-Length``
is refused before anything is read, and a body sent without one is counted
as it arrives; both answer a 413 problem document.
"""

from __future__ import annotations

import base64
import hashlib
import re
from importlib import resources
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from attribution.api.problems import ApiProblem, problem_response

MAX_BODY = 1024 * 1024
TOO_LARGE = "the request body is larger than 1 MiB"
ASSETS = "/docs-assets"
API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
# What Swagger UI and ReDoc need from their own origin: their scripts, inline
# styles (both set style attributes), data: images and fonts, the schema, and
# ReDoc's search worker (made from a blob).
DOCS_CSP = ("default-src 'none'; script-src {scripts}; style-src 'self' 'unsafe-inline'; "
            "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; "
            "worker-src 'self' blob:; frame-ancestors 'none'; base-uri 'none'; "
            "form-action 'none'")
SECURITY_HEADERS = ((b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"))
ASSET_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
               ".png": "image/png"}


class SecurityHeadersMiddleware:
    """nosniff, no framing, a CSP and ``Cache-Control: no-store`` on every response that
    does not set its own (the docs pages set a CSP, their assets a cache lifetime)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers += [h for h in SECURITY_HEADERS if h[0] not in present]
                if b"content-security-policy" not in present:
                    headers.append((b"content-security-policy", API_CSP.encode()))
                if b"cache-control" not in present:
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class BodyLimitMiddleware:
    """413 for a request body over ``limit`` bytes, declared or counted."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.limit:
            await problem_response(Request(scope), 413, TOO_LARGE)(scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    # FastAPI re-raises HTTP exceptions met while reading the body, so
                    # the app's handler turns this into the problem document.
                    raise StarletteHTTPException(413, TOO_LARGE)
            return message

        await self.app(scope, counted, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def assets_dir() -> Path:
    """The folder of Swagger UI and ReDoc files shipped by ``fastapi-offline``."""
    return Path(str(resources.files("fastapi_offline") / "static"))


def _page(response: HTMLResponse) -> tuple[str, dict[str, str]]:
    """A docs page's HTML and headers: its policy allows its own inline scripts by hash."""
    html = bytes(response.body).decode()
    scripts = ["'self'"] + [
        "'sha256-" + base64.b64encode(hashlib.sha256(script.encode()).digest()).decode() + "'"
        for script in re.findall(r"<script>(.*?)</script>", html, flags=re.S)]
    return html, {"content-security-policy": DOCS_CSP.format(scripts=" ".join(scripts)),
                  "cache-control": "no-store"}


def install_docs(app: FastAPI, *, openapi_url: str = "/openapi.json") -> None:
    """``/docs`` (Swagger UI) and ``/redoc`` from local assets; build the app with
    ``docs_url=None, redoc_url=None`` so that FastAPI's CDN pages are not added."""
    folder = assets_dir()
    files = {p.name: p for p in folder.iterdir() if p.suffix in ASSET_TYPES}
    swagger = _page(get_swagger_ui_html(
        openapi_url=openapi_url, title=f"{app.title} - Swagger UI",
        swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
        swagger_css_url=f"{ASSETS}/swagger-ui.css",
        swagger_favicon_url=f"{ASSETS}/favicon.png",
        swagger_ui_parameters={"validatorUrl": None}))
    redoc = _page(get_redoc_html(
        openapi_url=openapi_url, title=f"{app.title} - ReDoc",
        redoc_js_url=f"{ASSETS}/redoc.standalone.js", redoc_favicon_url=f"{ASSETS}/favicon.png",
        with_google_fonts=False))

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return HTMLResponse(swagger[0], headers=swagger[1])

    @app.get("/redoc", include_in_schema=False)
    async def redoc_page() -> HTMLResponse:
        return HTMLResponse(redoc[0], headers=redoc[1])

    @app.get(ASSETS + "/{name}", include_in_schema=False)
    async def asset(name: str) -> FileResponse:
        path = files.get(name)  # only the files listed at start-up: no path is ever joined
        if path is None:
            raise ApiProblem(404, "no such documentation asset")
        return FileResponse(path, media_type=ASSET_TYPES[path.suffix],
                            headers={"cache-control": "public, max-age=86400"})
