"""The HTTP query API: ``create_app`` wires the store, the key file and the routers.

The store is opened in the app's lifespan (never at import), so importing the
module, building the OpenAPI document or running tests needs no database; the
current run is then indexed in the background, and ``/ready`` answers 200
once it is. A
store that cannot be opened leaves the app up: ``/health`` answers 200,
``/ready`` and result endpoints 503, and the store is retried every few
seconds.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio.to_thread
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from attribution import __version__
from attribution.api.audit import AuditMiddleware
from attribution.api.deps import SECURITY_SCHEMES
from attribution.api.hardening import BodyLimitMiddleware, SecurityHeadersMiddleware, install_docs
from attribution.api.keys import KeyStore
from attribution.api.problems import PROBLEM_JSON, Problem, example, install
from attribution.api.routers import (
    accounts,
    fleets,
    health,
    organizations,
    queries,
    runs,
    verdicts,
)
from attribution.api.service import Service
from attribution.store import Store, default_home

DESCRIPTION = """\
Read the current attribution run: fleets of coordinated accounts, how likely
each is inauthentic (`sybil_score`), whom it is attributed to and how sure the
engine is (`confidence`, calibrated), and the evidence.

**Keys.** Every endpoint but `/health` and `/ready` needs an API key, as
`Authorization: Bearer <key>` or `X-API-Key: <key>`, never in the URL (a
request with a key in its query string is refused with a 401). Keys are made with
`attribution keys create --name NAME --scope read|admin`. `read` reads results;
`admin` also starts runs (`POST /runs`) and records verdicts (`POST /verdicts`).

**Privacy.** Card fingerprints, devices and prompt hashes are shown by their
last 4 characters, IPs as their /24 (or /48) network; email addresses never
appear. Errors are RFC 7807 problem documents that never repeat the input.
Responses are not to be cached (`Cache-Control: no-store`); request bodies are
limited to 1 MiB.

**Verdicts** (`POST /verdicts`) go into the store's one append-only verdict
log, the one `attribution verdict` writes, with who, when, why and the current
run id; every later run applies them (attribution confirmed or rejected, an
account not sybil; other verdicts are kept as notes).
"""


OPEN_PATHS = ("/health", "/ready")


def create_app(store_factory: Callable[[], Store], *, keys: KeyStore,
               home: Path | None = None, refresh_interval: float = 1.0) -> FastAPI:
    """The API app; ``store_factory`` is called once, in the lifespan.

    ``home`` (default ``$ATTRIBUTION_HOME``) holds ``verdicts.jsonl`` and the run
    directories of API-started runs. ``refresh_interval`` is how often, at
    most, the store is asked whether its current run changed.

    >>> from attribution.store.embedded import EmbeddedStore
    >>> app = create_app(lambda: EmbeddedStore(Path("store")), keys=KeyStore(Path("k.json")))
    """
    home = Path(home) if home is not None else default_home()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        service = Service(store_factory, keys=keys, home=home,
                          refresh_interval=refresh_interval)
        await anyio.to_thread.run_sync(service.open)
        app.state.service = service
        threading.Thread(target=service.warm, name="attribution-api-warm", daemon=True).start()
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(service.close)

    app = FastAPI(title="Attribution API", version=__version__, description=DESCRIPTION,
                  lifespan=lifespan, docs_url=None, redoc_url=None)
    install(app)
    install_docs(app)
    for module in (health, fleets, accounts, organizations, runs, queries, verdicts):
        app.include_router(module.router)
    # Outermost last: headers on every response (the audit's own 500 too), then the
    # audit line, then the body limit, whose 413 is audited like any answer.
    app.add_middleware(BodyLimitMiddleware)
    app.add_middleware(AuditMiddleware)
    app.add_middleware(SecurityHeadersMiddleware)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """The generated schema, with problem documents declared as problem+json only."""
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, description=app.description,
                         routes=app.routes)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.setdefault("Problem", Problem.model_json_schema(
        ref_template="#/components/schemas/{model}"))
    schema["components"]["securitySchemes"] = SECURITY_SCHEMES
    for name, path in schema.get("paths", {}).items():
        for operation in path.values():
            if name not in OPEN_PATHS:
                operation["security"] = [{"bearer": []}, {"apiKey": []}]
            for status, response in operation.get("responses", {}).items():
                if status.isdigit() and int(status) >= 400:
                    declared = response.get("content", {}).get(PROBLEM_JSON, {})
                    response["content"] = {PROBLEM_JSON: {
                        "schema": {"$ref": "#/components/schemas/Problem"},
                        "example": declared.get("example") or example(int(status))}}
    app.openapi_schema = schema
    return schema


def app_from_env() -> FastAPI:
    """The app for ``uvicorn --factory`` worker processes (``attribution serve --workers``).

    Reads ``ATTRIBUTION_API_STORE`` (embedded store root; Neo4j when ``NEO4J_URI``
    is set) and ``ATTRIBUTION_API_KEYS`` (the key file), which ``serve`` sets.
    """
    import os

    from attribution.store import open_store

    root = Path(os.environ.get("ATTRIBUTION_API_STORE") or default_home() / "store")
    keys = Path(os.environ.get("ATTRIBUTION_API_KEYS") or default_home() / "api_keys.json")
    return create_app(lambda: open_store(root), keys=KeyStore(keys))
