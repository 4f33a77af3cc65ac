"""The hand world served by the app on each store, as the API tests reach it.

``world`` (a module-scoped fixture: import it into a test module to use it)
serves the hand world of ``tests.support.api_world`` on the embedded store and
on the session's real Neo4j; ``endpoints`` lists every route with valid
arguments (the auth matrix and the hardening tests walk it).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from attribution.api import create_app
from attribution.store import Store
from attribution.store.embedded import EmbeddedStore
from tests.support.api_world import HEAD_RUN, Keys, fill_store, make_keys

PROBLEM = "application/problem+json"


@dataclass
class World:
    """A served hand world: the client, the keys, and where things live."""

    client: TestClient
    keys: Keys
    home: Path
    factory: Callable[[], Store]

    def get(self, url: str, key: str | None = "read", **kw: Any) -> httpx.Response:
        return self.client.get(url, headers=self.headers(key), **kw)

    def post(self, url: str, body: Any, key: str | None = "admin") -> httpx.Response:
        return self.client.post(url, json=body, headers=self.headers(key))

    def headers(self, key: str | None) -> dict[str, str]:
        secret = {"read": self.keys.read, "admin": self.keys.admin, None: None,
                  "revoked": self.keys.revoked, "bad": "atk_00000000_nope"}.get(key, key)
        return {"Authorization": f"Bearer {secret}"} if secret else {}


def _neo4j_factory(request: pytest.FixtureRequest) -> Callable[[], Store]:
    """A factory of Neo4j stores on the session's test server, emptied first."""
    from attribution.contracts.settings import Neo4jSettings
    from attribution.store.neo4j import Neo4jStore

    server = request.getfixturevalue("neo4j_server")
    server.clear()
    settings = Neo4jSettings(uri=server.uri, user=server.user, password=server.password,
                             database=server.database)

    def factory() -> Store:
        store: Store = Neo4jStore(settings)
        return store

    return factory


@pytest.fixture(scope="module", params=["embedded", pytest.param("neo4j", marks=pytest.mark.neo4j)])
def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[World]:
    """The hand world (two runs, head current) served by the app, on each store."""
    home = tmp_path_factory.mktemp(f"api-{request.param}")
    if request.param == "embedded":
        def factory() -> Store:
            return EmbeddedStore(home / "store")
    else:
        factory = _neo4j_factory(request)
    store = factory()
    fill_store(store)
    store.close()
    keys = make_keys(home / "api_keys.json")
    app = create_app(factory, keys=keys.store, home=home, refresh_interval=0.0)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield World(client, keys, home, factory)


def endpoints(home: Path) -> list[tuple[str, str, Any, bool]]:
    """Every endpoint with valid arguments: (method, url, body, admin only)."""
    snapshot = home / "no-such-snapshot"
    return [
        ("GET", "/fleets", None, False),
        ("GET", "/fleets/F-alpha", None, False),
        ("GET", "/fleets/F-alpha/members", None, False),
        ("GET", "/fleets/F-alpha/evidence", None, False),
        ("GET", "/fleets/F-alpha/infrastructure", None, False),
        ("GET", "/accounts/a000", None, False),
        ("GET", "/accounts/a000/entities", None, False),
        ("GET", "/organizations", None, False),
        ("GET", "/organizations/org-1", None, False),
        ("GET", "/runs", None, False),
        ("GET", "/runs/diff", None, False),
        ("GET", f"/runs/{HEAD_RUN}", None, False),
        ("GET", "/queries", None, False),
        ("POST", "/queries/api_test_count", {"params": {"prefix": "a"}}, False),
        ("POST", "/runs", {"snapshot": str(snapshot)}, True),
        ("GET", "/runs/jobs/0000", None, True),
        ("POST", "/verdicts", {"subject": "fleet", "subject_id": "F-alpha",
                               "verdict": "sybil", "reason": "matrix"}, True),
    ]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Served:
    """``attribution serve`` running in its own process over the hand world."""

    url: str
    port: int
    keys: Keys
    log: Path


@contextmanager
def served_cli(root: Path, *options: str, ready: str = "/health") -> Iterator[Served]:
    """The real ``attribution serve`` (a new process, the embedded store in ``root``) on a free
    loopback port with ``options``, up once ``ready`` answers 200; stopped on exit."""
    fill_store(EmbeddedStore(root / "store"))
    keys = make_keys(root / "api_keys.json")
    port = free_port()
    served = Served(f"http://127.0.0.1:{port}", port, keys, root / "serve.log")
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEO4J_")}
    env["ATTRIBUTION_HOME"] = str(root)
    with open(served.log, "wb") as out:
        server = subprocess.Popen(
            [sys.executable, "-m", "attribution.cli", "serve", "--port", str(port),
             "--store", str(root / "store"), "--keys", str(root / "api_keys.json"), *options],
            env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until_up(served.url, server, served.log, path=ready)
        yield served
    finally:
        server.terminate()
        server.wait(30)


def wait_until_up(url: str, server: subprocess.Popen[bytes], log: Path, *,
                  path: str = "/health") -> None:
    """Wait (two minutes at most) until a served ``attribution serve`` answers 200 on ``path``;
    fail with its log if it exits first."""
    deadline = time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"{url}{path}", timeout=10).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert server.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)
