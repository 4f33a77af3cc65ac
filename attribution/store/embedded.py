"""The embedded store: Parquet files in a directory, no server, no configuration.

Layout under the store directory::

    graphs/<graph_id>/<frame>.parquet, graph.json   loaded property graphs
    runs/<run_id>/...                               every run's manifest and tables, its
                                                    diff.json, and graph_id: the graph
                                                    it was computed from
    CURRENT                                         the id of the current run

Every write goes to a temporary sibling first and is renamed into place, so a
reader (the API, a later run) sees the old state or the new one, never half.

CURRENT is the one commit point, for the graph too: the store's graph is the
graph of its current run, and a newly loaded graph is served only once a run
computed from it is current. A job killed between loading a snapshot and
making its run current (at any step) therefore leaves the previous run *and
the graph it came from* served, never a newer graph beside an older run. A run
directory carries a ``.pending`` marker until CURRENT names it: a run that
never became current is neither listed nor read, and ``recover`` removes it.
After each switch the graphs of neither the current run nor the run it
replaced are deleted (a reader that resolved the replaced run's graph just
before the switch can finish reading it).

Stores written before graphs were versioned hold one ``graph/`` folder: it is
the graph of every run without a ``graph_id`` and goes once no kept run needs it.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import polars as pl

from attribution.contracts.graph import PropertyGraph
from attribution.contracts.results import RunRecord, read_tables, write_tables
from attribution.errors import Unsupported
from attribution.job.killpoints import checkpoint

# The graph's files are written once a run and read on the same machine (by the run
# itself at once, then by the API and later runs): LZ4 writes them in about half the
# time of polars' default (zstd) and reads them a third faster (the family 1M graph:
# 5.4 -> 3.1 s written, 1.75 -> 1.24 s read), for a third more disk (461 -> 625 MB).
GRAPH_COMPRESSION: Final = "lz4"

GRAPHS = "graphs"
LEGACY_GRAPH = "graph"
GRAPH_REF = "graph_id"
PENDING = ".pending"


class StoreEmpty(RuntimeError):
    """The embedded store holds no graph to read."""


class EmbeddedStore:
    """File-backed implementation of ``attribution.store.Store``."""

    name = "embedded"
    named_queries = False

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        (self.root / "runs").mkdir(parents=True, exist_ok=True)
        # The graph this object loaded, served to it alone until a run made from it
        # becomes current.
        self._loaded: str | None = None

    @property
    def location(self) -> str:
        return f"embedded:{self.root.resolve()}"

    @property
    def path(self) -> Path:
        return self.root

    def job_lock_path(self, home: Path) -> Path:
        return self.root / ".lock"

    def verdict_log_path(self, home: Path) -> Path:
        return self.root / "verdicts.jsonl"

    # ----------------------------------------------------------------- graph

    def load_snapshot(self, graph: PropertyGraph, *, digest: str,
                      progress: Callable[[str], None] | None = None) -> dict[str, int]:
        """Parquet files of the graph (a local write: fast enough to need no progress)."""
        graphs = self.root / GRAPHS
        graphs.mkdir(exist_ok=True)
        graph_id = f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
        tmp = Path(tempfile.mkdtemp(prefix=".graph.", dir=self.root))
        try:
            counts = {}
            for name, frame in graph.frames().items():
                frame.write_parquet(tmp / f"{name}.parquet", compression=GRAPH_COMPRESSION)
                counts[name] = frame.height
            (tmp / "graph.json").write_text(json.dumps(
                {"digest": digest, "counts": counts, "graph_id": graph_id}))
            os.replace(tmp, graphs / graph_id)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self._loaded = graph_id
        self._collect()  # a graph this object loaded before and never committed
        return counts

    def read_graph(self) -> PropertyGraph:
        folder = self._graph_dir()
        if folder is None:
            raise StoreEmpty(f"the store {self.root} holds no graph yet")
        names = [f.stem for f in folder.glob("*.parquet")]
        return PropertyGraph.from_frames(
            {n: pl.read_parquet(folder / f"{n}.parquet") for n in names}
        )

    def graph_digest(self) -> str | None:
        folder = self._graph_dir()
        meta = folder / "graph.json" if folder is not None else None
        return json.loads(meta.read_text())["digest"] if meta and meta.is_file() else None

    def _graph_dir(self) -> Path | None:
        """This object's uncommitted graph, else the current run's, else the legacy one."""
        if self._loaded is not None:
            return self.root / GRAPHS / self._loaded
        current = self.current_run_id()
        graph_id = self._graph_of(current) if current is not None else None
        folder = self.root / (f"{GRAPHS}/{graph_id}" if graph_id else LEGACY_GRAPH)
        return folder if folder.is_dir() else None

    def _graph_of(self, run_id: str) -> str | None:
        ref = self.root / "runs" / run_id / GRAPH_REF
        return ref.read_text().strip() if ref.is_file() else None

    # ----------------------------------------------------------------- runs

    def write_run(self, record: RunRecord) -> None:
        """Write the run directory (marked pending), then switch CURRENT: the one commit."""
        runs = self.root / "runs"
        replaced = self.current_run_id()
        graph_id = self._loaded or (self._graph_of(replaced) if replaced else None)
        tmp = Path(tempfile.mkdtemp(prefix=".run.", dir=runs))
        try:
            write_tables(record, tmp)
            if record.diff is not None:
                (tmp / "diff.json").write_text(json.dumps(record.diff, indent=2, default=str))
            if graph_id is not None:
                (tmp / GRAPH_REF).write_text(graph_id)
            (tmp / PENDING).touch()
            os.replace(tmp, runs / record.run_id)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        checkpoint("write:rows")  # the run is whole on disk, not current yet
        pointer = self.root / ".CURRENT.tmp"
        pointer.write_text(record.run_id)
        os.replace(pointer, self.root / "CURRENT")
        checkpoint("write:current")  # current; the marker and older graphs still there
        (runs / record.run_id / PENDING).unlink()
        self._loaded = None
        self._collect()

    def current_run_id(self) -> str | None:
        pointer = self.root / "CURRENT"
        return pointer.read_text().strip() if pointer.is_file() else None

    def read_results(self, run_id: str | None = None) -> RunRecord | None:
        current = self.current_run_id()
        run_id = run_id or current
        if run_id is None or not self._committed(run_id, current):
            return None
        return read_tables(self.root / "runs" / run_id)

    def list_runs(self) -> list[dict[str, Any]]:
        current = self.current_run_id()
        manifests = [
            json.loads((d / "manifest.json").read_text())
            for d in (self.root / "runs").iterdir()
            if not d.name.startswith(".") and self._committed(d.name, current)
        ]
        return sorted(manifests, key=lambda m: (str(m["started_at"]), str(m["run_id"])))

    def _committed(self, run_id: str, current: str | None) -> bool:
        folder = self.root / "runs" / run_id
        return (folder / "manifest.json").is_file() and (
            run_id == current or not (folder / PENDING).exists())

    # ----------------------------------------------------------------- tidying

    def _collect(self) -> list[str]:
        """Delete graphs no kept run needs: kept are the current run, the run it replaced
        (its ``previous_run_id``) and this object's uncommitted graph."""
        current = self.current_run_id()
        keep_runs = [current] if current else []
        if current:
            manifest = self.root / "runs" / current / "manifest.json"
            previous = json.loads(manifest.read_text()).get("previous_run_id") \
                if manifest.is_file() else None
            if previous and (self.root / "runs" / str(previous)).is_dir():
                keep_runs.append(str(previous))
        keep = {self._graph_of(r) for r in keep_runs} | {self._loaded}
        done = []
        graphs = self.root / GRAPHS
        for folder in sorted(graphs.iterdir()) if graphs.is_dir() else []:
            if folder.name not in keep:
                shutil.rmtree(folder, ignore_errors=True)
                done.append(f"removed graph {folder.name} (no kept run uses it)")
        legacy = self.root / LEGACY_GRAPH
        if current and None not in keep and legacy.is_dir():
            shutil.rmtree(legacy, ignore_errors=True)
            done.append("removed the unversioned graph/ (no kept run uses it)")
        return done

    def recover(self) -> list[str]:
        """Tidy up what a killed writer left; call it holding the job lock.

        Temporary ``.graph.*``/``.run.*`` directories and ``.CURRENT.tmp`` are
        removed (never read); a run directory still marked pending is removed if
        it never became current, or unmarked if it did; graphs no kept run needs
        are removed. Older stores: a kill between the two renames of a graph swap
        left ``.graph.old`` and no ``graph``, and the old graph is put back.
        Returns one note per thing done.
        """
        done = []
        old, legacy = self.root / ".graph.old", self.root / LEGACY_GRAPH
        if old.is_dir() and not legacy.exists():
            os.replace(old, legacy)
            done.append("restored graph from .graph.old")
        runs = self.root / "runs"
        leftovers = [p for p in self.root.glob(".graph.*") if p.is_dir()]
        leftovers += [p for p in runs.glob(".run.*") if p.is_dir()]
        for p in leftovers:
            shutil.rmtree(p, ignore_errors=True)
            done.append(f"removed {p.name}")
        tmp = self.root / ".CURRENT.tmp"
        if tmp.exists():
            tmp.unlink()
            done.append("removed .CURRENT.tmp")
        current = self.current_run_id()
        for marker in sorted(runs.glob(f"*/{PENDING}")):
            run_id = marker.parent.name
            if run_id == current:
                marker.unlink()
                done.append(f"run {run_id} was made current; unmarked")
            else:
                shutil.rmtree(marker.parent, ignore_errors=True)
                done.append(f"removed run {run_id} (never made current)")
        return done + self._collect()

    def run_query(self, name: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        raise Unsupported("named queries are Cypher: they need the Neo4j store (NEO4J_URI)")

    def close(self) -> None:
        return None
