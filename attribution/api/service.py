"""The API's long-lived state: the store, the current run's view, jobs, verdicts.

Requests never wait on the store in the common case: the current view is
kept in memory and the store is asked at most once per ``refresh_interval``
whether its current run changed (a cheap pointer read where the store has
one). When it did, the request that noticed builds the new view while every
other request keeps answering from the old one; the swap is one assignment.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from attribution.api.keys import KeyStore
from attribution.api.problems import ApiProblem, StoreUnavailable
from attribution.api.views import RunView, build_view
from attribution.contracts.results import RunRecord
from attribution.store import Store

log = logging.getLogger("attribution.api")
# Run ids as the engine makes them (run-<time>-<digest>[-n]): one path component,
# never "." or "..", so a run id cannot name a directory outside the store's runs.
RUN_ID_PATTERN = r"^run-[A-Za-z0-9][A-Za-z0-9_-]{0,99}$"
RUN_ID = re.compile(RUN_ID_PATTERN)


class NoCurrentRun(ApiProblem):
    """The store is up but holds no run yet."""

    def __init__(self) -> None:
        super().__init__(503, "the store has no current run yet", headers={"Retry-After": "30"})


class Service:
    """Everything the routers share, created in the app's lifespan."""

    def __init__(self, store_factory: Callable[[], Store], *, keys: KeyStore, home: Path,
                 refresh_interval: float = 1.0, reopen_interval: float = 5.0) -> None:
        self.store_factory = store_factory
        self.keys = keys
        self.home = Path(home)
        self.refresh_interval = refresh_interval
        self.reopen_interval = reopen_interval
        self.store: Store | None = None
        self.view: RunView | None = None
        self._checked = 0.0          # monotonic time of the last current-run check
        self._opened_at = 0.0
        self._store_lock = threading.RLock()   # one store call at a time
        self._refresh_lock = threading.Lock()  # one refresher at a time
        self._records: OrderedDict[str, RunRecord] = OrderedDict()
        self._runs_cache: tuple[float, list[dict[str, Any]]] | None = None
        from attribution.api.jobs import Jobs

        self.jobs = Jobs(self)

    # --- store -----------------------------------------------------------
    def open(self) -> None:
        """Open the store; a failure is logged and retried later (the app still serves 503)."""
        with self._store_lock:
            if self.store is not None:
                return
            self._opened_at = time.monotonic()
            try:
                self.store = self.store_factory()
            except Exception as exc:
                log.warning("store could not be opened: %s", type(exc).__name__)
                self.store = None

    def close(self) -> None:
        self.jobs.shutdown()
        with self._store_lock:
            if self.store is not None:
                try:
                    self.store.close()
                finally:
                    self.store = None

    def _store(self) -> Store:
        if self.store is None and time.monotonic() - self._opened_at >= self.reopen_interval:
            self.open()
        if self.store is None:
            raise StoreUnavailable()
        return self.store

    def call(self, fn: Callable[[Store], Any], *, lock: bool = True) -> Any:
        """Run ``fn(store)``; any failure of the store becomes a 503.

        Calls are serialized unless ``lock`` is false (thread-safe drivers only).
        """
        with self._store_lock:
            store = self._store()
            if lock:
                return _guarded(fn, store)
        return _guarded(fn, store)

    # --- current run -----------------------------------------------------
    def needs_check(self) -> bool:
        """True when the cached view is missing or older than the refresh interval."""
        return self.view is None or time.monotonic() - self._checked >= self.refresh_interval

    def current_view(self) -> RunView:
        """The current run's view, refreshed when the store's current run changed."""
        view = self.view
        if view is not None and not self.needs_check():
            return view
        if not self._refresh_lock.acquire(blocking=view is None):
            return view  # type: ignore[return-value]  # someone else is refreshing
        try:
            if self.view is not None and not self.needs_check():
                return self.view
            self._refresh()
        finally:
            self._refresh_lock.release()
        if self.view is None:
            raise NoCurrentRun()
        return self.view

    def _refresh(self) -> None:
        try:
            current = self.call(_current_run_id)
        except StoreUnavailable:
            if self.view is None:
                raise
            # Serve the last good view while the store is down; /ready says 503.
            self._checked = time.monotonic()
            return
        self._checked = time.monotonic()
        if current is not None and self.view is not None and current == self.view.run_id:
            return
        # The run and its graph are two reads: if a job made another run current
        # between them, read both again, so a view never pairs a run with the
        # graph of another.
        for _ in range(3):
            record = self.call(lambda s: s.read_results())
            if record is None:
                self.view = None
                return
            graph = self.call(lambda s: s.read_graph())
            if self.call(_current_run_id) == record.run_id:
                break
        started = time.monotonic()
        view = build_view(record, graph)
        log.info("indexed run %s (%d accounts, %d fleets) in %.2fs", view.run_id,
                 view.accounts, view.fleets.height, time.monotonic() - started)
        self._remember(record)
        self.view = view

    def warm(self) -> None:
        """Index the current run ahead of the first request (run in a thread at startup)."""
        try:
            self.current_view()
        except ApiProblem:
            pass  # no run yet, or the store is down: /ready says so
        except Exception:
            log.exception("indexing the current run failed")

    def ready(self) -> str:
        """The current run id once it is indexed; raises when the store is down or holds
        no run (blocks while the first index is being built)."""
        self.current_view()
        run_id = self.call(_current_run_id)
        if run_id is None:
            raise NoCurrentRun()
        return str(run_id)

    # --- other runs ------------------------------------------------------
    def _remember(self, record: RunRecord) -> None:
        self._records[record.run_id] = record
        self._records.move_to_end(record.run_id)
        while len(self._records) > 4:
            self._records.popitem(last=False)

    def record(self, run_id: str) -> RunRecord | None:
        """A stored run by id (runs never change, so a few are kept in memory); None for
        an unknown id or one that is not a run id at all."""
        if run_id in self._records:
            return self._records[run_id]
        if not RUN_ID.match(run_id):
            return None
        record = self.call(lambda s: s.read_results(run_id))
        if record is not None:
            if record.run_id != run_id:
                return None
            self._remember(record)
        return record

    def list_runs(self) -> list[dict[str, Any]]:
        """Manifests oldest first, cached for the refresh interval."""
        cached = self._runs_cache
        if cached is not None and time.monotonic() - cached[0] < self.refresh_interval:
            return cached[1]
        runs = list(self.call(lambda s: s.list_runs()))
        self._runs_cache = (time.monotonic(), runs)
        return runs

    def runs_named_queries(self) -> bool:
        store = self.store
        return store is not None and store.named_queries


def _guarded(fn: Callable[[Store], Any], store: Store) -> Any:
    try:
        return fn(store)
    except ApiProblem:
        raise
    except Exception as exc:
        log.warning("store call failed: %s", type(exc).__name__)
        raise StoreUnavailable() from exc


def _current_run_id(store: Store) -> str | None:
    """The store's current run id (one cheap read on either store)."""
    value = store.current_run_id()
    return None if value is None else str(value)
