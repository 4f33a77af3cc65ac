"""A recording fake of the parts of the neo4j driver the Neo4j store uses.

It records every statement with its parameters and access mode, answers with
rows from a ``responder``, and raises queued errors, so batching, statement
order and error mapping can be checked without a server. It never replaces
the real server: what Cypher does is tested against the real one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

Responder = Callable[[str, dict[str, Any]], list[dict[str, Any]]]


@dataclass
class Call:
    """One statement as sent: ``mode`` is read, write or auto (implicit transaction)."""

    mode: str
    query: str
    params: dict[str, Any]


class FakeResult:
    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self._rows = rows

    def keys(self) -> list[str]:
        return list(self._rows[0]) if self._rows else []

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return (tuple(row.values()) for row in self._rows)

    def consume(self) -> None:
        return None


class FakeTx:
    def __init__(self, driver: FakeDriver, mode: str) -> None:
        self.driver = driver
        self.mode = mode

    def run(self, query: str, parameters: dict[str, Any] | None = None, **kw: Any
            ) -> FakeResult:
        params = {**(parameters or {}), **kw}
        self.driver.calls.append(Call(self.mode, query, params))
        return FakeResult(self.driver.responder(query, params))


class FakeSession:
    def __init__(self, driver: FakeDriver) -> None:
        self.driver = driver

    def __enter__(self) -> FakeSession:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def _transaction(self, mode: str, work: Callable[..., Any], *args: Any) -> Any:
        if self.driver.errors:
            error = self.driver.errors.pop(0)
            if error is not None:
                # the work ran (and, for an unknown commit outcome, may have committed)
                work(FakeTx(self.driver, mode), *args)
                raise error
        return work(FakeTx(self.driver, mode), *args)

    def execute_write(self, work: Callable[..., Any], *args: Any) -> Any:
        return self._transaction("write", work, *args)

    def execute_read(self, work: Callable[..., Any], *args: Any) -> Any:
        return self._transaction("read", work, *args)

    def run(self, query: str, parameters: dict[str, Any] | None = None) -> FakeResult:
        return FakeTx(self.driver, "auto").run(query, parameters)


@dataclass
class FakeDriver:
    """``errors``: one entry per coming transaction, None to let it pass, popped in turn."""

    responder: Responder = field(default=lambda query, params: [])
    calls: list[Call] = field(default_factory=list)
    errors: list[BaseException | None] = field(default_factory=list)
    closed: bool = False

    def session(self, **config: Any) -> FakeSession:
        return FakeSession(self)

    def verify_connectivity(self) -> None:
        return None

    def close(self) -> None:
        self.closed = True

    def sent(self, mode: str | None = None) -> list[Call]:
        return [c for c in self.calls if mode is None or c.mode == mode]
