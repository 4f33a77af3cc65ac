"""Community detection on the fleet stage's largest components: python-louvain against
the compiled alternatives, on the same graphs.

The fleet stage runs python-louvain's first level (pure Python) inside every component
large enough to hold two fleets, then merges communities back (``fleets._merge_back``).
At a million accounts it is the stage furthest from its floor. This measures, on the
components a run would split, what each alternative costs and whether it would change
the fleets:

- ``python-louvain``: what the engine runs (its first level, ``fleets._louvain_level0``,
  on a networkx graph built as the engine builds it, the build timed with it); and the
  same with another seed, to show how much Louvain's own partition moves;
- ``igraph``: ``Graph.community_multilevel`` (Blondel et al.'s Louvain in C), its first
  level, so the same partition step as the engine's;
- ``leidenalg``: Leiden (Traag et al. 2019) on modularity, run to convergence;
- ``networkit``: PLM (parallel Louvain, Staudt and Meyerhenke), without refinement.

Each sees the same top-k edges the engine gives Louvain (``fleets._top_k``), and each
partition goes through the engine's merge-back, so the comparison is of the fleets it
would produce: their number and their agreement (adjusted Rand index) with the
engine's. Times are medians of ``--repeat`` runs on the machine at hand.

    pip install -e '.[bench-communities]'
    python -m bench.communities bench/out/world-1000000-s11/snapshot --top 3

The links of a snapshot take minutes to infer at 1M; they are cached next to the
benchmark's other outputs (``bench/out/communities-<name>-edges.parquet``), keyed by
the snapshot's directory only: delete the file after changing the link inference.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from attribution.contracts.settings import RunParams
from attribution.engine.fleets import _louvain_level0, _merge_back, _top_k
from attribution.engine.linking import infer_links
from attribution.job.pipeline import group_evidence
from attribution.stages.build import build_graph
from attribution.stages.ingest import read_snapshot
from fixtures.evaluate import adjusted_rand_index

OUT = Path(__file__).resolve().parent / "out"
Partition = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int], np.ndarray]


def run_edges(snapshot: Path, cache: Path) -> pl.DataFrame:
    """The run's links (a, b, weight) for ``snapshot``, inferred as the pipeline does."""
    if cache.exists():
        return pl.read_parquet(cache)
    params = RunParams()
    graph = build_graph(read_snapshot(snapshot).tables)
    feats, signups, blocks = group_evidence(graph, params)
    links = infer_links(graph, params.link, feats, blocks, signups)
    edges = links.edges.select("a", "b", "weight")
    cache.parent.mkdir(parents=True, exist_ok=True)
    edges.write_parquet(cache)
    return edges


def components(edges: pl.DataFrame, min_size: int) -> list[np.ndarray]:
    """Edge row numbers of each component with at least ``min_size`` accounts, largest first."""
    a, b = edges["a"].to_numpy(), edges["b"].to_numpy()
    n = int(max(a.max(), b.max())) + 1
    _, comp = connected_components(coo_matrix((np.ones(len(a)), (a, b)), shape=(n, n)), directed=False)
    sizes = np.bincount(comp)
    big = np.flatnonzero(sizes >= min_size)
    order = big[np.argsort(-sizes[big], kind="stable")]
    return [np.flatnonzero(comp[a] == c) for c in order]


def _local(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The component's sorted nodes and its edges' ends as positions among them."""
    nodes = np.unique(np.concatenate([a, b]))
    return nodes, np.searchsorted(nodes, a), np.searchsorted(nodes, b)


def python_louvain(nodes: np.ndarray, a: np.ndarray, b: np.ndarray, w: np.ndarray, seed: int
                   ) -> np.ndarray:
    return _louvain_level0(np.arange(len(nodes)), a, b, w, seed)


def _igraph(nodes: np.ndarray, a: np.ndarray, b: np.ndarray) -> object:
    import igraph

    return igraph.Graph(n=len(nodes), edges=np.column_stack([a, b]).tolist())


def igraph_multilevel(nodes: np.ndarray, a: np.ndarray, b: np.ndarray, w: np.ndarray, seed: int
                      ) -> np.ndarray:
    import igraph

    igraph.set_random_number_generator(random.Random(seed))
    levels = _igraph(nodes, a, b).community_multilevel(  # type: ignore[attr-defined]
        weights=w.tolist(), return_levels=True)
    return np.asarray(levels[0].membership, dtype=np.int64)


def leiden(nodes: np.ndarray, a: np.ndarray, b: np.ndarray, w: np.ndarray, seed: int) -> np.ndarray:
    import leidenalg

    part = leidenalg.find_partition(_igraph(nodes, a, b), leidenalg.ModularityVertexPartition,
                                    weights=w.tolist(), seed=seed)
    return np.asarray(part.membership, dtype=np.int64)


def networkit_plm(nodes: np.ndarray, a: np.ndarray, b: np.ndarray, w: np.ndarray, seed: int
                  ) -> np.ndarray:
    import networkit

    networkit.setSeed(seed, False)
    g = networkit.Graph(len(nodes), weighted=True)
    g.addEdges((w.astype(np.float64), (a.astype(np.uint64), b.astype(np.uint64))))
    algo = networkit.community.PLM(g, refine=False)
    algo.run()
    return np.asarray(algo.getPartition().getVector(), dtype=np.int64)


def python_louvain_reseeded(nodes: np.ndarray, a: np.ndarray, b: np.ndarray, w: np.ndarray,
                            seed: int) -> np.ndarray:
    """The engine's own method with another seed: how far Louvain's partition moves by
    itself, the yardstick for the others' agreement."""
    return python_louvain(nodes, a, b, w, seed + 1)


METHODS: dict[str, Partition] = {
    "python-louvain": python_louvain,
    "python-louvain, seed + 1": python_louvain_reseeded,
    "igraph": igraph_multilevel,
    "leidenalg": leiden,
    "networkit": networkit_plm,
}


def measure(edges: pl.DataFrame, top: int, repeat: int) -> list[dict[str, object]]:
    """Per component (the ``top`` largest, then every component the engine splits, as one
    row ``all``) and method: seconds, communities, fleets after the merge-back, and the
    adjusted Rand index of those fleets against the engine's."""
    fp = RunParams().fleet
    a_all = edges["a"].to_numpy().astype(np.int64)
    b_all = edges["b"].to_numpy().astype(np.int64)
    w_all = edges["weight"].to_numpy().astype(np.float64)
    keep_all = _top_k(a_all, b_all, w_all, fp.top_k_edges)
    comps = components(edges, fp.louvain_min_size)
    rows: list[dict[str, object]] = []
    total: dict[str, dict[str, float]] = {m: {"seconds": 0.0, "communities": 0, "fleets": 0}
                                          for m in METHODS}
    labels: dict[str, list[np.ndarray]] = {m: [] for m in METHODS}
    accounts = 0
    for rank, sel in enumerate(comps):
        a, b, w, keep = a_all[sel], b_all[sel], w_all[sel], keep_all[sel]
        nodes, la, lb = _local(a, b)
        accounts += len(nodes)
        detailed = rank < top
        engine_fleets = np.zeros(0, dtype=np.int64)
        for name, method in METHODS.items():
            times, comm = [], np.zeros(0, dtype=np.int64)
            for _ in range(repeat if detailed else 1):
                t0 = time.perf_counter()
                comm = method(nodes, la[keep], lb[keep], w[keep], fp.seed)
                times.append(time.perf_counter() - t0)
            fleets = _merge_back(nodes, comm, a, b, w, fp.merge_ratio, fp.closed_share)
            if name == "python-louvain":
                engine_fleets = fleets
            seconds = statistics.median(times)
            total[name]["seconds"] += seconds
            total[name]["communities"] += len(np.unique(comm))
            total[name]["fleets"] += len(np.unique(fleets))
            labels[name].append(fleets + (rank << 32))
            if detailed:
                rows.append({
                    "component": rank, "accounts": len(nodes), "edges": int(keep.sum()),
                    "method": name, "seconds": round(seconds, 3),
                    "communities": len(np.unique(comm)), "fleets": len(np.unique(fleets)),
                    "ari_vs_engine": round(adjusted_rand_index(
                        pl.Series(engine_fleets), pl.Series(fleets)), 4),
                })
    engine = pl.Series(np.concatenate(labels["python-louvain"])) if comps else pl.Series([], dtype=pl.Int64)
    for name in METHODS:
        mine = pl.Series(np.concatenate(labels[name])) if comps else engine
        rows.append({
            "component": f"all {len(comps)}", "accounts": accounts,
            "edges": int(sum(int(keep_all[sel].sum()) for sel in comps)),
            "method": name, "seconds": round(total[name]["seconds"], 3),
            "communities": int(total[name]["communities"]), "fleets": int(total[name]["fleets"]),
            "ari_vs_engine": round(adjusted_rand_index(engine, mine), 4) if comps else 1.0,
        })
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("snapshot", type=Path)
    ap.add_argument("--top", type=int, default=3, help="largest components to measure")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    name = args.snapshot.resolve().parent.name
    edges = run_edges(args.snapshot, OUT / f"communities-{name}-edges.parquet")
    rows = measure(edges, args.top, args.repeat)
    print("| component | accounts | Louvain edges | method | s (median) | communities "
          "| fleets after merge-back | ARI vs engine |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['component']} | {r['accounts']:,} | {r['edges']:,} | {r['method']} | {r['seconds']} | "
              f"{r['communities']:,} | {r['fleets']:,} | {r['ari_vs_engine']} |")
    (OUT / f"communities-{name}.json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
