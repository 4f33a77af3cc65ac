"""The ``attribution`` command.

Exit statuses follow the contract: 0 success, 2 bad input or bad usage (one
line on stderr), 1 any other failure (one line on stderr, no traceback unless
``ATTRIBUTION_DEBUG`` is set).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from attribution import __version__
from attribution.store import Store


class UsageError(Exception):
    """Bad usage: exit status 2."""


def _run(args: argparse.Namespace) -> int:
    from attribution.pipeline import run
    from attribution.progress import Stages
    from attribution.settings import RunParams
    from attribution.store import default_home

    snapshot = Path(args.snapshot)
    if not snapshot.is_dir():
        raise UsageError(f"snapshot {snapshot} is not a directory")
    if args.previous is not None and not (Path(args.previous) / "manifest.json").is_file():
        raise UsageError(f"--previous {args.previous} is not a run directory (no manifest.json)")
    params = RunParams(max_rejected_share=args.max_rejected)
    store = open_store(args.store or default_home() / "store")
    stages = Stages(quiet=args.quiet)
    try:
        outcome = run(snapshot, Path(args.out), store, params=params,
                      previous=Path(args.previous) if args.previous else None, stages=stages)
    finally:
        store.close()
    print(summary(outcome.record.manifest, outcome.record.fleets, Path(args.out)))
    return 0


def _diff(args: argparse.Namespace) -> int:
    import json

    from attribution.diff import run_diff
    from attribution.results import read_tables

    runs = []
    for path in (args.base, args.head):
        if not (Path(path) / "manifest.json").is_file():
            raise UsageError(f"{path} is not a run directory (no manifest.json)")
        runs.append(read_tables(Path(path)))
    print(json.dumps(run_diff(runs[0], runs[1], threshold=args.threshold, limit=args.limit),
                     indent=2, default=str))
    return 0


def open_store(embedded_root: Path) -> Store:
    """The Neo4j store when ``NEO4J_URI`` is set, else the embedded one."""
    from attribution.settings import Neo4jSettings
    from attribution.store.embedded import EmbeddedStore

    settings = Neo4jSettings.from_env()
    if settings is not None:
        from attribution.store.neo4j import Neo4jStore

        return Neo4jStore(settings)
    return EmbeddedStore(Path(embedded_root))


def summary(manifest: dict[str, object], fleets: object, out: Path) -> str:
    """The short report printed at the end of a run."""
    import polars as pl

    assert isinstance(fleets, pl.DataFrame)
    counts = manifest["counts"]
    assert isinstance(counts, dict)
    lines = [
        f"run {manifest['run_id']} -> {out}",
        f"  accounts {counts['accounts']}, in fleets {counts['accounts_in_fleets']}; "
        f"fleets {counts['fleets']}, likely sybil {counts['sybil_fleets']}, "
        f"attributed {counts['attributed_fleets']}",
    ]
    rejected = sum(t["rejected"] for t in counts.get("tables", {}).values())
    if rejected:
        lines.append(f"  rejected input rows: {rejected} (see {out}/rejected/)")
    likely = fleets.filter(pl.col("sybil_score") >= 0.5)
    top = likely.sort(["size", "sybil_score", "fleet_id"], descending=[True, True, False]).head(8)
    if top.height:
        lines.append("  top fleets:")
    for row in top.iter_rows(named=True):
        org = (f"{row['org_id']} ({row['confidence']:.2f})" if row["org_id"] else "unattributed")
        lines.append(
            f"    {row['fleet_id']}  size {row['size']:>6}  sybil {row['sybil_score']:.2f}  {org}"
        )
    timings = manifest.get("timings", {})
    if isinstance(timings, dict) and "total" in timings:
        lines.append(f"  took {timings['total']:.1f}s")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="attribution",
        description="Find fleets of coordinated accounts and attribute them to organizations.",
    )
    parser.add_argument("--version", action="version", version=f"attribution {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="run the attribution over a snapshot directory")
    p.add_argument("snapshot", help="snapshot directory (contract tables as .parquet or .csv)")
    p.add_argument("--out", required=True, help="run directory to write")
    p.add_argument("--previous", help="an earlier run directory: keeps fleet ids stable")
    p.add_argument("--store", type=Path, help="embedded store directory "
                   "(default $ATTRIBUTION_HOME/store or ./.attribution/store)")
    p.add_argument("--max-rejected", type=float, default=0.01,
                   help="largest share of rejected rows per table before the run stops "
                   "(default 0.01)")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(handler=_run)
    d = sub.add_parser("diff", help="what changed between two run directories (JSON)")
    d.add_argument("base", help="the earlier run directory")
    d.add_argument("head", help="the later run directory")
    d.add_argument("--threshold", type=float, default=0.1,
                   help="smallest confidence move to report (default 0.1)")
    d.add_argument("--limit", type=int, default=50, help="rows per list (default 50)")
    d.set_defaults(handler=_diff)
    from attribution import neo4j_dev
    from attribution.api import cli as api_cli

    neo4j_dev.register(sub)
    api_cli.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on bad usage already
        return int(exc.code or 0)
    from attribution.ingest import BadInput

    try:
        return int(args.handler(args))
    except (BadInput, UsageError) as exc:
        print(f"attribution: {_one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("attribution: interrupted; earlier results left as they were", file=sys.stderr)
        return 1
    except Exception as exc:
        if os.environ.get("ATTRIBUTION_DEBUG"):
            raise
        print(f"attribution: {type(exc).__name__}: {_one_line(exc)}", file=sys.stderr)
        return 1


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


if __name__ == "__main__":
    sys.exit(main())
