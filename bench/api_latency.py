"""Latency and throughput of the HTTP API's fleet and account lookups, on either store.

Starts ``attribution serve`` (its own process, ``--workers`` server processes,
``--log-level info`` by default so every request writes its audit line, to a
log file) on a loopback port, then for 1, 10 and 50 concurrent clients hammers
``GET /fleets/{id}`` and ``GET /accounts/{id}`` with random ids of the current
run for a fixed time, and prints p50/p99 latency and requests per second per
lookup. Two load generators: httpx (async, one connection per client) and a
light raw-socket HTTP/1.1 client, which costs the machine far less CPU and so
shows the server's own limits on a small box. Before that it measures the
server-side cost of each lookup alone (the app called in-process, no network
and no client), which is what the machine's load disturbs least.

Stores:

- embedded (default): ``--store DIR``, made from ``--snapshot`` (or a generated
  world of ``--accounts`` accounts under ``--work``) when it has no current run;
- ``--neo4j``: the server opens Neo4j from ``NEO4J_URI``/``NEO4J_USER``/
  ``NEO4J_PASSWORD``/``NEO4J_DATABASE`` exactly as ``attribution serve`` does.
  When no run is current there, the snapshot is loaded and run into it first
  (kept for the next time). With ``--store`` as well, the responses of both
  stores are compared for a sample of ids (equal apart from the run id, when
  both hold a run of the same snapshot by the same engine).

    python -m bench.api_latency --store /tmp/bench/w200k/store --workers 2
    eval "$(attribution neo4j-dev start --port 7787 --data /tmp/n4j --heap 2g --password p)"
    python -m bench.api_latency --neo4j --snapshot /tmp/bench/w200k/world/snapshot \\
        --store /tmp/bench/w200k/store --workers 2

``--repeat N`` runs every level N times (all levels in turn, N passes) and
reports the median of the repeats, with the load average seen at each level:
client and server share the machine with whatever else runs on it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
SERVE = "import sys; from attribution.cli import main; sys.exit(main(sys.argv[1:]))"
NEO4J_ENV = ("NEO4J_URI", "NEO4J_USER", "NEO4J_PASSWORD", "NEO4J_DATABASE")
StoreFactory = Callable[[], Any]


def world_snapshot(accounts: int, work: Path) -> Path:
    """A generated world's snapshot under ``work`` (made once, then reused)."""
    from fixtures.worldgen import generate_world

    world = work / f"w{accounts}" / "world"
    if not (world / "snapshot" / "accounts.parquet").is_file():
        started = time.perf_counter()
        generate_world(world, accounts=accounts, seed=1)
        print(f"world of {accounts} accounts generated in {time.perf_counter() - started:.0f}s",
              file=sys.stderr)
    return world / "snapshot"


def run_into(store: Any, snapshot: Path, what: str) -> None:
    """Run the pipeline over ``snapshot`` into ``store`` (which becomes its current run)."""
    from attribution.job.jobs import run_job
    from attribution.job.progress import Stages

    print(f"running {snapshot} into {what} ...", file=sys.stderr, flush=True)
    started = time.perf_counter()
    outcome = run_job(store, home=Path(tempfile.mkdtemp(prefix="api-latency-home-")),
                      snapshot=snapshot, stages=Stages(quiet=False))
    print(f"run {outcome.record.run_id} made current in {what} in "
          f"{time.perf_counter() - started:.0f}s", file=sys.stderr, flush=True)


def embedded_ready(store: Path, snapshot: Path | None, accounts: int, work: Path) -> None:
    """The embedded store at ``store`` with a current run (made here if it has none)."""
    from attribution.store.embedded import EmbeddedStore

    if (store / "CURRENT").is_file():
        return
    run_into(EmbeddedStore(store), snapshot or world_snapshot(accounts, work),
             f"the embedded store {store}")


def neo4j_ready(snapshot: Path | None, accounts: int, work: Path) -> None:
    """Neo4j (from the environment) with a current run: the snapshot is run into it when
    it holds none, and whatever run is current is reused."""
    from attribution.contracts.settings import Neo4jSettings
    from attribution.store.neo4j import Neo4jStore

    settings = Neo4jSettings.from_env()
    if settings is None:
        raise SystemExit("--neo4j needs NEO4J_URI (and NEO4J_USER, NEO4J_PASSWORD, "
                         "NEO4J_DATABASE); e.g. eval \"$(attribution neo4j-dev start)\"")
    with Neo4jStore(settings) as store:
        current = store.current_run_id()
        if current is not None:
            manifest = next((m for m in store.list_runs() if m["run_id"] == current), {})
            print(f"Neo4j at {settings.uri}: reusing current run {current} "
                  f"(input {manifest.get('input', {}).get('path', '?')})", file=sys.stderr)
            return
        run_into(store, snapshot or world_snapshot(accounts, work), f"Neo4j at {settings.uri}")


def store_factory(kind: str, store: Path) -> StoreFactory:
    """How the server opens its store: ``attribution.store.open_store`` with or without Neo4j."""
    if kind == "neo4j":
        from attribution.contracts.settings import Neo4jSettings
        from attribution.store.neo4j import Neo4jStore

        settings = Neo4jSettings.from_env()
        assert settings is not None
        return lambda: Neo4jStore(settings)
    from attribution.store.embedded import EmbeddedStore

    return lambda: EmbeddedStore(store)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def level(base: str, key: str, kind: str, ids: list[str], clients: int, seconds: float,
                client_kind: str = "httpx") -> dict[str, Any]:
    """``clients`` concurrent loops of one lookup kind for ``seconds``."""
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds
    prefix = "/fleets/" if kind == "fleet" else "/accounts/"

    async def raw_worker(n: int) -> None:
        # HTTP/1.1 keep-alive over a bare socket: a client that costs almost no CPU,
        # to tell the server's limits from httpx's on a small machine.
        nonlocal errors
        rng = random.Random(n)
        host, port = base.rsplit("/", 1)[-1].split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            writer.write(f"GET {prefix}{rng.choice(ids)} HTTP/1.1\r\nHost: {host}\r\n"
                         f"X-API-Key: {key}\r\n\r\n".encode())
            await writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            length = next(int(h.split(b":")[1]) for h in lines
                          if h.lower().startswith(b"content-length"))
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            if lines[0].split()[1] != b"200":
                errors += 1
        writer.close()

    async def worker(n: int) -> None:
        if client_kind == "raw":
            await raw_worker(n)
            return
        nonlocal errors
        rng = random.Random(n)
        async with httpx.AsyncClient(base_url=base, headers={"X-API-Key": key},
                                     timeout=30) as client:
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                r = await client.get(prefix + rng.choice(ids))
                latencies.append(time.perf_counter() - started)
                if r.status_code != 200:
                    errors += 1

    load = os.getloadavg()[0]
    started = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(clients)))
    elapsed = time.perf_counter() - started
    return {"lookup": kind, "client": client_kind, "clients": clients,
            "requests": len(latencies), "errors": errors,
            "p50_ms": round(pct(latencies, 0.50) * 1000, 2),
            "p99_ms": round(pct(latencies, 0.99) * 1000, 2),
            "rps": round(len(latencies) / elapsed, 1),
            "load_1min": round(max(load, os.getloadavg()[0]), 2)}


class InProcess:
    """The app called directly as ASGI (no server, no network, no client)."""

    def __init__(self, factory: StoreFactory, key_file: Path) -> None:
        from attribution.api import KeyStore, create_app

        keys = KeyStore(key_file)
        self.key = keys.create("bench-inproc", "read")[1]
        self.app = create_app(factory, keys=keys, home=key_file.parent)

    async def call(self, path: str) -> tuple[int, bytes]:
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                 "method": "GET", "scheme": "http", "path": path, "raw_path": path.encode(),
                 "query_string": b"", "root_path": "", "client": ("127.0.0.1", 1),
                 "server": ("127.0.0.1", 80),
                 "headers": [(b"host", b"bench"), (b"x-api-key", self.key.encode())]}
        status: list[int] = []
        body: list[bytes] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
            elif message["type"] == "http.response.body":
                body.append(message.get("body", b""))

        await self.app(scope, receive, send)  # type: ignore[arg-type]
        return status[0], b"".join(body)


def sample_ids(view: Any, sample: int, seed: int) -> tuple[list[str], list[str]]:
    """Random fleet ids and account ids of an indexed run."""
    rng = random.Random(seed)
    fleets = view.fleets["fleet_id"].to_list()
    accounts = view.assignments["account_id"].to_list()
    return ([rng.choice(fleets) for _ in range(sample)],
            [rng.choice(accounts) for _ in range(sample)])


async def in_process(factory: StoreFactory, key_file: Path, *, compare_with: StoreFactory | None,
                     compare: int, n: int = 2000) -> dict[str, Any]:
    """Sample ids of the current run, the server-side cost of one lookup (the ASGI app called
    directly: no network, no client) and, given ``compare_with``, whether that store answers
    the same (bodies equal apart from ``run_id``)."""
    app = InProcess(factory, key_file)
    out: dict[str, Any] = {}
    async with app.app.router.lifespan_context(app.app):
        status, _ = await app.call("/ready")
        if status != 200:
            raise SystemExit(f"the store is not ready ({status}): no current run?")
        view = app.app.state.service.view
        out["run_id"] = view.run_id
        fleets, accounts = out["ids"] = sample_ids(view, 5000, seed=1)
        rows = []
        for kind, prefix, ids in (("fleet", "/fleets/", fleets),
                                  ("account", "/accounts/", accounts)):
            times = []
            for i in range(n):
                started = time.perf_counter()
                status, _ = await app.call(prefix + ids[i % len(ids)])
                assert status == 200, status
                times.append(time.perf_counter() - started)
            rows.append({"lookup": kind, "client": "in-process", "clients": 1, "requests": n,
                         "errors": 0, "p50_ms": round(pct(times, 0.5) * 1000, 3),
                         "p99_ms": round(pct(times, 0.99) * 1000, 3),
                         "rps": round(n / sum(times), 1),
                         "load_1min": round(os.getloadavg()[0], 2)})
        out["rows"] = rows
        if compare_with is not None:
            paths = ([f"/fleets/{f}" for f in fleets[:compare]]
                     + [f"/accounts/{a}" for a in accounts[:compare]])
            other = InProcess(compare_with, key_file)
            async with other.app.router.lifespan_context(other.app):
                await other.call("/ready")
                differing = [p for p in paths if _normal(await app.call(p))
                             != _normal(await other.call(p))]
            out["same_responses"] = {"compared": len(paths), "differing": len(differing),
                                     "examples": differing[:5]}
    return out


def _normal(answer: tuple[int, bytes]) -> tuple[int, Any]:
    """A response with its run id left out (two stores hold the same run under two ids)."""
    doc = json.loads(answer[1])
    if isinstance(doc, dict):
        doc.pop("run_id", None)
    return answer[0], doc


def wait_ready(base: str, server: subprocess.Popen[bytes], workers: int) -> float:
    started = time.perf_counter()
    while True:  # /ready turns 200 once the run is indexed
        try:
            if httpx.get(base + "/ready", timeout=120).status_code == 200:
                for _ in range(8 * workers):  # new connections reach every worker
                    httpx.get(base + "/ready", timeout=300)
                return time.perf_counter() - started
        except httpx.TransportError:
            pass
        if server.poll() is not None or time.perf_counter() - started > 900:
            raise SystemExit("the server did not come up (see its log)")
        time.sleep(0.2)


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The median of repeated runs of one level."""
    out = dict(rows[0])
    for k in ("p50_ms", "p99_ms", "rps", "load_1min"):
        out[k] = round(statistics.median(r[k] for r in rows), 2)
    out["requests"] = sum(r["requests"] for r in rows)
    out["errors"] = sum(r["errors"] for r in rows)
    out["repeats"] = len(rows)
    out["p99_each"] = [r["p99_ms"] for r in rows]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--neo4j", action="store_true",
                        help="serve from Neo4j ($NEO4J_URI ...) instead of the embedded store")
    parser.add_argument("--store", type=Path, help="embedded store (made when it has no run; "
                        "with --neo4j: compared with Neo4j's responses)")
    parser.add_argument("--snapshot", type=Path,
                        help="snapshot to run into a store that has no current run")
    parser.add_argument("--accounts", type=int, default=200_000,
                        help="size of the generated world when no --snapshot (default 200000)")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "attr-bench")
    parser.add_argument("--seconds", type=float, default=10.0, help="per level and lookup")
    parser.add_argument("--clients", default="1,10,50")
    parser.add_argument("--client", default="httpx,raw",
                        help="load generators to use: httpx (async client), raw (bare sockets)")
    parser.add_argument("--workers", type=int, default=1, help="server processes (default 1)")
    parser.add_argument("--log-level", default="info",
                        help="the server's (default info: one audit line per request)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="passes over all levels; the median of the passes is reported")
    parser.add_argument("--compare", type=int, default=300,
                        help="ids of each kind compared across stores (--neo4j with --store)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))

    kind = "neo4j" if args.neo4j else "embedded"
    store = args.store or args.work / f"w{args.accounts}" / "store"
    if args.store or not args.neo4j:
        embedded_ready(store, args.snapshot, args.accounts, args.work)
    if args.neo4j:
        neo4j_ready(args.snapshot, args.accounts, args.work)
    factory = store_factory(kind, store)
    tmp = Path(tempfile.mkdtemp(prefix="attr-bench-"))
    from attribution.api.keys import KeyStore

    _, key = KeyStore(tmp / "api_keys.json").create("bench", "read")
    compare_with = store_factory("embedded", store) if args.neo4j and args.store else None
    inproc = asyncio.run(in_process(factory, tmp / "api_keys.json", compare_with=compare_with,
                                    compare=args.compare))
    fleets, accounts = inproc["ids"]
    results: list[dict[str, Any]] = inproc["rows"]
    report: dict[str, Any] = {"store": kind, "run_id": inproc["run_id"],
                              "workers": args.workers, "log_level": args.log_level,
                              "cpus": os.cpu_count(), "uptime_start": _uptime()}
    print(f"{kind} store, run {inproc['run_id']}; {report['uptime_start']}", flush=True)
    if "same_responses" in inproc:
        same = report["same_responses"] = inproc["same_responses"]
        print(f"responses of both stores: {same['compared'] - same['differing']} of "
              f"{same['compared']} equal apart from run_id"
              + (f"; differing e.g. {same['examples']}" if same["differing"] else ""),
              flush=True)
    for row in results:
        print(f"{row['lookup']:>8}  in-process (no network, no client): "
              f"p50 {row['p50_ms']:.3f} ms  p99 {row['p99_ms']:.3f} ms  "
              f"{row['rps']:.0f} req/s of one core", flush=True)

    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if not args.neo4j:
        for name in NEO4J_ENV:
            env.pop(name, None)
    log_path = tmp / "server.log"
    with open(log_path, "wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-c", SERVE, "serve", "--host", "127.0.0.1", "--port", str(port),
             "--store", str(store), "--keys", str(tmp / "api_keys.json"),
             "--workers", str(args.workers), "--log-level", args.log_level],
            env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    levels = [(c, int(n)) for c in args.client.split(",") for n in args.clients.split(",")]
    measured: dict[tuple[str, int, str], list[dict[str, Any]]] = {}
    try:
        print(f"server ready and indexed in {wait_ready(base, server, args.workers):.1f}s "
              f"(log {log_path})", file=sys.stderr)
        for rep in range(args.repeat):
            for client_kind, clients in levels:
                for lookup, ids in (("fleet", fleets), ("account", accounts)):
                    row = asyncio.run(level(base, key, lookup, ids, clients, args.seconds,
                                            client_kind))
                    measured.setdefault((client_kind, clients, lookup), []).append(row)
                    print(f"{row['lookup']:>8}  {client_kind:>5}  clients {row['clients']:>3}  "
                          f"p50 {row['p50_ms']:>7.2f} ms  p99 {row['p99_ms']:>7.2f} ms  "
                          f"{row['rps']:>8.1f} req/s  ({row['requests']} requests, "
                          f"{row['errors']} errors; load {row['load_1min']:.2f}; "
                          f"pass {rep + 1})", flush=True)
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    summary = [summarize(rows) for rows in measured.values()]
    if args.repeat > 1:
        print(f"median of {args.repeat} passes:")
        for row in summary:
            print(f"{row['lookup']:>8}  {row['client']:>5}  clients {row['clients']:>3}  "
                  f"p50 {row['p50_ms']:>7.2f} ms  p99 {row['p99_ms']:>7.2f} ms  "
                  f"{row['rps']:>8.1f} req/s  (p99 per pass {row['p99_each']})", flush=True)
    audit_lines = sum(1 for line in log_path.open(errors="replace") if '"request_id"' in line)
    report.update(in_process=results, levels=summary, audit_lines=audit_lines,
                  uptime_end=_uptime())
    shutil.rmtree(tmp, ignore_errors=True)  # the key file and the server log
    print(f"{audit_lines} audit lines in the server log; {report['uptime_end']}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=True
                              ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "load average: " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


if __name__ == "__main__":
    sys.exit(main())
