"""The one way through: snapshot -> store -> links -> fleets -> scores -> run.

This is the only module that calls every stage; each stage is a function of
frames (or a ``networkx`` graph) and never sees a store.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import replace
from pathlib import Path
from typing import Any

import polars as pl

from attribution import __version__
from attribution.attribute import attribute, mask, member_reach
from attribution.diff import run_diff
from attribution.features import account_features
from attribution.fleets import attach_by_evidence, attach_loners, find_fleets
from attribution.graph import PropertyGraph, build_graph
from attribution.identity import assign_fleet_ids
from attribution.ingest import read_snapshot
from attribution.linking import Links, infer_links, rarity, window_pairs
from attribution.progress import Stages
from attribution.results import RunRecord
from attribution.rundir import OutDir
from attribution.schema import CAPABILITIES
from attribution.scoring import sybil_scores
from attribution.settings import RunParams
from attribution.store import Store
from attribution.verdicts import (
    CONFIRMED_CONFIDENCE,
    LEGIT_CAP,
    VERDICT_EVIDENCE,
    Verdict,
    drop_hidden,
    hidden_uses,
    pinned_members,
)
from attribution.vocabulary import (
    ENTITY_KINDS,
    FAMILIES,
    KIND_FAMILY,
    STRENGTH_COLUMNS,
    families_agreeing,
    total_weight,
)

FLOAT_DECIMALS = 12
DIFF_THRESHOLD = 0.1  # confidence moves reported in diff.json
# uses.kind -> (evidence kind, noun) of the "N accounts share ..." rows.
SHARED_KIND = {k.kind: (k.shared_evidence, k.noun) for k in ENTITY_KINDS if k.shared_evidence}


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

    Called by ``attribution.jobs.run_job`` (which checks paths and holds the
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
        store.load_snapshot(built, digest=snap.digest)
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
    only once the store has committed (``attribution.rundir``); a failure in
    between undoes the staging, or finishes the switch if the store did commit.
    """
    finished = now()
    taken = {str(m.get("run_id")) for m in store.list_runs()}
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
        return run_id in {str(m.get("run_id")) for m in store.list_runs()}
    except Exception:
        return None


def _timings(stages: Stages, started: dt.datetime) -> dict[str, float]:
    """Seconds per stage so far, and in all."""
    timings = dict(stages.timings)
    timings["total"] = round((now() - started).total_seconds(), 3)
    return timings


def _json(data: object) -> str:
    import json

    return json.dumps(data, indent=2, default=str)


def attribute_graph(
    graph: PropertyGraph,
    *,
    params: RunParams,
    stages: Stages,
    previous: RunRecord | None = None,
    verdicts: list[Verdict] | None = None,
) -> RunRecord:
    """Links, fleets, scores and attribution over a graph read from a store.

    ``verdicts`` (analyst decisions, see ``attribution.verdicts``) act where the
    model would otherwise decide: hidden entities leave the graph before links,
    pinned ones add links, and legit/confirm/reject override the scores.
    """
    verdicts = list(verdicts or [])
    hidden = hidden_uses(graph.uses, verdicts)
    if hidden.height:
        graph = replace(graph, uses=drop_hidden(graph.uses, verdicts))
    with stages.stage("links"):
        feats = account_features(graph)
        links = infer_links(graph, params.link, feats)
        pins = pinned_members(graph.uses, links.accounts, verdicts)
        if pins.height:
            links = _pin_links(links, pins, params)
    stages.say(f"{links.candidates} candidate pairs, {links.edges.height} links")
    with stages.stage("fleets"):
        membership = find_fleets(links.accounts.height, links.edges, params.fleet)
        membership = attach_by_evidence(membership, links.near, params.link)
        membership = attach_loners(membership, links.bursts, links.accounts.height, params.fleet)
    legit = sorted({v.subject for v in verdicts if v.action == "legit"})
    with stages.stage("scores"):
        fleet_scores, account_scores, feature_ev = sybil_scores(graph, links, membership, feats)
        if legit:
            account_scores = account_scores.with_columns(
                pl.when(pl.col("account_id").is_in(legit))
                .then(pl.col("sybil_score").clip(None, LEGIT_CAP))
                .otherwise(pl.col("sybil_score")).alias("sybil_score"))
    members = membership.join(links.accounts, on="idx").select("account_id", "fleet")
    ids, lineage = assign_fleet_ids(
        members,
        previous.assignments if previous is not None else None,
        set(previous.fleets["fleet_id"].to_list()) if previous is not None else None,
    )
    with stages.stage("attribution"):
        attribution, org_ev, bearers = attribute(graph, members, fleet_scores,
                                                 params.attribution)
        attribution, verdict_ev, applied = _apply_verdicts(
            attribution, verdicts, ids, members, hidden, pins, graph, params)
        reach = member_reach(links.edges, membership, links.accounts, bearers,
                             attribution.select("fleet", "org_id").drop_nulls(),
                             params.attribution.identity_tie)
        account_scores = account_scores.join(reach, on="account_id", how="left")
    with stages.stage("assemble"):
        record = _assemble(graph, members, fleet_scores, account_scores, attribution,
                           [feature_ev, org_ev, _shared_evidence(graph, members, params),
                            verdict_ev, _reach_evidence(graph, account_scores, attribution)],
                           ids, params)
        record = _confirmed_accounts(record, verdicts, applied, legit)
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


def _pin_links(links: Links, pins: pl.DataFrame, params: RunParams) -> Links:
    """Strong links between the accounts of each pinned entity (windowed like linking)."""
    parts = []
    for (verdict_id, kind), group in pins.group_by("verdict_id", "kind", maintain_order=True):
        block = group.select(pl.lit(_stable_block(str(verdict_id)), pl.UInt64).alias("block"),
                             pl.col("idx").cast(pl.Int32), pl.lit(0.0).alias("s"),
                             "first_seen", "last_seen")
        pairs = window_pairs(block, params.link.window)
        if pairs.height:
            parts.append(pairs.select(pl.col("a").cast(pl.Int32), pl.col("b").cast(pl.Int32),
                                      pl.lit(KIND_FAMILY[str(kind)]).alias("family")))
    if not parts:
        return links
    pinned = pl.concat(parts).group_by("a", "b").agg(
        [(pl.col("family") == f).any().alias(f"p_{f}") for f in FAMILIES])
    edges = links.edges.select("a", "b", *STRENGTH_COLUMNS).join(pinned, on=["a", "b"],
                                                                  how="full", coalesce=True)
    p = params.link
    edges = edges.with_columns([
        pl.when(pl.col(f"p_{f}").fill_null(False))
        .then(pl.max_horizontal(pl.col(f"s_{f}").fill_null(0.0),
                                pl.lit(max(p.strong_threshold, p.cap[f]))))
        .otherwise(pl.col(f"s_{f}").fill_null(0.0)).alias(f"s_{f}")
        for f in FAMILIES
    ]).with_columns(
        families_agreeing(p.family_threshold).alias("families"), total_weight().alias("weight"),
    ).select("a", "b", *STRENGTH_COLUMNS, "families", "weight").sort("a", "b")
    return Links(accounts=links.accounts, edges=edges, candidates=links.candidates,
                 bursts=links.bursts, near=links.near)


def _stable_block(key: str) -> int:
    """A block number from a verdict id that is the same in every process (unlike hash())."""
    return int(hashlib.sha256(key.encode()).hexdigest()[:15], 16)


def _apply_verdicts(
    attribution: pl.DataFrame,
    verdicts: list[Verdict],
    ids: pl.DataFrame,
    members: pl.DataFrame,
    hidden: pl.DataFrame,
    pins: pl.DataFrame,
    graph: PropertyGraph,
    params: RunParams,
) -> tuple[pl.DataFrame, pl.DataFrame, set[str]]:
    """Confirm and reject act on the attribution; every verdict that touches a fleet
    adds an ``analyst_verdict`` evidence row to it. Returns (attribution, evidence,
    ids of the verdicts applied)."""
    fleet_of_id = dict(zip(ids["fleet_id"].to_list(), ids["fleet"].to_list(), strict=True))
    fleet_of_acc = dict(zip(members["account_id"].to_list(), members["fleet"].to_list(),
                            strict=True))
    known_accounts = set(graph.accounts["account_id"].to_list())
    pin_idx = pins.join(pl.DataFrame({"idx": range(graph.accounts.height)},
                                     schema={"idx": pl.Int32}).with_columns(
        graph.accounts["account_id"]), on="idx") if pins.height else pins
    rows = {r["fleet"]: r for r in attribution.to_dicts()}
    evidence: list[tuple[Any, str | None, str, float]] = []
    applied: set[str] = set()
    for v in verdicts:
        if v.action in ("confirm", "reject"):
            fleet = fleet_of_id.get(v.subject)
            if fleet is None or fleet not in rows:
                continue
            row = rows[fleet]
            if v.action == "confirm":
                _confirm(row, str(v.org_id))
                evidence.append((fleet, v.org_id, f"attribution to {v.org_id} {v.describe()}", 1.0))
            else:
                _reject(row, str(v.org_id), params.attribution.abstain_below)
                evidence.append((fleet, v.org_id, f"attribution to {v.org_id} {v.describe()}", 0.0))
            applied.add(v.verdict_id)
        elif v.action == "legit":
            if v.subject not in known_accounts:
                continue
            applied.add(v.verdict_id)
            fleet = fleet_of_acc.get(v.subject)
            if fleet is not None:
                evidence.append((fleet, None, f"1 account {v.describe()}", 0.0))
        else:
            used = hidden if v.action == "hide" else pin_idx
            accounts = used.filter(pl.col("verdict_id") == v.verdict_id)["account_id"].to_list()
            if not accounts:
                continue
            applied.add(v.verdict_id)
            noun = SHARED_KIND.get(str(v.kind), ("", str(v.kind)))[1]
            touched: dict[Any, int] = {}
            for acc in accounts:
                fleet = fleet_of_acc.get(acc)
                if fleet is not None:
                    touched[fleet] = touched.get(fleet, 0) + 1
            for fleet, n in sorted(touched.items()):
                what = "ignored as noise" if v.action == "hide" else "common control"
                evidence.append((fleet, None,
                                 f"{noun} {mask(str(v.kind), v.subject)} ({n} accounts of the "
                                 f"fleet, {what}) {v.describe()}",
                                 1.0 if v.action == "pin" else 0.0))
    out = pl.DataFrame(list(rows.values()), schema=attribution.schema, orient="row") \
        if rows else attribution
    ev = pl.DataFrame(evidence, schema={"fleet": ids.schema["fleet"], "org_id": pl.String,
                                        "detail": pl.String, "weight": pl.Float64},
                      orient="row").with_columns(pl.lit(VERDICT_EVIDENCE).alias("kind"))
    return out, ev.select("fleet", "org_id", "kind", "detail", "weight"), applied


def _confirm(row: dict[str, Any], org: str) -> None:
    """The analyst names the organization: it wins, with at least CONFIRMED_CONFIDENCE."""
    if row.get("org_id") == org:
        row["confidence"] = max(float(row.get("confidence") or 0.0), CONFIRMED_CONFIDENCE)
    else:
        if row.get("org_id") is not None:
            row["runner_up_org_id"], row["runner_up_confidence"] = row["org_id"], row["confidence"]
        row["org_id"], row["confidence"] = org, CONFIRMED_CONFIDENCE
    if row.get("runner_up_org_id") == org:
        row["runner_up_org_id"] = row["runner_up_confidence"] = None
    row["affiliated_org_id"] = row["affiliation_confidence"] = None


def _reject(row: dict[str, Any], org: str, abstain_below: float) -> None:
    """The organization is ruled out: the runner-up takes its place if strong enough."""
    if row.get("org_id") == org:
        up, conf = row.get("runner_up_org_id"), row.get("runner_up_confidence")
        keep = up is not None and conf is not None and conf >= abstain_below
        row["org_id"], row["confidence"] = (up, conf) if keep else (None, None)
        row["runner_up_org_id"] = row["runner_up_confidence"] = None
    if row.get("runner_up_org_id") == org:
        row["runner_up_org_id"] = row["runner_up_confidence"] = None
    if row.get("affiliated_org_id") == org:
        row["affiliated_org_id"] = row["affiliation_confidence"] = None


def _confirmed_accounts(record: RunRecord, verdicts: list[Verdict], applied: set[str],
                        legit: list[str]) -> RunRecord:
    """Members of a confirmed fleet carry its organization (legit accounts never do)."""
    confirmed = [v.subject for v in verdicts if v.action == "confirm" and v.verdict_id in applied]
    fleets = record.fleets.filter(pl.col("fleet_id").is_in(confirmed)).select(
        "fleet_id", pl.col("org_id").alias("c_org"), pl.col("confidence").alias("c_conf"))
    a = record.assignments.join(fleets, on="fleet_id", how="left")
    a = a.with_columns(
        pl.when(pl.col("c_org").is_not_null()).then(pl.col("c_org"))
        .otherwise(pl.col("org_id")).alias("org_id"),
        pl.when(pl.col("c_org").is_not_null()).then(pl.col("c_conf"))
        .otherwise(pl.col("confidence")).alias("confidence"),
    ).with_columns(
        pl.when(pl.col("account_id").is_in(legit)).then(None).otherwise(pl.col("org_id"))
        .alias("org_id"),
        pl.when(pl.col("account_id").is_in(legit)).then(None).otherwise(pl.col("confidence"))
        .alias("confidence"),
    ).drop("c_org", "c_conf")
    return RunRecord(manifest=record.manifest, assignments=a, fleets=record.fleets,
                     evidence=record.evidence).conformed()


def _reach_evidence(graph: PropertyGraph, account_scores: pl.DataFrame,
                    attribution: pl.DataFrame) -> pl.DataFrame:
    """Why some members of an attributed fleet carry no organization (see member_reach)."""
    named = attribution.filter(pl.col("org_id").is_not_null()).select("fleet", "org_id").join(
        graph.organizations.select("org_id", "name"), on="org_id", how="left")
    counts = (
        account_scores.filter(pl.col("fleet").is_not_null())
        .group_by("fleet")
        .agg(pl.len().alias("size"), (pl.col("reach").fill_null(1.0) < 1.0).sum().alias("n"))
        .join(named, on="fleet")
        .filter(pl.col("n") > 0)
        .sort("fleet")
    )
    details = [
        f"{n} of {size} accounts of the fleet are tied to the members holding the evidence "
        f"only by timing or sign-up, not by a card, device, email domain or template: "
        f"{org} is not named for them"
        for n, size, org in counts.select(
            "n", "size", pl.coalesce("name", "org_id")).iter_rows()
    ]
    return counts.select(
        "fleet", "org_id", pl.lit("attribution_reach").alias("kind"),
        pl.Series("detail", details, dtype=pl.String), pl.lit(0.0).alias("weight"),
    )


def _shared_evidence(graph: PropertyGraph, members: pl.DataFrame, params: RunParams
                     ) -> pl.DataFrame:
    """What the fleet's accounts share: the identifiers behind its links."""
    uses = graph.uses.with_columns(pl.col("kind").replace({"signup_ip": "ip"})).unique(
        ["account_id", "kind", "entity_id"])
    degree = uses.group_by("kind", "entity_id").agg(pl.len().alias("deg"))
    shared = (
        members.join(uses, on="account_id")
        .group_by("fleet", "kind", "entity_id")
        .agg(pl.len().alias("n"))
        .filter(pl.col("n") >= 2)
        .join(degree, on=["kind", "entity_id"])
    )
    fam = pl.col("kind").replace_strict(KIND_FAMILY, return_dtype=pl.String)
    cap = fam.replace_strict(params.link.cap, return_dtype=pl.Float64)
    hub = fam.replace_strict(params.link.hub_size, return_dtype=pl.Float64)
    shared = shared.with_columns((cap * rarity(pl.col("deg"), hub) * pl.col("n")).alias("s"))
    shared = shared.filter(pl.col("s") > 0.05).sort(
        ["fleet", "s", "kind", "entity_id"], descending=[False, True, False, False]
    ).group_by("fleet", maintain_order=True).head(8)
    total = shared.group_by("fleet").agg(pl.col("s").sum().alias("t"))
    shared = shared.join(total, on="fleet")
    details = [
        f"{n} accounts share {SHARED_KIND[k][1]} {mask(k, e)}"
        + (f" (used by {d} accounts in all)" if d > n else "")
        for k, e, n, d in shared.select("kind", "entity_id", "n", "deg").iter_rows()
    ]
    return shared.select(
        "fleet",
        pl.lit(None, pl.String).alias("org_id"),
        pl.col("kind").replace_strict({k: v[0] for k, v in SHARED_KIND.items()}).alias("kind"),
        pl.Series("detail", details, dtype=pl.String),
        (pl.col("s") / pl.col("t")).alias("weight"),
    )


def _assemble(
    graph: PropertyGraph,
    members: pl.DataFrame,
    fleet_scores: pl.DataFrame,
    account_scores: pl.DataFrame,
    attribution: pl.DataFrame,
    evidence_parts: list[pl.DataFrame],
    ids: pl.DataFrame,
    params: RunParams,
) -> RunRecord:
    """The contract's three tables from the stage outputs."""
    acc = graph.accounts.select("account_id", "created_at", "first_ts", "last_ts", "exchanges",
                                "capabilities")
    activity = members.join(acc, on="account_id").group_by("fleet").agg(
        pl.min_horizontal(pl.col("created_at").min(), pl.col("first_ts").min()).alias(
            "first_seen"),
        pl.max_horizontal(pl.col("last_ts").max(), pl.col("created_at").max()).alias(
            "last_seen"),
        pl.col("exchanges").sum().cast(pl.Int64),
        *[pl.col("capabilities").list.get(i).sum().alias(f"cap{i}")
          for i in range(len(CAPABILITIES))],
    )
    caps = activity.select([f"cap{i}" for i in range(len(CAPABILITIES))]).rows()
    tops = [_top_capabilities(list(c)) for c in caps]
    activity = activity.with_columns(pl.Series("top_capabilities", tops, dtype=pl.String)).drop(
        [f"cap{i}" for i in range(len(CAPABILITIES))])
    fleets = (
        fleet_scores.select("fleet", pl.col("size").cast(pl.Int64), "sybil_score")
        .join(attribution, on="fleet", how="left")
        .join(activity, on="fleet", how="left")
        .join(ids, on="fleet")
        .sort("fleet_id")
    )
    threshold = params.attribution.accuse_min_sybil
    # A member attached by its sign-up alone is the fleet's only with
    # probability ``belief``, and one tied by the clock alone is reached by
    # the fleet's attribution only in part (``reach``, see member_reach).
    conf = pl.col("f_conf") * pl.col("belief").fill_null(1.0) * pl.col("reach").fill_null(1.0)
    named = (pl.col("sybil_score") >= threshold) & (conf >= params.attribution.abstain_below)
    assignments = (
        account_scores.join(ids, on="fleet", how="left")
        .join(fleets.select("fleet_id", pl.col("org_id").alias("f_org"),
                            pl.col("confidence").alias("f_conf")), on="fleet_id", how="left")
        .with_columns(pl.col("sybil_score").clip(0.0, 1.0))
        .select(
            "account_id",
            "fleet_id",
            "sybil_score",
            pl.when(named).then(pl.col("f_org")).alias("org_id"),
            pl.when(named).then(conf).alias("confidence"),
        )
        .sort("account_id")
    )
    evidence = (
        pl.concat([
            e.select(  # one schema: an empty part has nothing to infer its dtypes from
                pl.col("fleet").cast(ids.schema["fleet"]),
                (pl.col("org_id") if "org_id" in e.columns else pl.lit(None)).cast(pl.String)
                .alias("org_id"),
                pl.col("kind", "detail").cast(pl.String),
                pl.col("weight").cast(pl.Float64),
            )
            for e in evidence_parts
        ])
        .join(ids, on="fleet")
        .sort(["fleet_id", "weight", "kind", "detail"], descending=[False, True, False, False])
        .drop("fleet")
    )
    return RunRecord(manifest={}, assignments=_settle(assignments),
                     fleets=_settle(fleets.drop("fleet")), evidence=_settle(evidence)).conformed()


def _settle(frame: pl.DataFrame) -> pl.DataFrame:
    """Floats rounded to 12 decimals: parallel sums add in varying order, and the
    last bits must not make two runs of one snapshot differ."""
    return frame.with_columns(
        [pl.col(c).round(FLOAT_DECIMALS) for c, t in frame.schema.items() if t.is_float()]
    )


def _top_capabilities(counts: list[int] | None) -> str | None:
    if not counts or sum(counts) == 0:
        return None
    total = sum(counts)
    ranked = sorted(zip(CAPABILITIES, counts, strict=True), key=lambda x: (-x[1], x[0]))
    return ", ".join(f"{name} {round(100 * c / total)}%" for name, c in ranked[:3] if c)
