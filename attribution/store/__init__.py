"""Stores: where the property graph and run results live.

``Store`` is the seam: the embedded store (files, no server) and the Neo4j
store implement it, and one test suite runs against both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from attribution.graph import PropertyGraph
from attribution.results import RunRecord


class Store(Protocol):
    """Load a snapshot's graph, read it back, write a run, read results."""

    name: str

    def load_snapshot(self, graph: PropertyGraph, *, digest: str) -> dict[str, int]:
        """Replace the stored graph with ``graph``; returns node and relationship counts."""
        ...

    def read_graph(self) -> PropertyGraph:
        """The stored graph, exactly as loaded (the algorithms read only this)."""
        ...

    def write_run(self, record: RunRecord) -> None:
        """Store a run's results and make it current, all at once."""
        ...

    def read_results(self, run_id: str | None = None) -> RunRecord | None:
        """A stored run (the current one by default), or None."""
        ...

    def list_runs(self) -> list[dict[str, Any]]:
        """Manifests of the stored runs, oldest first."""
        ...

    def recover(self) -> list[str]:
        """Tidy up what a killed writer left (runs never made current and the like);
        called by the next job under its lock. One note per thing done."""
        ...

    def close(self) -> None:
        """Release connections and locks."""
        ...


def default_home() -> Path:
    """Where the embedded store lives unless told otherwise."""
    import os

    return Path(os.environ.get("ATTRIBUTION_HOME", ".attribution"))
