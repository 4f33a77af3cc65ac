"""The one way through: snapshot -> store -> links -> fleets -> scores -> run.

This is the only module that calls every stage; each stage is a function of
frames (or a ``networkx`` graph) and never sees a store.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from attribution import __version__
from attribution.attribute import attribute, mask
from attribution.diff import run_diff
from attribution.features import account_features
from attribution.fleets import attach_loners, find_fleets
from attribution.graph import PropertyGraph, build_graph
from attribution.identity import assign_fleet_ids
from attribution.ingest import read_snapshot
from attribution.linking import KIND_FAMILY, infer_links, rarity
from attribution.progress import Stages
from attribution.results import RunRecord, read_tables, write_run_dir
from attribution.schema import CAPABILITIES
from attribution.scoring import sybil_scores
from attribution.settings import RunParams
from attribution.store import Store

DIFF_THRESHOLD = 0.1  # confidence moves reported in diff.json
SHARED_KIND = {
    "payment": ("shared_payment", "card fingerprint"),
    "device": ("shared_device", "device"),
    "ip": ("shared_ip", "IP"),
    "email_domain": ("shared_email_domain", "email domain"),
    "prompt": ("prompt_template", "prompt template"),
}


@dataclass(frozen=True)
class RunOutcome:
    """What a run produced, for the summary line and the callers."""

    record: RunRecord
    out: Path


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def run(
    snapshot: Path,
    out: Path,
    store: Store,
    *,
    params: RunParams | None = None,
    previous: Path | None = None,
    stages: Stages | None = None,
) -> RunOutcome:
    """Run the whole attribution over a snapshot and write the run directory."""
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
    prev = read_tables(previous) if previous is not None else None
    record = attribute_graph(graph, params=params, stages=stages, previous=prev)
    finished = now()
    run_id = f"run-{started:%Y%m%dT%H%M%S}-{snap.digest[:8]}"
    record.manifest.update(
        run_id=run_id,
        started_at=started.isoformat(),
        finished_at=finished.isoformat(),
        engine_version=__version__,
        input={"path": str(Path(snapshot).resolve()), "digest": snap.digest},
        params=params.to_dict(),
        previous_run_id=prev.run_id if prev is not None else None,
        store=store.name,
    )
    record.manifest["counts"]["tables"] = {
        name: {"read": c.read, "loaded": c.loaded, "rejected": c.rejected}
        for name, c in snap.counts.items()
    }
    record.rejected = snap.rejected
    if prev is not None:
        record.diff = run_diff(prev, record, threshold=DIFF_THRESHOLD, limit=1_000_000)
    with stages.stage("write"):
        write_run_dir(record, out)
        store.write_run(record)
    record.manifest["timings"] = dict(stages.timings)
    record.manifest["timings"]["total"] = round((now() - started).total_seconds(), 3)
    # The manifest's timings include the write itself: rewrite it in place.
    (Path(out) / "manifest.json").write_text(_json(record.manifest))
    return RunOutcome(record=record, out=Path(out))


def _json(data: object) -> str:
    import json

    return json.dumps(data, indent=2, default=str)


def attribute_graph(
    graph: PropertyGraph,
    *,
    params: RunParams,
    stages: Stages,
    previous: RunRecord | None = None,
) -> RunRecord:
    """Links, fleets, scores and attribution over a graph read from a store."""
    with stages.stage("links"):
        feats = account_features(graph)
        links = infer_links(graph, params.link, feats)
    stages.say(f"{links.candidates} candidate pairs, {links.edges.height} links")
    with stages.stage("fleets"):
        membership = find_fleets(links.accounts.height, links.edges, params.fleet)
        membership = attach_loners(membership, links.loose, params.fleet)
    with stages.stage("scores"):
        fleet_scores, account_scores, feature_ev = sybil_scores(graph, links, membership, feats)
    members = membership.join(links.accounts, on="idx").select("account_id", "fleet")
    with stages.stage("attribution"):
        attribution, org_ev = attribute(graph, members, fleet_scores, params.attribution)
    with stages.stage("assemble"):
        ids, lineage = assign_fleet_ids(
            members,
            previous.assignments if previous is not None else None,
            set(previous.fleets["fleet_id"].to_list()) if previous is not None else None,
        )
        record = _assemble(graph, members, fleet_scores, account_scores, attribution,
                           [feature_ev, org_ev, _shared_evidence(graph, members, params)],
                           ids, params)
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
    return record


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
    assignments = (
        account_scores.join(ids, on="fleet", how="left")
        .join(fleets.select("fleet_id", pl.col("org_id").alias("f_org"),
                            pl.col("confidence").alias("f_conf")), on="fleet_id", how="left")
        .with_columns(pl.col("sybil_score").clip(0.0, 1.0))
        .select(
            "account_id",
            "fleet_id",
            "sybil_score",
            pl.when(pl.col("sybil_score") >= threshold).then(pl.col("f_org")).alias("org_id"),
            pl.when(pl.col("sybil_score") >= threshold).then(pl.col("f_conf")).alias("confidence"),
        )
        .sort("account_id")
    )
    evidence = (
        pl.concat([
            e.select(
                "fleet",
                (pl.col("org_id") if "org_id" in e.columns else pl.lit(None)).cast(pl.String)
                .alias("org_id"),
                "kind",
                "detail",
                pl.col("weight").cast(pl.Float64),
            )
            for e in evidence_parts
        ])
        .join(ids, on="fleet")
        .sort(["fleet_id", "weight", "kind", "detail"], descending=[False, True, False, False])
        .drop("fleet")
    )
    return RunRecord(manifest={}, assignments=assignments, fleets=fleets.drop("fleet"),
                     evidence=evidence).conformed()


def _top_capabilities(counts: list[int] | None) -> str | None:
    if not counts or sum(counts) == 0:
        return None
    total = sum(counts)
    ranked = sorted(zip(CAPABILITIES, counts, strict=True), key=lambda x: (-x[1], x[0]))
    return ", ".join(f"{name} {round(100 * c / total)}%" for name, c in ranked[:3] if c)


def input_digest(paths: list[Path]) -> str:
    """sha256 over file names and bytes (used when no ingest digest is at hand)."""
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()
