"""Link inference: account-to-account evidence, by family, without all pairs.

Candidate pairs come only from *blocks*: accounts that share a card
fingerprint, a device, an IP, an email domain, a prompt template, a creation
burst, or a MinHash band of their active minutes. Inside a block of ``n``
accounts every pair is formed while ``n`` is small; a larger block links each
account to its next ``window`` neighbours in a block-specific pseudo-random
order, so a block costs O(n) pairs and a big campaign still comes out as one
well-mixed piece. Entities so common that their evidence is negligible
(carrier NAT, public email domains, popular templates) form no pairs.

Each family gives a strength in [0, cap]: rarer entities weigh more (an IP
shared by thousands is worth next to nothing, a card shared by five a lot),
shared use that does not overlap in time weighs less, and several entities of
one family count as one piece of evidence plus a small bonus, never as
independent evidence. An edge needs a strong identifier (card or device) or at
least two families agreeing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from attribution.contracts.graph import PropertyGraph
from attribution.contracts.settings import LinkParams
from attribution.contracts.vocabulary import (
    COHERENCE_FAMILIES,
    FAMILIES,
    KIND_FAMILY,
    STRENGTH_COLUMNS,
    STRONG_FAMILIES,
    families_agreeing,
    total_weight,
)
from attribution.engine import features
from attribution.engine.lockstep import Blocks
from attribution.engine.matrix import list_matrix
from attribution.stages.activity import network_of, proxy_network
from attribution.stages.behaviour import MINHASH_K

# Group-level synchrony: a sign-up burst, a lockstep block. A pair's own minutes
# (timing) are not among them: among the many pairs compared, two developers behind
# one proxy match a few minutes as often as two members of a careful campaign do
# (the same -log10 chance, 2.9-3.7, on the development worlds); what tells them apart
# is the group, which the lockstep block measures.
SYNCHRONY_FAMILIES = ("creation", "lockstep")


# What a sign-up surge episode was (``_episode_stats``).
EPISODE_SCHEMA = {"episode": pl.Int64, "network": pl.String, "start": pl.Int64,
                  "end": pl.Int64, "signups": pl.Int64, "expected": pl.Float64,
                  "log10_chance": pl.Float64}


HOURS_SCHEMA = {"idx": pl.Int32, "hour": pl.Int8, "sessions": pl.UInt32}


@dataclass
class Links:
    """Inferred account-to-account edges over an account index.

    ``edges`` has columns a, b (row numbers of ``accounts``, a < b), one
    ``s_<family>`` strength column per family, ``families`` (how many agree)
    and ``weight`` (their sum). ``candidates`` counts the pairs scored.
    """

    accounts: pl.DataFrame
    edges: pl.DataFrame
    candidates: int
    # Members of strong sign-up bursts (block, idx, s, lam, dormant): may attach a
    # dormant loner to the fleet most of its burst belongs to (see attach_loners).
    bursts: pl.DataFrame
    # Scored pairs between an account with no link and a linked one (a, b and the
    # s_<family> columns): evidence spread over several members of one fleet
    # may attach the loner to it (see attach_by_evidence).
    near: pl.DataFrame
    # Edges inside sign-up cohorts (``_cohort_edges``): they form fleets only among the
    # accounts that nothing else placed (see ``fleets.cohort_fleets``).
    cohort: pl.DataFrame = field(default_factory=pl.DataFrame)
    # ... and the surges' members (block, idx, s, lam, and ``dormant``: in a cohort, as
    # ``bursts`` name who may attach): a cohort whose placed members are mostly one fleet
    # attaches its members to it first.
    cohort_members: pl.DataFrame = field(default_factory=pl.DataFrame)
    # Each surge member's episode (idx, episode, strong, minute, *SURGE_TRAITS:
    # ``_surge_episodes``; ``strong`` false for a weaker surge's member, in doubt): the
    # fleets one surge is made of merge when nothing tells their members apart
    # (``fleets.merge_surges``).
    episodes: pl.DataFrame = field(default_factory=pl.DataFrame)
    # ... and what each episode was (network, span, sign-ups against expected, odds:
    # ``_episode_stats``), for the sentence that quotes it.
    episode_stats: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=EPISODE_SCHEMA))
    # When the members of ``bursts`` and ``cohort_members`` act (idx, hour of the day in
    # UTC, sessions: the days they were active in that hour): an operator works its
    # accounts on its own schedule (``fleets.attach_loners``).
    hours: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=HOURS_SCHEMA))
    # The lockstep blocks (see engine.lockstep): the sybil score counts their members
    # as coordination and quotes the block.
    lockstep: Blocks = field(default_factory=Blocks.empty)
    # What each shared entity is worth (kind, entity_id, rare, lift: see
    # ``entity_strength``): the fragment merge judges an operator's entity by it.
    entities: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(
        schema={"kind": pl.String, "entity_id": pl.String, "rare": pl.Float64,
                "lift": pl.Float64}))

    @property
    def lockstep_members(self) -> pl.DataFrame:
        """(idx, block) of every account in a lockstep block."""
        return _in_block(self.lockstep, self.accounts)


def _in_block(blocks: Blocks, accounts: pl.DataFrame) -> pl.DataFrame:
    """(idx, block): the blocks' members by their row in the account index."""
    return blocks.members.join(accounts, on="account_id").select("idx", "block")


def rarity(n: pl.Expr, hub: pl.Expr | float) -> pl.Expr:
    """1.0 for an entity shared by two accounts, falling towards 0 as ``n`` grows.

    ``hub`` is the share count at which an entity is worth about a fifth of a
    two-account one: log(1 + hub/n) / log(1 + hub/2).
    """
    hub_e = hub if isinstance(hub, pl.Expr) else pl.lit(hub)
    n_f = n.cast(pl.Float64)
    return (((hub_e / n_f) + 1.0).log() / ((hub_e / 2.0) + 1.0).log()).clip(0.0, 1.0)


@dataclass(frozen=True)
class SignUps:
    """Every account's sign-up and the bursts and surges among them, found once a run:
    the links read them, and so does the lockstep step's null (``born``)."""

    accounts: pl.DataFrame  # account_id, idx: the account index of the links
    signup: pl.DataFrame    # idx, net: the network each account signed up through
    table: pl.DataFrame     # ``_signups``
    bursts: pl.DataFrame    # ``_creation_blocks``
    surges: pl.DataFrame    # ``_surge_blocks``, every one

    @classmethod
    def of(cls, graph: PropertyGraph, params: LinkParams, feats: pl.DataFrame) -> SignUps:
        """The sign-ups of ``graph``'s accounts; ``feats``: ``features.account_features``."""
        accounts = graph.accounts.select("account_id").with_row_index("idx").with_columns(
            pl.col("idx").cast(pl.Int32))
        signup = _signup_networks(graph, accounts)
        table = _signups(graph, accounts, signup, feats)
        return cls(accounts=accounts, signup=signup, table=table,
                   bursts=_creation_blocks(table, params), surges=_surge_blocks(table, params))

    def born(self, graph: PropertyGraph, params: LinkParams) -> pl.DataFrame:
        """(account_id, minute): from when the lockstep null may move each account's
        timeline (``lockstep.find_blocks``): its sign-up. Not for an account signed up in
        a burst or a surge as strong as one that attaches a loner (``attach_min``): when
        it was born is part of what its operator coordinated, so its timeline may go
        anywhere in the snapshot, as an account older than the snapshot's does."""
        # ``idx`` is the row of ``graph.accounts`` (``of``): a mask, not a join on the ids
        keep = np.ones(graph.accounts.height, dtype=bool)
        for found in (self.bursts, self.surges):
            keep[found.filter(attaching(params))["idx"].to_numpy()] = False
        return graph.accounts.select(
            "account_id", (pl.col("created_at").dt.epoch("s") // 60).alias("minute")).filter(pl.Series(keep))


def infer_links(graph: PropertyGraph, params: LinkParams, feats: pl.DataFrame | None = None,
                blocks: Blocks | None = None, signups: SignUps | None = None) -> Links:
    """Score candidate pairs from every blocking family and keep the edges.

    ``blocks`` (group-level lockstep, ``engine.lockstep``) give their members the
    lockstep family: a synchrony family, so it anchors weak evidence, and it links
    two members only beside one other family agreeing. ``signups``: ``SignUps.of``
    the same graph, when the run has them already."""
    blocks = blocks if blocks is not None else Blocks.empty()
    feats = feats if feats is not None else features.account_features(graph)
    su = signups if signups is not None else SignUps.of(graph, params, feats)
    accounts, signup, table, bursts = su.accounts, su.signup, su.table, su.bursts
    in_block = _in_block(blocks, accounts)
    # Only surges as strong for a member as a burst must be to attach a loner on its
    # sign-up alone (``attach_min``) say anything of it: the cohorts and the episodes alike.
    every_surge = su.surges
    surges = every_surge.filter(attaching(params))
    creation = _creation_evidence(bursts, params)
    entity, open_network, entities = _entity_evidence(graph, accounts, params, feats)
    parts = [entity, creation, _timing_candidates(graph, params), _lockstep_pairs(in_block, params)]
    # An empty part may carry other dtypes (nothing to infer them from): conform all.
    rows = pl.concat([p.select(pl.col("a", "b").cast(pl.Int32), pl.col("family").cast(FAMILY),
                               pl.col("s").cast(pl.Float64)) for p in parts])
    scored = _same_block(_combine(rows, params), in_block, params)
    tables = PairTables.of(graph, params, feats)
    scored = _add_pairwise_families(scored, tables, params)
    scored = _rented_networks(scored, open_network, params)
    edges = _decide(scored, params)
    batch, batch_candidates = _batch_edges(graph, tables, signup, bursts, creation, edges, params)
    if batch.height:
        edges = pl.concat([edges, batch]).sort("a", "b")
    strong = _strong_bursts(bursts, graph, params)
    networks = _counted_networks(table).select("idx", "net")
    cohort, cohort_members, cohort_candidates = _cohort_edges(graph, tables, networks, surges,
                                                              strong, edges, params)
    episodes, episode_stats = _surge_episodes(surges, every_surge, table, params)
    linked = pl.concat([edges["a"], edges["b"]]).unique().implode()
    near = scored.filter(pl.col("a").is_in(linked) != pl.col("b").is_in(linked)).select(
        "a", "b", *STRENGTH_COLUMNS)
    return Links(accounts=accounts, edges=edges,
                 candidates=scored.height + batch_candidates + cohort_candidates,
                 bursts=strong, near=near, lockstep=blocks,
                 hours=_hours(graph, accounts, pl.concat([strong["idx"], cohort_members["idx"]])),
                 cohort=cohort, cohort_members=cohort_members,
                 episodes=episodes, episode_stats=episode_stats,
                 entities=entities.select("kind", "entity_id", "rare", "lift"))


def _hours(graph: PropertyGraph, accounts: pl.DataFrame, who: pl.Series) -> pl.DataFrame:
    """(idx, hour, sessions) of the accounts ``who``: on how many days each was active in
    each hour of the day (UTC). Days, not minutes: one long session is one observation
    of when its operator works, not sixty."""
    ids = accounts.join(pl.DataFrame({"idx": who.cast(pl.Int32)}).unique(), on="idx")
    if not ids.height or not graph.activity.height:
        return pl.DataFrame(schema=HOURS_SCHEMA)
    minute = pl.col("minute").cast(pl.Int64)
    return (graph.activity.lazy().join(ids.lazy(), on="account_id")
            .select("idx", (minute // 60 % 24).cast(pl.Int8).alias("hour"),
                    (minute // 1440).alias("day"))
            .group_by("idx", "hour").agg(pl.col("day").n_unique().alias("sessions"))
            .sort("idx", "hour").collect().cast(HOURS_SCHEMA))  # type: ignore[arg-type]


def _same_block(scored: pl.DataFrame, in_block: pl.DataFrame, p: LinkParams) -> pl.DataFrame:
    """Every candidate pair inside one lockstep block carries the lockstep family, whatever
    block proposed it (a shared exit, a MinHash band): the band of ``_lockstep_pairs``
    only makes sure that members with nothing else in common are scored at all."""
    if in_block.height == 0 or scored.height == 0:
        return scored
    # An account can be in a block on each of two networks: the pairs sharing any block,
    # once each (a left join on both ends repeated such an account's candidate rows).
    a = in_block.select(pl.col("idx").cast(pl.Int32).alias("a"), "block")
    b = in_block.select(pl.col("idx").cast(pl.Int32).alias("b"), "block")
    shared = (scored.lazy().select("a", "b").join(a.lazy(), on="a").join(b.lazy(), on=["b", "block"])
              .select("a", "b").unique().with_columns(pl.lit(True).alias("_same")).collect())
    return scored.join(shared, on=["a", "b"], how="left", maintain_order="left").with_columns(
        pl.when(pl.col("_same")).then(pl.lit(p.cap["lockstep"]))
        .otherwise(pl.col("s_lockstep")).alias("s_lockstep")).drop("_same")


def _lockstep_pairs(in_block: pl.DataFrame, p: LinkParams) -> pl.DataFrame:
    """(a, b, family, s) between members of one lockstep block (a band for big blocks)."""
    if in_block.height < 2:
        return _empty_rows()
    members = in_block.select(pl.col("block").cast(pl.UInt64), pl.col("idx").cast(pl.Int32),
                              pl.lit(p.cap["lockstep"]).alias("s"), pl.lit(0).alias("first_seen"),
                              pl.lit(0).alias("last_seen"))
    pairs = window_pairs(members, p.window)
    return pairs.select("a", "b", _family("lockstep"), "s") if pairs.height else _empty_rows()


def _batch_edges(graph: PropertyGraph, tables: PairTables, signup: pl.DataFrame,
                 bursts: pl.DataFrame, creation: pl.DataFrame, edges: pl.DataFrame,
                 p: LinkParams) -> tuple[pl.DataFrame, int]:
    """Edges inside sign-up batches that nothing else links: (edges, pairs scored).

    A batch of accounts registered together that have not been used yet has
    only its sign-up: the burst, and the network it came through. Only bursts
    none of whose members is linked otherwise are considered: a burst with
    linked members attaches its dormant loners through ``attach_loners``, and
    two operators renting one proxy service can burst in the same window, so
    the batch's sign-ups must not weld two fleets together.
    """
    linked = pl.concat([edges["a"], edges["b"]]).unique().implode()
    touched = bursts.filter(pl.col("idx").is_in(linked))["block"].unique().implode()
    quiet = bursts.filter(~pl.col("block").is_in(touched))
    return _batch_scored(_burst_network_evidence(graph, signup, quiet, p), creation, tables,
                         edges, p)


def _batch_scored(net: pl.DataFrame, creation: pl.DataFrame, tables: PairTables,
                  edges: pl.DataFrame, p: LinkParams) -> tuple[pl.DataFrame, int]:
    """The edges a batch's network evidence (``net``) makes beside the creation evidence
    of the same pairs: (edges in the columns of ``edges``, pairs scored)."""
    if not net.height:
        return edges.clear(), 0
    pairs = net.select("a", "b").unique()
    rows = pl.concat([net, creation.join(pairs, on=["a", "b"])])
    scored = _add_pairwise_families(_combine(rows, p), tables, p)
    return _decide(scored, p).select(edges.columns), scored.height


def _cohort_edges(graph: PropertyGraph, tables: PairTables, networks: pl.DataFrame,
                  surges: pl.DataFrame, strong: pl.DataFrame, edges: pl.DataFrame,
                  p: LinkParams) -> tuple[pl.DataFrame, pl.DataFrame, int]:
    """Edges inside sign-up cohorts: (edges, members as ``bursts`` are, pairs scored);
    ``surges`` are the strong ones (``infer_links``), ``strong`` is ``_strong_bursts``,
    ``networks`` (idx, net) each account's networks by both counts (``SURGE_KEYS``).

    A sign-up surge (``_surge_blocks``) is a cohort over days, not one batch: an
    operator that registers a few accounts at a time through one rented service and
    leaves many unused or barely used. Its members linked to nothing and in no strong
    burst (a burst is the finer observation: ``attach_loners`` places its loners) are a
    batch of their own where the surge is as strong for them as a burst must be to
    attach a loner on its sign-up alone (``attach_min``): for an account that has done
    nothing yet (``_dormant``), nearly all the window's sign-ups like it are excess. An
    account that has used the service has traffic of its own that linked it to nothing,
    and the network's ordinary customers who signed up that week look like it: it joins
    only where the surge is surer still (``cohort_used_min``: its use, capability, plan
    and zone unlike the customers', or a surge so large that nearly every sign-up is
    excess). Edges are scored as a burst's batch is: the sign-up and the network it came
    through. They form fleets only among accounts that the fleet stage left unplaced
    (``fleets.cohort_fleets``): a surge says which sign-ups are excess, not whose, so it
    never joins an account to a fleet that other evidence formed.
    """
    linked = pl.concat([edges["a"], edges["b"]]).unique().implode()
    unused = pl.col("idx").is_in(_dormant(graph, p))
    sure = unused | (pl.col("s") >= p.cohort_used_min * p.cap["creation"])
    quiet = sure & ~pl.col("idx").is_in(linked) & ~pl.col("idx").is_in(strong["idx"].implode())
    members = surges.select("block", "idx", "s", "lam", quiet.alias("dormant"))
    cohort = surges.filter(quiet)
    cohort = cohort.filter(pl.len().over("block") >= p.burst_min_size)
    found, scored = _batch_scored(_burst_network_evidence(graph, networks, cohort, p, unused_ends=0),
                                  _creation_evidence(cohort, p), tables, edges, p)
    return found, members, scored


def _strong_bursts(bursts: pl.DataFrame, graph: PropertyGraph, p: LinkParams
                   ) -> pl.DataFrame:
    """Members of sign-up bursts strong enough to attach a dormant loner.

    A new or dormant account has nothing yet but its sign-up (see
    ``attach_loners``); an account with activity of its own that still formed
    no link is not attached on its sign-up alone, so ``dormant`` marks who may
    be. Only the creation family attaches: a template, domain or network may
    be public and shared by an operation and bystanders alike, and one minute
    shared with an orchestrated wave of a fleet's accounts is a single
    coincidence seen many times over.
    """
    return bursts.filter(attaching(p)).select(
        "block", "idx", "s", "lam", pl.col("idx").is_in(_dormant(graph, p)).alias("dormant"))


def attaching(p: LinkParams) -> pl.Expr:
    """Burst and surge members (``s``) as strong as a burst must be to attach a loner on
    its sign-up alone."""
    return pl.col("s") >= p.attach_min * p.cap["creation"]


def _dormant(graph: PropertyGraph, p: LinkParams) -> pl.Series:
    """Row numbers of accounts that have done (almost) nothing yet, as one list value."""
    return (graph.accounts["active_minutes"].fill_null(0) <= p.attach_max_minutes).arg_true(
    ).cast(pl.Int32).implode()


def _window_order() -> pl.Expr:
    """Where a member stands in its block for ``window_pairs``: a hash of block and
    account, so a big block's band of pairs does not follow row numbers."""
    return pl.struct("block", "idx").hash(seed=17)


def window_pairs(members: pl.DataFrame, window: int) -> pl.DataFrame:
    """Pairs inside each block: all of them for small blocks, a band for big ones.

    ``members``: block (u64), idx (i32), s, first_seen, last_seen. The result has
    a, b, s and the two members' intervals (f1, l1, f2, l2).

    Members are ranked in their block by ``_window_order`` (ties in row order), and
    each is paired with the members up to ``window`` ranks before it. The pairs are
    gathered in numpy from one sort, in the order the join of each distance's ranks
    gave them (by distance, then by the later member's row): ``_combine`` sums a
    pair's strengths in row order, so the order is part of the result. Twelve joins
    per family were most of the entity evidence's time.
    """
    ordered = members.select(
        pl.arg_sort_by("block", _window_order(), maintain_order=True).alias("o"))["o"].to_numpy()
    block = members["block"].to_numpy()[ordered]
    starts = _run_starts(block)
    sizes = np.diff(starts, append=len(block))
    top = min(window, max(int(sizes.max(initial=0)) - 1, 0))
    if top < 1:
        return pl.DataFrame(schema={"a": pl.Int32, "b": pl.Int32, "s": pl.Float64})
    start = np.repeat(starts, sizes)  # by sorted position: where its block starts
    at = np.empty(len(ordered), dtype=np.int64)
    at[ordered] = np.arange(len(ordered))  # by row: its sorted position
    earlier, later = [], []
    for d in range(1, top + 1):
        rows = np.flatnonzero(at - d >= start[at])  # members with one d ranks before them
        later.append(rows)
        earlier.append(ordered[at[rows] - d])
    first, second = pl.Series(np.concatenate(earlier)), pl.Series(np.concatenate(later))
    pairs = members[first].rename({"first_seen": "f1", "last_seen": "l1"}).with_columns(
        members["idx"][second].alias("idx_b"), members["first_seen"][second].alias("f2"),
        members["last_seen"][second].alias("l2"))
    return pairs.with_columns(
        pl.min_horizontal("idx", "idx_b").alias("a"), pl.max_horizontal("idx", "idx_b").alias("b")
    ).drop("idx", "idx_b")


def _entity_evidence(
    graph: PropertyGraph, index: pl.DataFrame, p: LinkParams, feats: pl.DataFrame
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """(a, b, family, s) from shared cards, devices, IPs, email domains and templates,
    (a, b, s) of the network evidence through networks that are not rented (neither a
    known proxy exit nor a hosting range): see ``_rented_networks``; and every
    entity's strength (``entity_strength``)."""
    uses = graph.uses.join(index, on="account_id", how="inner").with_columns(
        pl.col("kind").replace_strict(KIND_FAMILY, return_dtype=pl.String).alias("family")
    )
    rented = graph.ips.filter(
        pl.col("proxy_id").is_not_null() | pl.col("hosting").fill_null(False))["ip"].implode()
    anomaly = index.join(
        graph.accounts.select("account_id").with_columns(features.anomaly(feats)),
        on="account_id",
    ).select("idx", "anomaly")
    strength = entity_strength(uses, anomaly, p)
    blocks = strength.filter(pl.col("s") >= p.min_block_strength)
    members = uses.join(blocks.select("kind", "entity_id", "s"), on=["kind", "entity_id"])
    members = members.select(
        pl.struct("kind", "entity_id").hash(seed=3).alias("block"),
        "idx",
        "family",
        "s",
        "first_seen",
        "last_seen",
        ((pl.col("family") == "network") & ~pl.col("entity_id").is_in(rented)).alias("open"),
    )
    out = []
    open_net = []
    for family, group in members.partition_by("family", as_dict=True).items():
        pairs = window_pairs(group.drop("family", "open"), p.window)
        if not pairs.height:
            continue
        overlap = pl.max_horizontal("f1", "f2") <= pl.min_horizontal("l1", "l2")
        factor = (
            pl.when(overlap).then(1.0).otherwise(p.no_overlap_factor)
            if family[0] in ("network", "device")
            else pl.lit(1.0)
        )
        out.append(pairs.select("a", "b", _family(str(family[0])), pl.col("s") * factor))
        if family[0] == "network":
            mine = window_pairs(group.filter(pl.col("open")).drop("family", "open"), p.window)
            if mine.height:
                open_net.append(mine.select("a", "b", (pl.col("s") * factor).alias("s")))
    opened = (pl.concat(open_net).group_by("a", "b").agg(pl.col("s").max()) if open_net
              else pl.DataFrame(schema={"a": pl.Int32, "b": pl.Int32, "s": pl.Float64}))
    return (pl.concat(out) if out else _empty_rows()), opened, strength


def entity_strength(uses: pl.DataFrame, anomaly: pl.DataFrame, p: LinkParams) -> pl.DataFrame:
    """(kind, entity_id, family, n, s, rare, lift): what sharing each entity is worth to a pair
    (``s``), from how rare it is (``rare``) and how anomalous its users are (``lift``).

    ``uses``: idx, kind, entity_id, family; ``anomaly``: idx, anomaly (``features.anomaly``).
    An entity is worth its family's cap while few accounts share it, less as more
    do (``rarity``). Who uses it also tells a campaign's template or domain from a
    popular one: a large entity whose users are, together, far more anomalous than
    the population (rented networks, foreign time zones, harvesting) is a marker of
    one operation, however many accounts share it: ``lift`` is how far their mean
    anomaly is from the population's towards fully anomalous (for the families where
    users tell, ``COHERENCE_FAMILIES``, from ``coherence_min_users`` on). It counts from
    ``coherence_from`` and reaches the family's ``coherence_share`` at ``coherence_full``:
    a public tool's template is used by a crowd with an anomalous minority (developers
    behind rented proxies, 0.1-0.3 of the way on the development worlds), an operation's
    by accounts that nearly all are (0.5 and more). Linking pairs accounts on
    ``s``; ``fleets.merge_fragments`` judges an operator's entity by ``rare`` and
    ``lift`` (``Links.entities``), so the two agree on what is specific.
    """
    baseline = float(anomaly["anomaly"].mean() or 0.0)  # type: ignore[arg-type]
    degree = (
        uses.join(anomaly, on="idx", how="left")
        .group_by("kind", "entity_id", "family")
        .agg(pl.col("idx").n_unique().alias("n"), pl.col("anomaly").mean().alias("coh"))
    )
    cap = pl.col("family").replace_strict(p.cap, return_dtype=pl.Float64)
    hub = pl.col("family").replace_strict(p.hub_size, return_dtype=pl.Float64)
    coherent = (
        pl.col("family").is_in(list(COHERENCE_FAMILIES))
        & (pl.col("n") >= p.coherence_min_users)
    )
    # how far its users' mean anomaly is from the population's towards fully anomalous
    lift = pl.when(coherent).then(
        ((pl.col("coh") - baseline) / max(1.0 - baseline, 1e-9)).clip(0.0, 1.0)).otherwise(0.0)
    return (
        degree.filter((pl.col("n") >= 2) & (pl.col("n") <= p.max_block))
        .with_columns((cap * rarity(pl.col("n"), hub)).alias("rare"), lift.alias("lift"))
        .with_columns(pl.max_horizontal(
            "rare", cap * p.coherence_share * ((pl.col("lift") - p.coherence_from)
                                               / (p.coherence_full - p.coherence_from)).clip(0.0, 1.0),
        ).alias("s"))
        .select("kind", "entity_id", "family", "n", "s", "rare", "lift")
    )


def _rented_networks(scored: pl.DataFrame, open_network: pl.DataFrame, p: LinkParams
                     ) -> pl.DataFrame:
    """Rented exits alone say nothing about who controls an account.

    Residential proxy and VPN exits, and datacenter ranges, are shared by
    strangers who rent the same service (developers from regions the service
    does not reach, several operators at once), and such a crowd is anomalous
    together (foreign time zones, the same popular tools). Sharing them is
    evidence of one operator only beside identity-level evidence (a card or a
    device) or group-level synchrony (a lockstep block, one sign-up burst);
    otherwise a pair's network strength is only what its open networks (an
    office, a home line) give.
    """
    if not scored.height:
        return scored
    opened = open_network.select(pl.col("a", "b").cast(pl.Int32),
                                 pl.col("s").cast(pl.Float64).alias("_open"))
    backed = anchored(p.family_threshold)
    return scored.join(opened, on=["a", "b"], how="left").with_columns(
        pl.when(backed).then(pl.col("s_network"))
        .otherwise(pl.min_horizontal("s_network", pl.col("_open").fill_null(0.0)))
        .alias("s_network")
    ).drop("_open")


def email_shape(local: pl.Expr) -> pl.Expr:
    """Letters to ``a``, digit runs to ``9``: "john.smith84" -> "a.a9"."""
    return local.str.replace_all(r"[a-z]+", "a").str.replace_all(r"[0-9]+", "9")


# What a sign-up cohort's members are compared on (``_surge_posterior``): how much the
# account has used the service, what for, on which plan, from which device zone.
SURGE_TRAITS = ("level", "cap_main", "plan", "zone")
# The two counts of a network's sign-ups (``_surge_blocks``): by the network an account
# signed up through, and by the proxy service it has mostly used since.
SURGE_KEYS = ("signup_net", "use_net")
SURGE_SCHEMA = {"block": pl.UInt64, "idx": pl.Int32, "s": pl.Float64, "lam": pl.Float64,
                "net": pl.String}


def _signups(graph: PropertyGraph, index: pl.DataFrame, signup: pl.DataFrame,
             feats: pl.DataFrame) -> pl.DataFrame:
    """(idx, minute, email_domain, shape, signup_net, use_net, *SURGE_TRAITS): each
    account's sign-up (its network: ``_signup_networks``), the proxy service it has mostly
    used since (``_proxy_of_use``) and what it has been (``_level``, its main capability,
    plan and device zone from ``feats``)."""
    zones = feats.select("account_id", pl.col("timezone").fill_null("").alias("zone"))
    return graph.accounts.join(index, on="account_id").join(
        signup.rename({"net": "signup_net"}), on="idx", how="left").join(
        zones, on="account_id", how="left").join(
        _proxy_of_use(graph, feats), on="account_id", how="left").select(
        "idx",
        (pl.col("created_at").dt.epoch("s") // 60).alias("minute"),
        pl.col("email_domain").fill_null(""),
        email_shape(pl.col("email_local").fill_null("")).alias("shape"),
        "signup_net",
        "use_net",
        _level().alias("level"),
        pl.when(pl.col("active_minutes").fill_null(0) > 0)
        .then(pl.col("capabilities").list.arg_max()).cast(pl.Int32).fill_null(-1)
        .alias("cap_main"),
        pl.col("plan").fill_null(""),
        pl.col("zone").fill_null(""),
    )


def _level() -> pl.Expr:
    """How much an account has used the service, in doublings of active minutes per week
    it has been there (since its sign-up, or since the snapshot's first exchange if it
    signed up before): a developer who joined last week and one of the same habits who
    joined a year ago are at one level, and an unused account is at 0."""
    start, end = pl.col("first_ts").min(), pl.col("last_ts").max()
    since = pl.max_horizontal(pl.col("created_at"), start)
    weeks = ((end - since).dt.total_seconds() / (7 * 86400.0)).clip(lower_bound=1.0).fill_null(1.0)
    return (pl.col("active_minutes").fill_null(0) / weeks + 1.0).log(2).floor().cast(pl.Int32)


def _creation_blocks(acc: pl.DataFrame, p: LinkParams) -> pl.DataFrame:
    """Sign-up bursts: (block, idx, s, lam), one row per member of each burst, from the
    accounts' sign-ups (``_signups``).

    A burst is accounts created in one window with the same email pattern, or
    signed up from the same network (proxy service, ASN or /24, as the lockstep
    step names it: an operator that varies its e-mail shapes still signs its
    accounts up through the service it rents), judged against its own base rate:
    k accounts of one (domain, shape) or one network in a window where about
    lambda were expected. The strength grows with the Poisson surprise and with
    the share of the burst that is excess, so background sign-ups in a busy
    window (a carrier NAT, a popular proxy service) are not glued together.
    """
    if acc.height < 2:
        return _empty_blocks()
    span = max(_num(acc["minute"].max()) - _num(acc["minute"].min()), 1440.0)
    cap = p.cap["creation"]
    out = []
    # The base rate is the larger of the pattern's rate over the whole span and
    # over the calendar day of the window (its own members not counted): sign-ups
    # are not uniform in time (growth, launches, the newest days), and a busy day
    # must not look like a burst.
    acc = acc.with_columns((pl.col("minute") // 1440).alias("day"))
    for keys in (("email_domain", "shape"), ("shape",), ("signup_net",)):
        keyed = acc.drop_nulls(list(keys))
        base = keyed.group_by(*keys).agg(pl.len().alias("total"))
        daily = keyed.group_by(*keys, "day").agg(pl.len().alias("that_day"))
        for offset in (0, p.burst_minutes // 2):
            bucket = ((pl.col("minute") + offset) // p.burst_minutes).alias("bucket")
            counted = keyed.with_columns(bucket).join(base, on=list(keys)).join(
                daily, on=[*keys, "day"])
            blocks = (
                counted.group_by("bucket", *keys)
                .agg(pl.len().alias("k"), pl.col("total").first(), pl.col("that_day").max())
                .filter(pl.col("k") >= p.burst_min_size)
                .with_columns(pl.max_horizontal(
                    pl.col("total") * p.burst_minutes / span,
                    (pl.col("that_day") - pl.col("k")).clip(0) * p.burst_minutes / 1440.0,
                ).alias("lam"))
                .with_columns(_surprise("k").alias("surprise"))
                .with_columns(
                    (
                        cap
                        * (1.0 - pl.col("lam") / pl.col("k")).clip(0.0, 1.0)
                        * (pl.col("surprise") / 10.0).clip(0.0, 1.0)
                    ).alias("s")
                )
                .filter(pl.col("s") >= p.min_block_strength)
            )
            members = counted.join(blocks.select("bucket", *keys, "s", "lam"),
                                   on=["bucket", *keys])
            out.append(members.select(
                pl.struct(pl.lit(offset), "bucket", *keys).hash(seed=5).alias("block"),
                pl.col("idx").cast(pl.Int32),
                "s",
                pl.col("lam").cast(pl.Float64),
            ))
    return pl.concat(out) if out else _empty_blocks()


def _surge_blocks(acc: pl.DataFrame, p: LinkParams) -> pl.DataFrame:
    """Sign-up surges: (block, idx, s, lam, net) for the accounts a network signed up
    in a window of days when it signed up far more than its share.

    A network's accounts are counted twice, each way against its own history
    (``SURGE_KEYS``): by the network they signed up through, and by the proxy service they
    have mostly used since (``_proxy_of_use``: an operator signing up through exits nobody
    marked); the two counts' blocks are apart.

    An operator that registers its accounts a few at a time, minutes apart, through a
    proxy service makes no burst: each half hour holds a handful, and the service's own
    day, which the operator fills, is the burst's baseline. Over days the batches add up
    to a cohort: k sign-ups through one network in a window where its share of every
    sign-up away from the window predicts about lambda = T_w * (T_n - K) / (N - K_w) (T_w
    all sign-ups in the window, T_n the network's, N all; K and K_w the network's and
    everyone's in the window and the two next to it, so that a cohort spilling over
    the window's edge is not its own history). A launch or a growing month raises every
    network's sign-ups together and leaves the share where it was. A network needs
    ``surge_base_min`` sign-ups away from the window to have a share at all: a /24 with
    three sign-ups, all in one week, has no history to surge over.

    A surge says that most of the window's sign-ups are excess, not which: the network's
    ordinary customers who signed up that week are in it too (a developer who rents the
    same proxy service). Each member is weighed by its chance of being excess given what
    it has been since (``_surge_posterior``: its level of use, main capability, plan and
    device zone, against the network's ordinary sign-ups): a cohort that has done little
    beside a background of heavy customers is nearly all excess, its heavy members are
    as likely the background's. Strength as for a burst, with that chance in place of
    the window's excess share: the Poisson surprise and the member's chance.
    """
    return pl.concat([_surges_by(acc, key, p) for key in SURGE_KEYS])


def _surges_by(acc: pl.DataFrame, key: str, p: LinkParams) -> pl.DataFrame:
    """``_surge_blocks`` with each account's network read from column ``key``."""
    # every sign-up is the accounts with a known sign-up network, whichever the count
    everyone = acc.drop_nulls(["signup_net"])
    keyed = everyone.drop_nulls([key]).with_columns(pl.col(key).alias("net"))
    if keyed.height < 2:
        return pl.DataFrame(schema=SURGE_SCHEMA)
    width = p.surge_days * 1440
    total = everyone.height
    base = keyed.group_by("net").agg(pl.len().alias("t_n"))
    cap = p.cap["creation"]
    out = []
    for offset in (0, width // 2):
        window = ((pl.col("minute") + offset) // width).alias("window")
        counted = keyed.with_columns(window)
        t_w = everyone.group_by(window).agg(pl.len().alias("t_w"))
        k = counted.group_by("window", "net").agg(pl.len().alias("k"))
        # the window and its two neighbours are left out of the share: a cohort that
        # spills over a window's edge is not its own history
        near_w = _around(t_w, "t_w", [])
        near_k = _around(k, "k", ["net"])
        cells = (
            k.join(t_w, on="window").join(base, on="net")
            .join(near_w, on="window").join(near_k, on=["window", "net"])
            .filter((pl.col("k") >= p.burst_min_size)
                    & (pl.col("t_n") - pl.col("near_k") >= p.surge_base_min)
                    & (pl.col("near_t_w") < total))
            .with_columns((pl.col("t_w") * (pl.col("t_n") - pl.col("near_k"))
                           / (total - pl.col("near_t_w"))).alias("lam"))
            .with_columns(_surprise("k").alias("surprise"))
            .filter(pl.col("k") > pl.col("lam"))
        )
        members = counted.join(cells.select("window", "net", "lam", "surprise"),
                               on=["window", "net"])
        share = _surge_posterior(counted, members, cells, p)
        blocks = members.join(share, on=["window", "net", "idx"]).with_columns(
            (cap * pl.col("excess") * (pl.col("surprise") / 10.0).clip(0.0, 1.0)).alias("s")
        ).filter(pl.col("s") >= p.min_block_strength)
        out.append(blocks.select(
            pl.struct(pl.lit(offset).alias("offset"), pl.lit("surge").alias("scale"), "window",
                      "net", pl.lit(key).alias("key")).hash(seed=5).alias("block"),
            pl.col("idx").cast(pl.Int32),
            "s",
            pl.col("lam").cast(pl.Float64),
            "net",
        ))
    return pl.concat(out)


def _surge_episodes(surges: pl.DataFrame, every_surge: pl.DataFrame, signups: pl.DataFrame,
                    p: LinkParams) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(members, stats): each member's episode (idx, episode, strong, minute of sign-up,
    *SURGE_TRAITS) and what each episode was (``_episode_stats``).

    An episode is the members of one network's strong surges (``surges``; counted either
    way, ``SURGE_KEYS``) whose sign-ups follow one another within ``surge_days``: an
    operation that registers its accounts through one rented service over weeks surges
    in several windows in a row. Episodes are numbered by network and first sign-up.
    The network's weaker surge members (of ``every_surge``) that signed up within
    ``surge_days`` of an episode are its members too, with ``strong`` false: the surge
    leaves them in doubt (``fleets.surge_homes`` weighs them apart)."""
    members = surges.select("idx", "net").unique().join(
        signups.select("idx", "minute", *SURGE_TRAITS), on="idx")
    width = p.surge_days * 1440
    gap = pl.col("minute").diff().over("net").fill_null(0) > width
    members = members.sort("net", "minute", "idx").with_columns(
        gap.cum_sum().over("net").alias("_run")).with_columns(
        pl.struct("net", "_run").rank("dense").cast(pl.Int64).alias("episode"))
    spans = members.group_by("episode").agg(
        pl.col("net").first().alias("network"), pl.col("minute").min().alias("start"),
        pl.col("minute").max().alias("end")).sort("episode")
    doubt = (every_surge.select("idx", "net").unique()
             .join(members.select("idx", "net"), on=["idx", "net"], how="anti")
             .join(signups.select("idx", "minute", *SURGE_TRAITS), on="idx")
             .join(spans, left_on="net", right_on="network")
             .filter(pl.col("minute").is_between(pl.col("start") - width, pl.col("end") + width)))
    out = pl.concat([
        members.select("idx", "episode", pl.lit(True).alias("strong"), "minute", *SURGE_TRAITS),
        doubt.select("idx", "episode", pl.lit(False).alias("strong"), "minute", *SURGE_TRAITS)])
    return out.sort("episode", "idx"), _episode_stats(spans, signups, p)


def _counted_networks(signups: pl.DataFrame) -> pl.DataFrame:
    """(idx, minute, net): each account (with a known sign-up network) on each network
    that counts it among its sign-ups, by either count of ``SURGE_KEYS``."""
    everyone = signups.drop_nulls(["signup_net"])
    return pl.concat([everyone.select("idx", "minute", pl.col(key).alias("net"))
                      for key in SURGE_KEYS]).drop_nulls("net").unique(["idx", "net"])


def _episode_stats(spans: pl.DataFrame, signups: pl.DataFrame, p: LinkParams
                   ) -> pl.DataFrame:
    """One row per episode of ``spans`` (episode, network, start, end: ``_surge_episodes``):
    its network, first and last sign-up minute, the network's new
    accounts in that span (signed up through it, or mostly using it since: either count of
    ``SURGE_KEYS``), how many its share of every sign-up away from the span (and
    ``surge_days`` either side) predicts, and the Poisson odds of as many: what an analyst
    quotes (``EPISODE_SCHEMA``)."""
    if not spans.height:
        return pl.DataFrame(schema=EPISODE_SCHEMA)
    every = np.sort(signups.drop_nulls(["signup_net"])["minute"].to_numpy())
    own = {net: np.sort(part["minute"].to_numpy())
           for (net,), part in _counted_networks(signups).group_by("net")}
    margin = p.surge_days * 1440

    def within(x: np.ndarray, lo: int, hi: int) -> int:
        """How many of the sorted minutes ``x`` fall in [lo, hi]."""
        return int(np.searchsorted(x, hi, side="right") - np.searchsorted(x, lo))

    rows = []
    for row in spans.iter_rows(named=True):
        mine = own[row["network"]]
        k = within(mine, row["start"], row["end"])
        near_n = within(mine, row["start"] - margin, row["end"] + margin)
        near_all = within(every, row["start"] - margin, row["end"] + margin)
        away = len(every) - near_all
        lam = within(every, row["start"], row["end"]) * (len(mine) - near_n) / away if away else 0.0
        rows.append((row["episode"], row["network"], row["start"], row["end"], k, lam))
    stats = pl.DataFrame(rows, schema={c: EPISODE_SCHEMA[c] for c in list(EPISODE_SCHEMA)[:5]}
                         | {"lam": pl.Float64}, orient="row")
    chance = pl.when((pl.col("lam") > 0) & (pl.col("signups") > pl.col("lam"))).then(
        _surprise("signups") / np.log(10.0)).otherwise(0.0)
    return stats.select(*list(EPISODE_SCHEMA)[:5], pl.col("lam").alias("expected"),
                        chance.alias("log10_chance"))


def _around(counts: pl.DataFrame, column: str, keys: list[str]) -> pl.DataFrame:
    """(window, *keys, near_<column>): ``column`` summed over each window and its two
    neighbours."""
    shifted = pl.concat([counts.with_columns(pl.col("window") + d) for d in (-1, 0, 1)])
    return shifted.group_by("window", *keys).agg(pl.col(column).sum().alias(f"near_{column}"))


def _surge_posterior(counted: pl.DataFrame, members: pl.DataFrame, cells: pl.DataFrame,
                     p: LinkParams) -> pl.DataFrame:
    """(window, net, idx, excess): each surge member's chance of being the excess
    rather than one of the network's ordinary sign-ups (see ``_surge_blocks``).

    Naive Bayes over ``SURGE_TRAITS``, pooled over a network's surges. The prior odds are
    the surges' excess against the ordinary sign-ups they expect (sum of k - lambda against
    sum of lambda). For each trait, the ordinary mix is the network's sign-ups in windows
    where it signed up no more than its share (the population's where it has fewer than
    ``surge_base_min``), add-one smoothed; the excess's mix is what the members hold beyond
    lambda times that (plus a half count, so that no value is impossible).
    """
    ordinary = counted.join(members.select("window", "net"), on=["window", "net"],
                            how="anti")
    lam = cells.group_by("net").agg(pl.col("lam").sum().alias("lam"))
    prior = members.group_by("net").agg(pl.len().alias("k")).join(lam, on="net")
    out = members.select("window", "net", "idx").join(prior.select(
        "net",
        ((pl.col("k") - pl.col("lam")).clip(lower_bound=0.5) / pl.col("lam")).log().alias("logit"),
    ), on="net")
    n_own = ordinary.group_by("net").agg(pl.len().alias("n_own"))
    for trait in SURGE_TRAITS:
        values = max(counted[trait].n_unique(), 1)
        own = ordinary.group_by("net", trait).agg(pl.len().alias("o"))
        population = ordinary.group_by(trait).agg(
            (pl.len() / max(ordinary.height, 1)).alias("f_all"))
        odds = (
            members.group_by("net", trait).agg(pl.len().alias("c"))
            .join(own, on=["net", trait], how="left")
            .join(n_own, on="net", how="left").join(population, on=trait, how="left")
            .join(lam, on="net")
            .with_columns(pl.when(pl.col("n_own").fill_null(0) >= p.surge_base_min)
                          .then((pl.col("o").fill_null(0) + 1.0) / (pl.col("n_own") + values))
                          .otherwise(pl.col("f_all").fill_null(1.0 / values)).alias("f_ordinary"))
            .with_columns(((pl.col("c") - pl.col("lam") * pl.col("f_ordinary")).clip(lower_bound=0.0)
                           + 0.5).alias("excess"))
            .with_columns((pl.col("excess") / pl.col("excess").sum().over("net"))
                          .alias("f_excess"))
            .select("net", trait,
                    (pl.col("f_excess").log() - pl.col("f_ordinary").log()).alias("llr"))
        )
        out = (out.join(members.select("window", "net", "idx", trait),
                        on=["window", "net", "idx"])
               .join(odds, on=["net", trait], how="left")
               .with_columns(pl.col("logit") + pl.col("llr").fill_null(0.0))
               .drop(trait, "llr"))
    return out.select("window", "net", "idx",
                      (1.0 / (1.0 + (-pl.col("logit")).exp())).alias("excess"))


def _surprise(count: str) -> pl.Expr:
    """The Poisson surprise (in nats) of ``count`` where about ``lam`` were expected:
    k log(k / lambda) - k + lambda, the log of the likelihood ratio of rate k to lambda."""
    k = pl.col(count)
    return k * (k / pl.col("lam")).log() - k + pl.col("lam")


def _empty_blocks() -> pl.DataFrame:
    return pl.DataFrame(schema={"block": pl.UInt64, "idx": pl.Int32, "s": pl.Float64,
                                "lam": pl.Float64})


def _creation_evidence(bursts: pl.DataFrame, p: LinkParams) -> pl.DataFrame:
    """(a, b, family, s) for accounts created in one burst with the same email pattern."""
    if not bursts.height:
        return _empty_rows()
    members = bursts.select("block", "idx", "s", pl.lit(0).alias("first_seen"),
                            pl.lit(0).alias("last_seen"))
    pairs = window_pairs(members, p.window)
    return pairs.select("a", "b", _family("creation"), "s")


def _signup_networks(graph: PropertyGraph, index: pl.DataFrame) -> pl.DataFrame:
    """(idx, net): the network each account signed up through, named as the lockstep
    step names networks (``stages.activity.network_of``: the proxy provider of a known
    exit, else the ASN, else the /24), so a sign-up burst and a batch's network agree."""
    return (graph.uses.filter(pl.col("kind") == "signup_ip")
            .join(network_of(graph.ips, graph.proxies), left_on="entity_id", right_on="ip")
            .group_by("account_id").agg(pl.col("network").min().alias("net"))
            .join(index, on="account_id").select("idx", "net"))


def _proxy_of_use(graph: PropertyGraph, feats: pl.DataFrame) -> pl.DataFrame:
    """(account_id, use_net): the proxy service that carries more than half of an
    account's requests (``ip_req`` of ``feats``; named as ``_signup_networks`` names it),
    for the accounts that have one.

    Lists of proxy exits are never complete: an operator registers its accounts through
    the service it rents, but some of them from exits that nobody has marked, and those
    count among an ISP's sign-ups. What they have done since tells: most of their requests
    went through the service's marked exits (``_surge_blocks`` counts the accounts of each
    service a second time, by this)."""
    exits = graph.ips.filter(pl.col("proxy_id").is_not_null()).join(
        graph.proxies.select("proxy_id", "provider"), on="proxy_id").select(
        "ip", proxy_network(pl.col("provider")).alias("use_net"))
    requests = (graph.uses.filter(pl.col("kind") == "ip")
                .join(exits, left_on="entity_id", right_on="ip")
                .group_by("account_id", "use_net").agg(pl.col("count").sum())
                .join(feats.select("account_id", "ip_req"), on="account_id"))
    return requests.filter(pl.col("count") > 0.5 * pl.col("ip_req")).select(
        "account_id", "use_net")


def _burst_network_evidence(graph: PropertyGraph, signup: pl.DataFrame, bursts: pl.DataFrame,
                            p: LinkParams, unused_ends: int = 2) -> pl.DataFrame:
    """(a, b, family, s): members of one sign-up burst who signed up through one network.

    A network here is the sign-up network (``signup``: ``_signup_networks``; a surge's own,
    where ``bursts`` are a surge's, and then ``signup`` holds both counts of each
    network's accounts, ``SURGE_KEYS``). Two ordinary
    users share a mid-sized ISP by chance, so a pair is no evidence; m of a
    burst's k members on a network that carries a share ``q`` of all sign-ups,
    where about k * q were expected, is, with the same Poisson surprise as the
    burst itself. This is network evidence, kept apart from the creation
    family: it gives accounts that have done nothing yet (a batch registered
    through a rented proxy) a second family besides their sign-up time, and
    only among them.
    """
    if not bursts.height:
        return _empty_rows()
    if not signup.height:
        return _empty_rows()
    share = signup.group_by("net").agg((pl.len() / graph.accounts.height).alias("q"))
    sizes = bursts.group_by("block").agg(pl.len().alias("k"))
    # a surge's members are on its network by construction (either count: ``SURGE_KEYS``)
    members = (bursts.select("block", "idx", "net") if "net" in bursts.columns
               else bursts.select("block", "idx").join(signup, on="idx")).join(share, on="net")
    cap = p.cap["network"]
    blocks = (
        members.group_by("block", "net")
        .agg(pl.len().alias("m"), pl.col("q").first())
        .join(sizes, on="block")
        .filter(pl.col("m") >= p.burst_min_size)
        .with_columns((pl.col("k") * pl.col("q")).alias("lam"))
        .with_columns(_surprise("m").alias("surprise"))
        .with_columns(
            (cap * (1.0 - pl.col("lam") / pl.col("m")).clip(0.0, 1.0)
             * (pl.col("surprise") / 10.0).clip(0.0, 1.0)).alias("s"))
        .filter(pl.col("s") >= p.min_block_strength)
    )
    grouped = members.join(blocks.select("block", "net", "s"), on=["block", "net"]).select(
        pl.struct("block", "net").hash(seed=9).alias("block"), "idx", "s",
        pl.lit(0).alias("first_seen"), pl.lit(0).alias("last_seen"))
    pairs = window_pairs(grouped, p.window)
    # Only between accounts that have done (almost) nothing yet (``unused_ends`` of the
    # two; 0 for a cohort, whose used members were chosen by how sure the surge is of
    # them): active accounts have their own traffic to link them.
    dormant = _dormant(graph, p)
    unused = pl.col("a").is_in(dormant).cast(pl.Int32) + pl.col("b").is_in(dormant).cast(pl.Int32)
    return pairs.filter(unused >= unused_ends).select("a", "b", _family("network"), "s")


def _timing_candidates(graph: PropertyGraph, p: LinkParams) -> pl.DataFrame:
    """Candidate pairs whose active-minute MinHash signatures agree in a band.

    These carry no strength themselves: the timing strength of every candidate
    pair, whatever block produced it, is computed later from the signatures. So
    only which pairs come out counts (``_combine`` drops the repeats), not their
    order: all bands are blocked at once, members sorted by band, block and the
    hash ``window_pairs`` ranks them by, and the pairs up to ``window`` apart in that
    order taken in numpy (a group-by, a join and ``window_pairs`` per band were about
    4 s at 1M accounts).
    """
    acc = graph.accounts.with_row_index("idx").filter(
        (pl.col("active_minutes") >= p.min_minutes) & pl.col("minute_sig").is_not_null()
    )
    if acc.height < 2:
        return _empty_rows()
    sig = list_matrix(acc["minute_sig"], MINHASH_K, -1)
    idx = acc["idx"].cast(pl.Int32).to_numpy()
    bands = MINHASH_K // p.lsh_rows
    band_parts: list[np.ndarray] = []
    block_parts: list[np.ndarray] = []
    idx_parts: list[np.ndarray] = []
    for band in range(bands):
        cols = sig[:, band * p.lsh_rows:(band + 1) * p.lsh_rows]
        key = np.zeros(len(idx), dtype=np.uint64)
        for j in range(cols.shape[1]):
            key = key * np.uint64(1_000_003) + cols[:, j].astype(np.uint64)
        # blocks of 2 to max_block members, the members kept in row order
        order = np.argsort(key)
        sizes = np.diff(_run_starts(key[order]), append=len(key))
        kept = np.sort(order[np.repeat((sizes >= 2) & (sizes <= p.max_block), sizes)])
        band_parts.append(np.full(len(kept), band, dtype=np.int32))
        block_parts.append(key[kept])
        idx_parts.append(idx[kept])
    members = pl.DataFrame({"band": np.concatenate(band_parts), "block": np.concatenate(block_parts),
                            "idx": np.concatenate(idx_parts)}).with_columns(
        # the order window_pairs ranks a block's members by (ties in row order)
        _window_order().alias("r")
    ).sort("band", "block", "r", maintain_order=True)
    band_sorted = members["band"].to_numpy()
    block_sorted = members["block"].to_numpy()
    idx_sorted = members["idx"].to_numpy()
    a, b = [], []
    for d in range(1, p.window + 1):
        same = (band_sorted[d:] == band_sorted[:-d]) & (block_sorted[d:] == block_sorted[:-d])
        first, second = idx_sorted[:-d][same], idx_sorted[d:][same]
        a.append(np.minimum(first, second))
        b.append(np.maximum(first, second))
    return pl.DataFrame({"a": np.concatenate(a).astype(np.int32),
                         "b": np.concatenate(b).astype(np.int32)}).select(
        "a", "b", _family("timing"), pl.lit(0.0).alias("s"))


def _run_starts(values: np.ndarray) -> np.ndarray:
    """Where each run of equal values starts in a sorted array."""
    new = np.empty(len(values), dtype=bool)
    new[:1] = True
    np.not_equal(values[1:], values[:-1], out=new[1:])
    return np.flatnonzero(new)


def _num(value: object) -> float:
    """A polars scalar aggregate as a float (0.0 for an empty column)."""
    return float(value) if isinstance(value, int | float) else 0.0


FAMILY = pl.Enum(FAMILIES)


def _family(name: str) -> pl.Expr:
    """A family label that costs a byte per row, not a string (tens of millions of rows)."""
    return pl.lit(name, dtype=FAMILY).alias("family")


def _empty_rows() -> pl.DataFrame:
    return pl.DataFrame(
        schema={"a": pl.Int32, "b": pl.Int32, "family": FAMILY, "s": pl.Float64}
    )


def _combine(rows: pl.DataFrame, p: LinkParams) -> pl.DataFrame:
    """One row per pair, one strength per family: the strongest entity plus a bonus.

    A pair and a family are one integer key, ``((a << 32) | b) * len(FAMILIES) +
    family``, whose order is the (a, b) order: the grouping is on one column and the
    wide table is filled in numpy (a pivot and a sort of 13M pairs were a third of the
    stage at 1M accounts). Rows of strength 0 (the timing candidates) only propose
    their pair: the family is worth 0 either way. The family column comes as an Enum
    (``infer_links``), not as strings to code again.
    """
    width = len(FAMILIES)
    rows = rows.filter(pl.col("a") != pl.col("b"))
    a = rows["a"].cast(pl.Int32).to_numpy()
    b = rows["b"].cast(pl.Int32).to_numpy()
    if len(a) and int(a.max()) >= 1 << 28:
        raise ValueError("pair keys hold account rows below 2^28")
    pair = (a.astype(np.uint64) << np.uint64(32)) | b.astype(np.uint64)
    strength = rows["s"].cast(pl.Float64).to_numpy()
    zero = strength == 0.0
    family = rows["family"].cast(FAMILY).to_physical().to_numpy()
    key = pair[~zero] * np.uint64(width) + family[~zero].astype(np.uint64)
    per_family = pl.DataFrame({"key": key, "s": strength[~zero]}).group_by("key").agg(
        pl.col("s").max().alias("top"), pl.col("s").sum().alias("total")).sort("key")
    key = per_family["key"].to_numpy()
    top = per_family["top"].to_numpy()
    total = per_family["total"].to_numpy()
    fam = (key % np.uint64(width)).astype(np.int64)
    cap = np.array([p.cap[f] for f in FAMILIES])
    value = np.minimum(top + p.same_family_bonus * (total - top), cap[fam])
    pairs = pl.Series(np.concatenate([key // np.uint64(width), pair[zero]])).unique().sort()
    pairs_np = pairs.to_numpy()
    # the keys are sorted: numpy's search starts each one where the last ended
    at = np.searchsorted(pairs_np, key // np.uint64(width))
    columns: dict[str, np.ndarray] = {"a": (pairs_np >> np.uint64(32)).astype(np.int32),
               "b": (pairs_np & np.uint64(0xFFFFFFFF)).astype(np.int32)}
    for i, name in enumerate(FAMILIES):
        # one column at a time (polars takes the arrays as they are): no wide copy
        column = np.zeros(len(pairs_np))
        mine = fam == i
        column[at[mine]] = value[mine]
        columns[f"s_{name}"] = column
    return pl.DataFrame(columns)


@dataclass
class PairTables:
    """The per-account tables the pairwise families read (``_add_pairwise_families``).

    Built once per run: the candidate pairs and the sign-up batches' pairs are scored
    against the same signatures, null and profiles, which cost seconds at 1M accounts.
    """

    n_min: np.ndarray      # active minutes
    sig: np.ndarray        # minute signatures (int32: minima mod 2^31 - 1, -1 for none)
    null: TimingNull
    hours: np.ndarray      # hour histograms as unit vectors
    caps: np.ndarray       # capability mixes as unit vectors
    exchanges: np.ndarray
    tz_code: np.ndarray    # modal device time zone (-1 if none)
    tz_rarity: np.ndarray

    @classmethod
    def of(cls, graph: PropertyGraph, p: LinkParams, feats: pl.DataFrame) -> PairTables:
        """The tables of ``graph``'s accounts; ``feats`` (``features.account_features``)
        gives their device time zones."""
        acc = graph.accounts
        n_min = acc["active_minutes"].fill_null(0).to_numpy().astype(np.int64)
        # Minima of hashes mod 2^31 - 1 (and -1 for none) fit int32 exactly: half the
        # bytes to gather for millions of pairs.
        sig = list_matrix(acc["minute_sig"], MINHASH_K, -1).astype(np.int32)
        tz_code, tz_rarity = _timezones(graph, feats)
        return cls(n_min=n_min, sig=sig, null=TimingNull.fit(sig, n_min, p, seed=p.null_seed),
                   hours=_normalised(acc["hours"], 24), caps=_normalised(acc["capabilities"], 6),
                   exchanges=acc["exchanges"].fill_null(0).to_numpy(),
                   tz_code=tz_code, tz_rarity=tz_rarity)


def _add_pairwise_families(scored: pl.DataFrame, t: PairTables, p: LinkParams,
                           chunk: int = 1 << 18) -> pl.DataFrame:
    """Timing and profile strengths for every candidate pair, from per-account features.

    Pairs are taken ``chunk`` at a time: a dozen temporaries of 13M pairs (1M accounts)
    were each about 100 MB of fresh memory, which costs more to fault in than to compute.
    """
    if not scored.height:
        return scored
    a = scored["a"].to_numpy()
    b = scored["b"].to_numpy()
    timing = np.empty(len(a))
    profile = np.empty(len(a))
    for i in range(0, len(a), chunk):
        timing[i:i + chunk], profile[i:i + chunk] = _pair_strengths(
            t, a[i:i + chunk], b[i:i + chunk], p)
    return scored.with_columns(
        pl.max_horizontal(pl.col("s_timing"), pl.Series(timing)).alias("s_timing"),
        pl.Series("s_profile", profile),
    )


def _pair_strengths(t: PairTables, a: np.ndarray, b: np.ndarray, p: LinkParams
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(timing, profile) strengths of the pairs (a, b)."""
    matches = _rowwise(_equal_count, t.sig, a, b)
    na, nb = t.n_min[a], t.n_min[b]
    # Timing counts only for two active accounts agreeing on a hash: the surprise is
    # computed for those pairs alone (a third of the pairs at 1M have no match).
    live = np.flatnonzero((np.minimum(na, nb) >= p.min_minutes) & (matches > 0))
    surprise = t.null.surprise(matches[live], na[live], nb[live])
    timing = np.zeros(len(a))
    timing[live] = p.cap["timing"] * np.clip((surprise - p.timing_from) / p.timing_span,
                                             0.0, 1.0)

    active = np.minimum(t.exchanges[a], t.exchanges[b]) >= 10
    # Habits count only between two active accounts: gather the rows for those pairs only.
    hcos = np.zeros(len(a))
    ccos = np.zeros(len(a))
    on = np.flatnonzero(active)
    hcos[on] = _rowwise(_dot, t.hours, a[on], b[on])
    ccos[on] = _rowwise(_dot, t.caps, a[on], b[on])
    same_tz = (t.tz_code[a] == t.tz_code[b]) & (t.tz_code[a] >= 0)
    profile = p.cap["profile"] * (
        0.35 * np.clip((hcos - 0.6) / 0.4, 0.0, 1.0) * active
        + 0.25 * np.clip((ccos - 0.7) / 0.3, 0.0, 1.0) * active
        + 0.4 * np.where(same_tz, t.tz_rarity[a], 0.0)
    )
    return timing, profile


def _equal_count(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """How many entries of each row pair are equal."""
    return np.count_nonzero(x == y, axis=1)


def _dot(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Row-wise dot products (overwrites ``x``, a scratch buffer)."""
    return np.multiply(x, y, out=x).sum(axis=1)


def _rowwise(
    fn: Callable[[np.ndarray, np.ndarray], np.ndarray], rows: np.ndarray, a: np.ndarray,
    b: np.ndarray, chunk: int = 8192,
) -> np.ndarray:
    """``fn`` over the rows of ``rows`` gathered for each pair (a, b), a few thousand pairs at
    a time into two reused buffers that stay in cache: gathering millions of rows at once
    spent most of its time writing (and faulting in) fresh memory."""
    out = np.empty(0)
    width = rows.shape[1]
    ra = np.empty((min(chunk, len(a)), width), dtype=rows.dtype)
    rb = np.empty_like(ra)
    if not len(a):
        return fn(ra, rb)
    for i in range(0, len(a), chunk):
        k = min(chunk, len(a) - i)
        np.take(rows, a[i:i + k], axis=0, out=ra[:k], mode="clip")
        np.take(rows, b[i:i + k], axis=0, out=rb[:k], mode="clip")
        part = fn(ra[:k], rb[:k])
        if i == 0:
            out = np.empty(len(a), dtype=part.dtype)
        out[i:i + k] = part
    return out


@dataclass
class TimingNull:
    """How often two *unrelated* accounts agree on k of the K minute hashes.

    Fitted on random account pairs of the same snapshot, binned by the product
    of their active-minute counts, so heavy users (who overlap with everybody)
    and the population's own diurnal rhythm set the bar, not a model of it.
    ``surprise`` is -log10 of the chance of at least that many matches.
    """

    edges: np.ndarray  # bin edges over log2(n_a * n_b)
    tail: np.ndarray   # [bin, k] -> P(matches >= k) under the null

    @classmethod
    def fit(cls, sig: np.ndarray, n_min: np.ndarray, p: LinkParams, *, seed: int) -> TimingNull:
        rng = np.random.default_rng(seed)
        active = np.flatnonzero(n_min >= p.min_minutes)
        edges = np.arange(0.0, 40.0, 1.0)
        tail = np.ones((len(edges) + 1, MINHASH_K + 2))
        if len(active) < 2:
            return cls(edges, tail)
        a = rng.choice(active, p.null_pairs)
        b = rng.choice(active, p.null_pairs)
        keep = a != b
        a, b = a[keep], b[keep]
        # Gathered a few thousand pairs at a time (``_rowwise``), counted by bincount:
        # the same integer counts as a 400k-row gather and ``np.add.at``, at a third of the time.
        m = _rowwise(_equal_count, sig, a, b)
        bins = np.digitize(np.log2(n_min[a] * n_min[b]), edges)
        counts = np.bincount(bins * (MINHASH_K + 1) + m, minlength=(len(edges) + 1) * (MINHASH_K + 1)
                             ).reshape(len(edges) + 1, MINHASH_K + 1).astype(np.float64)
        at_least = counts[:, ::-1].cumsum(axis=1)[:, ::-1]
        total = counts.sum(axis=1, keepdims=True)
        # Add-one smoothing: a bin never seen gives no evidence, never certainty.
        tail[:, : MINHASH_K + 1] = (at_least + 1.0) / (total + 1.0)
        return cls(edges, tail)

    def surprise(self, matches: np.ndarray, na: np.ndarray, nb: np.ndarray) -> np.ndarray:
        prod = np.maximum(na.astype(np.float64) * nb, 1.0)
        bins = np.digitize(np.log2(prod), self.edges)
        return -np.log10(self.tail[bins, np.clip(matches, 0, MINHASH_K)])


def _normalised(col: pl.Series, width: int) -> np.ndarray:
    """Rows of a list column as unit vectors (zeros where missing)."""
    values = list_matrix(col, width, 0).astype(np.float64)
    norm = np.linalg.norm(values, axis=1, keepdims=True)
    return np.divide(values, norm, out=np.zeros_like(values), where=norm > 0)


def _timezones(graph: PropertyGraph, feats: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Each account's most used device time zone (code, -1 if none) and its rarity."""
    acc = graph.accounts.select("account_id").join(
        feats.select("account_id", "timezone"), on="account_id", how="left")
    codes = acc["timezone"].cast(pl.Categorical).to_physical().fill_null(-1).to_numpy()
    share = acc.group_by("timezone").agg(pl.len().alias("c")).with_columns(
        (pl.col("c") / acc.height).alias("share")
    )
    rar = acc.join(share, on="timezone", how="left")["share"].fill_null(1.0).to_numpy()
    return codes.astype(np.int64), 1.0 - rar


def anchored(threshold: float) -> pl.Expr:
    """Whether a pair's evidence holds identity-level (card, device) or group-level
    (a lockstep block, a sign-up burst) evidence at ``threshold``.

    A crowd (developers behind the same proxy resellers, users of one popular
    tool, one throwaway mail service) shares networks, templates and domains
    and is anomalous together, with no one controlling it: those families may
    agree with each other on any pair of its members. Weak evidence makes a
    link only with one of these families among those agreeing.
    """
    return pl.any_horizontal([pl.col(f"s_{f}") >= threshold
                              for f in (*STRONG_FAMILIES, *SYNCHRONY_FAMILIES)])


def corroborating(threshold: float) -> pl.Expr:
    """How many families agree on a pair, counting a shared network only when something
    besides the lockstep block anchors the pair.

    A lockstep block is read off one network service at the minutes its members
    acted there; two of its members sharing that service's exits is the same
    observation again, not a second family. A bystander the block test let in (a
    developer renting the same proxy at the same hours) shares those exits with
    every member, so counting them twice would link it to all of them."""
    others = [f for f in (*STRONG_FAMILIES, *SYNCHRONY_FAMILIES) if f != "lockstep"]
    lockstep_only = ~pl.any_horizontal([pl.col(f"s_{f}") >= threshold for f in others])
    echo = (lockstep_only & (pl.col("s_lockstep") >= threshold)
            & (pl.col("s_network") >= threshold)).cast(pl.Int32)
    return families_agreeing(threshold) - echo


def _decide(scored: pl.DataFrame, p: LinkParams) -> pl.DataFrame:
    """Keep pairs with a strong identifier, or several families agreeing, one of them
    identity or synchrony (see ``anchored``)."""
    strong = pl.any_horizontal([pl.col(f"s_{f}") >= p.strong_threshold for f in STRONG_FAMILIES])
    out = scored.with_columns(
        corroborating(p.family_threshold).alias("families"), total_weight().alias("weight")
    )
    return out.filter(
        strong | ((pl.col("families") >= p.min_families) & (pl.col("weight") >= p.min_weight)
                  & anchored(p.family_threshold))
    )
