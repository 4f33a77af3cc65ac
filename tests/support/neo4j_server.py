"""Pytest plugin: one real Neo4j 5.26 per test session (see ``attribution.dev.neo4j_harness``).

Enable with ``pytest_plugins = ["tests.support.neo4j_server"]`` in the top-level conftest.

Fixtures:

``neo4j_server`` (session)
    Builds ``neo4j-dev/`` if needed, starts the server once on port 7697
    (``ATTRIBUTION_TEST_NEO4J_PORT`` overrides; pytest-xdist workers add 10 per
    worker; if 7697 is taken and no port was set, 7699, 7701, ... are tried) with
    auth on and a fresh data directory, and stops it at the end.
    Gives a :class:`Neo4jTestServer`: ``uri``, ``user``, ``password``,
    ``database``, ``driver`` (neo4j 6.x, connected) and ``stop()`` / ``start()``
    / ``restart()`` for fault tests (same data directory; ``driver`` is a new one
    after ``start()``).

``neo4j_clean`` (function)
    The same server with every node and relationship deleted first
    (constraints and indexes stay).

Without ``java``/``mvn`` the fixtures skip, except under CI (``CI`` set), where
they fail: CI must run these tests.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from neo4j import Driver, GraphDatabase

from attribution.dev import neo4j_harness as neo4j_dev

DEFAULT_TEST_PORT = 7697
PASSWORD = "attribution-test"
HEAP = os.environ.get("ATTRIBUTION_TEST_NEO4J_HEAP", "1g")

CLEAR_QUERY = "MATCH (n) CALL (n) { DETACH DELETE n } IN TRANSACTIONS OF 10000 ROWS"


def session_port() -> int:
    """The session server's port: ``ATTRIBUTION_TEST_NEO4J_PORT`` or 7697, plus 10 per
    xdist worker."""
    port = int(os.environ.get("ATTRIBUTION_TEST_NEO4J_PORT", DEFAULT_TEST_PORT))
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if worker.startswith("gw") and worker[2:].isdigit():
        port += 10 * int(worker[2:])
    return port


def candidate_ports() -> list[int]:
    """``session_port()``; unless the port was set explicitly, the next free ones too (another
    test session on this machine may hold 7697)."""
    port = session_port()
    if os.environ.get("ATTRIBUTION_TEST_NEO4J_PORT"):
        return [port]
    return [port + i for i in range(0, 40, 2)]


class Neo4jTestServer:
    """The session's server: connection facts, a driver, and stop/start for fault tests."""

    def __init__(self, *, port: int, data_dir: Path, password: str = PASSWORD,
                 heap: str = HEAP) -> None:
        self.port = port
        self.data_dir = data_dir
        self.password = password
        self.heap = heap
        self.user = neo4j_dev.USER
        self.database = neo4j_dev.DATABASE
        self.uri = f"bolt://{neo4j_dev.HOST}:{port}"
        self.log_path = data_dir.parent / neo4j_dev.LOG_NAME
        self.pid: int | None = None
        self.startup_seconds: float | None = None
        self._driver: Driver | None = None

    # -- lifecycle -------------------------------------------------------
    def start(self) -> None:
        """Start (or no-op if running) on the same port and data directory; new driver."""
        server = neo4j_dev.start(port=self.port, data_dir=self.data_dir, heap=self.heap,
                                 password=self.password, watch_pid=os.getpid())
        self.pid = server.pid
        self.uri = server.uri
        self.startup_seconds = server.startup_seconds
        if self._driver is None:
            driver = GraphDatabase.driver(self.uri, auth=(self.user, self.password))
            driver.verify_connectivity()
            self._driver = driver

    def stop(self, timeout: float = neo4j_dev.STOP_TIMEOUT) -> None:
        """Close the driver and stop the server cleanly (SIGKILL after ``timeout``)."""
        self.close_driver()
        neo4j_dev.stop(data_dir=self.data_dir, timeout=timeout)
        self.pid = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def kill(self) -> None:
        """SIGKILL, no clean shutdown: the next ``start()`` runs recovery."""
        self.close_driver()
        neo4j_dev.stop(data_dir=self.data_dir, kill=True)
        self.pid = None

    @property
    def started(self) -> bool:
        """Started by this object and not stopped since (cheap; see ``running``)."""
        return self._driver is not None

    @property
    def running(self) -> bool:
        return neo4j_dev.status(data_dir=self.data_dir).running

    # -- use -------------------------------------------------------------
    @property
    def driver(self) -> Driver:
        if self._driver is None:
            raise RuntimeError("the Neo4j test server is stopped; call start() first")
        return self._driver

    def close_driver(self) -> None:
        if self._driver is not None:
            self._driver.close()
            self._driver = None

    def env(self) -> dict[str, str]:
        """``NEO4J_*`` variables for code that reads its settings from the environment."""
        return {"NEO4J_URI": self.uri, "NEO4J_USER": self.user,
                "NEO4J_PASSWORD": self.password, "NEO4J_DATABASE": self.database}

    def query(self, cypher: str, **params: Any) -> list[dict[str, Any]]:
        """Run one query (managed write transaction); records as dicts."""
        records, _, _ = self.driver.execute_query(cypher, params, database_=self.database)
        return [r.data() for r in records]

    def clear(self) -> None:
        """Delete all nodes and relationships (batched); constraints and indexes stay."""
        with self.driver.session(database=self.database) as session:
            session.run(CLEAR_QUERY).consume()

    def __repr__(self) -> str:
        return f"Neo4jTestServer({self.uri}, data={self.data_dir}, pid={self.pid})"


def _unavailable(reason: str) -> None:
    """Skip locally, fail under CI."""
    if os.environ.get("CI"):
        pytest.fail(f"Neo4j test server unavailable under CI: {reason}", pytrace=False)
    pytest.skip(f"Neo4j test server unavailable: {reason}")


@pytest.fixture(scope="session")
def neo4j_server() -> Iterator[Neo4jTestServer]:
    try:
        neo4j_dev.find_java()
        neo4j_dev.build()  # needs mvn only when not built yet
    except neo4j_dev.ToolMissing as exc:
        _unavailable(exc.message)
    except neo4j_dev.Neo4jDevError as exc:
        pytest.fail(f"building neo4j-dev failed: {exc}", pytrace=False)
    ports = candidate_ports()
    port = next((p for p in ports if not neo4j_dev.port_answers(p)), None)
    if port is None:
        pytest.fail(f"Neo4j test server: ports {ports} are all in use (other test sessions or "
                    "dev servers?); set ATTRIBUTION_TEST_NEO4J_PORT", pytrace=False)
    with tempfile.TemporaryDirectory(prefix="attribution-neo4j-test-") as tmp:
        server = Neo4jTestServer(port=port, data_dir=Path(tmp) / "data")
        try:
            try:
                server.start()
            except neo4j_dev.Neo4jDevError as exc:
                pytest.fail(f"starting the Neo4j test server failed: {exc}", pytrace=False)
            yield server
        finally:
            server.stop()


@pytest.fixture
def neo4j_clean(neo4j_server: Neo4jTestServer) -> Neo4jTestServer:
    if not neo4j_server.started or not neo4j_server.running:
        neo4j_server.start()  # an earlier fault test left it stopped
    neo4j_server.clear()
    return neo4j_server
