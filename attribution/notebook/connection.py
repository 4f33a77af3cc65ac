"""The notebooks' connection to Neo4j: the same ``NEO4J_*`` settings as ``attribution run``,
one driver per kernel, reconnected on demand."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from neo4j import Driver, GraphDatabase
from neo4j.exceptions import DriverError, Neo4jError

from attribution.contracts.settings import Neo4jSettings

if TYPE_CHECKING:
    pass


QUERY_TIMEOUT = 300.0  # seconds: an analyst's runaway query must not hold the server forever
UNSET = ("NEO4J_URI is not set: start a dev server with `eval \"$(attribution neo4j-dev start)\"` "
         "or export NEO4J_URI, NEO4J_USER, NEO4J_PASSWORD and NEO4J_DATABASE")


class NotebookError(RuntimeError):
    """A notebook helper cannot do what was asked; shown as one line, not a traceback."""

    def _render_traceback_(self) -> list[str]:
        # IPython shows this instead of a traceback: the message is the whole story.
        return [f"{type(self).__name__}: {self}"]

# Shipped as package data (``attribution/notebooks``, mapped from the repo's

# --------------------------------------------------------------------------- connection


@dataclass
class _Connection:
    settings: Neo4jSettings | None = None
    driver: Driver | None = None


_connection = _Connection()


def settings() -> Neo4jSettings:
    """The ``NEO4J_*`` settings, or a one-line error saying how to set them."""
    found = Neo4jSettings.from_env()
    if found is None:
        raise NotebookError(UNSET)
    return found


def connect(*, reconnect: bool = False) -> Driver:
    """The notebook's driver, made once from ``NEO4J_*`` and checked to answer.

    A new driver is made when the environment changed (or ``reconnect``), so a
    notebook re-pointed at another server does not keep talking to the old one.
    """
    wanted = settings()
    if _connection.driver is not None and _connection.settings == wanted and not reconnect:
        return _connection.driver
    close()
    try:
        driver = GraphDatabase.driver(wanted.uri, auth=(wanted.user, wanted.password),
                                      notifications_min_severity="OFF")
    except (DriverError, ValueError) as exc:
        raise NotebookError(f"bad Neo4j settings ({wanted.uri}): {one_line(exc)}") from exc
    try:
        driver.verify_connectivity()
    except (DriverError, Neo4jError, OSError) as exc:
        driver.close()
        raise NotebookError(f"cannot use Neo4j at {wanted.uri} as {wanted.user!r}: "
                            f"{one_line(exc)}") from exc
    _connection.settings, _connection.driver = wanted, driver
    return driver


def connected() -> tuple[Driver, Neo4jSettings]:
    """The notebook's driver (connecting first) and the settings it was made from."""
    driver = connect()
    assert _connection.settings is not None
    return driver, _connection.settings


def close() -> None:
    """Close the notebook's driver (the next query reconnects)."""
    if _connection.driver is not None:
        _connection.driver.close()
    _connection.settings = _connection.driver = None


def one_line(exc: BaseException) -> str:
    """An exception as one short line (a notebook shows the message, not a traceback)."""
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    text = " ".join(str(message).split())
    return text if len(text) <= 300 else text[:297] + "..."
