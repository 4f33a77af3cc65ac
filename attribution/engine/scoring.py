"""Sybil score: how likely a fleet is a coordinated *inauthentic* operation.

A fleet is accounts under common control; that alone is not fraud (a company
team on one corporate card is a fleet). What separates a sybil fleet is
concealment and automation: traffic through rented proxies and hosting
ranges, device time zones foreign to the network they come from, activity
synchronized to the minute, accounts created in bursts, scripted sameness of
volume and capability mix, many accounts with nobody claiming them. What
speaks for a legitimate team is openness: members claiming the same
workplace, team or API plans, no hiding. Each is a feature in [0, 1]; a
logistic combination gives the probability, and every feature's contribution
is kept as evidence.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl

from attribution.contracts.graph import PropertyGraph
from attribution.contracts.settings import FleetParams
from attribution.engine.features import account_features
from attribution.engine.features import excess as _excess
from attribution.engine.features import ratio as _ratio
from attribution.engine.fleets import fleet_edges, surge_homes
from attribution.engine.linking import Links
from attribution.engine.lockstep import describe_network
from attribution.engine.matrix import list_matrix
from attribution.stages.activity import PROXY_PREFIX

HARVEST = ("coding", "agentic", "reasoning")
# Feature -> (weight in log-odds, evidence kind, sentence template).
FEATURES: dict[str, tuple[float, str, str]] = {
    "infra": (3.0, "proxy_share",
              "{pct} of the fleet's requests (the sign-up, for an account not used yet) come "
              "through proxy or hosting IPs"),
    "tz_leak": (2.5, "timezone",
                "{pct} of accounts report a device time zone foreign to their network's country"),
    "sync": (2.0, "synchronized_timing", "accounts active in the same minutes (mean sync {val})"),
    "lockstep": (2.0, "lockstep", "{detail}"),
    "burst": (0.6, "creation_burst",
              "{pct} of accounts created in sign-up bursts (one email pattern or one sign-up "
              "network, within half an hour or in a surge over days){detail}"),
    "uniform": (1.5, "uniform_behaviour",
                "scripted sameness: volume spread {val} and capability mixes alike"),
    "harvest": (1.0, "capability_mix", "{pct} of exchanges are coding, agentic or reasoning"),
    "unclaimed": (0.5, "unclaimed", "{pct} of accounts claim no workplace and are on individual plans"),
    "claimed": (-3.5, "team_identity", "{pct} of accounts claim the same workplace"),
    "team_plan": (-1.5, "team_plan", "{pct} of accounts are on team or API plans"),
    "institutional": (-2.0, "institutional_email",
                      "{pct} of accounts sign in with an email domain known to belong to an organization"),
}
BIAS = -3.0
# Features an account shows on its own; its score moves by this share of its difference.
ACCOUNT_LEVEL = ("infra", "tz_leak", "team_plan", "unclaimed", "claimed", "institutional")
ACCOUNT_SHIFT = 0.6
# Log-odds taken from a member with almost no links inside its fleet.
DETACHED = 3.0
SIZE_WEIGHT = 0.9  # per decade of fleet size
# Every feature is a share over the fleet's members; a share over two accounts
# is thin evidence (two relatives who both use a VPN), over fifty it is not.
# Contributions are shrunk towards zero by size / (size + SHRINK).
SHRINK = 2.0
# What a member declares about itself (a workplace, a team plan) is openness
# only from an open network: a "team" whose traffic all comes through rented
# hosting or proxies hides where it works, so the claim counts for as much as
# the traffic that is not hidden.
DECLARED = ("claimed", "team_plan")
# Common control is not inauthenticity: a company's CI bots and an API
# customer's accounts are synchronized, scripted and unclaimed by a person,
# openly. What marks an operation is coordination *with* concealment (rented
# exits, browsers coming out of datacenters, device time zones foreign to the
# network). Coordination (the size of the group and every feature below) counts
# in proportion to how much the fleet conceals, from OPEN_FLOOR with nothing
# hidden to in full when everything is.
CONCEALMENT = ("infra", "tz_leak")
COORDINATION = ("sync", "lockstep", "burst", "uniform", "harvest", "unclaimed")
# Features whose sentence quotes a detail of its own (``<feature>_detail``): the lockstep
# block, the sign-up surge.
DETAILED = ("lockstep", "burst")
OPEN_FLOOR = 0.3


def _sigmoid(x: pl.Expr) -> pl.Expr:
    return 1.0 / (1.0 + (-x).exp())


def sybil_scores(
    graph: PropertyGraph, links: Links, membership: pl.DataFrame,
    feats: pl.DataFrame | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Score fleets and accounts.

    ``membership``: idx, fleet, attachment. Returns (fleet scores with one
    column per feature and its contribution, account scores, feature
    evidence rows).
    """
    feats = feats if feats is not None else account_features(graph)
    idx = links.accounts.join(feats, on="account_id")
    members = membership.join(idx, on="idx")
    edges = fleet_edges(links.edges, membership)
    sync = edges.group_by("fleet").agg(
        (pl.col("s_timing") / 3.0).mean().alias("sync"),
        (pl.col("s_creation") > 0).mean().alias("burst_edges"),
    )
    burst_acc = pl.concat([
        edges.filter(pl.col("s_creation") > 0).select("fleet", pl.col("a").alias("idx")),
        edges.filter(pl.col("s_creation") > 0).select("fleet",
                                                      pl.col("b").alias("idx")),
    ]).unique()
    burst = burst_acc.group_by("fleet").agg(pl.len().alias("burst_n"))
    claim_mode = (
        members.filter(pl.col("claim").is_not_null() & (pl.col("claim") != ""))
        .group_by("fleet", "claim").agg(pl.len().alias("c"))
        .sort("c", "claim", descending=[True, False])
        .group_by("fleet", maintain_order=True).first()
        .select("fleet", pl.col("c").alias("claim_n"), pl.col("claim").alias("claim_mode"))
    )
    log_ex = (pl.col("exchanges").cast(pl.Float64) + 1.0).log()
    # Population baselines: a fleet is judged against the users around it, so a
    # world where many people use VPNs or write code does not look "sybil".
    pop_infra = _ratio(feats["rented_req"].fill_null(0).sum(), feats["ip_req"].fill_null(0).sum())
    pop_harvest = _ratio(feats["harvest_ex"].sum(), feats["cap_total"].sum())
    fleets = members.group_by("fleet").agg(
        pl.len().alias("size"),
        (pl.col("rented_req").fill_null(0).sum() / pl.col("ip_req").fill_null(0).sum().clip(1))
        .alias("infra_share"),
        pl.col("tz_leak").mean(),
        (pl.col("harvest_ex").sum() / pl.col("cap_total").sum().clip(1)).alias("harvest_share"),
        log_ex.std().fill_null(0.0).alias("vol_spread"),
        pl.col("team_plan").mean(),
        pl.col("unclaimed").mean(),
        pl.col("institutional").mean(),
    )
    capsim = _capability_similarity(members, graph)
    fleets = (
        fleets.join(sync, on="fleet", how="left")
        .join(_lockstep(members, links), on="fleet", how="left")
        .join(_surge(members, links), on="fleet", how="left")
        .join(burst, on="fleet", how="left")
        .join(claim_mode, on="fleet", how="left")
        .join(capsim, on="fleet", how="left")
        .with_columns(
            pl.col("sync").fill_null(0.0),
            pl.col("lockstep").fill_null(0.0),
            (pl.col("burst_n").fill_null(0) / pl.col("size")).alias("burst"),
            (pl.col("claim_n").fill_null(0) / pl.col("size")).alias("claimed"),
            (
                (1.0 - pl.col("vol_spread") / 1.2).clip(0.0, 1.0)
                * pl.col("capsim").fill_null(0.0)
                * (pl.col("size") >= 4).cast(pl.Float64)
            ).alias("uniform"),
            _excess(pl.col("infra_share"), pop_infra).alias("infra"),
            _excess(pl.col("harvest_share"), pop_harvest).alias("harvest"),
        )
        .with_columns(
            pl.when(pl.col("claimed") >= 0.5).then(pl.col("claimed")).otherwise(0.0)
            .alias("claimed")
        )
        .with_columns([(pl.col(f) * (1.0 - pl.col("infra"))).alias(f) for f in DECLARED])
    )
    weight = pl.col("size").cast(pl.Float64) / (pl.col("size") + SHRINK)
    gate = pl.col("conceal_gate")
    contrib = [
        (pl.col(f) * w * weight * (gate if f in COORDINATION else 1.0)).alias(f"w_{f}")
        for f, (w, _, _) in FEATURES.items()
    ]
    fleets = fleets.with_columns(
        (OPEN_FLOOR + (1.0 - OPEN_FLOOR) * pl.max_horizontal(*CONCEALMENT).clip(0.0, 1.0))
        .alias("conceal_gate")
    ).with_columns(contrib).with_columns(
        (
            BIAS
            + SIZE_WEIGHT * gate * pl.col("size").cast(pl.Float64).log10()
            + pl.sum_horizontal([f"w_{f}" for f in FEATURES])
        ).alias("logit"),
        (
            SIZE_WEIGHT * gate * pl.col("size").cast(pl.Float64).log10()
            + pl.sum_horizontal([f"w_{f}" for f in COORDINATION])
        ).alias("coordination"),
    ).with_columns(_sigmoid(pl.col("logit")).alias("sybil_score")).sort("fleet")

    # Accounts: the fleet's log-odds, moved by what the account itself shows
    # (its own network, time zone, workplace claim, plan and email domain), and
    # pulled down when it is barely attached to the fleet.
    med = members.group_by("fleet").agg(pl.col("attachment").median().alias("med"))
    fleet_cols = fleets.select(
        "fleet", "logit", "coordination", "conceal_gate",
        *[pl.col(f).alias(f"fleet_{f}") for f in ACCOUNT_LEVEL], pl.col("claim_mode"),
    )
    own = {
        "infra": _excess(pl.col("infra"), pop_infra),
        "tz_leak": pl.col("tz_leak"),
        "team_plan": pl.col("team_plan").cast(pl.Float64),
        "unclaimed": pl.col("unclaimed").cast(pl.Float64),
        "claimed": (pl.col("claim") == pl.col("claim_mode")).fill_null(False).cast(pl.Float64),
        "institutional": pl.col("institutional").cast(pl.Float64),
    }
    # Only what the account shows *more* than its fleet moves it: a member that
    # hides less than the rest is not cleared by that alone.
    own = {f: e * (1.0 - own["infra"]) if f in DECLARED else e for f, e in own.items()}
    more = {f: FEATURES[f][0] * (own[f] - pl.col(f"fleet_{f}")).clip(0.0, None)
            for f in ACCOUNT_LEVEL}
    # One account's hiding counts once: its exit's country is what makes its device zone
    # foreign, so a VPN moves both (a fleet's two shares stay added: the map is fitted on them).
    # ... and as far as the rest of its fleet hides too (its concealment gate without the
    # member): a student on a VPN in a course cohort that works openly from its campus
    # hides for itself, not for the cohort.
    others = (pl.len().over("fleet") - 1).clip(lower_bound=1)
    rest_infra = _excess(
        (pl.col("rented_req").fill_null(0).sum().over("fleet") - pl.col("rented_req").fill_null(0))
        / (pl.col("ip_req").fill_null(0).sum().over("fleet") - pl.col("ip_req").fill_null(0)).clip(1),
        pop_infra)
    rest_tz = (pl.col("tz_leak").fill_null(0.0).sum().over("fleet") - pl.col("tz_leak").fill_null(0.0)
               ) / others
    rest_gate = OPEN_FLOOR + (1.0 - OPEN_FLOOR) * pl.max_horizontal(rest_infra, rest_tz).clip(0.0, 1.0)
    shift = pl.sum_horizontal(pl.max_horizontal(*(more[f] for f in CONCEALMENT)) * rest_gate,
                              *(e for f, e in more.items() if f not in CONCEALMENT))
    # A member that declares who it is (an institutional email, a workplace, a team
    # or API plan) and hides nothing itself is under open control: the fleet's
    # coordination counts for it only as far as it conceals, as for a fleet.
    own_gate = OPEN_FLOOR + (1.0 - OPEN_FLOOR) * pl.max_horizontal(
        own["infra"], own["tz_leak"]).fill_null(0.0).clip(0.0, 1.0)
    declares = pl.max_horizontal(
        pl.col("institutional").cast(pl.Float64), pl.col("claim").is_not_null().cast(pl.Float64),
        pl.col("team_plan").cast(pl.Float64)).fill_null(0.0)
    open_member = declares * pl.col("coordination").clip(0.0, None) * (
        1.0 - own_gate / pl.col("conceal_gate")).clip(0.0, 1.0)
    # A lone account is not coordinated as far as the graph shows: low, graded.
    lone_score = 0.05 + 0.2 * pl.max_horizontal(
        _excess(pl.col("infra"), pop_infra), "tz_leak").fill_null(0.0)
    # A member attached by its sign-up alone is the fleet's with probability
    # ``belief``, otherwise an ordinary account: its score mixes the two.
    acc_scores = (
        members.join(med, on="fleet")
        .join(fleet_cols, on="fleet")
        .with_columns(
            (pl.col("attachment") / (0.25 * pl.col("med")).clip(1e-9)).clip(0.0, 1.0).alias("att")
        )
        .select(
            "account_id",
            "fleet",
            (
                pl.col("belief") * _sigmoid(
                    pl.col("logit") + ACCOUNT_SHIFT * shift - open_member
                    - DETACHED * (1.0 - pl.col("att")))
                + (1.0 - pl.col("belief")) * lone_score
            ).alias("sybil_score"),
            "belief",
        )
    )
    lone = feats.join(acc_scores.select("account_id"), on="account_id", how="anti").select(
        "account_id",
        pl.lit(None, pl.Int64).alias("fleet"),
        lone_score.alias("sybil_score"),
        pl.lit(None, pl.Float64).alias("belief"),
    )
    accounts = pl.concat([acc_scores, lone]).sort("account_id")
    return fleets, accounts, _feature_evidence(fleets)


def _lockstep(members: pl.DataFrame, links: Links) -> pl.DataFrame:
    """Per fleet: the share of its members in a lockstep block, and the sentence of the
    block most of them are in."""
    tagged = members.select("fleet", "idx", pl.len().over("fleet").alias("size")).join(
        links.lockstep_members, on="idx")
    if tagged.height == 0:
        return pl.DataFrame(schema={"fleet": members.schema["fleet"], "lockstep": pl.Float64,
                                    "lockstep_detail": pl.String})
    main = (tagged.group_by("fleet", "block").agg(pl.len().alias("n"), pl.col("size").first())
            .sort("n", "block", descending=[True, False]).group_by("fleet", maintain_order=True).first())
    share = tagged.group_by("fleet").agg(pl.len().alias("in_blocks"))
    main = main.join(share, on="fleet").join(
        links.lockstep.blocks.rename({"size": "block_size"}), on="block")
    details = [describe_block(r) for r in main.iter_rows(named=True)]
    return main.select("fleet", (pl.col("in_blocks") / pl.col("size")).alias("lockstep")).with_columns(
        pl.Series("lockstep_detail", details, dtype=pl.String))


def _surge(members: pl.DataFrame, links: Links) -> pl.DataFrame:
    """Per fleet: the sentence of the sign-up surge episode that the surge merge counts it
    in (``fleets.surge_homes``), as a clause of the burst sentence."""
    if not links.episodes.height:
        return pl.DataFrame(schema={"fleet": members.schema["fleet"], "burst_detail": pl.String})
    main = surge_homes(members, links.episodes, FleetParams()).join(
        links.episode_stats, on="episode").filter(pl.col("expected") > 0)
    details = [describe_surge(r) for r in main.iter_rows(named=True)]
    return main.select("fleet").with_columns(pl.Series("burst_detail", details, dtype=pl.String))


def describe_surge(row: dict[str, object]) -> str:
    """A surge episode as a clause: how many of the fleet, where, when, against what the
    network's usual share predicts, and the odds."""
    where = describe_network(str(row["network"]))
    chance = float(row["log10_chance"])  # type: ignore[arg-type]
    odds = "less than 1 in 10^100" if chance >= 100 else f"1 in 10^{int(chance)}"
    start, end = (dt.datetime.fromtimestamp(int(row[k]) * 60, dt.UTC).date()  # type: ignore[call-overload]
                  for k in ("start", "end"))
    # a proxy service's accounts are also those that have mostly used it since
    # (``linking.SURGE_KEYS``): an unmarked exit of it signed some of them up
    since = (", or have sent most of their requests through it since"
             if str(row["network"]).startswith(PROXY_PREFIX) else "")
    return (f"; {row['n']} of them signed up through {where} from {start} to {end}{since}, "
            f"when it took {row['signups']} such accounts where its usual share of all sign-ups "
            f"predicts about {float(row['expected']):.0f}; {odds} by chance")  # type: ignore[arg-type]


def describe_block(row: dict[str, object]) -> str:
    """A block as a sentence an analyst can repeat: who, how often, where, and the odds."""
    where = describe_network(str(row["network"]))
    chance = float(row["log10_chance"])  # type: ignore[arg-type]
    odds = "less than 1 in 10^100" if chance >= 100 else f"1 in 10^{int(chance)}"
    return (f"{row['n']} of the fleet's accounts are in a group of {row['block_size']} that acted "
            f"{row['waves']} times in the same {row['bucket_minutes']} minutes on {where} over "
            f"{row['days']} days; {odds} by chance")


def _capability_similarity(members: pl.DataFrame, graph: PropertyGraph) -> pl.DataFrame:
    """Mean cosine of each member's capability mix to its fleet's mix."""
    caps = graph.accounts.select("account_id", "capabilities")
    m = members.select("fleet", "account_id").join(caps, on="account_id")
    mat = list_matrix(m["capabilities"], 6, 0).astype(np.float64)
    norm = np.linalg.norm(mat, axis=1, keepdims=True)
    unit = np.divide(mat, norm, out=np.zeros_like(mat), where=norm > 0)
    frame = pl.DataFrame({"fleet": m["fleet"]}).with_columns(
        [pl.Series(f"u{i}", unit[:, i]) for i in range(6)]
    ).with_columns(pl.Series("has", norm[:, 0] > 0))
    centre = frame.filter(pl.col("has")).group_by("fleet").agg(
        [pl.col(f"u{i}").mean().alias(f"m{i}") for i in range(6)]
    )
    centre = centre.with_columns(
        pl.sum_horizontal([pl.col(f"m{i}") ** 2 for i in range(6)]).sqrt().alias("mn")
    )
    return frame.filter(pl.col("has")).join(centre, on="fleet").with_columns(
        (
            pl.sum_horizontal([pl.col(f"u{i}") * pl.col(f"m{i}") for i in range(6)])
            / pl.col("mn").clip(1e-9)
        ).alias("cos")
    ).group_by("fleet").agg(((pl.col("cos") - 0.8) / 0.2).clip(0.0, 1.0).mean().alias("capsim"))


def _feature_evidence(fleets: pl.DataFrame) -> pl.DataFrame:
    """One evidence row per fleet and feature that moved its score."""
    rows = []
    for f, (_, kind, template) in FEATURES.items():
        part = fleets.filter(pl.col(f"w_{f}").abs() >= 0.1).select(
            "fleet",
            pl.lit(kind).alias("kind"),
            pl.col(f).alias("value"),
            pl.col(f"w_{f}").alias("contribution"),
            pl.lit(template).alias("template"),
            (pl.col(f"{f}_detail") if f in DETAILED else pl.lit(None, pl.String)).alias("detail"),
        )
        rows.append(part)
    ev = pl.concat(rows)
    total = ev.group_by("fleet").agg(pl.col("contribution").abs().sum().alias("t"))
    ev = ev.join(total, on="fleet").with_columns(
        (pl.col("contribution") / pl.col("t")).alias("weight")
    )
    details = [
        template.format(pct=f"{round(100 * v)}%", val=f"{v:.2f}", detail=d or "")
        for template, v, d in zip(ev["template"].to_list(), ev["value"].to_list(),
                                  ev["detail"].to_list(), strict=True)
    ]
    return ev.with_columns(pl.Series("detail", details)).select(
        "fleet", "kind", "detail", "weight"
    )
