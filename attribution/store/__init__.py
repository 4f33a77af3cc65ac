"""Stores: where the property graph and run results live.

``Store`` is the seam: the embedded store (files, no server) and the Neo4j
store implement it, and one test suite runs against both.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from attribution.contracts.graph import PropertyGraph
from attribution.contracts.results import RunRecord


class Store(Protocol):
    """Load a snapshot's graph, read it back, write a run, read results."""

    name: str

    @property
    def location(self) -> str:
        """Where the store is, as one line (``embedded:/abs/dir``, ``neo4j:uri/db``):
        names the store in manifests and in a run directory's switch journal."""
        ...

    @property
    def path(self) -> Path | None:
        """The directory the store keeps its files in (None for a server): a run's
        ``--out`` may be neither it, nor inside it, nor a folder holding it."""
        ...

    def load_snapshot(self, graph: PropertyGraph, *, digest: str,
                      progress: Callable[[str], None] | None = None) -> dict[str, int]:
        """Replace the stored graph with ``graph``; returns node and relationship counts.
        ``progress`` receives a line now and then (rows/s and ETA) on a long load."""
        ...

    def read_graph(self) -> PropertyGraph:
        """The stored graph, exactly as loaded (the algorithms read only this)."""
        ...

    def job_lock_path(self, home: Path) -> Path:
        """The file a job locks so that two jobs never write this store at once
        (``home`` is ``$ATTRIBUTION_HOME``, for stores that keep no files)."""
        ...

    def verdict_log_path(self, home: Path) -> Path:
        """The one append-only log of this store's analyst verdicts."""
        ...

    def graph_digest(self) -> str | None:
        """The content digest of the snapshot the stored graph came from (None: no
        complete graph)."""
        ...

    def write_run(self, record: RunRecord) -> None:
        """Store a run's results and make it current, all at once."""
        ...

    def read_results(self, run_id: str | None = None) -> RunRecord | None:
        """A stored run (the current one by default), or None."""
        ...

    def current_run_id(self) -> str | None:
        """The id of the current run, or None."""
        ...

    def list_runs(self) -> list[dict[str, Any]]:
        """Manifests of the stored runs, oldest first."""
        ...

    def recover(self) -> list[str]:
        """Tidy up what a killed writer left (runs never made current and the like);
        called by the next job under its lock. One note per thing done."""
        ...

    named_queries: bool
    """Whether ``run_query`` can run the Cypher library (a graph database behind it)."""

    def run_query(self, name: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        """A named query of the library, read-only, its rows with the database's own
        values (nodes and paths keep their labels: masking reads them); ``QueryError`` for
        bad parameters, ``Unsupported`` where ``named_queries`` is false."""
        ...

    def close(self) -> None:
        """Release connections and locks."""
        ...


def run_ids(store: Store) -> set[str]:
    """The ids of the runs ``store`` holds committed (what a run id must not repeat, and
    what tells a half-done run directory switch whether its store committed)."""
    return {str(m.get("run_id")) for m in store.list_runs()}


def open_store(embedded_root: Path) -> Store:
    """The Neo4j store when ``NEO4J_URI`` is set, else the embedded one at ``embedded_root``.

    A third backend is one more branch here and an implementation of ``Store``.
    """
    from attribution.contracts.settings import Neo4jSettings
    from attribution.store.embedded import EmbeddedStore

    settings = Neo4jSettings.from_env()
    if settings is not None:
        from attribution.store.neo4j import Neo4jStore

        return Neo4jStore(settings)
    return EmbeddedStore(Path(embedded_root))


def default_home() -> Path:
    """Where the embedded store lives unless told otherwise."""
    import os

    return Path(os.environ.get("ATTRIBUTION_HOME", ".attribution"))
