"""Latency and throughput of the HTTP API's fleet and account lookups.

Starts ``attribution serve``'s app (uvicorn, one worker, in its own process)
on a loopback port over an embedded store, then for 1, 10 and 50 concurrent
clients (httpx, async, one connection each) hammers ``GET /fleets/{id}`` and
``GET /accounts/{id}`` with random ids of the current run for a fixed time,
and prints p50/p99 latency and requests per second per lookup. It first
measures the server-side cost of each lookup alone (the app called in-process,
no network and no client), which is what the machine's load disturbs least.

The store is either given (``--store``, an embedded store with a current run)
or made here: a generated world of ``--accounts`` accounts run through the
embedded pipeline (kept under ``--work`` for the next time).

    python bench/api_latency.py --accounts 200000 --work /tmp/bench
    python bench/api_latency.py --store /tmp/bench/w200000/store --seconds 20

Client and server share the machine: on a 2-core box the client's own CPU
use is part of every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
SERVER = """
import os, sys, uvicorn
from pathlib import Path
from attribution.api import create_app, KeyStore
from attribution.store.embedded import EmbeddedStore
store, keys, port, workers = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
if workers > 1:
    os.environ.update(ATTRIBUTION_API_STORE=str(store), ATTRIBUTION_API_KEYS=str(keys),
                      ATTRIBUTION_HOME=str(keys.parent))
    os.environ.pop("NEO4J_URI", None)
    uvicorn.run("attribution.api.app:app_from_env", factory=True, workers=workers,
                host="127.0.0.1", port=port, log_level="warning", access_log=False)
else:
    app = create_app(lambda: EmbeddedStore(store), keys=KeyStore(keys), home=keys.parent)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
"""


def make_store(accounts: int, work: Path) -> Path:
    """A generated world run through the embedded pipeline (reused if already there)."""
    sys.path.insert(0, str(ROOT))
    from attribution.pipeline import run
    from attribution.store.embedded import EmbeddedStore
    from fixtures.worldgen import generate_world

    root = work / f"w{accounts}"
    store = root / "store"
    if (store / "CURRENT").is_file():
        return store
    started = time.perf_counter()
    generate_world(root / "world", accounts=accounts, seed=1)
    print(f"world of {accounts} accounts generated in {time.perf_counter() - started:.0f}s",
          file=sys.stderr)
    started = time.perf_counter()
    run(root / "world" / "snapshot", root / "run", EmbeddedStore(store))
    print(f"pipeline ran in {time.perf_counter() - started:.0f}s", file=sys.stderr)
    return store


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ids_of(store: Path, sample: int, seed: int) -> tuple[list[str], list[str]]:
    """Random fleet ids and account ids of the store's current run."""
    import polars as pl

    run = store / "runs" / (store / "CURRENT").read_text().strip()
    rng = random.Random(seed)
    fleets = pl.read_parquet(run / "fleets.parquet", columns=["fleet_id"])["fleet_id"].to_list()
    accounts = pl.read_parquet(run / "assignments.parquet",
                               columns=["account_id"])["account_id"].to_list()
    return ([rng.choice(fleets) for _ in range(sample)],
            [rng.choice(accounts) for _ in range(sample)])


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

    started = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(clients)))
    elapsed = time.perf_counter() - started
    return {"lookup": kind, "client": client_kind, "clients": clients,
            "requests": len(latencies), "errors": errors,
            "p50_ms": round(pct(latencies, 0.50) * 1000, 2),
            "p99_ms": round(pct(latencies, 0.99) * 1000, 2),
            "rps": round(len(latencies) / elapsed, 1)}


async def service_time(store: Path, key_file: Path, fleets: list[str], accounts: list[str],
                       n: int = 2000) -> list[dict[str, Any]]:
    """Server-side cost of one lookup: the ASGI app called directly, no network, no client."""
    from attribution.api import KeyStore, create_app
    from attribution.store.embedded import EmbeddedStore

    keys = KeyStore(key_file)
    key = keys.create("bench-inproc", "read")[1]
    app = create_app(lambda: EmbeddedStore(store), keys=keys, home=key_file.parent)

    async def call(path: str) -> int:
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                 "method": "GET", "scheme": "http", "path": path, "raw_path": path.encode(),
                 "query_string": b"", "root_path": "", "client": ("127.0.0.1", 1),
                 "server": ("127.0.0.1", 80),
                 "headers": [(b"host", b"bench"), (b"x-api-key", key.encode())]}
        status: list[int] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])

        await app(scope, receive, send)  # type: ignore[arg-type]
        return status[0]

    rows = []
    async with app.router.lifespan_context(app):
        await call("/ready")
        for kind, prefix, ids in (("fleet", "/fleets/", fleets), ("account", "/accounts/",
                                                                   accounts)):
            times = []
            for i in range(n):
                started = time.perf_counter()
                assert await call(prefix + ids[i % len(ids)]) == 200
                times.append(time.perf_counter() - started)
            rows.append({"lookup": kind, "client": "in-process", "clients": 1, "requests": n, "errors": 0,
                         "p50_ms": round(pct(times, 0.5) * 1000, 3),
                         "p99_ms": round(pct(times, 0.99) * 1000, 3),
                         "rps": round(n / sum(times), 1)})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", type=Path, help="embedded store with a current run")
    parser.add_argument("--accounts", type=int, default=200_000,
                        help="size of the generated world when no --store (default 200000)")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "attr-bench")
    parser.add_argument("--seconds", type=float, default=10.0, help="per level and lookup")
    parser.add_argument("--clients", default="1,10,50")
    parser.add_argument("--client", default="httpx,raw",
                        help="load generators to use: httpx (async client), raw (bare sockets)")
    parser.add_argument("--workers", type=int, default=1, help="server processes (default 1)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)

    store = args.store or make_store(args.accounts, args.work)
    fleets, accounts = ids_of(store, 5000, seed=1)
    tmp = Path(tempfile.mkdtemp(prefix="attr-bench-keys-"))
    sys.path.insert(0, str(ROOT))
    from attribution.api.keys import KeyStore

    _, key = KeyStore(tmp / "api_keys.json").create("bench", "read")
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(store),
                               str(tmp / "api_keys.json"), str(port), str(args.workers)],
                              env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        started = time.perf_counter()
        while True:  # /ready turns 200 once the run is indexed
            try:
                if httpx.get(base + "/ready", timeout=120).status_code == 200:
                    for _ in range(8 * args.workers):  # new connections reach every worker
                        httpx.get(base + "/ready", timeout=300)
                    break
            except httpx.TransportError:
                pass
            if server.poll() is not None or time.perf_counter() - started > 600:
                raise SystemExit("the server did not come up")
            time.sleep(0.2)
        print(f"server ready and indexed in {time.perf_counter() - started:.1f}s",
              file=sys.stderr)
        results = asyncio.run(service_time(store, tmp / "api_keys.json", fleets, accounts))
        for row in results:
            print(f"{row['lookup']:>8}  in-process (no network, no client): "
                  f"p50 {row['p50_ms']:.3f} ms  p99 {row['p99_ms']:.3f} ms  "
                  f"{row['rps']:.0f} req/s of one core", flush=True)
        levels = [(c, int(n)) for c in args.client.split(",") for n in args.clients.split(",")]
        for client_kind, clients in levels:
            for kind, ids in (("fleet", fleets), ("account", accounts)):
                row = asyncio.run(level(base, key, kind, ids, clients, args.seconds,
                                        client_kind))
                results.append(row)
                print(f"{row['lookup']:>8}  {client_kind:>5}  clients {row['clients']:>3}  "
                      f"p50 {row['p50_ms']:>7.2f} ms  p99 {row['p99_ms']:>7.2f} ms  "
                      f"{row['rps']:>8.1f} req/s  ({row['requests']} requests, "
                      f"{row['errors']} errors)", flush=True)
    finally:
        server.terminate()
        server.wait(10)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
