"""Analyst verdicts as a stage of the run: where each kind acts on what the model found.

``attribution.contracts.verdicts`` records verdicts; this module applies the active ones
inside a run (``attribution.job.pipeline`` calls it): hidden entities leave the
graph before links (``verdicts.drop_hidden``), pinned ones add strong links
(``pin_links``), ``legit`` caps an account's score (``cap_legit``), ``confirm``
and ``reject`` override the attribution (``apply_verdicts``), and every verdict
applied is shown as evidence.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from typing import Any

import polars as pl

from attribution.contracts.graph import PropertyGraph
from attribution.contracts.results import RunRecord
from attribution.contracts.settings import RunParams
from attribution.contracts.verdicts import CONFIRMED_CONFIDENCE, LEGIT_CAP, VERDICT_EVIDENCE, Verdict
from attribution.contracts.vocabulary import (
    ENTITIES,
    FAMILIES,
    KIND_FAMILY,
    STRENGTH_COLUMNS,
    families_agreeing,
    total_weight,
)
from attribution.engine.attribute import mask
from attribution.engine.linking import Links, window_pairs


def cap_legit(account_scores: pl.DataFrame, legit: list[str]) -> pl.DataFrame:
    """Accounts an analyst marked legitimate keep at most ``LEGIT_CAP`` as sybil score."""
    if not legit:
        return account_scores
    return account_scores.with_columns(
        pl.when(pl.col("account_id").is_in(legit))
        .then(pl.col("sybil_score").clip(None, LEGIT_CAP))
        .otherwise(pl.col("sybil_score")).alias("sybil_score"))


def pin_links(links: Links, pins: pl.DataFrame, params: RunParams) -> Links:
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
    return replace(links, edges=edges)


def _stable_block(key: str) -> int:
    """A block number from a verdict id that is the same in every process (unlike hash())."""
    return int(hashlib.sha256(key.encode()).hexdigest()[:15], 16)


def apply_verdicts(
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
    if not verdicts:
        # Most runs have none: no lookups over every account (a second at 1M accounts).
        return attribution, _verdict_evidence([], ids), set()
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
            noun = ENTITIES[str(v.kind)].noun if str(v.kind) in ENTITIES else str(v.kind)
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
    return out, _verdict_evidence(evidence, ids), applied


def _verdict_evidence(evidence: list[tuple[Any, str | None, str, float]], ids: pl.DataFrame
                      ) -> pl.DataFrame:
    """The ``analyst_verdict`` evidence rows: (fleet, org_id, kind, detail, weight)."""
    ev = pl.DataFrame(evidence, schema={"fleet": ids.schema["fleet"], "org_id": pl.String,
                                        "detail": pl.String, "weight": pl.Float64},
                      orient="row").with_columns(pl.lit(VERDICT_EVIDENCE).alias("kind"))
    return ev.select("fleet", "org_id", "kind", "detail", "weight")


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


def confirmed_accounts(record: RunRecord, verdicts: list[Verdict], applied: set[str],
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
