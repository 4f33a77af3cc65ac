"""The embedded store: Parquet files in a directory, no server, no configuration.

Layout under the store directory::

    graph/<frame>.parquet, graph/graph.json   the loaded property graph
    runs/<run_id>/...                         every run's manifest and tables
    CURRENT                                   the id of the current run

Every write goes to a temporary sibling first and is renamed into place, so a
reader (the API, a later run) sees the old state or the new one, never half.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import polars as pl

from attribution.graph import PropertyGraph
from attribution.results import RunRecord, read_tables, write_tables


class EmbeddedStore:
    """File-backed implementation of ``attribution.store.Store``."""

    name = "embedded"

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        (self.root / "runs").mkdir(parents=True, exist_ok=True)

    def load_snapshot(self, graph: PropertyGraph, *, digest: str) -> dict[str, int]:
        tmp = Path(tempfile.mkdtemp(prefix=".graph.", dir=self.root))
        try:
            counts = {}
            for name, frame in graph.frames().items():
                frame.write_parquet(tmp / f"{name}.parquet")
                counts[name] = frame.height
            (tmp / "graph.json").write_text(json.dumps({"digest": digest, "counts": counts}))
            _swap(tmp, self.root / "graph")
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return counts

    def read_graph(self) -> PropertyGraph:
        folder = self.root / "graph"
        names = [f.stem for f in folder.glob("*.parquet")]
        return PropertyGraph.from_frames(
            {n: pl.read_parquet(folder / f"{n}.parquet") for n in names}
        )

    def graph_digest(self) -> str | None:
        meta = self.root / "graph" / "graph.json"
        return json.loads(meta.read_text())["digest"] if meta.is_file() else None

    def write_run(self, record: RunRecord) -> None:
        runs = self.root / "runs"
        tmp = Path(tempfile.mkdtemp(prefix=".run.", dir=runs))
        try:
            write_tables(record, tmp)
            os.replace(tmp, runs / record.run_id)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        pointer = self.root / ".CURRENT.tmp"
        pointer.write_text(record.run_id)
        os.replace(pointer, self.root / "CURRENT")

    def current_run_id(self) -> str | None:
        pointer = self.root / "CURRENT"
        return pointer.read_text().strip() if pointer.is_file() else None

    def read_results(self, run_id: str | None = None) -> RunRecord | None:
        run_id = run_id or self.current_run_id()
        if run_id is None or not (self.root / "runs" / run_id).is_dir():
            return None
        return read_tables(self.root / "runs" / run_id)

    def list_runs(self) -> list[dict[str, Any]]:
        manifests = [
            json.loads((d / "manifest.json").read_text())
            for d in (self.root / "runs").iterdir()
            if d.is_dir() and not d.name.startswith(".") and (d / "manifest.json").is_file()
        ]
        return sorted(manifests, key=lambda m: (str(m["started_at"]), str(m["run_id"])))

    def close(self) -> None:
        return None


def _swap(new: Path, target: Path) -> None:
    """Put ``new`` at ``target``, replacing what was there, by renames only."""
    if target.exists():
        old = target.with_name(f".{target.name}.old")
        if old.exists():
            shutil.rmtree(old)
        os.replace(target, old)
        os.replace(new, target)
        shutil.rmtree(old)
    else:
        os.replace(new, target)
