"""Progress lines on stderr, per-stage timings, and the kill points of the crash tests."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager


class Stages:
    """Times named stages; prints one line per stage unless quiet."""

    def __init__(self, *, quiet: bool = False) -> None:
        self.quiet = quiet
        self.timings: dict[str, float] = {}
        self._t0 = time.perf_counter()

    def say(self, message: str) -> None:
        if not self.quiet:
            elapsed = time.perf_counter() - self._t0
            print(f"[{elapsed:7.1f}s] {message}", file=sys.stderr, flush=True)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        self.say(f"{name} ...")
        start = time.perf_counter()
        try:
            yield
        finally:
            took = time.perf_counter() - start
            self.timings[name] = round(self.timings.get(name, 0.0) + took, 3)
            self.say(f"{name} done in {took:.1f}s")


KILL_AT = "ATTRIBUTION_KILL_AT"


def checkpoint(name: str) -> None:
    """A named point of a job: ``ATTRIBUTION_KILL_AT=name`` kills the process here with
    SIGKILL, exactly as an operator's ``kill -9`` would (the crash tests' fault injection).

    The batch job passes one at the start of every stage (the stage's name) and at
    ``locked`` and ``written``; the stores mark the steps of their writes
    (``load:...``, ``write:...``), each named after what is done when it is reached.
    """
    if os.environ.get(KILL_AT) == name:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)
