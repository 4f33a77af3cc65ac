"""The run record: fleets, assignments and evidence rows assembled from the stages' frames.

Evidence rows read as sentences; identifiers in them are masked by kind
(``attribution.contracts.masking``); floats are settled so that two runs of one snapshot
are identical to the bit.
"""

from __future__ import annotations

import polars as pl

from attribution.contracts.graph import PropertyGraph
from attribution.contracts.results import RunRecord
from attribution.contracts.schema import CAPABILITIES
from attribution.contracts.settings import RunParams
from attribution.contracts.vocabulary import ENTITY_KINDS, KIND_FAMILY
from attribution.engine.attribute import mask
from attribution.engine.linking import rarity

FLOAT_DECIMALS = 12
# uses.kind -> (evidence kind, noun) of the "N accounts share ..." rows.
SHARED_KIND = {k.kind: (k.shared_evidence, k.noun) for k in ENTITY_KINDS if k.shared_evidence}


def reach_evidence(graph: PropertyGraph, account_scores: pl.DataFrame,
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


def shared_evidence(graph: PropertyGraph, members: pl.DataFrame, params: RunParams
                     ) -> pl.DataFrame:
    """What the fleet's accounts share: the identifiers behind its links.

    Only the members' uses are made distinct, and the degree (accounts in all) is counted
    only for what two members share: at a million accounts the fleets hold a fifth of
    the accounts, and the distinct of every use took most of the stage."""
    one_ip = pl.col("kind").replace({"signup_ip": "ip"})
    keys = ["account_id", "kind", "entity_id"]
    mine = graph.uses.join(members.select("account_id").unique(), on="account_id", how="semi")
    shared = (
        members.join(mine.with_columns(one_ip).unique(keys), on="account_id")
        .group_by("fleet", "kind", "entity_id")
        .agg(pl.len().alias("n"))
        .filter(pl.col("n") >= 2)
    )
    held = shared.select("kind", "entity_id").unique()
    degree = (graph.uses.lazy().with_columns(one_ip)
              .join(held.lazy(), on=["kind", "entity_id"], how="semi")
              .group_by("kind", "entity_id").agg(pl.col("account_id").n_unique().alias("deg"))
              .collect())
    shared = shared.join(degree, on=["kind", "entity_id"])
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


def assemble(
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
