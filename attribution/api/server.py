"""How ``attribution serve`` runs uvicorn: connections that hold a worker get closed.

uvicorn closes a keep-alive connection that stays idle after a response
(``timeout_keep_alive``), but nothing closes a connection that never sends a
whole request: one that sends nothing, half its headers, or a body shorter
than its ``Content-Length`` keeps its socket (and, once the headers are in,
a request task) forever, and a few hundred of them starve the server. The
protocols here are uvicorn's own with one addition: a request must arrive
whole within ``timeout_request`` seconds of the connection opening or of
its first byte, or the connection is closed.

>>> sorted(uvicorn_options(timeout_request=10, timeout_keep_alive=5))
['http', 'timeout_keep_alive']
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any, Literal

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol  # uvicorn[standard]

HttpKind = Literal["auto", "h11", "httptools"]
TIMEOUT_REQUEST = 10.0
TIMEOUT_KEEP_ALIVE = 5.0


class _RequestDeadline(asyncio.Protocol):
    """The timer: armed while a request is incomplete, closing the connection when due.

    Mixed in before a uvicorn protocol: armed when the connection opens, disarmed when it
    is lost; each protocol says when a request has begun and ended.
    """

    transport: asyncio.Transport
    loop: asyncio.AbstractEventLoop
    _deadline: asyncio.TimerHandle | None = None
    request_timeout: float = TIMEOUT_REQUEST

    def __init__(self, *args: Any, request_timeout: float = TIMEOUT_REQUEST, **kwargs: Any
                 ) -> None:
        super().__init__(*args, **kwargs)
        self.request_timeout = request_timeout

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self._deadline is None:
            self._deadline = self.loop.call_later(self.request_timeout, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.transport.close()


class DeadlineH11Protocol(_RequestDeadline, H11Protocol):
    """uvicorn's h11 protocol with the request deadline."""

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # IDLE with bytes buffered (half the headers) or SEND_BODY: still arriving.
        if self.conn.their_state in (h11.DONE, h11.MUST_CLOSE, h11.CLOSED, h11.ERROR):
            self._disarm()
        elif self.conn.their_state is h11.SEND_BODY or self.conn.trailing_data[0]:
            self._arm()


class DeadlineHttpToolsProtocol(_RequestDeadline, HttpToolsProtocol):
    """uvicorn's httptools protocol (its default) with the request deadline."""

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._disarm()


def uvicorn_options(*, timeout_request: float = TIMEOUT_REQUEST,
                    timeout_keep_alive: float = TIMEOUT_KEEP_ALIVE, http: HttpKind = "auto"
                    ) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.run``/``uvicorn.Config``: the protocol with the
    request deadline (httptools unless ``http="h11"``, as uvicorn's ``auto`` picks) and the
    keep-alive timeout. A partial of a module-level class, so ``--workers`` can pickle it."""
    if timeout_request <= 0 or timeout_keep_alive <= 0:
        raise ValueError("timeouts must be positive")
    protocol: type[DeadlineH11Protocol | DeadlineHttpToolsProtocol] = (
        DeadlineH11Protocol if http == "h11" else DeadlineHttpToolsProtocol)
    return {"http": functools.partial(protocol, request_timeout=timeout_request),
            "timeout_keep_alive": timeout_keep_alive}
