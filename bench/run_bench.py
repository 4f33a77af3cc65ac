"""End-to-end benchmark: generated worlds, whole runs, per-stage shares.

For each world size it generates the world once (cached under bench/out/),
then runs ``attribution run`` ``--repeat`` times in a fresh subprocess each
time (so peak RSS is the run's own), and reports the median total, each
stage's share, peak memory, and the ratio of the total to the time polars
needs just to read the snapshot (the floor of any run).

    python -m bench.run_bench --sizes 200000 1000000 --repeat 3
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

from fixtures.evaluate import evaluate
from fixtures.worldgen import generate_world

OUT = Path(__file__).resolve().parent / "out"


def read_floor(snapshot: Path) -> float:
    """Seconds polars takes to read every table of the snapshot into memory."""
    start = time.perf_counter()
    for path in sorted(snapshot.glob("*.parquet")):
        pl.read_parquet(path)
    return time.perf_counter() - start


def run_once(snapshot: Path, work: Path) -> tuple[dict[str, float], float]:
    """One run in a child process: its manifest timings and its peak RSS in GiB."""
    out = work / "run"
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    subprocess.run(
        [sys.executable, "-m", "attribution.cli", "run", str(snapshot), "--out", str(out),
         "--store", str(work / "store"), "--quiet"],
        check=True, stdout=subprocess.DEVNULL,
    )
    peak_kib = max(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, before)
    manifest = json.loads((out / "manifest.json").read_text())
    return manifest["timings"], peak_kib / 1024 / 1024


def bench_size(accounts: int, repeat: int, seed: int) -> dict[str, object]:
    world = OUT / f"world-{accounts}-s{seed}"
    # A world without both (world.json is written last) is partial or from an
    # older generator, and is made again.
    if not all((world / "truth" / f).is_file() for f in ("labels.parquet", "world.json")):
        start = time.perf_counter()
        generate_world(world, accounts=accounts, seed=seed)
        print(f"generated {accounts} accounts in {time.perf_counter() - start:.0f}s",
              file=sys.stderr)
    snapshot = world / "snapshot"
    floors = [read_floor(snapshot) for _ in range(3)]
    totals, peaks, stage_runs = [], [], []
    quality = None
    for _ in range(repeat):
        with tempfile.TemporaryDirectory(dir=OUT) as tmp:
            timings, peak = run_once(snapshot, Path(tmp))
            totals.append(timings["total"])
            peaks.append(peak)
            stage_runs.append(timings)
            if quality is None:
                quality = evaluate(Path(tmp) / "run", world).as_dict()
    total = statistics.median(totals)
    stages = {k: statistics.median(r[k] for r in stage_runs) for k in stage_runs[0] if k != "total"}
    exchanges = pl.scan_parquet(snapshot / "exchanges.parquet").select(pl.len()).collect().item()
    return {
        "accounts": accounts,
        "exchanges": exchanges,
        "runs": repeat,
        "total_s_median": round(total, 1),
        "total_s_all": [round(t, 1) for t in totals],
        "read_floor_s_median": round(statistics.median(floors), 2),
        "ratio_to_read": round(total / statistics.median(floors), 1),
        "peak_rss_gib_max": round(max(peaks), 2),
        "stage_share": {k: round(v / total, 3) for k, v in stages.items()},
        "stage_s": {k: round(v, 1) for k, v in stages.items()},
        "quality": quality,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[200_000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    results = [bench_size(n, args.repeat, args.seed) for n in args.sizes]
    machine = {"cpus": os.cpu_count(), "python": sys.version.split()[0],
               "polars": pl.__version__}
    report = {"machine": machine, "results": results}
    (OUT / "e2e.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
