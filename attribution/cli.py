"""The ``attribution`` command.

Exit statuses follow the contract: 0 success, 2 bad input or bad usage (one
line on stderr), 1 any other failure (one line on stderr, no traceback unless
``ATTRIBUTION_DEBUG`` is set).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn, cast

import polars as pl

from attribution import __version__
from attribution.contracts.results import RunRecord, read_tables
from attribution.contracts.settings import Neo4jSettings
from attribution.contracts.verdicts import (
    ENTITY_KINDS,
    VerdictError,
    VerdictStore,
    check_subject,
    make_verdict,
)
from attribution.engine.diff import run_diff
from attribution.errors import UsageError
from attribution.job.jobs import EXIT_LOCKED, reattribute, run_job, summary_line
from attribution.job.locks import Locked
from attribution.job.progress import Stages
from attribution.stages.ingest import BadInput
from attribution.store import default_home, open_store

__all__ = ["UsageError", "build_parser", "main", "open_store", "summary"]


def _run(args: argparse.Namespace) -> int:
    store = open_store(args.store or default_home() / "store")
    try:
        result = run_job(store, home=default_home(), snapshot=Path(args.snapshot),
                         out=Path(args.out), previous=args.previous,
                         max_rejected=args.max_rejected, stages=Stages(quiet=args.quiet))
    finally:
        store.close()
    print(summary(result.record.manifest, result.record.fleets, Path(args.out)))
    return 0


def _neo4j_import(args: argparse.Namespace) -> int:
    from attribution.store.neo4j_import import write_for_snapshot  # the driver's codec: not for `run`

    print(write_for_snapshot(Path(args.snapshot), args.out, database=args.database,
                             admin=args.admin, server_dir=args.server_dir))
    return 0


def _diff(args: argparse.Namespace) -> int:
    runs = []
    on_neo4j = Neo4jSettings.from_env() is not None
    if args.store is not None or (on_neo4j and args.base is None and args.head is None):
        runs = _stored_pair(args)
    else:
        if args.base is None or args.head is None:
            raise UsageError("diff needs BASE and HEAD run directories (or --store DIR)")
        for path in (args.base, args.head):
            if not (Path(path) / "manifest.json").is_file():
                raise UsageError(f"{path} is not a run directory (no manifest.json)")
            runs.append(read_tables(Path(path)))
    diff = run_diff(runs[0], runs[1], threshold=args.threshold, limit=args.limit)
    if args.counts:
        print(" ".join(f"{key}={value}" for key, value in diff["counts"].items()))
    else:
        print(json.dumps(diff, indent=2, default=str))
    return 0


def _stored_pair(args: argparse.Namespace) -> list[RunRecord]:
    """Two stored runs by id: HEAD defaults to the current run, BASE to HEAD's previous."""
    store = open_store(args.store or default_home() / "store")
    try:
        head = store.read_results(args.head) if args.head else store.read_results()
        if head is None:
            raise UsageError(f"no run {args.head or '(current)'} in the store")
        base_id = args.base or head.manifest.get("previous_run_id")
        if not base_id:
            raise UsageError(f"run {head.run_id} has no previous run; name BASE_ID")
        base = store.read_results(str(base_id))
        if base is None:
            raise UsageError(f"no run {base_id} in the store")
        return [base, head]
    finally:
        store.close()


def _reattribute(args: argparse.Namespace) -> int:
    store = open_store(args.store or default_home() / "store")
    try:
        if args.snapshot is None and not store.graph_digest():
            raise UsageError("the store holds no complete graph (none loaded yet, or the last "
                             "load was interrupted); pass --snapshot DIR")
        result = reattribute(store, home=default_home(), snapshot=args.snapshot,
                             out=args.out, quiet=args.quiet, max_rejected=args.max_rejected)
    finally:
        store.close()
    print(summary_line(result), flush=True)
    return 0


def _verdict(args: argparse.Namespace) -> int:
    store = open_store(args.store or default_home() / "store")
    try:
        log = VerdictStore(store.verdict_log_path(default_home()))
        if args.action == "list":
            for v, revoked in log.all():
                if revoked is not None and not args.all:
                    continue
                target = f"{v.kind} {v.subject}" if v.kind else v.subject
                org = f" org={v.org_id}" if v.org_id else ""
                label = f" {v.label}" if v.label else ""
                state = f" REVOKED by {revoked.get('by')} on {str(revoked.get('at'))[:10]}" \
                    if revoked else ""
                print(f"{v.verdict_id}  {v.at}  {v.action:<7} {target}{label}{org}  by={v.by}  "
                      f"why={v.why}{state}")
            return 0
        if args.action == "revoke":
            log.revoke(args.verdict_id, by=args.by or os.environ.get("USER", "unknown"),
                       why=args.why or "")
            print(f"revoked {args.verdict_id} (applies from the next run)")
            return 0
        verdict = make_verdict(args.action, args.subject, by=args.by, why=args.why,
                               kind=getattr(args, "kind", None),
                               org_id=getattr(args, "org", None))
        check_subject(verdict, store.read_results() if verdict.kind is None else None)
    finally:
        store.close()
    log.add(verdict)
    print(f"{verdict.verdict_id} recorded: {verdict.action} "
          f"{verdict.kind + ' ' if verdict.kind else ''}{verdict.subject} (applies from the next run)")
    return 0


def _runs(args: argparse.Namespace) -> int:
    store = open_store(args.store or default_home() / "store")
    try:
        manifests = store.list_runs()
        current = store.current_run_id()
    finally:
        store.close()
    for m in manifests:
        counts = m.get("counts", {})
        d = m.get("diff_counts") or {}
        applied = len((m.get("verdicts") or {}).get("applied", []))
        mark = "*" if m.get("run_id") == current else " "
        changes = (f" created={d.get('created', 0)} dissolved={d.get('dissolved', 0)}"
                   if d else "")
        print(f"{mark} {m.get('run_id')}  {str(m.get('started_at'))[:19]}Z  "
              f"fleets={counts.get('fleets')} attributed={counts.get('attributed_fleets')}"
              f"{changes} verdicts={applied} input={str((m.get('input') or {}).get('digest'))[:12]} "
              f"engine={m.get('engine_version')} previous={m.get('previous_run_id') or '-'}")
    return 0


def summary(manifest: dict[str, object], fleets: pl.DataFrame, out: Path) -> str:
    """The short report printed at the end of a run."""
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


# Commands whose modules are light. The others (serve and keys, notebook, the dev
# Neo4j) import the web server, the Neo4j driver or Jupyter's tools, about 0.8 s
# before anything runs; a command line naming one of these first leaves them out.
CORE_COMMANDS = frozenset({"run", "diff", "reattribute", "runs", "verdict", "neo4j-import"})


def build_parser(*, extras: bool = True) -> argparse.ArgumentParser:
    """The command's parser; ``extras`` False leaves out the commands outside
    ``CORE_COMMANDS`` (for a command line that names a core command)."""
    parser = Parser(
        prog="attribution",
        description="Find fleets of coordinated accounts and attribute them to organizations.",
    )
    parser.add_argument("--version", action="version", version=f"attribution {__version__}")
    sub = cast("argparse._SubParsersAction[argparse.ArgumentParser]",
               parser.add_subparsers(dest="command", required=True))
    p = sub.add_parser("run", help="run the attribution over a snapshot directory")
    p.add_argument("snapshot", help="snapshot directory (contract tables as .parquet or .csv)")
    p.add_argument("--out", required=True, help="run directory to write")
    p.add_argument("--previous", type=Path,
                   help="an earlier run directory: keeps fleet ids stable")
    p.add_argument("--store", type=Path, help="embedded store directory "
                   "(default $ATTRIBUTION_HOME/store or ./.attribution/store)")
    p.add_argument("--max-rejected", type=float, default=0.01,
                   help="largest share of rejected rows per table before the run stops "
                   "(default 0.01)")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(handler=_run)
    d = sub.add_parser("diff", help="what changed between two runs (JSON)",
                       description="Two run directories, or with --store two stored run ids "
                       "(default: the current run against its previous run). With NEO4J_URI "
                       "set and no arguments: the current Neo4j run against its previous run.")
    d.add_argument("base", nargs="?", help="the earlier run directory (run id with --store)")
    d.add_argument("head", nargs="?", help="the later run directory (run id with --store)")
    d.add_argument("--store", type=Path, help="compare runs stored in this store "
                   "(embedded store directory; Neo4j when NEO4J_URI is set)")
    d.add_argument("--threshold", type=float, default=0.1,
                   help="smallest confidence move to report (default 0.1)")
    d.add_argument("--limit", type=int, default=50, help="rows per list (default 50)")
    d.add_argument("--counts", action="store_true",
                   help="only the counts, as one line of key=value (for a job's log)")
    d.set_defaults(handler=_diff)
    _register_batch(sub)

    i = sub.add_parser(
        "neo4j-import", help="write neo4j-admin bulk import files for a snapshot",
        description="For the first load of a very large snapshot: write the graph as "
        "neo4j-admin import files (one CSV per label and relationship type) into a new or "
        "empty --out, and print the neo4j-admin command to run with the database stopped. "
        "A later `attribution run` of the same snapshot finds the graph loaded.")
    i.add_argument("snapshot", help="snapshot directory (see the contract)")
    i.add_argument("--out", required=True, type=Path, help="a new or empty folder for the files")
    i.add_argument("--database", default="neo4j", help="the database to import into")
    i.add_argument("--server-dir", help="where the server will see the files (default: --out)")
    i.add_argument("--admin", default="neo4j-admin", help="the neo4j-admin executable")
    i.set_defaults(handler=_neo4j_import)

    if extras:
        from attribution import notebook as notebook_cmd
        from attribution.api import cli as api_cli
        from attribution.dev import neo4j_harness as neo4j_dev

        neo4j_dev.register(sub)
        api_cli.register(sub)
        notebook_cmd.register(sub)
    return parser


STORE_HELP = ("embedded store directory (default $ATTRIBUTION_HOME/store or ./.attribution/store; "
              "Neo4j instead when NEO4J_URI is set)")
REATTRIBUTE_EPILOG = """\
exit statuses:
  0   the run is recorded and current; one summary line on stdout
  1   failure (one line on stderr); the previous current run is left as it was
  2   bad input or usage (one line on stderr)
  75  another job (reattribute or run) holds the store's lock; try again later

The lock is an flock on <store>/.lock (Neo4j: $ATTRIBUTION_HOME/neo4j-job.lock);
it dies with the process, so a killed job never blocks the next one.
"""


def _register_batch(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The batch job, run history and analyst verdicts."""
    r = sub.add_parser(
        "reattribute", help="the batch job: re-run on the store (optionally a new snapshot)",
        description="Re-run the attribution against the store: on its current graph, or on "
        "--snapshot loaded first. The store's current run is the previous run (stable fleet "
        "ids, diff); active analyst verdicts are applied. The new run becomes current "
        "atomically. Prints one summary line.",
        epilog=REATTRIBUTE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("--store", type=Path, help=STORE_HELP)
    r.add_argument("--snapshot", type=Path, help="load this snapshot directory first")
    r.add_argument("--out", type=Path, help="also write the contract run directory here")
    r.add_argument("--max-rejected", type=float, default=0.01,
                   help="largest share of rejected rows per table (default 0.01)")
    r.add_argument("--quiet", action="store_true", help="no progress on stderr")
    r.set_defaults(handler=_reattribute)

    h = sub.add_parser("runs", help="list the store's runs (one line each, * marks current)")
    h.add_argument("--store", type=Path, help=STORE_HELP)
    h.set_defaults(handler=_runs)

    v = sub.add_parser("verdict", help="record, list or revoke analyst verdicts",
                       description="Verdicts are kept append-only beside the store and applied "
                       "in every later run.")
    vs = v.add_subparsers(dest="action", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--by", required=True, help="who decided")
        p.add_argument("--why", required=True, help="the reason (a case number, a finding)")
        p.add_argument("--store", type=Path, help=STORE_HELP)
        p.set_defaults(handler=_verdict)

    for action, text in (("confirm", "the fleet is run by ORG"),
                         ("reject", "the fleet is not run by ORG")):
        p = vs.add_parser(action, help=text)
        p.add_argument("subject", metavar="FLEET_ID")
        p.add_argument("--org", required=True, metavar="ORG_ID")
        common(p)
    p = vs.add_parser("legit", help="the account is a real, independent user")
    p.add_argument("subject", metavar="ACCOUNT_ID")
    common(p)
    for action, text in (("pin", "the entity is strong evidence of common control"),
                         ("hide", "the entity is noise (e.g. a company NAT): ignore it")):
        p = vs.add_parser(action, help=text)
        p.add_argument("kind", choices=ENTITY_KINDS, metavar="KIND",
                       help=f"one of {', '.join(ENTITY_KINDS)} (payment = card fingerprint)")
        p.add_argument("subject", metavar="ENTITY_ID")
        common(p)
    p = vs.add_parser("list", help="active verdicts (--all: also revoked ones)")
    p.add_argument("--all", action="store_true")
    p.add_argument("--store", type=Path, help=STORE_HELP)
    p.set_defaults(handler=_verdict)
    p = vs.add_parser("revoke", help="stop applying a verdict from the next run")
    p.add_argument("verdict_id", metavar="VERDICT_ID")
    p.add_argument("--by", help="who revokes (default $USER)")
    p.add_argument("--why", help="the reason")
    p.add_argument("--store", type=Path, help=STORE_HELP)
    p.set_defaults(handler=_verdict)


def main(argv: Sequence[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(extras=not (words and words[0] in CORE_COMMANDS))
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on bad usage already (one line, see Parser)
        return int(exc.code or 0)

    try:
        return int(args.handler(args))
    except (BadInput, UsageError, VerdictError) as exc:
        print(f"attribution: {_one_line(exc)}", file=sys.stderr)
        return 2
    except Locked as exc:
        # The batch job's scheduler retries on 75 (EX_TEMPFAIL); `run` keeps to the
        # contract's statuses (0, 1, 2) and names the holder.
        print(f"attribution: {_one_line(exc)}", file=sys.stderr)
        return EXIT_LOCKED if args.command == "reattribute" else 1
    except KeyboardInterrupt:
        print("attribution: interrupted; earlier results left as they were", file=sys.stderr)
        return 1
    except Exception as exc:
        if os.environ.get("ATTRIBUTION_DEBUG"):
            raise
        print(f"attribution: {type(exc).__name__}: {_one_line(exc)}", file=sys.stderr)
        return 1


class Parser(argparse.ArgumentParser):
    """argparse with usage errors on one line (the contract's exit 2, one clear line)."""
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"attribution: {self.prog.removeprefix('attribution ')}: {message} "
                     f"(see {self.prog} --help)\n")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


if __name__ == "__main__":
    sys.exit(main())
