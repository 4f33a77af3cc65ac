"""Per-stage floors: the least work each pipeline stage cannot avoid, timed on the same data.

A stage's time alone says little; its ratio to its own floor says how much of it is
overhead that a better implementation could remove. Each floor here is plain
polars/numpy/scipy over the *same* inputs the stage sees in a run: the snapshot, and
the graph and results one ``attribution run`` wrote (its store's graph directory, its
run directory and the counts in its manifest). Loading those inputs is not timed; only
the floor's own work is. Every floor is a lower bound, not a model of the stage: it
does one essential pass of the stage's work and skips the rest, so a ratio near 1
means there is little left to win and a large one is an upper bound on the waste.

    from bench.stage_floors import measure_floors
    measure_floors(Path("bench/out/world-200000-s11/snapshot"), repeat=3,
                   work=Path("WORK"))  # a run of it: WORK/run and WORK/store

    python -m bench.stage_floors SNAPSHOT WORK --repeat 3   # JSON of every timing

Keys are the manifest's ``timings`` keys (``attribution.job.pipeline``). The
benchmark times the floors in a fresh process (``floor_samples_in_child``), as each
run is timed in one, so neither carries the other's heap (the benchmark's own
process has just evaluated a run).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from attribution.store.embedded import GRAPH_COMPRESSION

LOCKSTEP_MINUTES = 5  # the finest scale of LockstepParams.scales, the one read from the minutes
RESULT_TABLES = ("assignments", "fleets", "evidence")


@dataclass(frozen=True)
class RunFiles:
    """What one ``attribution run`` of the snapshot left: the inputs of the later floors."""

    snapshot: Path
    graph: Path  # the store's graph directory: one Parquet file per PropertyGraph frame
    run: Path    # the run directory: assignments, fleets, evidence, manifest.json
    counts: dict[str, int]  # the manifest's counts (accounts, links, ...)

    @classmethod
    def of(cls, snapshot: Path, work: Path) -> RunFiles:
        """The files under ``work`` as ``bench.run_bench.run_once`` lays them out
        (``work/run`` and ``work/store``); the graph is the current run's."""
        store, run = work / "store", work / "run"
        current = (store / "CURRENT").read_text().strip()
        graph_id = (store / "runs" / current / "graph_id").read_text().strip()
        manifest = json.loads((run / "manifest.json").read_text())
        counts = {k: v for k, v in manifest["counts"].items() if isinstance(v, int)}
        return cls(snapshot, store / "graphs" / graph_id, run, counts)


Sampler = Callable[[RunFiles, int], list[float]]


def _timed(work: Callable[[], object], repeat: int) -> list[float]:
    """Seconds of ``repeat`` calls of ``work`` (its result dropped before the next)."""
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = work()
        out.append(time.perf_counter() - start)
        del result
    return out


def _graph_frames(files: RunFiles, *names: str) -> dict[str, pl.DataFrame]:
    return {n: pl.read_parquet(files.graph / f"{n}.parquet") for n in names}


def _members(files: RunFiles) -> pl.DataFrame:
    """(account_id, fleet_id) of the accounts the run put in a fleet."""
    return pl.read_parquet(files.run / "assignments.parquet", columns=["account_id", "fleet_id"]
                           ).filter(pl.col("fleet_id").is_not_null())


def read_floor(snapshot: Path) -> float:
    """Seconds polars takes to read every table of the snapshot into memory: the floor of
    any run, and of its ingest stage."""
    paths = sorted(snapshot.glob("*.parquet"))
    return _timed(lambda: [pl.read_parquet(p) for p in paths], 1)[0]


def ingest_floor(files: RunFiles, repeat: int) -> list[float]:
    """Reading every snapshot table into memory with polars (``read_floor``): ingest must
    decode every byte before it can check a row. Its validation, references, keys and the
    file digest (hashed in a thread alongside) are all on top of this."""
    return [read_floor(files.snapshot) for _ in range(repeat)]


def graph_floor(files: RunFiles, repeat: int) -> list[float]:
    """The one pass over exchanges the graph must make: a group_by of exchanges by account
    (count, token sums, first and last time: the per-account aggregates) and the unique
    (account, minute, network) of the activity table, each exchange's network from its IP
    (proxy provider, else ASN, else the IP itself: the /24 strings are skipped). The
    stage also builds MinHash signatures, hour and capability histograms, the account to
    IP/device/template edges and the uses table; none of that is here."""
    ex = pl.read_parquet(files.snapshot / "exchanges.parquet",
                         columns=["account_id", "ts", "ip", "input_tokens", "output_tokens"])
    ips = pl.read_parquet(files.snapshot / "ips.parquet", columns=["ip", "asn", "proxy_id"])
    proxies = pl.read_parquet(files.snapshot / "proxies.parquet", columns=["proxy_id", "provider"])

    def work() -> list[pl.DataFrame]:
        net = ips.lazy().join(proxies.lazy(), on="proxy_id", how="left").select(
            "ip", pl.coalesce(pl.lit("proxy:") + pl.col("provider"),
                              pl.lit("asn:") + pl.col("asn").cast(pl.String), "ip").alias("network"))
        per_account = ex.lazy().group_by("account_id").agg(
            pl.len().alias("exchanges"), pl.col("input_tokens").sum(),
            pl.col("output_tokens").sum(), pl.col("ts").min().alias("first_ts"),
            pl.col("ts").max().alias("last_ts"))
        activity = ex.lazy().filter(pl.col("ip").is_not_null()).join(net, on="ip").select(
            "account_id", (pl.col("ts").dt.epoch("s") // 60).cast(pl.Int32).alias("minute"),
            "network").unique()
        return pl.collect_all([per_account, activity])
    return _timed(work, repeat)


def load_floor(files: RunFiles, repeat: int) -> list[float]:
    """Writing the graph's frames as Parquet, in the store's encoding (``GRAPH_COMPRESSION``),
    into a fresh directory: exactly what the embedded store does, so a ratio near 1 is
    expected and says the stage is its floor (only writing less would go below it)."""
    frames = {p.stem: pl.read_parquet(p) for p in sorted(files.graph.glob("*.parquet"))}

    def work() -> None:
        with tempfile.TemporaryDirectory(dir=files.graph.parent.parent.parent) as tmp:
            for name, frame in frames.items():
                frame.write_parquet(Path(tmp) / f"{name}.parquet", compression=GRAPH_COMPRESSION)
    return _timed(work, repeat)


def read_graph_floor(files: RunFiles, repeat: int) -> list[float]:
    """Reading the graph's Parquet files back with polars: what the embedded store must do.
    The stage also sorts every frame into canonical order (the Neo4j store loses order),
    which the embedded store's own files would not need."""
    paths = sorted(files.graph.glob("*.parquet"))
    return _timed(lambda: [pl.read_parquet(p) for p in paths], repeat)


def lockstep_floor(files: RunFiles, repeat: int) -> list[float]:
    """The occupied cells of the finest scale: the unique (account, network, 5-minute
    bucket) of every activity row, then the accounts per (network, bucket) cell. The
    detector cannot judge a cell hot without these counts; its baselines, the coarser
    scale, seeds, member tests and passes are all on top, and so are the accounts'
    features and sign-ups (``SignUps``), found in this stage since its null reads them
    and read again by the links."""
    act = _graph_frames(files, "activity")["activity"]
    plan = act.lazy().select("account_id", "network",
                             (pl.col("minute") // LOCKSTEP_MINUTES).alias("b")).unique() \
        .group_by("network", "b").len()
    return _timed(plan.collect, repeat)


def links_floor(files: RunFiles, repeat: int) -> list[float]:
    """Each entity's users gathered: a group_by of the uses table by (kind, entity)
    collecting its accounts. Every blocking family but timing starts from these blocks;
    a group_by is the cheaper of the two ways to gather them (sorting uses by entity
    takes about 3x as long at 200k accounts), and a self-join on entity capped at
    ``max_block`` would be far more than the engine does (it bands big blocks), so it is
    no floor. Pair formation and scoring (``candidate_pairs`` pairs), MinHash bands and
    the sign-ups' edges are on top."""
    uses = _graph_frames(files, "uses")["uses"].select("account_id", "kind", "entity_id")
    plan = uses.lazy().group_by("kind", "entity_id").agg("account_id")
    return _timed(plan.collect, repeat)


def fleets_floor(files: RunFiles, repeat: int) -> list[float]:
    """scipy connected components over as many edges as the run linked (the manifest's
    ``links``) among all its accounts, built as the engine builds them (a COO matrix);
    the edges are random pairs, seeded. Components are the first thing fleets computes;
    Louvain inside large components, fragment merging and attachments are on top."""
    n = files.counts["accounts"]
    m = files.counts["links"]
    rng = np.random.default_rng(14)
    a = rng.integers(0, n, m)
    b = rng.integers(0, n, m)

    def work() -> object:
        matrix = coo_matrix((np.ones(m), (a, b)), shape=(n, n))
        return connected_components(matrix, directed=False)
    return _timed(work, repeat)


def scores_floor(files: RunFiles, repeat: int) -> list[float]:
    """Each fleet member's account row read once and summed per fleet: the members
    joined to the accounts' aggregates and grouped by fleet. A fleet's features are
    sums and means over its members; the per-account features, sync and capability
    similarity are on top."""
    members = _members(files)
    acc = _graph_frames(files, "accounts")["accounts"].select(
        "account_id", "exchanges", "input_tokens", "output_tokens", "active_minutes")
    plan = members.lazy().join(acc.lazy(), on="account_id").group_by("fleet_id").agg(
        pl.len(), pl.col("exchanges", "input_tokens", "output_tokens", "active_minutes").sum())
    return _timed(plan.collect, repeat)


def attribution_floor(files: RunFiles, repeat: int) -> list[float]:
    """Every use checked against the known links, and the hits taken to the fleets: uses
    joined to known_links on (kind, key), then to the members on account. Naming an
    organization needs at least these paths; entity degrees, two-hop paths, specificity,
    ranking and the evidence sentences are on top."""
    g = _graph_frames(files, "uses", "known_links")
    uses = g["uses"].select("account_id", "kind", "entity_id")
    known = g["known_links"].select("kind", pl.col("key").alias("entity_id"), "org_id")
    members = _members(files)
    plan = uses.lazy().join(known.lazy(), on=["kind", "entity_id"]).join(
        members.lazy(), on="account_id").group_by("fleet_id", "org_id").len()
    return _timed(plan.collect, repeat)


def assemble_floor(files: RunFiles, repeat: int) -> list[float]:
    """The contract's tables from what is known: each fleet's span and volume (members
    joined to accounts, grouped by fleet) and the assignments sorted by account. Shared
    and reach evidence, capability mixes and the float settling are on top."""
    members = _members(files)
    acc = _graph_frames(files, "accounts")["accounts"].select(
        "account_id", "created_at", "first_ts", "last_ts", "exchanges")
    assignments = pl.read_parquet(files.run / "assignments.parquet").sample(
        fraction=1.0, shuffle=True, seed=14)

    def work() -> list[pl.DataFrame]:
        per_fleet = members.lazy().join(acc.lazy(), on="account_id").group_by("fleet_id").agg(
            pl.col("created_at", "first_ts").min(), pl.col("last_ts").max(),
            pl.col("exchanges").sum())
        return pl.collect_all([per_fleet, assignments.lazy().sort("account_id")])
    return _timed(work, repeat)


def write_floor(files: RunFiles, repeat: int) -> list[float]:
    """The run's three result tables written once as Parquet with polars' defaults. The
    stage writes them twice (the run directory and the store's copy) plus the manifest:
    a second copy could be a hard link, so once is the floor."""
    tables = {n: pl.read_parquet(files.run / f"{n}.parquet") for n in RESULT_TABLES}

    def work() -> None:
        with tempfile.TemporaryDirectory(dir=files.run.parent) as tmp:
            for name, frame in tables.items():
                frame.write_parquet(Path(tmp) / f"{name}.parquet")
    return _timed(work, repeat)


FLOORS: dict[str, Sampler] = {
    "ingest": ingest_floor,
    "graph": graph_floor,
    "load": load_floor,
    "read_graph": read_graph_floor,
    "lockstep": lockstep_floor,
    "links": links_floor,
    "fleets": fleets_floor,
    "scores": scores_floor,
    "attribution": attribution_floor,
    "assemble": assemble_floor,
    "write": write_floor,
}


def floor_samples(files: RunFiles, repeat: int) -> dict[str, list[float]]:
    """``repeat`` timings of every floor, in seconds, keyed by stage.

    Round after round of all the floors, not one floor ``repeat`` times in a row: a
    competing job's burst then lands on one timing of several floors rather than on
    every timing of one. One floor's inputs are in memory at a time (at 1M accounts
    the exchanges alone are a few GB); loading them again each round is not timed.
    """
    samples: dict[str, list[float]] = {stage: [] for stage in FLOORS}
    for _ in range(repeat):
        for stage, sample in FLOORS.items():
            samples[stage].extend(sample(files, 1))
    return samples


def measure_floors(snapshot: Path, repeat: int, work: Path) -> dict[str, float]:
    """Median seconds of each stage's floor over ``repeat`` timings; ``work`` is a
    directory a run of this snapshot left (``run/`` and ``store/``, as
    ``bench.run_bench.run_once`` lays them out)."""
    samples = floor_samples(RunFiles.of(snapshot, work), repeat)
    return {stage: statistics.median(s) for stage, s in samples.items()}


def floor_samples_in_child(snapshot: Path, work: Path, repeat: int) -> dict[str, list[float]]:
    """``floor_samples`` in a fresh Python process (this module's ``main``), as the run
    itself is timed in one: the floors start from the same state as the stages do,
    not from the caller's heap (after a run's evaluation, say)."""
    out = subprocess.run(
        [sys.executable, "-m", "bench.stage_floors", str(snapshot), str(work),
         "--repeat", str(repeat)],
        check=True, stdout=subprocess.PIPE, text=True,
    )
    samples: dict[str, list[float]] = json.loads(out.stdout)
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("snapshot", type=Path)
    parser.add_argument("work", type=Path, help="a run's directory: run/ and store/")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    samples = floor_samples(RunFiles.of(args.snapshot, args.work), args.repeat)
    print(json.dumps(samples))
    return 0


if __name__ == "__main__":
    sys.exit(main())
