"""Attribution: which organization controls a fleet, and how sure we are.

Organizations are named only from ``known_links`` reached through the graph:
directly (a member account is a known employee account; a member uses a known
corporate card, device, IP, ASN, email domain or a prompt template of an
earlier case) or in two hops (a member shares a card or device with a known
employee account). Each kind of evidence has its own strength, scaled by the
analyst's confidence in the fact, by how much of the fleet it touches, and by
how rare the shared entity is. Rented infrastructure (proxy exits, hosting
ranges) names nobody. Per organization the kinds add up as log-odds (within a
kind the strongest piece counts, the rest only a little), and a softmax
against "no known organization" gives a confidence with a runner-up. Weak
evidence ends in abstention.
"""

from __future__ import annotations

import numpy as np
import polars as pl
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from attribution.fleets import fleet_edges
from attribution.graph import PropertyGraph
from attribution.masking import mask  # evidence sentences mask by kind, as the API does
from attribution.settings import AttributionParams
from attribution.vocabulary import IDENTITY_FAMILIES

# Evidence kind -> (log-odds strength, evidence kind name, noun for the sentence).
STRENGTH: dict[str, tuple[float, str, str]] = {
    "account": (4.0, "org_employee_account", "is an employee account"),
    "payment": (4.5, "org_payment", "card fingerprint"),
    "device": (4.0, "org_device", "device"),
    "prompt": (3.5, "prompt_template", "prompt template"),
    "email_domain": (2.5, "org_email_domain", "email domain"),
    "ip": (2.5, "org_ip", "IP"),
    "asn": (2.5, "org_asn", "network AS"),
}
# A member tied to its fleet only by the clock (activity in the same minutes,
# sign-ups in the same burst) may belong to another operation working the same
# hours: an organization reaches it at this share of the fleet's confidence,
# which keeps it under the abstention line.
CLOCK_ONLY_REACH = 0.5
COVERAGE_FLOOR = 0.15  # evidence touching a sliver of the fleet keeps this share
COUNT_KINDS = ("account", "payment", "device", "prompt")
TWO_HOP = 0.8        # shared with an employee account, rather than known itself
RENTED = 0.1         # proxy exits and hosting ranges say little about who rents them
SAME_KIND_BONUS = 0.3


def member_reach(edges: pl.DataFrame, membership: pl.DataFrame, accounts: pl.DataFrame,
                 bearers: pl.DataFrame, named: pl.DataFrame, identity_tie: float
                 ) -> pl.DataFrame:
    """(account_id, reach): how far a fleet's named organization carries to each member.

    The organization's evidence sits on some members (``bearers``: account_id,
    fleet, org_id). It reaches the members tied to one of them by identity
    (links with a family of ``IDENTITY_FAMILIES`` at ``identity_tie`` or
    more, inside the fleet: a shared card or device, a rare domain or
    template, not a popular mail service): reach 1.0. A member tied to them only by the
    clock, or attached by its sign-up, gets ``CLOCK_ONLY_REACH``. A fleet named
    without bearers (an analyst's verdict) reaches all its members. The sybil
    score is about coordination and stays the fleet's; naming an operator
    needs a tie that identifies.
    """
    tied = fleet_edges(edges, membership).filter(pl.any_horizontal(
        [pl.col(f"s_{f}") >= identity_tie for f in IDENTITY_FAMILIES]))
    n = accounts.height
    graph = coo_matrix((np.ones(tied.height), (tied["a"].to_numpy(), tied["b"].to_numpy())),
                       shape=(n, n))
    _, comp = connected_components(graph, directed=False)
    comps = pl.DataFrame({"idx": np.arange(n, dtype=np.int32), "comp": comp.astype(np.int64)})
    members = membership.select("idx", "fleet").join(accounts, on="idx").join(
        comps, on="idx").join(named, on="fleet", how="left")
    seeds = members.join(bearers, on=["account_id", "fleet", "org_id"]).select(
        "fleet", "comp").unique().with_columns(pl.lit(True).alias("reached"))
    has_bearers = bearers.join(named, on=["fleet", "org_id"]).select("fleet").unique().with_columns(
        pl.lit(True).alias("evidenced"))
    return members.join(seeds, on=["fleet", "comp"], how="left").join(
        has_bearers, on="fleet", how="left").select(
        "account_id",
        pl.when(pl.col("reached").fill_null(False) | ~pl.col("evidenced").fill_null(False))
        .then(1.0).otherwise(CLOCK_ONLY_REACH).alias("reach"),
    )


def attribute(
    graph: PropertyGraph,
    members: pl.DataFrame,
    fleet_scores: pl.DataFrame,
    params: AttributionParams,
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Attribute every fleet.

    ``members``: account_id, fleet. ``fleet_scores``: fleet, size, sybil_score.
    Returns (fleet, org_id, confidence, runner_up_org_id, runner_up_confidence,
    affiliated_org_id, affiliation_confidence), evidence rows (fleet,
    org_id, kind, detail, weight) and the members the evidence sits on
    (account_id, fleet, org_id; see ``member_reach``).
    """
    pieces, bearers = _evidence_pieces(graph, members, fleet_scores)
    names = graph.organizations.select("org_id", "name")
    if not pieces.height:
        empty = fleet_scores.select("fleet").with_columns(
            [pl.lit(None, pl.String).alias(c) for c in ("org_id", "runner_up_org_id",
                                                       "affiliated_org_id")]
            + [pl.lit(None, pl.Float64).alias(c) for c in ("confidence", "runner_up_confidence",
                                                          "affiliation_confidence")]
        )
        return empty, _empty_evidence(), bearers
    per_kind = (
        pieces.sort("strength", descending=True)
        .group_by("fleet", "org_id", "kind", maintain_order=True)
        .agg(pl.col("strength").max().alias("top"), pl.col("strength").sum().alias("sum"))
        .with_columns((pl.col("top") + SAME_KIND_BONUS * (pl.col("sum") - pl.col("top"))).alias("k"))
    )
    per_org = per_kind.group_by("fleet", "org_id").agg(pl.col("k").sum().alias("score"))
    # The softmax runs at ``params.sharpness`` times the log-odds: the strengths
    # are set relative to each other, their scale is what calibration fixes.
    sharp = params.sharpness
    denom = per_org.group_by("fleet").agg(
        ((sharp * pl.col("score")).exp().sum() + pl.lit(sharp * params.prior_logit).exp())
        .alias("z")
    )
    probs = (
        per_org.join(denom, on="fleet")
        .with_columns(((sharp * pl.col("score")).exp() / pl.col("z")).alias("p"))
        .sort(["fleet", "p", "org_id"], descending=[False, True, False])
    )
    ranked = probs.group_by("fleet", maintain_order=True).agg(
        pl.col("org_id").get(0).alias("top_org"),
        pl.col("p").get(0).alias("top_p"),
        pl.col("org_id").get(1, null_on_oob=True).alias("second_org"),
        pl.col("p").get(1, null_on_oob=True).alias("second_p"),
    )
    out = fleet_scores.select("fleet", "sybil_score").join(ranked, on="fleet", how="left")
    named = pl.col("top_p") >= params.abstain_below
    accused = named & (pl.col("sybil_score") >= params.accuse_min_sybil)
    out = out.select(
        "fleet",
        pl.when(accused).then(pl.col("top_org")).alias("org_id"),
        pl.when(accused).then(pl.col("top_p")).alias("confidence"),
        pl.when(accused).then(pl.col("second_org")).alias("runner_up_org_id"),
        pl.when(accused).then(pl.col("second_p")).alias("runner_up_confidence"),
        pl.when(named & ~accused).then(pl.col("top_org")).alias("affiliated_org_id"),
        pl.when(named & ~accused).then(pl.col("top_p")).alias("affiliation_confidence"),
    )
    totals = per_org.rename({"score": "org_score"})
    evidence = (
        pieces.join(totals, on=["fleet", "org_id"])
        .join(names, on="org_id", how="left")
        .with_columns((pl.col("strength") / pl.col("org_score").clip(1e-9)).alias("weight"))
    )
    sentences = [
        _sentence(*row)
        for row in evidence.select(
            "kind", "key", "n_members", "via", "name", "org_id", "source", "rented"
        ).iter_rows()
    ]
    evidence = evidence.with_columns(
        pl.col("kind").replace_strict({k: v[1] for k, v in STRENGTH.items()}).alias("kind"),
        pl.Series("detail", sentences, dtype=pl.String),
    ).select("fleet", "org_id", "kind", "detail", "weight")
    return out, evidence, bearers


def _sentence(
    kind: str, key: str, n: int, via: str | None, name: str | None, org: str, source: str,
    rented: bool,
) -> str:
    who = name or org
    accounts = f"{n} account{'s' if n != 1 else ''}"
    if kind == "account":
        text = f"{accounts} of the fleet {STRENGTH[kind][2]} of {who} ({source})"
    elif via is not None:
        text = (f"{accounts} share {STRENGTH[kind][2]} {mask(kind, key)} with "
                f"{via} employee account{'s' if via != '1' else ''} of {who}")
    else:
        text = f"{accounts} use {STRENGTH[kind][2]} {mask(kind, key)}, known as {who}'s ({source})"
    if rented:
        text += "; rented infrastructure, discounted"
    return text


def _evidence_pieces(
    graph: PropertyGraph, members: pl.DataFrame, fleet_scores: pl.DataFrame
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Every (fleet, org, kind, key) path from fleet accounts to an organization,
    and the accounts they start from (account_id, fleet, org_id)."""
    links = graph.known_links.filter(pl.col("kind").is_not_null())
    ip_meta = graph.ips.select(
        pl.col("ip").alias("entity_id"),
        pl.col("asn").cast(pl.String).alias("asn"),
        (pl.col("proxy_id").is_not_null() | pl.col("hosting").fill_null(False)).alias("rented"),
    )
    # Account-level touch points: direct uses, plus the ASN behind each IP.
    uses = graph.uses.select("account_id", "kind", "entity_id", "count").with_columns(
        pl.col("kind").replace({"signup_ip": "ip"})
    )
    ip_uses = uses.filter(pl.col("kind") == "ip").join(ip_meta, on="entity_id", how="left")
    asn_uses = ip_uses.filter(pl.col("asn").is_not_null()).select(
        "account_id", pl.lit("asn").alias("kind"), pl.col("asn").alias("entity_id"), "count"
    )
    rented_asn = (
        ip_meta.filter(pl.col("asn").is_not_null())
        .group_by("asn").agg(pl.col("rented").mean().alias("r"))
        .filter(pl.col("r") > 0.5).select(pl.col("asn").alias("entity_id"))
        .with_columns(pl.lit("asn").alias("kind"), pl.lit(True).alias("rented"))
    )
    rented = pl.concat([
        ip_meta.filter(pl.col("rented")).select(
            "entity_id", pl.lit("ip").alias("kind"), pl.lit(True).alias("rented")
        ),
        rented_asn.select("entity_id", "kind", "rented"),
    ])
    touch = pl.concat([
        uses,
        asn_uses,
        members.select("account_id", pl.lit("account").alias("kind"),
                       pl.col("account_id").alias("entity_id"), pl.lit(1, pl.Int64).alias("count")),
    ]).group_by("account_id", "kind", "entity_id").agg(pl.col("count").sum())
    degree = touch.group_by("kind", "entity_id").agg(pl.col("account_id").n_unique().alias("deg"))

    direct = links.select(
        "kind", pl.col("key").alias("entity_id"), "org_id", "source", "confidence",
        pl.lit(None, pl.String).alias("via"),
    )
    # Two hops: entities that known employee accounts use.
    employees = links.filter(pl.col("kind") == "account").select(
        pl.col("key").alias("account_id"), "org_id", "confidence"
    )
    hop = (
        uses.filter(pl.col("kind").is_in(["payment", "device"]))
        .join(employees, on="account_id")
        .group_by("kind", "entity_id", "org_id")
        .agg(pl.col("account_id").n_unique().alias("n_emp"), pl.col("confidence").max())
        .select(
            "kind", "entity_id", "org_id", pl.lit("shared_with_employee").alias("source"),
            (pl.col("confidence") * TWO_HOP).alias("confidence"),
            pl.col("n_emp").cast(pl.String).alias("via"),
        )
    )
    # One row per (entity, org, path): the most confident fact, ties by source name,
    # so the same input always gives the same evidence.
    org_entities = (
        pl.concat([direct, hop])
        .sort(["confidence", "source"], descending=[True, False], nulls_last=True)
        .unique(["kind", "entity_id", "org_id", "via"], keep="first", maintain_order=True)
    )

    fleet_touch = members.select("account_id", "fleet").join(touch, on="account_id")
    reached = fleet_touch.join(org_entities, on=["kind", "entity_id"])
    bearers = reached.select("account_id", "fleet", "org_id").unique()
    hits = (
        reached
        .group_by("fleet", "org_id", "kind", "entity_id", "via", "source")
        .agg(
            pl.col("account_id").n_unique().alias("n_members"),
            pl.col("confidence").max(),
            pl.col("count").sum().alias("requests"),
        )
    )
    if not hits.height:
        return hits, bearers
    base = pl.col("kind").replace_strict({k: v[0] for k, v in STRENGTH.items()},
                                         return_dtype=pl.Float64)
    size = fleet_scores.select("fleet", "size")
    # Network evidence counts by traffic: two requests of thousands through an
    # organization's network (a shared co-working NAT) is not the fleet's network.
    traffic = fleet_touch.filter(pl.col("kind") == "ip").group_by("fleet").agg(
        pl.col("count").sum().alias("fleet_requests")
    )
    hits = (
        hits.join(size, on="fleet")
        .join(traffic, on="fleet", how="left")
        .join(degree, on=["kind", "entity_id"], how="left")
        .join(rented, on=["kind", "entity_id"], how="left")
        .with_columns(pl.col("rented").fill_null(False))
        .with_columns(
            pl.when(pl.col("kind").is_in(["ip", "asn"]))
            .then(pl.col("requests") / pl.col("fleet_requests").clip(1))
            .otherwise(pl.col("n_members") / pl.col("size"))
            .clip(0.0, 1.0)
            .alias("coverage"),
        )
        .with_columns(
            (
                base
                * pl.col("confidence")
                * pl.max_horizontal(
                    COVERAGE_FLOOR + (1.0 - COVERAGE_FLOOR) * pl.col("coverage").sqrt(),
                    # A strong identifier held by many members counts in itself,
                    # however large the fleet around them.
                    pl.when(pl.col("kind").is_in(list(COUNT_KINDS)))
                    .then((0.3 + 0.3 * pl.col("n_members").cast(pl.Float64).log10()).clip(0, 1))
                    .otherwise(0.0),
                )
                * pl.when(pl.col("rented")).then(RENTED).otherwise(1.0)
                # A two-hop entity shared by many outsiders (a NAT) is no tie.
                * pl.when(pl.col("via").is_not_null())
                .then(((10.0 / pl.col("deg").cast(pl.Float64)).clip(0.0, 1.0)))
                .otherwise(1.0)
            ).alias("strength")
        )
    )
    return hits.rename({"entity_id": "key"}).filter(pl.col("strength") > 0.05), bearers


def _empty_evidence() -> pl.DataFrame:
    return pl.DataFrame(schema={"fleet": pl.Int64, "org_id": pl.String, "kind": pl.String,
                                "detail": pl.String, "weight": pl.Float64})
