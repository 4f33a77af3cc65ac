"""Fleets: connected components of the inferred links, split by Louvain.

Components come first, so small fleets are never swallowed by big ones, and
Louvain (python-louvain's first pass, seeded, run over lists: ``_louvain_level0``)
runs only inside components large enough to hold more than one fleet. Louvain's
first dendrogram level is used (the final level suffers the resolution limit),
and because modularity also "finds" communities inside a uniformly linked
group, communities are merged back while the weight between them is not
clearly below what the configuration model expects: a real fleet boundary is a
near-absence of links, not a dip.
"""

from __future__ import annotations

from dataclasses import replace
from itertools import pairwise

import numpy as np
import polars as pl
from community import community_louvain
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.stats import chi2

from attribution.contracts.settings import FleetParams, LinkParams
from attribution.contracts.vocabulary import (
    IDENTITY_FAMILIES,
    KIND_FAMILY,
    STRENGTH_COLUMNS,
    total_weight,
)
from attribution.engine.linking import Links, anchored, corroborating
from attribution.engine.lockstep import ZONE


def place_accounts(links: Links, uses: pl.DataFrame, feats: pl.DataFrame, params: FleetParams,
                   link: LinkParams) -> tuple[pl.DataFrame, Links]:
    """The fleet stage: (membership: idx, fleet, attachment, belief; the links with the
    cohort edges the cohort fleets use).

    Strongest evidence first: fleets of the links (without the edges between two
    operations' own entities, ``crossed_edges``), their fragments merged by the operator
    entities they share, loners attached by evidence spread over a fleet (named by what
    they hold of one, ``own_holdings``) and by their sign-up bursts (weighed by their
    hours and device zones, and named by what they hold). Then the pieces of one sign-up
    surge merge (``merge_surges``) before the surge's cohorts are placed
    (``cohort_fleets``): a cohort joins the fleet that
    holds most of its placed members, and an operation found in a dozen pieces holds none
    of them mostly, so its cohort would join another operator's fleet that shares the
    service's windows. The cohort fleets are compared with the rest after them.
    """
    edges = links.edges.join(crossed_edges(links, uses, params, link), on=["a", "b"], how="anti")
    membership = find_fleets(links.accounts.height, edges, params)
    membership = merge_fragments(membership, links.accounts, uses, params, feats, link,
                                 links.entities)
    holds = own_holdings(membership, links, uses, params, link)
    membership = attach_by_evidence(membership, links.near, link, holds=holds)
    zones = device_zones(links, feats)
    membership = attach_loners(membership, links.bursts, links.accounts.height, params,
                               links.hours, zones, holds)
    membership = merge_surges(membership, links, uses, params, link)
    membership, links = attach_cohort_by_identity(membership, links, params, link)
    membership, links = cohort_fleets(membership, links, params, zones,
                                      own_holdings(membership, links, uses, params, link))
    return merge_surges(membership, links, uses, params, link), links


def find_fleets(n_accounts: int, edges: pl.DataFrame, params: FleetParams) -> pl.DataFrame:
    """Label accounts with a fleet number.

    ``edges`` has a, b (account indices) and weight. Returns idx, fleet (an
    int, deterministic for the same input), attachment (the account's link
    weight inside its fleet), for accounts in fleets of two or more only.

    >>> e = pl.DataFrame({"a": [0, 1, 3], "b": [1, 2, 4], "weight": [3.0, 3.0, 2.0]})
    >>> find_fleets(6, e, FleetParams()).sort("idx")["fleet"].to_list()
    [0, 0, 0, 1, 1]
    """
    if not edges.height:
        return pl.DataFrame(schema={"idx": pl.Int32, "fleet": pl.Int64, "attachment": pl.Float64})
    a = edges["a"].to_numpy().astype(np.int64)
    b = edges["b"].to_numpy().astype(np.int64)
    w = edges["weight"].to_numpy().astype(np.float64)
    comp = _components(a, b, n_accounts)
    labels = comp.astype(np.int64).copy()
    sizes = np.bincount(comp)
    next_label = int(comp.max()) + 1
    edge_comp = comp[a]
    big = np.flatnonzero(sizes >= params.louvain_min_size)
    order = np.argsort(edge_comp, kind="stable")
    bounds = np.searchsorted(edge_comp[order], [big, big + 1])
    # A node's edges all lie in its component, so one pass over every edge keeps the same.
    keep = _top_k(a, b, w, params.top_k_edges)
    for c, lo, hi in zip(big, bounds[0], bounds[1], strict=True):
        sel = order[lo:hi]
        parts = split_component(a[sel], b[sel], w[sel], keep[sel], params)
        for part in parts[1:]:
            labels[part] = next_label
            next_label += 1
        del c
    in_edge = np.zeros(n_accounts, dtype=bool)
    in_edge[a] = True
    in_edge[b] = True
    same = labels[a] == labels[b]
    attach = np.bincount(a[same], w[same], n_accounts) + np.bincount(b[same], w[same], n_accounts)
    frame = pl.DataFrame(
        {"idx": np.arange(n_accounts, dtype=np.int32), "raw": labels, "attachment": attach}
    ).filter(pl.Series(in_edge))
    frame = frame.with_columns(pl.len().over("raw").alias("size")).filter(pl.col("size") >= 2)
    # Renumber by the smallest member, so labels do not depend on component order.
    first = frame.group_by("raw").agg(pl.col("idx").min().alias("m")).sort("m")
    first = first.with_row_index("fleet").with_columns(pl.col("fleet").cast(pl.Int64))
    return frame.join(first.select("raw", "fleet"), on="raw").select(
        "idx", "fleet", "attachment"
    ).sort("idx")


def _components(a: np.ndarray, b: np.ndarray, n: int) -> np.ndarray:
    """The connected component of each of ``n`` nodes joined by the pairs (a[i], b[i])."""
    graph = coo_matrix((np.ones(len(a)), (a, b)), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def fleet_edges(edges: pl.DataFrame, membership: pl.DataFrame) -> pl.DataFrame:
    """The links whose two ends are in one fleet, with that fleet as ``fleet``."""
    fleet = membership.select("idx", "fleet")
    return edges.join(fleet.rename({"idx": "a"}), on="a").join(
        fleet.rename({"idx": "b", "fleet": "fb"}), on="b").filter(
        pl.col("fleet") == pl.col("fb")).drop("fb")


def split_component(
    a: np.ndarray, b: np.ndarray, w: np.ndarray, keep: np.ndarray, params: FleetParams
) -> list[np.ndarray]:
    """Louvain inside one component; returns the parts as arrays of account indices.

    Louvain sees the edges in ``keep`` (``_top_k``); the merge-back sees them all.
    The largest part comes first (it keeps the component's label).
    """
    nodes = np.unique(np.concatenate([a, b]))
    comm = _louvain_level0(nodes, a[keep], b[keep], w[keep], params.seed)
    comm = _merge_back(nodes, comm, a, b, w, params.merge_ratio, params.closed_share)
    parts = [nodes[comm == c] for c in np.unique(comm)]
    parts.sort(key=lambda p: (-len(p), int(p.min())))
    return parts


# python-louvain (pinned to 0.16) builds every level of the dendrogram; only the first
# is used. Its first pass is pure Python over a networkx graph: the same pass is run
# here over lists (``_louvain_level0``), step for step, so the partition is the one
# python-louvain gives (``tests/engine/test_fleets.py`` compares them), without the
# graph, its dict-of-dicts lookups, the induced graphs and the later passes.
_RENUMBER = getattr(community_louvain, "__renumber")
_MIN_GAIN = getattr(community_louvain, "__MIN")


def _louvain_level0(nodes: np.ndarray, a: np.ndarray, b: np.ndarray, w: np.ndarray,
                    seed: int) -> np.ndarray:
    """Level 0 of ``community_louvain.generate_dendrogram`` on the graph of ``nodes`` (sorted)
    and the edges (a, b, w) added in that order, as each node's community label.

    The same arithmetic in the same order as python-louvain's ``__one_level`` over an
    ``nx.Graph`` built with ``add_nodes_from(nodes)`` and ``add_weighted_edges_from``:
    neighbours in the order their edge first appeared (a repeated edge keeps its place
    and takes the later weight), weighted degrees summed in that order, the same calls
    to the seeded ``RandomState`` (a node order per pass, a neighbour-community order
    per node), and the same modularity test between passes.
    """
    n = len(nodes)
    ua = np.searchsorted(nodes, a).tolist()
    ub = np.searchsorted(nodes, b).tolist()
    adj: list[dict[int, float]] = [{} for _ in range(n)]
    for u, v, x in zip(ua, ub, w.tolist(), strict=True):
        adj[u][v] = x
        adj[v][u] = x
    neighbours = [list(d.items()) for d in adj]
    gdeg = [float(sum(x for _, x in nb) + (i in adj[i] and adj[i][i])) for i, nb in enumerate(neighbours)]
    loops = [float(adj[i].get(i, 0.0)) for i in range(n)]
    total = sum(gdeg) / 2
    node2com = list(range(n))
    degrees = list(gdeg)
    internals = list(loops)
    rng = community_louvain.check_random_state(seed)

    def modularity() -> float:
        links = float(total)
        result = 0.0
        for com in set(node2com):
            if links > 0:
                result += internals[com] * 1.0 / links - ((degrees[com] / (2.0 * links)) ** 2)
        return result

    modified = True
    new_mod = modularity()
    while modified:
        cur_mod = new_mod
        modified = False
        order = list(range(n))
        rng.shuffle(order)
        for node in order:
            com_node = node2com[node]
            degc_totw = gdeg[node] / (total * 2.0)
            neigh: dict[int, float] = {}
            for nb, x in neighbours[node]:
                if nb != node:
                    c = node2com[nb]
                    neigh[c] = neigh.get(c, 0) + x
            remove_cost = -neigh.get(com_node, 0) + 1.0 * (degrees[com_node] - gdeg[node]) * degc_totw
            degrees[com_node] = degrees[com_node] - gdeg[node]
            internals[com_node] = float(internals[com_node] - neigh.get(com_node, 0.0) - loops[node])
            node2com[node] = -1
            best_com = com_node
            best_increase: float = 0
            items = list(neigh.items())
            rng.shuffle(items)
            for com, dnc in items:
                incr = remove_cost + dnc - 1.0 * degrees[com] * degc_totw
                if incr > best_increase:
                    best_increase = incr
                    best_com = com
            node2com[node] = best_com
            degrees[best_com] = degrees[best_com] + gdeg[node]
            internals[best_com] = float(internals[best_com] + neigh.get(best_com, 0.0) + loops[node])
            if best_com != com_node:
                modified = True
        new_mod = modularity()
        if new_mod - cur_mod < _MIN_GAIN:
            break
    level0: dict[int, int] = _RENUMBER(dict(zip(nodes.tolist(), node2com, strict=True)))
    return np.array([level0[int(v)] for v in nodes], dtype=np.int64)


def _top_k(a: np.ndarray, b: np.ndarray, w: np.ndarray, k: int) -> np.ndarray:
    """Edges among each endpoint's k strongest: keeps structure, bounds Louvain's work."""
    frame = pl.DataFrame({"e": np.arange(len(a)), "a": a, "b": b, "w": w})
    ends = pl.concat([
        frame.select("e", pl.col("a").alias("n"), "w"),
        frame.select("e", pl.col("b").alias("n"), "w"),
    ])
    ranked = ends.with_columns(
        pl.col("w").rank("ordinal", descending=True).over("n").alias("r")
    ).filter(pl.col("r") <= k)
    mask = np.zeros(len(a), dtype=bool)
    mask[ranked["e"].unique().to_numpy()] = True
    return mask


def _merge_back(
    nodes: np.ndarray, comm: np.ndarray, a: np.ndarray, b: np.ndarray, w: np.ndarray,
    ratio: float, closed: float,
) -> np.ndarray:
    """Merge communities whose mutual weight is near what chance predicts.

    The configuration model of a large, sparse component expects almost no weight
    between two small communities, so a single chance link (a company's CI bot in a
    cloud operation's lockstep block) already meets ``ratio``. In a uniformly linked
    group that is how Louvain's small pieces hang together (one link each, and a
    quarter or more of each piece's weight leaves it, measured on random graphs);
    a team keeps all but that one link inside. So two communities joined by a
    single link do not merge when the smaller of them (by weight) sends less than
    ``closed`` of its weight outside: it is a fleet already, and the link one
    coincidence. Uses all edges of the component (not only the top-k Louvain saw).
    ``nodes`` is sorted (``np.unique``); in numpy, since it runs once per component.
    """
    ia = np.searchsorted(nodes, a)
    ib = np.searchsorted(nodes, b)
    total = 2.0 * w.sum()
    comm = comm.copy()
    for _ in range(20):
        labels, inv = np.unique(comm, return_inverse=True)
        k = len(labels)
        ca, cb = inv[ia], inv[ib]
        vol = np.bincount(ca, w, k) + np.bincount(cb, w, k)
        cross = ca != cb
        if not cross.any():
            break
        lo = np.minimum(ca, cb)[cross]
        hi = np.maximum(ca, cb)[cross]
        pair, at = np.unique(lo * k + hi, return_inverse=True)
        wxy = np.bincount(at, w[cross], len(pair))
        nxy = np.bincount(at, minlength=len(pair))
        x, y = pair // k, pair % k
        score = wxy * total / (vol[x] * vol[y])
        outside = np.bincount(lo, w[cross], k) + np.bincount(hi, w[cross], k)
        small = np.where(vol[x] <= vol[y], x, y)
        stray = (nxy == 1) & (outside[small] < closed * vol[small])
        keep = (score >= ratio) & ~stray
        if not keep.any():
            break
        x, y, score = x[keep], y[keep], score[keep]
        # Merge the best pair for each community once per round (no chains in one round).
        used = np.zeros(k, dtype=bool)
        target = np.arange(k)
        for i in np.lexsort((y, x, -score)).tolist():
            if used[x[i]] or used[y[i]]:
                continue
            used[x[i]] = used[y[i]] = True
            target[y[i]] = x[i]
        comm = labels[target][inv]
    return comm


def device_zones(links: Links, feats: pl.DataFrame) -> pl.DataFrame | None:
    """(idx, zone): each account's device time zone where one is known (``feats``, the
    rows of ``features.account_features``), or None without them."""
    if "timezone" not in feats.columns:
        return None
    return links.accounts.join(feats.select("account_id", "timezone").drop_nulls(),
                               on="account_id").select("idx", pl.col("timezone").alias("zone"))


def attach_loners(
    membership: pl.DataFrame, bursts: pl.DataFrame, n_accounts: int, params: FleetParams,
    hours: pl.DataFrame | None = None, zones: pl.DataFrame | None = None,
    holds: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """Attach dormant accounts that formed no link (and any that use a fleet's own entity)
    to the fleet they were created with.

    A new or dormant account often has nothing yet but its sign-up: created in
    the same burst, with the same email pattern, as several accounts of one
    fleet. One weak family never *forms* a fleet, but a burst whose placed
    members are mostly one fleet (formed on other evidence) attaches its
    dormant loners to it, each with a ``belief``: the chance it is the
    operation's rather than an ordinary sign-up that fell into the window.
    About ``lam`` ordinary sign-ups were expected in the burst's window, and
    ordinary accounts are loners at the population's rate, so of the burst's
    ``n`` loners about ``lam * loner_rate`` are bystanders. In a small world
    that is nearly none; among millions it can be most of them, and then the
    loners stay out.

    "Mostly one fleet" is the chance that a loner that is one of the operations'
    is that fleet's: the fleet's share of the burst's placed members, and where
    ``hours`` (``Links.hours``) say when the loner acts, that share updated by how
    likely its hours are under each fleet's (``_hour_likelihood``). Two operators
    renting one service sign up in the same weeks but work their accounts on their
    own schedules. ``zones`` (``device_zones``) update it the same way by the loner's
    device time zone under each fleet's mix of zones: each operator leaks or spoofs its
    own. A loner that has not acted, or shows no zone, keeps the share.

    ``holds`` (loner, fleet: ``own_holdings``) names the fleets whose own entities a
    loner uses, as in ``attach_by_evidence``: such a loner is weighed among the burst's
    fleets it holds something of alone, and one holding none of them attaches nowhere
    (what it holds says the burst's fleets are not its operator's). The sign-up and the
    fleet's own template (card, device) are two families agreeing, one of them
    synchrony, so a holder need not be dormant, and it is not discounted as a bystander:
    an ordinary sign-up that fell in the window does not use the operator's own
    entities (that is what makes them its own: ``_touches``).

    ``membership`` gains ``belief`` (1.0 for linked members) unless it has one.
    """
    if "belief" not in membership.columns:  # (a second call keeps the first's beliefs)
        membership = membership.with_columns(pl.lit(1.0).alias("belief"))
    if not bursts.height or not membership.height:
        return membership
    loner_rate = 1.0 - membership.height / max(n_accounts, 1)
    fleet_of = membership.select("idx", "fleet")
    members = bursts.join(fleet_of, on="idx", how="left")
    placed = members.filter(pl.col("fleet").is_not_null())
    per_fleet = (placed.group_by("block", "fleet").agg(pl.len().alias("n"))
                 .with_columns(pl.col("n").sum().over("block").alias("placed")))
    loners = members.filter(pl.col("fleet").is_null())
    n_loners = loners.group_by("block").agg(pl.len().alias("n_loners"))
    options = loners.drop("fleet").join(per_fleet, on="block").join(n_loners, on="block")
    held = pl.DataFrame(schema={"idx": options.schema["idx"], "fleet": options.schema["fleet"]})
    if holds is not None:
        held = holds.select(pl.col("loner").alias("idx"), "fleet").cast(held.schema)
    holder = pl.col("idx").is_in(held["idx"].implode())
    options = pl.concat([options.filter(pl.col("dormant") & ~holder),
                         options.join(held, on=["idx", "fleet"], how="semi")])
    pairs = options.select("idx", "fleet").unique()
    fits = []
    if hours is not None and hours.height:
        fits.append(_hour_likelihood(pairs, fleet_of, hours))
    if zones is not None and zones.height:
        fits.append(_zone_likelihood(pairs, fleet_of, zones))
    options = options.with_columns(pl.lit(0.0).alias("log_l"))
    for fit in fits:
        options = options.join(fit.rename({"log_l": "fit"}), on=["idx", "fleet"], how="left") \
            .with_columns(pl.col("log_l") + pl.col("fit").fill_null(0.0)).drop("fit")
    # the share times the likelihood, over the same for every fleet of the burst
    weight = pl.col("n") * (pl.col("log_l") - pl.col("log_l").max().over("idx", "block")).exp()
    candidates = (
        options.with_columns((weight / weight.sum().over("idx", "block")).alias("share"))
        .filter((pl.col("n") >= params.attach_links) & (pl.col("share") >= params.attach_share))
        .with_columns(
            (pl.col("share") * pl.when(holder).then(1.0).otherwise(
                (1.0 - pl.col("lam") * loner_rate / pl.col("n_loners")).clip(0.0, 1.0))
             ).alias("belief"),
            (pl.col("n") * pl.col("s")).alias("attachment"),
        )
        .filter(pl.col("belief") >= params.attach_belief)
        .sort(["idx", "belief", "attachment", "fleet"], descending=[False, True, True, False])
        .group_by("idx", maintain_order=True).first()
    )
    added = candidates.select(
        pl.col("idx").cast(pl.Int32), "fleet", "attachment", pl.col("belief").cast(pl.Float64))
    return pl.concat([membership, added]).sort("idx")


# A fleet's schedule starts as one member active at every hour alike (a twenty-fourth
# of a member per hour): an hour none of its members was seen in is unlikely for it,
# not impossible, and a fleet of three is less sure of its hours than one of three
# hundred.
HOUR_PRIOR = 1.0 / 24


def _hour_likelihood(options: pl.DataFrame, fleet_of: pl.DataFrame, hours: pl.DataFrame
                     ) -> pl.DataFrame:
    """(idx, fleet, log_l): the natural log of the chance of the loner's active hours
    (``hours``: idx, hour, sessions) under the fleet's schedule, for each pair of
    ``options`` (idx, fleet).

    A fleet's schedule is the mean over its members with known hours of each one's
    share of sessions per hour (each member counts once, a busy one no more), with
    ``HOUR_PRIOR`` pseudo-sessions per hour; a loner's sessions are independent draws
    from it (a multinomial; its coefficient is the same for every fleet and cancels).
    """
    placed = hours.join(fleet_of, on="idx")
    schedule = (
        placed.with_columns((pl.col("sessions") / pl.col("sessions").sum().over("idx")).alias("w"))
        .group_by("fleet", "hour").agg(pl.col("w").sum())
    )
    known = placed.group_by("fleet").agg(pl.col("idx").n_unique().alias("k"))
    return (
        options.join(hours, on="idx")
        .join(schedule, on=["fleet", "hour"], how="left").join(known, on="fleet", how="left")
        .with_columns(((pl.col("w").fill_null(0.0) + HOUR_PRIOR)
                       / (pl.col("k").fill_null(0) + 24 * HOUR_PRIOR)).log().alias("lp"))
        .group_by("idx", "fleet").agg((pl.col("sessions") * pl.col("lp")).sum().alias("log_l"))
    )


def _zone_likelihood(options: pl.DataFrame, fleet_of: pl.DataFrame, zones: pl.DataFrame
                     ) -> pl.DataFrame:
    """(idx, fleet, log_l): the natural log of the chance of the loner's device zone
    (``zones``: idx, zone) under the fleet's mix of its members' zones, for each pair of
    ``options`` (idx, fleet) whose loner shows one. As for hours (``_hour_likelihood``),
    one pseudo-member is spread over every zone seen, so a zone none of a fleet's members
    showed is unlikely for it, not impossible."""
    values = max(zones["zone"].n_unique(), 1)
    placed = zones.join(fleet_of, on="idx")
    mix = placed.group_by("fleet", "zone").agg(pl.len().alias("c"))
    known = placed.group_by("fleet").agg(pl.len().alias("k"))
    return (
        options.join(zones, on="idx")
        .join(mix, on=["fleet", "zone"], how="left").join(known, on="fleet", how="left")
        .select("idx", "fleet", ((pl.col("c").fill_null(0) + 1.0 / values)
                                 / (pl.col("k").fill_null(0) + 1.0)).log().alias("log_l"))
    )


def cohort_fleets(membership: pl.DataFrame, links: Links, params: FleetParams,
                  zones: pl.DataFrame | None = None, holds: pl.DataFrame | None = None
                  ) -> tuple[pl.DataFrame, Links]:
    """Fleets of sign-up cohorts among the accounts nothing else placed: the membership
    and the links with the cohort edges those fleets use among their edges (their
    evidence, for the score and the sentences).

    ``links.cohort`` holds the edges of ``linking._cohort_edges``: accounts registered
    through one network in a surge of sign-ups that nothing else linked (unused ones,
    and used ones where the surge is surer still). A
    surge says which sign-ups are excess, not whose, so these edges come last: an
    account that a link, a fragment merge or an attachment placed stays where it is,
    and the rest first join the fleet that holds most of their cohort's placed members
    (``attach_loners``, with its belief, weighed by their hours and ``zones``), then form
    fleets of their own (numbered after
    the existing ones, with ``belief`` 1.0 as for any linked member). ``membership``:
    idx, fleet, attachment, belief.
    """
    if not links.cohort.height:
        return membership, links
    membership = attach_loners(membership, links.cohort_members, links.accounts.height, params,
                               links.hours, zones, holds)
    placed = membership["idx"].implode()
    edges = links.cohort.filter(~pl.col("a").is_in(placed) & ~pl.col("b").is_in(placed))
    if not edges.height:
        return membership, links
    found = find_fleets(links.accounts.height, edges, params)
    first = int(membership["fleet"].max()) + 1 if membership.height else 0  # type: ignore[arg-type]
    added = found.select(pl.col("idx").cast(pl.Int32), (pl.col("fleet") + first).alias("fleet"),
                         "attachment", pl.lit(1.0).alias("belief"))
    kept = added["idx"].implode()
    used = edges.filter(pl.col("a").is_in(kept) & pl.col("b").is_in(kept))
    return (pl.concat([membership, added.select(membership.columns)]).sort("idx"),
            replace(links, edges=pl.concat([links.edges, used]).sort("a", "b")))


ATTACH_DOMINANCE = 3.0


def attach_by_evidence(membership: pl.DataFrame, near: pl.DataFrame, params: LinkParams,
                       ties: pl.DataFrame | None = None, holds: pl.DataFrame | None = None
                       ) -> pl.DataFrame:
    """Attach an unlinked account whose evidence towards one fleet is spread over members.

    An edge needs two families agreeing on one pair. A lightly used account of
    a large operation rarely has that: it shares a template with one member, a
    proxy exit with another, a sign-up burst with a third. Taken towards the
    fleet as a whole (per family, its strongest tie to any member), that is
    the same evidence an edge asks for, and it is held to the same bar: two
    families agreeing, one of them identity or synchrony (``linking.anchored``),
    and the same total weight; and one of them must be what the loner holds in
    common with the fleet (``_identified``), since clock ties to the strongest of
    many members are expected by chance. The fleet must also hold
    ``ATTACH_DOMINANCE`` times the candidate evidence of any other fleet, so
    an account with ties in every direction (a busy shared network) is left
    alone. Such a member has no identity edge, so attribution does not reach
    it (``member_reach``).

    ``holds`` (loner, fleet: ``own_holdings``) names the fleets whose own entities a
    loner uses: two operators renting one service share its exits and sign-up bursts,
    and the larger holds more of both towards anyone, so among the fleets it holds
    something of, the dominance is taken between those alone (the bar still applies).
    A bare shared template does not name a fleet: only one specific to it
    (``merge_fragments``' test), or a proxied developer whose sign-up fell in an
    operator's burst would be named by a popular tool's template.

    ``ties`` (loner, fleet, the strength columns) is evidence towards a fleet as a
    whole rather than towards one member (``attach_cohort_by_identity``); where given,
    a loner is weighed only between the fleets it ties it to. Added members have
    ``belief`` 1.0 where the membership has beliefs.
    """
    if not near.height or not membership.height:
        return membership
    fleet_of = membership.select("idx", "fleet")
    s_cols = STRENGTH_COLUMNS
    sides = pl.concat([
        near.select(pl.col("b").alias("loner"), pl.col("a").alias("idx"), *s_cols),
        near.select(pl.col("a").alias("loner"), pl.col("b").alias("idx"), *s_cols),
    ]).join(fleet_of, on="idx").select("loner", "fleet", *s_cols)
    if ties is not None:
        sides = pl.concat([sides.join(ties.select("loner", "fleet"), on=["loner", "fleet"]),
                           ties.select(sides.columns).cast(sides.schema)])
    sides = sides.join(fleet_of.select(pl.col("idx").alias("loner")), on="loner", how="anti")
    if not sides.height:
        return membership
    per_fleet = (
        sides.group_by("loner", "fleet")
        .agg(*[pl.col(c).max() for c in s_cols], total_weight().sum().alias("mass"))
        .with_columns(
            corroborating(params.family_threshold).alias("families"),
            total_weight().alias("attachment"),
        )
    )
    chosen = _dominant(per_fleet)
    if holds is not None and holds.height:
        # What the loner holds of one fleet's own entities names that fleet among
        # those whose own entities it holds; the rest of its evidence decides the others.
        holds = holds.cast({c: per_fleet.schema[c] for c in ("loner", "fleet")})
        named = _dominant(per_fleet.join(holds, on=["loner", "fleet"], how="semi"))
        chosen = pl.concat([named, chosen.join(named, on="loner", how="anti")])
    per_fleet = chosen.filter((pl.col("families") >= params.min_families)
                              & (pl.col("attachment") >= params.min_weight)
                              & anchored(params.family_threshold)
                              & _identified(params.family_threshold))
    added = per_fleet.select(pl.col("loner").cast(pl.Int32).alias("idx"), "fleet",
                             pl.col("attachment").cast(pl.Float64))
    if "belief" in membership.columns:
        added = added.with_columns(pl.lit(1.0).alias("belief"))
    return pl.concat([membership, added.select(membership.columns)]).sort("idx")


def _identified(threshold: float) -> pl.Expr:
    """Whether evidence towards a fleet holds an identity family (card, device, domain,
    template) at ``threshold``.

    Taken as the strongest tie to any of a fleet's members, the clock families (shared
    minutes, sign-up time, a lockstep block) grow with the fleet: among thousands of
    members on one rented service, someone was active in the loner's minutes and someone
    signed up in its half hour. What it holds in common with them does not grow so."""
    return pl.any_horizontal([pl.col(f"s_{f}") >= threshold for f in IDENTITY_FAMILIES])


def _dominant(per_fleet: pl.DataFrame) -> pl.DataFrame:
    """Per loner, its fleet with the most evidence where that is ``ATTACH_DOMINANCE`` times
    the next fleet's (ties broken by fleet number)."""
    return (per_fleet.sort(["loner", "mass", "fleet"], descending=[False, True, False])
            .with_columns(pl.col("mass").shift(-1).over("loner").fill_null(0.0).alias("runner_up"))
            .group_by("loner", maintain_order=True).first()
            .filter(pl.col("mass") >= ATTACH_DOMINANCE * pl.col("runner_up"))
            .drop("runner_up"))


def own_holdings(membership: pl.DataFrame, links: Links, uses: pl.DataFrame,
                 params: FleetParams, link: LinkParams) -> pl.DataFrame:
    """(loner, fleet): accounts outside the fleets that use one of a fleet's own entities,
    specific to it as ``merge_fragments`` judges (``_touches``)."""
    touch, used = _touches(membership, links.accounts, uses, params, link, links.entities)
    return (used.filter(pl.col("fleet").is_null()).drop("fleet")
            .join(touch, on=["kind", "entity_id"])
            .select(pl.col("idx").alias("loner"), "fleet").unique())


def attach_cohort_by_identity(membership: pl.DataFrame, links: Links, params: FleetParams,
                              link: LinkParams) -> tuple[pl.DataFrame, Links]:
    """Attach a sign-up cohort's quiet loner to the fleet its own identity evidence names,
    among the fleets that hold its cohort.

    A cohort says a quiet account is one of a surge's excess sign-ups, not whose: two
    operators registering through one rented service in the same weeks share the surge,
    and ``cohort_fleets`` gives the whole cohort to the fleet that holds most of it. What
    the account holds of its own (``FRAGMENT_FAMILIES``: a template only one operator
    uses, a card, a device) says whose. The surge, a creation tie towards each fleet that
    holds ``attach_links`` of the cohort's placed members, and that identity evidence
    towards one of them are the two families ``attach_by_evidence`` asks for, under its
    bar and dominance. Timing, networks and e-mail domains are left out here: shared with
    the surge's every operator and with crowds, they name no one among its fleets.

    Returns the membership and the links without the accounts it placed among the
    cohorts' members: placed on the cohort's own evidence, they do not vote on where the
    rest of the cohort goes (``cohort_fleets``), or the surge would count twice.
    """
    members, fleet_of = links.cohort_members, membership.select("idx", "fleet")
    if not members.height or not membership.height or not links.near.height:
        return membership, links
    held = (members.join(fleet_of, on="idx").group_by("block", "fleet").len()
            .filter(pl.col("len") >= params.attach_links).drop("len"))
    ties = (
        members.filter(pl.col("dormant")).join(fleet_of, on="idx", how="anti")
        .join(held, on="block")
        .group_by(pl.col("idx").alias("loner"), "fleet").agg(pl.col("s").max())
        .select("loner", "fleet", *[pl.col("s").alias(c) if c == "s_creation"
                                    else pl.lit(0.0).alias(c) for c in STRENGTH_COLUMNS])
    )
    own = {f"s_{f}" for f in FRAGMENT_FAMILIES}
    near = links.near.select("a", "b", *[pl.col(c) if c in own else pl.lit(0.0).alias(c)
                                         for c in STRENGTH_COLUMNS])
    placed = attach_by_evidence(membership, near, link, ties)
    added = placed.join(membership.select("idx"), on="idx", how="anti")["idx"].implode()
    return placed, replace(links, cohort_members=members.filter(~pl.col("idx").is_in(added)))


# What an operator holds of its own: a card, a device, a prompt template. Not a
# network (rented exits are shared by operators) nor an e-mail domain (throwaway
# mail services are shared by operators, families and developers alike).
FRAGMENT_FAMILIES = tuple(f for f in IDENTITY_FAMILIES if f != "email")


def merge_fragments(membership: pl.DataFrame, accounts: pl.DataFrame, uses: pl.DataFrame,
                    params: FleetParams, concealment: pl.DataFrame | None = None,
                    link: LinkParams | None = None,
                    entities: pl.DataFrame | None = None) -> pl.DataFrame:
    """Merge fleets that are fragments of one operation by the operator evidence they share.

    Louvain and the components cut a large, sparsely linked operation into
    pieces (each account links to a few others only), yet the pieces hold the
    same card, device or prompt template: the operator's own tools
    (``FRAGMENT_FAMILIES``). Two fleets merge when they share such an entity that is *specific*
    (rare enough to be evidence of common control by itself, as linking judges rarity
    with ``link``; or ``fragment_specific`` of the way from the population to all of
    its users either inside fleets or anomalous, as linking measured it in ``entities``
    (``Links.entities``): an operation's own template, most of whose users formed no
    link yet, is; a
    popular tool's template or a public mail domain, used mostly by ordinary loners,
    is neither and merges nothing) and that each
    of the two uses substantially (at
    least ``fragment_touch`` of its members, so one employee who touched an
    operation's box does not pull in the team). Networks never merge: two
    operators renting one proxy provider share its exits and nothing of their own.
    Fragments of one operation also hide alike: with ``concealment`` (the rows of
    ``features.account_features``; ``infra`` is the share of an account's traffic
    through rented networks), two
    fleets whose mean concealment differs by more than ``fragment_conceal_gap``
    (a team on its office line whose corporate card an operation also used) stay
    apart. Merged fleets take the smallest fleet number of their group;
    membership rows keep their other columns.

    >>> m = pl.DataFrame({"idx": [0, 1, 2, 3], "fleet": [0, 0, 1, 1],
    ...                   "attachment": [1.0] * 4})
    >>> acc = pl.DataFrame({"account_id": list("abcdefgh"), "idx": list(range(8))})
    >>> u = pl.DataFrame({"account_id": ["a", "c"], "kind": ["payment"] * 2,
    ...                   "entity_id": ["card1"] * 2})
    >>> merge_fragments(m, acc, u, FleetParams())["fleet"].to_list()
    [0, 0, 0, 0]
    """
    if not membership.height:
        return membership
    touch, used = _touches(membership, accounts, uses, params, link, entities)
    touch = _one_operation(touch, used, params)
    pairs = touch.join(touch, on=["kind", "entity_id"], suffix="_b").filter(
        pl.col("fleet") < pl.col("fleet_b")).select("fleet", "fleet_b").unique()
    if concealment is not None and pairs.height:
        hidden = membership.join(accounts.select("account_id", pl.col("idx").cast(pl.Int32)),
                                 on="idx").join(concealment.select("account_id", "infra"),
                                                on="account_id", how="left").group_by(
            "fleet").agg(pl.col("infra").fill_null(0.0).mean().alias("c"))
        pairs = pairs.join(hidden, on="fleet").join(
            hidden.rename({"fleet": "fleet_b", "c": "c_b"}), on="fleet_b").filter(
            (pl.col("c") - pl.col("c_b")).abs() <= params.fragment_conceal_gap).select(
            "fleet", "fleet_b")
    if not pairs.height:
        return membership
    # Fleets joined by the pairs, each group under its smallest number.
    numbers, ends = np.unique(pairs.select("fleet", "fleet_b").to_numpy().ravel(),
                              return_inverse=True)
    ends = ends.reshape(-1, 2)
    group = _components(ends[:, 0], ends[:, 1], len(numbers))
    smallest = np.full(int(group.max()) + 1, np.iinfo(np.int64).max)
    np.minimum.at(smallest, group, numbers)
    return _relabel(membership, dict(zip(numbers.tolist(), smallest[group].tolist(),
                                         strict=True)))


def _relabel(membership: pl.DataFrame, merged: dict[int, int]) -> pl.DataFrame:
    """``membership`` with each fleet number in ``merged`` replaced by its value; the other
    columns kept."""
    mapping = pl.DataFrame({"fleet": list(merged), "merged": list(merged.values())},
                           schema={"fleet": pl.Int64, "merged": pl.Int64})
    return membership.join(mapping, on="fleet", how="left").with_columns(
        pl.coalesce("merged", "fleet").alias("fleet")).drop("merged").sort("idx")


# What the fleets of one surge are compared on (``merge_surges``): the main capability,
# plan and device zone, the first and last only over accounts that have used the
# service (an unused account has neither). Not the level of use: the links select on
# it (a lockstep wave needs activity, a cohort of unused accounts its absence), so
# pieces of one operation differ in it by the way they were found.
MERGE_TRAITS = ("cap_main", "plan", "zone")
USED_TRAITS = ("cap_main", "zone")


def merge_surges(membership: pl.DataFrame, links: Links, uses: pl.DataFrame,
                 params: FleetParams, link: LinkParams | None = None) -> pl.DataFrame:
    """Merge the fleets one sign-up surge is made of where nothing tells them apart.

    A careful operation registers its accounts a few at a time through one rented
    service for weeks and then acts in small waves: the links find it in dozens of
    pieces (a batch, a lockstep wave, a cohort), while the surge of sign-ups through
    that service (``Links.episodes``: one network's surge windows in a row) is one
    operation's. A fleet belongs to the episode that holds enough of it
    (``surge_homes``), and is compared on the members the episode is sure of. But two
    operators can rent one service in the same weeks, and a business ISP signs up
    several companies' teams, so fleets of one episode merge only where
    their members are alike over ``MERGE_TRAITS``: a G-test of homogeneity at
    ``surge_alpha``, or no trait's mix differing by more than ``surge_gap`` (total
    variation; a test of two large fleets tells apart even the drift of one operator's
    mix over weeks). One operator's pieces are drawn from one mix, two operators' are
    not (three operators on one datacenter service leak three home time zones). A member
    that a lockstep block found among one device zone's customers of a service was chosen
    for its zone, and is not compared on it (``_zone_chosen``). Each
    fleet, largest first, joins the group it is most alike. A fleet with an identity of
    its own (a card, device, template or mail domain that is specific, as
    ``merge_fragments`` judges one, a public mail service is not, and that a quarter
    of the fleet uses) never joins a group that holds identities and none of its: two
    teams each paying with its card, or on its own mail domain, are two teams.
    A fleet the episode is sure of only for a few used members beside its unused ones
    (an operation's last batch, ``surge_homes``'s ``sure`` false) is alike to every
    group by so few: it joins, after the others, the one alike group whose sign-ups are
    within ``surge_days`` of its own (operators that rent one service in turn are told
    apart by when), and none where two are.
    Merged fleets take the smallest fleet number of their group; membership rows keep
    their other columns.
    """
    episodes = links.episodes
    if not membership.height or not episodes.height:
        return membership
    home = surge_homes(membership, episodes, params).filter(
        pl.len().over("episode") >= 2)
    if not home.height:
        return membership
    touch, _ = _touches(membership, links.accounts, uses, params, link, links.entities,
                        IDENTITY_FAMILIES, home["fleet"])
    identity: dict[int, frozenset[str]] = {
        int(fleet): frozenset(part["key"].to_list())
        for (fleet,), part in touch.select(
            "fleet", pl.format("{}:{}", "kind", "entity_id").alias("key")).group_by("fleet")}
    members = membership.select("idx", "fleet").join(home.select("fleet", "episode"),
                                                     on="fleet").join(
        episodes.filter(pl.col("strong")), on=["idx", "episode"])
    # One column per (trait, value): a fleet's row counts its members holding each.
    used = (members["cap_main"] >= 0).to_numpy()
    # A member found in a lockstep block among one device zone's customers of a service
    # was chosen for its zone: it says nothing of its operation's mix of zones.
    chosen = members["idx"].is_in(_zone_chosen(links).implode()).to_numpy()
    codes = [members.select(pl.col(t).cast(pl.String).rank("dense").cast(pl.Int64) - 1)
             .to_series() for t in MERGE_TRAITS]
    widths = [c.n_unique() for c in codes]  # dense codes 0 .. n-1
    starts = np.cumsum([0, *widths])
    # the fleets an episode is sure of first, largest first: they form its groups
    order = home.sort(["episode", "sure", "n", "fleet"], descending=[False, True, True, False])
    row = {f: i for i, f in enumerate(order["fleet"].to_list())}
    counts = np.zeros((order.height, int(starts[-1])))
    rows = np.array([row[f] for f in members["fleet"].to_list()])
    for trait, code, start in zip(MERGE_TRAITS, codes, starts[:-1], strict=True):
        keep = used if trait in USED_TRAITS else np.ones(len(used), dtype=bool)
        if trait == "zone":
            keep = keep & ~chosen
        np.add.at(counts, (rows[keep], code.to_numpy()[keep] + start), 1.0)
    segments = [(int(a), int(b)) for a, b in pairwise(starts)]
    # When each fleet signed up: the first and last sign-up of its members in the episode.
    spans = {int(f): (int(lo), int(hi)) for f, lo, hi in
             membership.select("idx", "fleet").join(home.select("fleet", "episode"), on="fleet")
             .join(episodes.select("idx", "episode", "minute"), on=["idx", "episode"])
             .group_by("fleet").agg(pl.col("minute").min(), pl.col("minute").max().alias("hi"))
             .iter_rows()}
    sure = set(home.filter(pl.col("sure"))["fleet"].to_list())
    width = (link or LinkParams()).surge_days * 1440
    merged: dict[int, int] = {}
    for _, part in order.group_by("episode", maintain_order=True):
        fleets = part["fleet"].to_list()
        groups: list[int] = []          # the first (largest) fleet of each group
        pooled: list[np.ndarray] = []
        owned: list[frozenset[str]] = []  # the identities each group holds
        lows: list[int] = []            # the first and last sign-up of each group
        highs: list[int] = []
        for fleet in fleets:
            x = counts[row[fleet]]
            own = identity.get(fleet, frozenset())
            low, high = spans[fleet]
            ok: list[int] = []
            if pooled:
                p_value, gap = _alike(x, np.array(pooled), segments)
                ok = [int(g) for g in np.argsort(gap, kind="stable")
                      if (p_value[g] >= params.surge_alpha or gap[g] <= params.surge_gap)
                      and (not own or not owned[g] or own & owned[g])]
            if fleet not in sure:
                # Its few sure members tell no operator's mix from another's: it joins
                # only the one alike group whose sign-ups its own follow or precede
                # within ``surge_days`` (without stretching the group's span), and never
                # leads a group.
                near = [g for g in ok if max(lows[g] - high, low - highs[g]) <= width]
                ok = near if len(near) == 1 else []
            elif ok:
                lows[ok[0]], highs[ok[0]] = min(lows[ok[0]], low), max(highs[ok[0]], high)
            if ok:
                g = ok[0]
                pooled[g] = pooled[g] + x
                owned[g] = owned[g] | own
                merged[fleet] = groups[g]
            elif fleet in sure:
                groups.append(fleet)
                pooled.append(x.copy())
                owned.append(own)
                lows.append(low)
                highs.append(high)
    # Each group takes the smallest fleet number among its fleets.
    label: dict[int, int] = {}
    for fleet, first in merged.items():
        label[first] = min(label.get(first, first), fleet)
    merged.update({first: first for first in label})
    return _relabel(membership, {f: label[g] for f, g in merged.items()}) if label else membership


def _zone_chosen(links: Links) -> pl.Series:
    """The accounts (idx) in lockstep blocks found among one device zone's customers of a
    proxy service (``lockstep.split_by_zone``)."""
    zoned = links.lockstep.blocks.filter(pl.col("network").str.contains(ZONE, literal=True))
    return links.lockstep_members.join(zoned.select("block"), on="block")["idx"]


def surge_homes(membership: pl.DataFrame, episodes: pl.DataFrame, params: FleetParams
                ) -> pl.DataFrame:
    """(fleet, episode, n, size, sure): for each fleet, the surge episode (``Links.episodes``)
    whose strong members are the most of its members, where they are at least
    ``surge_share`` of those the episode does not leave in doubt and at least
    ``surge_least`` of all but its unused members in doubt. A used account in doubt has
    traits the surge judged ordinary-like: it counts against the home, or a few sure
    members would carry a crowd of the network's customers. An unused one has none to
    judge (an operation's last batch, signed up beside its used ones): it counts neither
    way, and ``sure`` says whether the strong members are ``surge_least`` of all even
    so."""
    sizes = membership.group_by("fleet").agg(pl.len().alias("size"))
    doubt = ~pl.col("strong")
    return (membership.select("idx", "fleet").join(
                episodes.select("idx", "episode", "strong", "cap_main"), on="idx")
            .group_by("fleet", "episode").agg(
                pl.col("strong").sum().cast(pl.UInt32).alias("n"), doubt.sum().alias("doubt"),
                (doubt & (pl.col("cap_main") < 0)).sum().alias("unused"))
            .join(sizes, on="fleet")
            .filter((pl.col("n") >= params.surge_share * (pl.col("size") - pl.col("doubt")))
                    & (pl.col("n") >= params.surge_least * (pl.col("size") - pl.col("unused")))
                    & (pl.col("n") > 0))
            .with_columns((pl.col("n") >= params.surge_least * pl.col("size")).alias("sure"))
            .drop("doubt", "unused")
            .sort(["fleet", "n", "episode"], descending=[False, True, False])
            .unique("fleet", keep="first", maintain_order=True))


def _alike(x: np.ndarray, groups: np.ndarray, segments: list[tuple[int, int]]
           ) -> tuple[np.ndarray, np.ndarray]:
    """How alike ``x`` (counts per trait value; ``segments`` are the traits' columns) is
    to each row of ``groups``: the p-value of a G-test of homogeneity (the traits'
    statistics and degrees of freedom summed) and the largest total variation distance
    between the two mixes of one trait (0 where either side has no count)."""
    g_stat = np.zeros(len(groups))
    dof = np.zeros(len(groups))
    gap = np.zeros(len(groups))
    for a, b in segments:
        o1 = np.broadcast_to(x[a:b], groups[:, a:b].shape)
        o2 = groups[:, a:b]
        n1 = o1.sum(axis=1, keepdims=True)
        n2 = o2.sum(axis=1, keepdims=True)
        col = o1 + o2
        with np.errstate(divide="ignore", invalid="ignore"):
            e1 = col * n1 / (n1 + n2)
            e2 = col * n2 / (n1 + n2)
            t1 = np.where(o1 > 0, o1 * np.log(o1 / e1), 0.0)
            t2 = np.where(o2 > 0, o2 * np.log(o2 / e2), 0.0)
            tv = 0.5 * np.abs(o1 / n1 - o2 / n2).sum(axis=1)
        g_stat += 2.0 * (t1 + t2).sum(axis=1)
        dof += np.maximum((col > 0).sum(axis=1) - 1, 0)
        gap = np.maximum(gap, np.nan_to_num(tv, nan=0.0))
    return np.where(dof > 0, chi2.sf(g_stat, np.maximum(dof, 1)), 1.0), gap


def _measured_specific(params: FleetParams, link: LinkParams) -> pl.Expr:
    """Over rows of ``Links.entities`` (rare, lift): the entity is specific as linking
    weighed it, rare enough to be evidence by itself, or used by a crowd far more
    anomalous than the population (an operation's own template, most of whose users
    formed no link yet)."""
    return ((pl.col("rare").fill_null(0.0) >= link.family_threshold)
            | (pl.col("lift").fill_null(0.0) >= params.fragment_specific))


def _touches(membership: pl.DataFrame, accounts: pl.DataFrame, uses: pl.DataFrame,
             params: FleetParams, link: LinkParams | None, entities: pl.DataFrame | None,
             families: tuple[str, ...] = FRAGMENT_FAMILIES, fleets: pl.Series | None = None
             ) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(touch, used): the specific entities of ``families`` each fleet uses substantially
    (kind, entity_id, fleet; see ``merge_fragments``) and every use of such an entity
    (kind, entity_id, idx, fleet); with ``fleets``, only the entities those fleets' members
    use are looked at (their touches are the same, and the rest of a million accounts'
    uses is not joined)."""
    kinds = [k for k, f in KIND_FAMILY.items() if f in families]
    pool = uses.filter(pl.col("kind").is_in(kinds)).select("account_id", "kind", "entity_id")
    if fleets is not None:
        mine = accounts.join(membership.filter(pl.col("fleet").is_in(fleets.implode()))
                             .select(pl.col("idx").cast(accounts.schema["idx"])), on="idx")
        theirs = pool.filter(pl.col("account_id").is_in(mine["account_id"].implode()))
        pool = pool.join(theirs.select("kind", "entity_id").unique(), on=["kind", "entity_id"],
                         how="semi")
    used = pool \
        .join(accounts.select("account_id", pl.col("idx").cast(pl.Int32)), on="account_id") \
        .join(membership.select(pl.col("idx").cast(pl.Int32), "fleet"), on="idx", how="left")
    users = used.group_by("kind", "entity_id").agg(
        pl.col("idx").n_unique().alias("users"),
        pl.col("idx").filter(pl.col("fleet").is_not_null()).n_unique().alias("in_fleets"))
    measured = pl.lit(False)
    if link is not None and entities is not None:
        users = users.join(entities.select("kind", "entity_id", "rare", "lift"),
                           on=["kind", "entity_id"], how="left")
        measured = _measured_specific(params, link)
    # Against the population: accounts are in fleets at this rate by default (families,
    # teams), so an entity is specific to fleets when its users are far more often.
    base = membership.height / max(accounts.height, 1)
    lift = (pl.col("in_fleets") / pl.col("users") - base) / max(1.0 - base, 1e-9)
    specific = users.filter((pl.col("users") >= 2) & (
        measured | (lift >= params.fragment_specific)))
    sizes = membership.group_by("fleet").agg(pl.len().alias("size"))
    touch = (
        used.filter(pl.col("fleet").is_not_null())
        .join(specific.select("kind", "entity_id"), on=["kind", "entity_id"])
        .group_by("kind", "entity_id", "fleet").agg(pl.col("idx").n_unique().alias("n"))
        .join(sizes, on="fleet")
        .filter(pl.col("n") >= params.fragment_touch * pl.col("size"))
        .select("kind", "entity_id", "fleet")
    )
    return touch, used


def crossed_edges(links: Links, uses: pl.DataFrame, params: FleetParams, link: LinkParams
                  ) -> pl.DataFrame:
    """(a, b): edges between accounts that hold two operations' own entities and none in
    common: two operators renting one service in the same hours.

    An operator's own template (or shared card or device: ``FRAGMENT_FAMILIES``, specific
    as linking measured it in ``Links.entities``: rare by itself, or its users far more
    anomalous than the population) is used by its accounts and no one else's; two
    operators registering through one proxy service in the same half hour are linked by
    the batch's network and sign-up, which both read off the service. Entities whose users
    overlap are one operation's (``_entity_groups``); an edge whose two ends each use some
    operation's entities, and no operation's both, links two operations and forms no
    fleet. An account that uses no such entity cuts nothing.
    """
    kinds = [k for k, f in KIND_FAMILY.items() if f in FRAGMENT_FAMILIES]
    specific = links.entities.filter(pl.col("kind").is_in(kinds) & _measured_specific(params, link))
    empty = pl.DataFrame(schema={"a": links.edges.schema["a"], "b": links.edges.schema["b"]})
    if not links.edges.height or not specific.height:
        return empty
    used = (uses.join(specific.select("kind", "entity_id"), on=["kind", "entity_id"])
            .join(links.accounts, on="account_id")
            .select("kind", "entity_id", pl.col("idx").cast(pl.Int32)).unique())
    groups = _entity_groups(used, params)
    held = used.join(groups, on=["kind", "entity_id"]).select("idx", "group").unique()
    ends = links.edges.select("a", "b")
    a_side = ends.join(held.rename({"idx": "a"}), on="a")
    b_side = ends.join(held.rename({"idx": "b"}), on="b")
    shared = a_side.join(b_side, on=["a", "b", "group"]).select("a", "b").unique()
    both = a_side.select("a", "b").unique().join(b_side.select("a", "b").unique(), on=["a", "b"])
    return both.join(shared, on=["a", "b"], how="anti").cast(empty.schema)


def _entity_groups(used: pl.DataFrame, params: FleetParams) -> pl.DataFrame:
    """(kind, entity_id, group): entities whose user sets overlap by ``fragment_touch`` of
    the smaller are one group (one operation holds them: its accounts use its templates,
    cards and devices alike); ``used`` is (kind, entity_id, idx)."""
    ents = used.select("kind", "entity_id").unique().sort("kind", "entity_id").with_row_index("e")
    users = used.join(ents, on=["kind", "entity_id"]).select("e", "idx").unique()
    size = users.group_by("e").agg(pl.len().alias("m"))
    shared = (users.join(users, on="idx", suffix="_b").filter(pl.col("e") < pl.col("e_b"))
              .group_by("e", "e_b").agg(pl.len().alias("both"))
              .join(size, on="e").join(size.rename({"e": "e_b", "m": "m_b"}), on="e_b")
              .filter(pl.col("both") >= params.fragment_touch * pl.min_horizontal("m", "m_b")))
    group = _components(shared["e"].to_numpy(), shared["e_b"].to_numpy(), ents.height)
    return ents.select("kind", "entity_id", pl.Series("group", group, dtype=pl.Int64))


def _one_operation(touch: pl.DataFrame, used: pl.DataFrame, params: FleetParams) -> pl.DataFrame:
    """The touches of fleets that hold one operation's entities only.

    The entities an operation holds share their users (its accounts use its two
    templates, its cards and its devices alike); two operations' entities do not.
    Entities whose users overlap (``fragment_touch`` of the smaller user set, as a
    fleet must use an entity) are grouped, and a fleet touching entities of two
    groups that each hold other fleets is two operations' accounts linked by chance
    (they rent one service at the same hours): it merges with neither, or it would
    weld the two together.
    """
    if touch.height < 2:
        return touch
    ents = touch.select("kind", "entity_id").unique()
    grouped = _entity_groups(used.join(ents, on=["kind", "entity_id"]), params)
    tagged = touch.join(grouped, on=["kind", "entity_id"])
    # A group's other fleets: a fleet bridging two groups that each have fleets of their
    # own would weld two operations; one whose second group is only itself (an
    # operation's accounts with the team whose corporate card they used) welds nothing.
    per_group = tagged.select("group", "fleet").unique()
    others = per_group.join(per_group.group_by("group").agg(pl.len().alias("fleets")), on="group")
    bridges = (others.filter(pl.col("fleets") >= 2).group_by("fleet")
               .agg(pl.len().alias("groups")).filter(pl.col("groups") >= 2))
    return tagged.join(bridges.select("fleet"), on="fleet", how="anti").select(touch.columns)
