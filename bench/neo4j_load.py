"""Neo4j store throughput: Bolt load rows/s by batch size, read-back, whole runs.

For one generated world (cached under ``bench/out/``) it

1. loads the graph into an emptied database once per batch size and reports
   rows per second (a *row* is one element of one ``UNWIND`` batch: a node, an
   entity key, a relationship; an account's activity, one JSON text, rides on its
   Account row and adds no rows) and, when the server is the benchmark's own, the CPU
   seconds the server spent (steadier than rows/s on a machine shared with other
   work);
2. times ``read_graph`` and checks it gives back exactly the loaded graph;
3. runs the whole pipeline on Neo4j (graph not yet loaded, then again with the
   graph in place) and on the embedded store, stage by stage.

    python -m bench.neo4j_load --accounts 200000 --batch-sizes 1000 5000 10000 20000

The server is ``NEO4J_URI`` (and ``NEO4J_USER``, ``NEO4J_PASSWORD``,
``NEO4J_DATABASE``) if set, which is wiped: pass ``--wipe`` to agree. Otherwise
a dev server (``attribution.dev.neo4j_harness``) is started on ``--port`` with a
temporary data directory and stopped at the end. Client, server and the
machine's other work share the CPUs: the load average is printed with the
figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from attribution.contracts.graph import PropertyGraph
from attribution.contracts.settings import Neo4jSettings
from attribution.dev import neo4j_harness as neo4j_dev
from attribution.stages.build import build_graph
from attribution.stages.ingest import read_snapshot
from attribution.store.embedded import EmbeddedStore
from attribution.store.neo4j import Neo4jStore

OUT = Path(__file__).resolve().parent / "out"
WIPE = "MATCH (n) CALL (n) { DETACH DELETE n } IN TRANSACTIONS OF 10000 ROWS"


SERVER_PID: int | None = None  # the dev server this benchmark started, if any


@contextmanager
def server(args: argparse.Namespace) -> Iterator[Neo4jSettings]:
    """The configured server (wiped), or a fresh dev server for the duration."""
    global SERVER_PID
    settings = Neo4jSettings.from_env()
    if settings is not None:
        if not args.wipe:
            sys.exit("NEO4J_URI is set: this benchmark empties that database; add --wipe")
        yield settings
        return
    with tempfile.TemporaryDirectory(prefix="neo4j-bench-") as tmp:
        dev = neo4j_dev.start(port=args.port, data_dir=Path(tmp) / "data", heap=args.heap,
                              pagecache=args.pagecache, password="bench")
        SERVER_PID = dev.pid
        try:
            yield Neo4jSettings(dev.uri, dev.user, "bench", dev.database)
        finally:
            SERVER_PID = None
            dev.stop()


def server_cpu() -> float | None:
    """CPU seconds (user + system) the benchmark's own server has used so far (Linux)."""
    if SERVER_PID is None:
        return None
    try:
        fields = Path(f"/proc/{SERVER_PID}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wipe(store: Neo4jStore) -> None:
    with store._session() as session:
        session.run(WIPE).consume()


def counting(store: Neo4jStore) -> list[int]:
    """Count the rows every batch of ``store`` sends (one list element per transaction)."""
    sizes: list[int] = []
    real = store._write

    def spy(query: Any, fallback: Any = None, **params: Any) -> Any:
        sizes.append(int(params["n"]) if "n" in params else len(params.get("rows", [])))
        return real(query, fallback, **params)

    store._write = spy  # type: ignore[method-assign]
    return sizes


def world(accounts: int, seed: int) -> Path:
    from fixtures.worldgen import generate_world

    folder = OUT / f"world-{accounts}-s{seed}"
    if not (folder / "snapshot" / "accounts.parquet").is_file():
        started = time.perf_counter()
        generate_world(folder, accounts=accounts, seed=seed)
        print(f"generated {accounts} accounts in {time.perf_counter() - started:.0f}s",
              flush=True)
    return folder / "snapshot"


def load_figures(settings: Neo4jSettings, graph: PropertyGraph, digest: str,
                 batch_sizes: list[int], repeat: int, workers: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for batch in batch_sizes:
        times = []
        cpu: list[float] = []
        sent = 0
        for _ in range(repeat):
            with Neo4jStore(settings, batch_size=batch, workers=workers) as store:
                wipe(store)
                time.sleep(3)  # let the wipe's own work end before the server clock starts
                sizes = counting(store)
                cpu_before = server_cpu()
                started = time.perf_counter()
                store.load_snapshot(graph, digest=digest,
                                    progress=lambda line: print(line, file=sys.stderr))
                times.append(time.perf_counter() - started)
                cpu_after = server_cpu()
                if cpu_before is not None and cpu_after is not None:
                    cpu.append(cpu_after - cpu_before)
                sent = sum(sizes)
        best = min(times)
        median = statistics.median(times)
        server_us = (round(statistics.median(cpu) * 1e6 / sent, 1)
                     if cpu and sent else None)
        rows.append({"batch_size": batch, "workers": workers, "rows": sent,
                     "seconds": round(best, 2), "median_seconds": round(median, 2),
                     "rows_per_second": round(sent / best),
                     "median_rows_per_second": round(sent / median),
                     "server_cpu_us_per_row": server_us,
                     "load_avg": os.getloadavg()[0]})
        print(f"batch {batch:>6}, {workers} workers: {sent} rows, best {best:.1f}s = "
              f"{sent / best:,.0f} rows/s, median {median:.1f}s = {sent / median:,.0f} rows/s, "
              f"server CPU {server_us} us/row (load avg {os.getloadavg()[0]:.1f})", flush=True)
    return rows


def run_figures(settings: Neo4jSettings, snapshot: Path, work: Path) -> dict[str, Any]:
    from attribution.job.jobs import run_job

    out: dict[str, Any] = {}
    with Neo4jStore(settings) as store:
        wipe(store)
        for name in ("neo4j_first", "neo4j_again"):
            started = time.perf_counter()
            record = run_job(store, home=work, snapshot=snapshot, out=work / name).record
            out[name] = {"total": round(time.perf_counter() - started, 2),
                         **record.manifest["timings"]}
            print(f"{name}: {out[name]['total']:.1f}s {record.manifest['timings']}", flush=True)
    started = time.perf_counter()
    record = run_job(EmbeddedStore(work / "estore"), home=work, snapshot=snapshot,
                     out=work / "embedded").record
    out["embedded"] = {"total": round(time.perf_counter() - started, 2),
                       **record.manifest["timings"]}
    print(f"embedded: {out['embedded']['total']:.1f}s {record.manifest['timings']}", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[5000, 10000, 20000])
    parser.add_argument("--workers", type=int, default=2, help="sessions writing at once")
    parser.add_argument("--repeat", type=int, default=1, help="loads per batch size (best kept)")
    parser.add_argument("--no-run", action="store_true", help="skip the whole-pipeline runs")
    parser.add_argument("--port", type=int, default=7797)
    parser.add_argument("--heap", default="2g")
    parser.add_argument("--pagecache", default="1g")
    parser.add_argument("--wipe", action="store_true", help="agree to empty $NEO4J_URI")
    args = parser.parse_args(argv)

    snapshot = world(args.accounts, args.seed)
    snap = read_snapshot(snapshot)
    graph = build_graph(snap.tables)
    print(f"world: {args.accounts} accounts, "
          + ", ".join(f"{n} {f.height}" for n, f in graph.frames().items()), flush=True)
    report: dict[str, Any] = {"accounts": args.accounts, "seed": args.seed,
                              "cpus": os.cpu_count(), "load_avg_start": os.getloadavg()[0]}
    with server(args) as settings:
        report["load"] = load_figures(settings, graph, snap.digest, args.batch_sizes,
                                      args.repeat, args.workers)
        with Neo4jStore(settings) as store:
            started = time.perf_counter()
            back = store.read_graph()
            report["read_graph_seconds"] = round(time.perf_counter() - started, 2)
            same = all(a.equals(b) for a, b in zip(back.canonical().frames().values(),
                                                   graph.canonical().frames().values(),
                                                   strict=True))
            report["read_graph_exact"] = same
            print(f"read_graph: {report['read_graph_seconds']:.1f}s, exact: {same}", flush=True)
        if not args.no_run:
            with tempfile.TemporaryDirectory(prefix="neo4j-bench-run-") as work:
                report["runs"] = run_figures(settings, snapshot, Path(work))
    report["load_avg_end"] = os.getloadavg()[0]
    OUT.mkdir(parents=True, exist_ok=True)
    target = OUT / f"neo4j_load-{args.accounts}.json"
    target.write_text(json.dumps(report, indent=2))
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
