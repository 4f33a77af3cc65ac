"""End-to-end benchmark: generated worlds, whole runs, per-stage shares.

For each world size it generates the world once (cached under bench/out/),
then runs ``attribution run`` ``--repeat`` times in a fresh subprocess each
time (so peak RSS is the run's own), and reports the median total, each
stage's share, peak memory, and the ratio of the total to the time polars
needs just to read the snapshot (the floor of any run).

    python -m bench.run_bench --sizes 200000 1000000 --repeat 3
    python -m bench.run_bench --worlds worlds/family-1000000-s101 --repeat 1

``--worlds`` benchmarks worlds already on disk (a directory with ``snapshot/`` and
``truth/``, such as a family world of ``fixtures.family_eval``) instead of generated
default ones: the issue asks for the figures on a randomized world beside the
repository's own.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl

from bench.stage_floors import floor_samples_in_child, measure_floors, read_floor
from fixtures.evaluate import evaluate
from fixtures.worldgen import generate_world

OUT = Path(__file__).resolve().parent / "out"
# Floors are short (most under a second at 200k accounts), so a competing job on the
# machine moves each one a lot: at least this many timings of each, even for one run.
MIN_FLOOR_SAMPLES = 5


def run_once(snapshot: Path, work: Path) -> tuple[dict[str, float], float]:
    """One run in a child process: its manifest timings and its peak RSS in GiB.

    The peak is that child's own (``wait4``): ``RUSAGE_CHILDREN`` is the largest of
    every child so far, and the floors run in children of their own.
    """
    out = work / "run"
    cmd = [sys.executable, "-m", "attribution.cli", "run", str(snapshot), "--out", str(out),
           "--store", str(work / "store"), "--quiet"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    if proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, cmd)
    manifest = json.loads((out / "manifest.json").read_text())
    return manifest["timings"], usage.ru_maxrss / 1024 / 1024


def world_snapshot(accounts: int, seed: int) -> tuple[Path, Path]:
    """The cached world of this size and seed (generated when missing) and its snapshot."""
    world = OUT / f"world-{accounts}-s{seed}"
    # A world without both (world.json is written last) is partial or from an
    # older generator, and is made again.
    if not all((world / "truth" / f).is_file() for f in ("labels.parquet", "world.json")):
        start = time.perf_counter()
        generate_world(world, accounts=accounts, seed=seed)
        print(f"generated {accounts} accounts in {time.perf_counter() - start:.0f}s",
              file=sys.stderr)
    return world, world / "snapshot"


def bench_size(accounts: int, repeat: int, seed: int) -> dict[str, object]:
    """A generated default world of ``accounts`` (see ``bench_world``)."""
    return bench_world(*world_snapshot(accounts, seed), repeat)


def bench_world(world: Path, snapshot: Path, repeat: int) -> dict[str, object]:
    """``repeat`` whole runs of one world: median total, stages, floors, peak, quality."""
    floors = [read_floor(snapshot) for _ in range(3)]
    totals, peaks, stage_runs, loads = [], [], [], []
    stage_floors: dict[str, list[float]] = {}
    per_run = -(-MIN_FLOOR_SAMPLES // repeat)
    quality = None
    for _ in range(repeat):
        with tempfile.TemporaryDirectory(dir=OUT) as tmp:
            timings, peak = run_once(snapshot, Path(tmp))
            loads.append(os.getloadavg()[0])
            totals.append(timings["total"])
            peaks.append(peak)
            stage_runs.append(timings)
            if quality is None:
                quality = evaluate(Path(tmp) / "run", world).as_dict()
            # Right after the run, on what it wrote, in a fresh process as the run was:
            # the floors see the load the run saw.
            for stage, times in floor_samples_in_child(snapshot, Path(tmp), per_run).items():
                stage_floors.setdefault(stage, []).extend(times)
    total = statistics.median(totals)
    stages = {k: statistics.median(r[k] for r in stage_runs) for k in stage_runs[0] if k != "total"}
    floor_s = {k: statistics.median(v) for k, v in stage_floors.items()}
    exchanges = pl.scan_parquet(snapshot / "exchanges.parquet").select(pl.len()).collect().item()
    return {
        "world": world.name,
        "accounts": pl.scan_parquet(snapshot / "accounts.parquet").select(pl.len()).collect().item(),
        "exchanges": exchanges,
        "runs": repeat,
        "total_s_median": round(total, 1),
        "total_s_all": [round(t, 1) for t in totals],
        "read_floor_s_median": round(statistics.median(floors), 2),
        "ratio_to_read": round(total / statistics.median(floors), 1),
        "peak_rss_gib_max": round(max(peaks), 2),
        "stage_share": {k: round(v / total, 3) for k, v in stages.items()},
        "stage_s": {k: round(v, 1) for k, v in stages.items()},
        "stage_floor_s": {k: round(v, 3) for k, v in floor_s.items()},
        "stage_ratio": {k: round(v / floor_s[k], 1) for k, v in stages.items() if floor_s.get(k)},
        "stage_floor_s_all": {k: [round(t, 3) for t in v] for k, v in stage_floors.items()},
        "load_avg_1m_after_runs": [round(x, 2) for x in loads],
        "quality": quality,
    }


def floors_size(accounts: int, repeat: int, seed: int) -> dict[str, object]:
    """Floors alone (``--floors-only``): one untimed run for their inputs, then the floors."""
    _, snapshot = world_snapshot(accounts, seed)
    with tempfile.TemporaryDirectory(dir=OUT) as tmp:
        run_once(snapshot, Path(tmp))
        floors = measure_floors(snapshot, max(repeat, MIN_FLOOR_SAMPLES), Path(tmp))
    return {"accounts": accounts, "stage_floor_s": {k: round(v, 3) for k, v in floors.items()},
            "load_avg_1m": round(os.getloadavg()[0], 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[200_000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--worlds", type=Path, nargs="+", default=[],
                        help="world directories (snapshot/ and truth/) to run instead of --sizes")
    parser.add_argument("--floors-only", action="store_true",
                        help="time the stage floors only (bench/out/stage_floors.json)")
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    for world in args.worlds:
        if not ((world / "snapshot").is_dir() and (world / "truth" / "labels.parquet").is_file()):
            parser.error(f"{world}: not a world (needs snapshot/ and truth/labels.parquet)")
    if args.worlds and args.floors_only:
        parser.error("--floors-only measures generated worlds (--sizes) only")
    measure = floors_size if args.floors_only else bench_size
    results = ([bench_world(w, w / "snapshot", args.repeat) for w in args.worlds] if args.worlds
               else [measure(n, args.repeat, args.seed) for n in args.sizes])
    machine = {"cpus": os.cpu_count(), "python": sys.version.split()[0],
               "polars": pl.__version__}
    report = {"machine": machine, "results": results}
    name = "stage_floors.json" if args.floors_only else "e2e.json"
    (OUT / name).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
