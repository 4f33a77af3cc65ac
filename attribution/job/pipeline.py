"""The one way through: snapshot -> store -> links -> fleets -> scores -> run.

This is the only module that calls every stage, and it does no stage work
itself; each stage is a function of frames (or a ``networkx`` graph) and never
sees a store. ``attribution.job.jobs.run_job`` is the only caller.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from pathlib import Path

import polars as pl

from attribution import __version__
from attribution.contracts.graph import PropertyGraph
from attribution.contracts.results import RunRecord
from attribution.contracts.settings import RunParams
from attribution.contracts.verdicts import Verdict, drop_hidden, hidden_uses, pinned_members
from attribution.engine.assemble import assemble, reach_evidence, shared_evidence
from attribution.engine.attribute import attribute, member_reach
from attribution.engine.diff import run_diff
from attribution.engine.features import account_features, account_zones
from attribution.engine.fleet_ids import assign_fleet_ids
from attribution.engine.fleets import place_accounts
from attribution.engine.linking import SignUps, infer_links
from attribution.engine.lockstep import Blocks, find_blocks
from attribution.engine.scoring import sybil_scores
from attribution.engine.verdict_stage import apply_verdicts, cap_legit, confirmed_accounts, pin_links
from attribution.job.progress import Stages
from attribution.job.rundir import OutDir
from attribution.stages.build import build_graph
from attribution.stages.ingest import read_snapshot
from attribution.store import Store, run_ids

DIFF_THRESHOLD = 0.1  # confidence moves reported in diff.json


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def run(
    snapshot: Path,
    out: OutDir | None,
    store: Store,
    *,
    params: RunParams | None = None,
    stages: Stages | None = None,
    verdicts: list[Verdict] | None = None,
    previous: RunRecord | None = None,
) -> RunRecord:
    """Run the whole attribution over a snapshot: load it, compute, commit the run.

    Called by ``attribution.job.jobs.run_job`` (which checks paths and holds the
    locks); ``out`` None writes no run directory besides the store's own.
    """
    params = params or RunParams()
    stages = stages or Stages(quiet=True)
    started = now()
    with stages.stage("ingest"):
        snap = read_snapshot(snapshot, max_rejected_share=params.max_rejected_share,
                             progress=stages.say)
    with stages.stage("graph"):
        built = build_graph(snap.tables)
        snap.tables.clear()  # exchanges are the bulk of memory; only the graph goes on
    with stages.stage("load"):
        store.load_snapshot(built, digest=snap.digest, progress=stages.say)
        del built
    with stages.stage("read_graph"):
        graph = store.read_graph().canonical()
    record = attribute_graph(graph, params=params, stages=stages, previous=previous,
                             verdicts=verdicts)
    record.manifest["counts"]["tables"] = {
        name: {"read": c.read, "loaded": c.loaded, "rejected": c.rejected}
        for name, c in snap.counts.items()
    }
    record.rejected = snap.rejected
    return _finish(record, store, out, params=params, stages=stages, started=started,
                   prev=previous,
                   input_={"path": str(Path(snapshot).resolve()), "digest": snap.digest})


def run_stored(
    store: Store,
    out: OutDir | None,
    *,
    params: RunParams | None = None,
    stages: Stages | None = None,
    verdicts: list[Verdict] | None = None,
    previous: RunRecord | None = None,
) -> RunRecord:
    """Re-run over the graph already in the store (no snapshot): the batch job's form.

    ``out`` None writes no extra run directory (the store keeps the run).
    """
    params = params or RunParams()
    stages = stages or Stages(quiet=True)
    started = now()
    with stages.stage("read_graph"):
        graph = store.read_graph().canonical()
    digest = store.graph_digest() or "unknown"
    record = attribute_graph(graph, params=params, stages=stages, previous=previous,
                             verdicts=verdicts)
    return _finish(record, store, out, params=params, stages=stages, started=started,
                   prev=previous, input_={"path": f"store:{store.location}", "digest": digest})


def _finish(record: RunRecord, store: Store, out: OutDir | None, *, params: RunParams,
            stages: Stages, started: dt.datetime, prev: RunRecord | None,
            input_: dict[str, str]) -> RunRecord:
    """Manifest, diff, then one ordered commit: the store first, then the run directory.

    The run directory is staged before the store writes and switched into place
    only once the store has committed (``attribution.job.rundir``); a failure in
    between undoes the staging, or finishes the switch if the store did commit.
    """
    finished = now()
    taken = run_ids(store)
    base = run_id = f"run-{started:%Y%m%dT%H%M%S}-{input_['digest'][:8]}"
    n = 1
    while run_id in taken:  # two runs of one input in the same second
        n += 1
        run_id = f"{base}-{n}"
    record.manifest.update(
        run_id=run_id,
        started_at=started.isoformat(),
        finished_at=finished.isoformat(),
        engine_version=__version__,
        input=input_,
        params=params.to_dict(),
        previous_run_id=prev.run_id if prev is not None else None,
        store=store.name,
    )
    if prev is not None:
        record.diff = run_diff(prev, record, threshold=DIFF_THRESHOLD, limit=1_000_000)
        record.manifest["diff_counts"] = record.diff["counts"]
    record.manifest["timings"] = _timings(stages, started)
    with stages.stage("write"):
        if out is not None:
            out.stage(record)
        try:
            store.write_run(record)
        except BaseException:
            if out is not None:
                out.abort(lambda run_id: _committed(store, run_id))
            raise
    record.manifest["timings"] = _timings(stages, started)
    if out is not None:
        # The manifest's timings include the store's write: the staged copy says so.
        out.rewrite_manifest(record)
        out.commit(record.run_id)
    return record


def _committed(store: Store, run_id: str) -> bool | None:
    """Whether ``store`` holds ``run_id`` as a committed run (None: it cannot say now)."""
    try:
        return run_id in run_ids(store)
    except Exception:
        return None


def _timings(stages: Stages, started: dt.datetime) -> dict[str, float]:
    """Seconds per stage so far, and in all."""
    timings = dict(stages.timings)
    timings["total"] = round((now() - started).total_seconds(), 3)
    return timings


def group_evidence(graph: PropertyGraph, params: RunParams) -> tuple[pl.DataFrame, SignUps, Blocks]:
    """The accounts' features, their sign-ups and the lockstep blocks: the blocks' null
    needs the sign-ups (``SignUps.born``), and the links read all three."""
    zones = account_zones(graph.uses, graph.devices)
    feats = account_features(graph, zones)
    signups = SignUps.of(graph, params.link, feats)
    return feats, signups, find_blocks(graph.activity, params.lockstep, zones,
                                       signups.born(graph, params.link))


def attribute_graph(
    graph: PropertyGraph,
    *,
    params: RunParams,
    stages: Stages,
    previous: RunRecord | None = None,
    verdicts: list[Verdict] | None = None,
) -> RunRecord:
    """Links, fleets, scores and attribution over a graph read from a store.

    ``verdicts`` (analyst decisions, see ``attribution.contracts.verdicts``) act where the
    model would otherwise decide: hidden entities leave the graph before links,
    pinned ones add links, and legit/confirm/reject override the scores.
    """
    verdicts = list(verdicts or [])
    hidden = hidden_uses(graph.uses, verdicts)
    if hidden.height:
        graph = replace(graph, uses=drop_hidden(graph.uses, verdicts))
    with stages.stage("lockstep"):
        feats, signups, blocks = group_evidence(graph, params)
    stages.say(f"{blocks.blocks.height} lockstep blocks, {blocks.members.height} accounts in them")
    with stages.stage("links"):
        links = infer_links(graph, params.link, feats, blocks, signups)
        pins = pinned_members(graph.uses, links.accounts, verdicts)
        if pins.height:
            links = pin_links(links, pins, params)
    stages.say(f"{links.candidates} candidate pairs, {links.edges.height} links")
    with stages.stage("fleets"):
        membership, links = place_accounts(links, graph.uses, feats, params.fleet, params.link)
    legit = sorted({v.subject for v in verdicts if v.action == "legit"})
    with stages.stage("scores"):
        fleet_scores, account_scores, feature_ev = sybil_scores(graph, links, membership, feats)
        account_scores = cap_legit(account_scores, legit)
    members = membership.join(links.accounts, on="idx").select("account_id", "fleet")
    ids, lineage = assign_fleet_ids(
        members,
        previous.assignments if previous is not None else None,
        set(previous.fleets["fleet_id"].to_list()) if previous is not None else None,
    )
    with stages.stage("attribution"):
        attribution, org_ev, bearers = attribute(graph, members, fleet_scores,
                                                 params.attribution)
        attribution, verdict_ev, applied = apply_verdicts(
            attribution, verdicts, ids, members, hidden, pins, graph, params)
        reach = member_reach(links.edges, membership, links.accounts, bearers,
                             attribution.select("fleet", "org_id").drop_nulls(),
                             params.attribution.identity_tie)
        account_scores = account_scores.join(reach, on="account_id", how="left")
    with stages.stage("assemble"):
        record = assemble(graph, members, fleet_scores, account_scores, attribution,
                          [feature_ev, org_ev, shared_evidence(graph, members, params),
                           verdict_ev, reach_evidence(graph, account_scores, attribution)],
                          ids, params)
        record = confirmed_accounts(record, verdicts, applied, legit)
    record.manifest["counts"] = {
        "accounts": graph.accounts.height,
        "candidate_pairs": links.candidates,
        "links": links.edges.height,
        "fleets": record.fleets.height,
        "attributed_fleets": int(record.fleets["org_id"].is_not_null().sum()),
        "sybil_fleets": int((record.fleets["sybil_score"] >= 0.5).sum()),
        "accounts_in_fleets": int(record.assignments["fleet_id"].is_not_null().sum()),
    }
    record.manifest["lineage"] = lineage.to_dicts()
    record.manifest["verdicts"] = {
        "applied": sorted(applied),
        "not_applied": sorted(v.verdict_id for v in verdicts if v.verdict_id not in applied),
    }
    return record


