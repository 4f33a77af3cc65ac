"""Attribution: which organization controls a fleet, and how sure we are.

Organizations are named only from ``known_links`` reached through the graph:
directly (a member account is a known employee account; a member uses a known
corporate card, device, IP, ASN, email domain or a prompt template of an
earlier case) or in two hops (a member shares a card or device with a known
employee account, or, weaker, with an account the organization's known
evidence places in its team: its own card or email domain is the
organization's; surer when both are, two independent sources). Each kind of
evidence has its own strength, scaled by the
analyst's confidence in the fact, by how much of the fleet it touches (a
template also by how often the fleet ran it: one use is a leak), and by
how specific the entity is to the fleet: the share of its users that are the
fleet's kind of user (members of likely-sybil fleets, or the organization's
own people) rather than the public, so a template thousands of ordinary
accounts use names nobody. Rented infrastructure (proxy exits, hosting
ranges) names nobody. Per organization the kinds add up as log-odds (within a
kind the strongest piece counts, the rest only a little), and a softmax
against "no known organization" gives a raw confidence with a runner-up.
Weak evidence (raw confidence under the line) ends in abstention; the
confidence reported is the raw one through the calibration map fitted on
development worlds (``attribution.engine.calibration``).
"""

from __future__ import annotations

import numpy as np
import polars as pl
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from attribution.contracts.graph import PropertyGraph
from attribution.contracts.masking import mask  # evidence sentences mask by kind, as the API does
from attribution.contracts.settings import AttributionParams
from attribution.contracts.vocabulary import IDENTITY_FAMILIES
from attribution.engine.calibration import CalibrationMap
from attribution.engine.calibration import load as load_calibration
from attribution.engine.fleets import fleet_edges

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
# which keeps it under the abstention line (0.5) even for a fleet named at 1.0
# (at exactly one half, members of a fleet named at 0.9999 were accused).
CLOCK_ONLY_REACH = 0.45
COVERAGE_FLOOR = 0.15  # evidence touching a sliver of the fleet keeps this share
COUNT_KINDS = ("account", "payment", "device", "prompt")
TWO_HOP = 0.8        # shared with an employee account, rather than known itself
TEAM_HOP = 0.6       # shared with an account placed in the team only by its card or domain
TEAM_KINDS = ("payment", "email_domain")  # an account's own facts that place it in a team
# How sure one fact of TEAM_KINDS makes us that its account is the organization's
# staff (a known employee account counts as sure): a hop through it weighs
# TWO_HOP x TEAM_PLACE = TEAM_HOP. Facts of different kinds are independent
# sources (a corporate card registry, a domain's whois): the account is staff
# unless each of them is wrong, 1 - prod(1 - TEAM_PLACE x confidence). A public
# mail domain of a university holds students; its students do not hold its card.
TEAM_PLACE = TEAM_HOP / TWO_HOP
RENTED = 0.1         # proxy exits and hosting ranges say little about who rents them
SAME_KIND_BONUS = 0.3
# An operation runs its template over and over (hundreds of uses in a fleet); one or
# two uses by one member is how a template leaks or gets copied, not how it is run.
# A template's evidence reaches full strength at this many uses inside the fleet
# (log scale: 1 use 0.29, 3 uses 0.58).
TEMPLATE_RUN = 10


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
    pieces, bearers = _evidence_pieces(graph, members, fleet_scores, params.accuse_min_sybil)
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
    ranked = _rank(per_org, params)
    # Whether to name anyone is the evidence's decision (its raw probability
    # against the abstention line); the shipped map, fitted on development
    # worlds, restates how sure the engine is of the name it gives.
    cal = calibration_map()
    ranked = ranked.with_columns(
        pl.col("top_p").alias("raw_p"),
        cal.expr(pl.col("top_p")).alias("top_p"),
        cal.expr(pl.col("second_p")).alias("second_p"),
    )
    out = fleet_scores.select("fleet", "sybil_score").join(ranked, on="fleet", how="left")
    named = (pl.col("raw_p") >= params.abstain_below) & (pl.col("top_p") >= params.abstain_below)
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
            "kind", "key", "n_members", "via", "name", "org_id", "source", "rented", "requests",
            "facts"
        ).iter_rows()
    ]
    evidence = evidence.with_columns(
        pl.col("kind").replace_strict({k: v[1] for k, v in STRENGTH.items()}).alias("kind"),
        pl.Series("detail", sentences, dtype=pl.String),
    ).select("fleet", "org_id", "kind", "detail", "weight")
    return out, evidence, bearers


def calibration_map() -> CalibrationMap:
    """The confidence map in use: the package's (``attribution.engine.calibration``)."""
    return load_calibration()


def _rank(per_org: pl.DataFrame, params: AttributionParams) -> pl.DataFrame:
    """(fleet, top_org, top_p, second_org, second_p): the raw softmax of each fleet's
    organization scores against "no known organization"."""
    # The softmax runs at ``params.sharpness`` times the log-odds: the strengths
    # are set relative to each other, their absolute scale is the calibration map's.
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
    return probs.group_by("fleet", maintain_order=True).agg(
        pl.col("org_id").get(0).alias("top_org"),
        pl.col("p").get(0).alias("top_p"),
        pl.col("org_id").get(1, null_on_oob=True).alias("second_org"),
        pl.col("p").get(1, null_on_oob=True).alias("second_p"),
    )


def _sentence(
    kind: str, key: str, n: int, via: str | None, name: str | None, org: str, source: str,
    rented: bool, uses: int, facts: int | None = None,
) -> str:
    who = name or org
    accounts = f"{n} account{'s' if n != 1 else ''}"
    if kind == "account":
        text = f"{accounts} of the fleet {STRENGTH[kind][2]} of {who} ({source})"
    elif via is not None and source == "shared_with_team":
        plural = via != "1"
        text = (f"{accounts} share {STRENGTH[kind][2]} {mask(kind, key)} with {via} "
                f"account{'s' if plural else ''} of {who}'s team (not {'themselves' if plural else 'itself'} "
                f"known, but {'their' if plural else 'its'} "
                f"{'card and email domain are' if (facts or 0) > 1 else 'card or email domain is'} "
                f"{who}'s): "
                f"two hops, weighed below direct evidence")
    elif via is not None:
        text = (f"{accounts} share {STRENGTH[kind][2]} {mask(kind, key)} with "
                f"{via} employee account{'s' if via != '1' else ''} of {who}")
    else:
        verb = "uses" if n == 1 else "use"
        times = f" ({uses:,} time{'s' if uses != 1 else ''})" if kind == "prompt" else ""
        text = (f"{accounts} {verb} {STRENGTH[kind][2]} {mask(kind, key)}{times}, "
                f"known as {who}'s ({source})")
    if rented:
        text += "; rented infrastructure, discounted"
    return text


def _evidence_pieces(
    graph: PropertyGraph, members: pl.DataFrame, fleet_scores: pl.DataFrame,
    likely_sybil: float = 0.5,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Every (fleet, org, kind, key) path from fleet accounts to an organization,
    and the accounts they start from (account_id, fleet, org_id).

    Each path's ``specificity`` is the share of the entity's users that are on
    the side the fact could be about: members of likely-sybil fleets (an
    operation may come out in several fleets) or accounts the organization's
    own known evidence places in its team. The rest are ordinary users: a
    template used by thousands of them names nobody, one used by the fleet
    alone keeps its strength (see ``specificity``)."""
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
    direct = (
        links.select("kind", pl.col("key").alias("entity_id"), "org_id", "source", "confidence")
        # one fact per (entity, org): the most confident, ties by source name
        .sort(["confidence", "source"], descending=[True, False], nulls_last=True)
        .unique(["kind", "entity_id", "org_id"], keep="first", maintain_order=True)
        .with_columns(pl.lit(None, pl.String).alias("via_account"),
                      pl.lit(None, pl.Int64).alias("facts"))
    )
    # The organization's people: known employee accounts, and accounts its known
    # evidence places in its team (their own card or email domain is its).
    employees = links.filter(pl.col("kind") == "account").select(
        pl.col("key").alias("account_id"), "org_id", "confidence"
    )
    # ``confidence`` of a team account: how sure its facts make us that it is staff;
    # one fact per kind (two cards of one registry are one source), kinds combined
    # as independent sources (see TEAM_PLACE); ``facts``: how many kinds agree.
    team = (
        uses.filter(pl.col("kind").is_in(list(TEAM_KINDS)))
        .join(direct.select("kind", "entity_id", "org_id", "confidence"), on=["kind", "entity_id"])
        .join(employees, on=["account_id", "org_id"], how="anti")
        .group_by("account_id", "org_id", "kind").agg(pl.col("confidence").max())
        .group_by("account_id", "org_id").agg(
            (1.0 - (1.0 - TEAM_PLACE * pl.col("confidence")).product()).alias("confidence"),
            pl.len().cast(pl.Int64).alias("facts"),
        )
    )
    # Two hops: a card or device shared with one of them.
    ties = uses.filter(pl.col("kind").is_in(["payment", "device"])).select(
        "account_id", "kind", "entity_id")
    hop = pl.concat([
        ties.join(people, on="account_id").select(
            "kind", "entity_id", "org_id", pl.lit(source).alias("source"),
            (pl.col("confidence") * TWO_HOP).alias("confidence"),
            pl.col("account_id").alias("via_account"), "facts")
        for people, source in ((employees.with_columns(pl.lit(None, pl.Int64).alias("facts")),
                                "shared_with_employee"),
                               (team, "shared_with_team"))
    ])
    org_entities = pl.concat([direct, hop])

    # Touch is read only where it meets an entity some organization is known by
    # (what reaches it from a fleet; the entity's users, for the specificity), so
    # the other uses, nearly all of them, are left out before the group-by. The
    # test reads only a group's key: every group kept is whole, its sum unchanged.
    known = org_entities["entity_id"].unique().implode()
    known_asn_ips = ip_meta.filter(pl.col("asn").is_in(known))["entity_id"].implode()
    asn_uses = (
        uses.filter((pl.col("kind") == "ip") & pl.col("entity_id").is_in(known_asn_ips))
        .join(ip_meta.filter(pl.col("asn").is_not_null()), on="entity_id")
        .select("account_id", pl.lit("asn").alias("kind"), pl.col("asn").alias("entity_id"),
                "count")
    )
    touch = pl.concat([
        uses.filter(pl.col("entity_id").is_in(known)),
        asn_uses,
        members.select("account_id", pl.lit("account").alias("kind"),
                       pl.col("account_id").alias("entity_id"), pl.lit(1, pl.Int64).alias("count"))
        .filter(pl.col("entity_id").is_in(known)),
    ]).group_by("account_id", "kind", "entity_id").agg(pl.col("count").sum())
    fleet_touch = members.select("account_id", "fleet").join(touch, on="account_id")
    in_fleet = members.select(pl.col("account_id").alias("via_account"), "fleet")
    # A hop runs to someone outside the fleet: a member holding the organization's
    # card is direct evidence already, not a second path to it. Hops are settled per
    # fleet and entity before members meet them: a company card held by thousands of
    # staff would otherwise pair every member touching it with each of them (16M rows
    # for one 1M-account world).
    key = ["fleet", "org_id", "kind", "entity_id", "source"]
    hops = (
        fleet_touch.select("fleet", "kind", "entity_id").unique()
        .join(hop, on=["kind", "entity_id"])
        .join(in_fleet, on=["via_account", "fleet"], how="anti")
        .group_by(key).agg(
            pl.col("confidence").max(),
            pl.col("facts").sort_by("confidence", "facts").last(),
            pl.col("via_account").n_unique().cast(pl.String).alias("via"),
        )
    )
    columns = ["account_id", "count", *key, "confidence", "facts", "via"]
    reached = pl.concat([
        fleet_touch.join(direct.drop("via_account"), on=["kind", "entity_id"])
        .with_columns(pl.lit(None, pl.String).alias("via")).select(columns),
        fleet_touch.join(hops, on=["fleet", "kind", "entity_id"]).select(columns),
    ])
    bearers = reached.select("account_id", "fleet", "org_id").unique()
    hits = reached.group_by(key).agg(
        pl.col("account_id").n_unique().alias("n_members"),
        pl.col("confidence").max(),
        pl.col("count").sum().alias("requests"),
        # the kinds of fact placing the surest of the team accounts (for the sentence)
        pl.col("facts").sort_by("confidence", "facts").last(),
        pl.col("via").first(),
    )
    if not hits.height:
        return hits.with_columns(pl.lit(1.0).alias("specificity")), bearers
    hits = hits.join(_specificity(hits, touch, members, fleet_scores, likely_sybil,
                                  pl.concat([p.select("account_id", "org_id") for p in (employees, team)])),
                     on=["fleet", "org_id", "kind", "entity_id"], how="left")
    base = pl.col("kind").replace_strict({k: v[0] for k, v in STRENGTH.items()},
                                         return_dtype=pl.Float64)
    size = fleet_scores.select("fleet", "size")
    # Network evidence counts by traffic: two requests of thousands through an
    # organization's network (a shared co-working NAT) is not the fleet's network.
    # (Integer sums: the members' IP uses summed directly, as their grouped touch would.)
    traffic = members.select("account_id", "fleet").join(
        uses.filter(pl.col("kind") == "ip"), on="account_id").group_by("fleet").agg(
        pl.col("count").sum().alias("fleet_requests")
    )
    hits = (
        hits.join(size, on="fleet")
        .join(traffic, on="fleet", how="left")
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
                * pl.when(pl.col("kind") == "prompt")
                .then(((1.0 + pl.col("requests").cast(pl.Float64)).log10()
                       / np.log10(1.0 + TEMPLATE_RUN)).clip(0.0, 1.0))
                .otherwise(1.0)
                # An entity that ordinary accounts also use (a public template,
                # a NAT shared with an employee) is no tie to the fleet.
                * pl.col("specificity")
            ).alias("strength")
        )
    )
    return hits.rename({"entity_id": "key"}).filter(pl.col("strength") > 0.05), bearers


def _specificity(hits: pl.DataFrame, touch: pl.DataFrame, members: pl.DataFrame,
                 fleet_scores: pl.DataFrame, likely_sybil: float, people: pl.DataFrame
                 ) -> pl.DataFrame:
    """(fleet, org_id, kind, entity_id, specificity): how specific each entity is to a fleet.

    A fact "entity E is organization O's" says the fleet is O's only as far as
    E's users are the fleet's kind of user, not the public's. Of all accounts
    that use E, those on the fact's side are the fleet's own members, members
    of other likely-sybil fleets (one operation may come out in several
    fleets) and O's own people (``people``: known employee accounts and its
    team); everyone else is an ordinary user. ``specificity`` is the share on
    the fact's side: 1 for an entity only the fleet uses, near 0 for a
    template used by thousands of ordinary accounts. It is the chance that a
    user of E drawn at random is one the fact may be about, and scales the
    evidence's log-odds.
    """
    keys = hits.select("kind", "entity_id", "org_id").unique()
    suspect = members.join(
        fleet_scores.filter(pl.col("sybil_score") >= likely_sybil).select("fleet"), on="fleet"
    ).select("account_id", pl.lit(True).alias("in_sybil_fleet"))
    users = (
        touch.select("kind", "entity_id", "account_id")
        .join(keys, on=["kind", "entity_id"])
        .join(suspect, on="account_id", how="left")
        .join(people.unique().with_columns(pl.lit(True).alias("own")),
              on=["account_id", "org_id"], how="left")
        .with_columns(pl.col("in_sybil_fleet").fill_null(False), pl.col("own").fill_null(False))
    )
    side = users.group_by("kind", "entity_id", "org_id").agg(
        pl.len().alias("users"),
        (pl.col("in_sybil_fleet") | pl.col("own")).sum().alias("side"),
    )
    # The fleet's own members count on its side even when it is not likely sybil
    # (a company team on its own card is affiliated, not accused).
    own_members = (
        users.filter(~(pl.col("in_sybil_fleet") | pl.col("own")))
        .join(members.select("account_id", "fleet"), on="account_id")
        .group_by("fleet", "org_id", "kind", "entity_id").agg(pl.len().alias("extra"))
    )
    return (
        hits.select("fleet", "org_id", "kind", "entity_id")
        .join(side, on=["kind", "entity_id", "org_id"], how="left")
        .join(own_members, on=["fleet", "org_id", "kind", "entity_id"], how="left")
        .select(
            "fleet", "org_id", "kind", "entity_id",
            ((pl.col("side").fill_null(0) + pl.col("extra").fill_null(0))
             / pl.col("users").clip(1)).clip(0.0, 1.0).fill_null(1.0).alias("specificity"),
        )
    )


def _empty_evidence() -> pl.DataFrame:
    return pl.DataFrame(schema={"fleet": pl.Int64, "org_id": pl.String, "kind": pl.String,
                                "detail": pl.String, "weight": pl.Float64})
