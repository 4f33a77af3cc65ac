"""Fleet membership beyond edges, and how far attribution reaches inside a fleet.

Hand-made frames: accounts are row numbers, fleets are numbers, as the
pipeline passes them between stages.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from attribution.contracts.settings import AttributionParams, FleetParams, LinkParams
from attribution.engine.attribute import CLOCK_ONLY_REACH, member_reach
from attribution.engine.features import anomaly
from attribution.engine.fleets import (
    _louvain_level0,
    attach_by_evidence,
    attach_loners,
    crossed_edges,
    find_fleets,
    merge_fragments,
    own_holdings,
)
from attribution.engine.linking import FAMILIES, Links, entity_strength


def _membership(fleets: dict[int, list[int]]) -> pl.DataFrame:
    rows = [(i, f, 5.0) for f, members in fleets.items() for i in members]
    return pl.DataFrame(rows, schema={"idx": pl.Int32, "fleet": pl.Int64,
                                      "attachment": pl.Float64}, orient="row")


def _burst(members: list[int], lam: float, dormant: set[int], block: int = 1) -> pl.DataFrame:
    return pl.DataFrame({
        "block": [block] * len(members), "idx": members, "s": [2.0] * len(members),
        "lam": [lam] * len(members), "dormant": [i in dormant for i in members],
    }, schema={"block": pl.UInt64, "idx": pl.Int32, "s": pl.Float64, "lam": pl.Float64,
               "dormant": pl.Boolean})


def test_a_dormant_loner_joins_its_burst_fleet_when_bystanders_are_unlikely() -> None:
    fleets = _membership({0: [0, 1, 2, 3]})
    burst = _burst([0, 1, 2, 3, 10, 11], lam=0.05, dormant={10})
    out = attach_loners(fleets, burst, 5000, FleetParams())
    added = out.filter(pl.col("idx") == 10)
    assert added["fleet"].to_list() == [0]
    assert added["belief"][0] > 0.9
    # 11 was busy (not dormant): a coincidence of sign-up time does not attach it.
    assert out.filter(pl.col("idx") == 11).height == 0
    assert out.filter(pl.col("idx") < 4)["belief"].to_list() == [1.0] * 4


def test_where_the_window_expects_bystanders_the_loners_stay_out() -> None:
    fleets = _membership({0: [0, 1, 2, 3]})
    # Three ordinary sign-ups were expected in the window: two loners are most likely them.
    burst = _burst([0, 1, 2, 3, 10, 11], lam=3.0, dormant={10, 11})
    out = attach_loners(fleets, burst, 5000, FleetParams())
    assert out.filter(pl.col("idx") >= 10).height == 0


def test_a_burst_split_between_two_fleets_attaches_nobody() -> None:
    fleets = _membership({0: [0, 1, 2], 1: [3, 4, 5]})
    burst = _burst([0, 1, 2, 3, 4, 5, 10], lam=0.01, dormant={10})
    out = attach_loners(fleets, burst, 5000, FleetParams())
    assert out.filter(pl.col("idx") == 10).height == 0


def test_a_burst_loner_holding_one_fleets_own_entity_joins_that_fleet() -> None:
    # Two operators sign up through one service in the same surge: the burst's placed
    # members are split between them, and ordinary sign-ups were expected in the window.
    fleets = _membership({0: [0, 1, 2], 1: [3, 4, 5, 6, 7, 8]})
    burst = _burst([*range(9), 10, 11, 12], lam=3.0, dormant={10, 12})
    # 10 (dormant) and 11 (busy) use fleet 0's own template; 12 holds nothing.
    holds = pl.DataFrame({"loner": [10, 11], "fleet": [0, 0]})
    out = attach_loners(fleets, burst, 5000, FleetParams(), holds=holds)
    added = out.filter(pl.col("idx") >= 10).sort("idx")
    # Weighed among the fleets they hold alone, and no bystander discount: an ordinary
    # sign-up does not use the operator's own template.
    assert added.select("idx", "fleet", "belief").rows() == [(10, 0, 1.0), (11, 0, 1.0)]
    # Without the holding the burst is split and bystanders expected: nobody attaches.
    assert attach_loners(fleets, burst, 5000, FleetParams()).filter(
        pl.col("idx") >= 10).height == 0


def test_a_burst_loner_holding_a_fleet_outside_its_burst_attaches_nowhere() -> None:
    fleets = _membership({0: [0, 1, 2, 3], 1: [20, 21, 22]})
    burst = _burst([0, 1, 2, 3, 10], lam=0.01, dormant={10})
    # Its burst is fleet 0's, but it uses fleet 1's own template: fleet 0 is not its.
    holds = pl.DataFrame({"loner": [10], "fleet": [1]})
    assert attach_loners(fleets, burst, 5000, FleetParams(), holds=holds).filter(
        pl.col("idx") == 10).height == 0
    assert attach_loners(fleets, burst, 5000, FleetParams()).filter(
        pl.col("idx") == 10)["fleet"].to_list() == [0]


def _near(rows: list[tuple[int, int, dict[str, float]]]) -> pl.DataFrame:
    return pl.DataFrame(
        [(a, b, *[s.get(f, 0.0) for f in FAMILIES]) for a, b, s in rows],
        schema={"a": pl.Int32, "b": pl.Int32, **{f"s_{f}": pl.Float64 for f in FAMILIES}},
        orient="row",
    )


def test_evidence_spread_over_members_of_one_fleet_attaches_a_loner() -> None:
    fleets = _membership({0: [0, 1, 2], 1: [5, 6]})
    # 9 shares a template with 0 and a sign-up burst with 1: two families towards fleet 0.
    near = _near([(0, 9, {"prompt": 1.5}), (1, 9, {"creation": 1.6})])
    out = attach_by_evidence(fleets, near, LinkParams())
    assert out.filter(pl.col("idx") == 9)["fleet"].to_list() == [0]


def test_clock_ties_to_a_large_fleet_alone_attach_nobody() -> None:
    # On one rented service someone of a fleet of thousands was active in the loner's
    # minutes and someone signed up in its half hour: two families, anchored, but
    # nothing the loner holds in common with the fleet.
    fleets = _membership({0: list(range(100))})
    near = _near([(3, 900, {"timing": 1.8}), (40, 900, {"creation": 1.2}),
                  (77, 900, {"lockstep": 1.0})])
    assert attach_by_evidence(fleets, near, LinkParams()).filter(
        pl.col("idx") == 900).height == 0
    # A template shared with a member besides the sign-up is something it holds.
    held = pl.concat([near, _near([(5, 900, {"prompt": 0.6})])])
    assert attach_by_evidence(fleets, held, LinkParams()).filter(
        pl.col("idx") == 900)["fleet"].to_list() == [0]


def test_one_family_or_evidence_in_every_direction_attaches_nobody() -> None:
    fleets = _membership({0: [0, 1, 2], 1: [5, 6]})
    one_family = _near([(0, 9, {"prompt": 2.0}), (1, 9, {"prompt": 1.9})])
    assert attach_by_evidence(fleets, one_family, LinkParams()).filter(
        pl.col("idx") == 9).height == 0
    # Two families towards fleet 0, but as much towards fleet 1: a busy shared network.
    scattered = _near([(0, 9, {"prompt": 1.5}), (1, 9, {"creation": 1.6}),
                       (5, 9, {"network": 1.5}), (6, 9, {"creation": 1.6})])
    assert attach_by_evidence(fleets, scattered, LinkParams()).filter(
        pl.col("idx") == 9).height == 0


def test_a_loner_holding_one_fleets_own_entity_joins_that_fleet() -> None:
    # Two operators rent one service: 9 signed up in bursts with members of both and
    # shares the service's exits with many of the larger (more evidence in all), but
    # uses the smaller one's own template (``own_holdings`` says so).
    fleets = _membership({0: [0, 1, 2], 1: list(range(10, 20))})
    service = {"creation": 1.6, "network": 1.0, "email": 0.5}
    near = _near([(0, 9, {"prompt": 1.5}), (1, 9, {"creation": 1.6}),
                  *[(i, 9, service) for i in range(10, 20)]])
    holds = pl.DataFrame({"loner": [9], "fleet": [0]})
    assert attach_by_evidence(fleets, near, LinkParams(), holds=holds).filter(
        pl.col("idx") == 9)["fleet"].to_list() == [0]
    # Without it all its evidence decides: the larger fleet holds sixteen times more.
    assert attach_by_evidence(fleets, near, LinkParams()).filter(
        pl.col("idx") == 9)["fleet"].to_list() == [1]
    # The fleet it names must still meet the bar: one family towards it attaches it
    # nowhere (not to the other fleet either: what it holds says that one is not its).
    one = near.filter(pl.col("a") != 1)
    assert attach_by_evidence(fleets, one, LinkParams(), holds=holds).filter(
        pl.col("idx") == 9).height == 0


def test_only_an_entity_specific_to_a_fleet_is_its_own() -> None:
    """A template most of whose users are a fleet's members is the fleet's own; a popular
    tool's template that the fleet also uses, with hundreds of ordinary users, is not."""
    n = 1000
    membership = _membership({0: [0, 1, 2, 3, 4]})
    accounts = pl.DataFrame({"account_id": [f"a{i}" for i in range(n)], "idx": list(range(n))},
                            schema={"account_id": pl.String, "idx": pl.Int32})
    rows = [(i, "own") for i in (0, 1, 2, 3, 50)] + [(i, "tool") for i in (0, 1, 2, 60)]
    rows += [(i, "tool") for i in range(300, 700)]
    uses = pl.DataFrame({"account_id": [f"a{i}" for i, _ in rows], "kind": ["prompt"] * len(rows),
                         "entity_id": [e for _, e in rows]})
    feats = _feats(n, set())
    entities = entity_strength(
        uses.join(accounts, on="account_id").with_columns(pl.lit("prompt").alias("family")),
        feats.select("account_id", anomaly(feats)).join(accounts, on="account_id"), LinkParams())
    links = Links(accounts=accounts, edges=pl.DataFrame(), candidates=0, bursts=pl.DataFrame(),
                  near=pl.DataFrame(), entities=entities)
    held = own_holdings(membership, links, uses, FleetParams(), LinkParams())
    assert held.rows() == [(50, 0)]


def _crossed(held: dict[str, list[int]], edges: list[tuple[int, int]],
             rare: float = 1.0) -> set[tuple[int, int]]:
    n = 12
    accounts = pl.DataFrame({"account_id": [f"a{i}" for i in range(n)], "idx": list(range(n))},
                            schema={"account_id": pl.String, "idx": pl.Int32})
    rows = [(i, e) for e, users in held.items() for i in users]
    uses = pl.DataFrame({"account_id": [f"a{i}" for i, _ in rows], "kind": ["prompt"] * len(rows),
                         "entity_id": [e for _, e in rows]})
    entities = pl.DataFrame({"kind": ["prompt"] * len(held), "entity_id": list(held),
                             "rare": [rare] * len(held), "lift": [0.0] * len(held)})
    links = Links(accounts=accounts,
                  edges=pl.DataFrame(edges, schema={"a": pl.Int32, "b": pl.Int32}, orient="row"),
                  candidates=0, bursts=pl.DataFrame(), near=pl.DataFrame(), entities=entities)
    out = crossed_edges(links, uses, FleetParams(), LinkParams())
    return {(int(a), int(b)) for a, b in out.iter_rows()}


def test_an_edge_between_two_operations_own_templates_forms_no_fleet() -> None:
    # Operation A's template "ta", B's "tb": their accounts signed up through one service
    # in the same half hour. 9 uses neither: its edges cut nothing.
    held = {"ta": [0, 1, 2], "tb": [3, 4, 5]}
    edges = [(0, 1), (1, 3), (2, 5), (3, 4), (0, 9), (5, 9)]
    assert _crossed(held, edges) == {(1, 3), (2, 5)}
    # An account holding both has an operation in common with each side.
    assert _crossed({"ta": [0, 1, 2], "tb": [2, 3, 4, 5]}, edges) == set()
    # One operation's two templates overlap in their users: one operation, no cut.
    assert _crossed({"t1": [0, 1, 2, 6], "t2": [3, 4, 5, 6]}, edges) == set()
    # Templates that are not specific (a popular tool's) say nothing of who runs whom.
    assert _crossed(held, edges, rare=0.1) == set()


def _edges(rows: list[tuple[int, int, dict[str, float]]]) -> pl.DataFrame:
    frame = _near(rows)
    return frame.with_columns(pl.sum_horizontal([f"s_{f}" for f in FAMILIES]).alias("weight"))


def test_attribution_reaches_members_only_through_identity_ties() -> None:
    membership = _membership({0: [0, 1, 2, 3]}).with_columns(pl.lit(1.0).alias("belief"))
    accounts = pl.DataFrame({"idx": [0, 1, 2, 3], "account_id": ["a", "b", "c", "d"]},
                            schema={"idx": pl.Int32, "account_id": pl.String})
    # a-b share a card, b-c a device; d is tied to c by timing and sign-up only.
    edges = _edges([(0, 1, {"payment": 4.0}), (1, 2, {"device": 4.0}),
                    (2, 3, {"timing": 2.0, "creation": 1.5})])
    # The organization's evidence sits on a (an employee's card).
    bearers = pl.DataFrame({"account_id": ["a"], "fleet": [0], "org_id": ["org1"]})
    named = pl.DataFrame({"fleet": [0], "org_id": ["org1"]})
    reach = dict(member_reach(edges, membership, accounts, bearers, named,
                              AttributionParams().identity_tie).iter_rows())
    assert reach == {"a": 1.0, "b": 1.0, "c": 1.0, "d": CLOCK_ONLY_REACH}
    # so d is not accused at any fleet confidence short of certainty
    assert AttributionParams().abstain_below > 0.99 * CLOCK_ONLY_REACH
    # Named by an analyst's verdict (no bearers): the whole fleet is reached.
    verdict = member_reach(edges, membership, accounts, bearers.clear(), named,
                           AttributionParams().identity_tie)
    assert verdict["reach"].to_list() == [1.0] * 4


def test_a_crowd_pair_attaches_nobody_without_identity_or_synchrony() -> None:
    fleets = _membership({0: [0, 1, 2], 1: [5, 6]})
    # 9 shares a proxy exit with 0 and a popular template with 1: crowd evidence only.
    crowd = _near([(0, 9, {"network": 1.5}), (1, 9, {"prompt": 1.6})])
    assert attach_by_evidence(fleets, crowd, LinkParams()).filter(
        pl.col("idx") == 9).height == 0


def _fragments(uses: list[tuple[int, str, str]], fleets: dict[int, list[int]], n: int = 40
               ) -> list[set[int]]:
    membership = _membership(fleets)
    accounts = pl.DataFrame({"account_id": [f"a{i}" for i in range(n)],
                             "idx": list(range(n))}, schema={"account_id": pl.String,
                                                             "idx": pl.Int32})
    frame = pl.DataFrame({"account_id": [f"a{i}" for i, _, _ in uses],
                          "kind": [k for _, k, _ in uses], "entity_id": [e for _, _, e in uses]})
    out = merge_fragments(membership, accounts, frame, FleetParams())
    return sorted(({int(x) for x in g} for g in out.group_by("fleet").agg("idx")["idx"]),
                  key=min)


def test_two_fragments_sharing_a_card_merge() -> None:
    # Fleets 0 and 1 hold the operator's card on two members each; fleet 2 is elsewhere.
    got = _fragments([(0, "payment", "fp1"), (1, "payment", "fp1"), (4, "payment", "fp1"),
                      (5, "payment", "fp1")], {0: [0, 1, 2, 3], 1: [4, 5, 6], 2: [10, 11]})
    assert got == [{0, 1, 2, 3, 4, 5, 6}, {10, 11}]


def test_operators_sharing_a_proxy_provider_a_public_template_or_mail_service_stay_apart(
) -> None:
    # Every member of both fleets uses the same proxy exit and a template that thirty
    # ordinary loners use too: rented or public, nobody's own.
    uses = [(i, "ip", "198.18.0.7") for i in range(7)]
    uses += [(i, "prompt", "popular") for i in [*range(7), *range(10, 40)]]
    # ... and a throwaway mail service that nobody outside the two fleets uses.
    uses += [(i, "email_domain", "10min-inbox.test") for i in range(7)]
    got = _fragments(uses, {0: [0, 1, 2, 3], 1: [4, 5, 6]})
    assert got == [{0, 1, 2, 3}, {4, 5, 6}]


def test_one_member_touching_an_operation_does_not_pull_its_team_in() -> None:
    # A team of 8 (fleet 1) one of whose members used the operation's device.
    uses = [(i, "device", "box") for i in (0, 1, 2, 10)]
    got = _fragments(uses, {0: [0, 1, 2, 3], 1: list(range(10, 18))})
    assert got == [{0, 1, 2, 3}, set(range(10, 18))]


def test_an_operations_template_merges_its_fragments_though_some_users_are_loners() -> None:
    # 4 of the template's 6 users are in fleets, where 7 of 40 accounts are: far more
    # than chance, though its stragglers formed no link.
    uses = [(i, "prompt", "op-template") for i in (0, 1, 4, 5, 20, 21)]
    got = _fragments(uses, {0: [0, 1, 2, 3], 1: [4, 5, 6]})
    assert got == [{0, 1, 2, 3, 4, 5, 6}]


def _feats(n: int, anomalous: set[int]) -> pl.DataFrame:
    """Feature rows as ``features.account_features`` gives them: the anomalous accounts
    send everything through rented exits, leak a foreign time zone and harvest."""
    odd = [i in anomalous for i in range(n)]
    return pl.DataFrame({
        "account_id": [f"a{i}" for i in range(n)],
        "rented_req": [10.0 if o else 0.0 for o in odd], "ip_req": [10.0] * n,
        "infra": [1.0 if o else 0.0 for o in odd], "tz_leak": [1.0 if o else 0.0 for o in odd],
        "harvest_ex": [10 if o else 0 for o in odd], "cap_total": [10] * n,
    })


def test_a_template_of_an_anomalous_crowd_merges_fragments_as_linking_counts_it() -> None:
    """Most users of an operation's own template formed no link yet, so the template is
    used inside fleets barely more than chance; linking still counts it (its users are,
    together, far more anomalous than the population), and so does the merge. The same
    template in ordinary hands merges nothing."""
    n = 1000
    users = [0, 1, 4, 5, *range(200, 400)]  # 4 in fleets, 200 loners: too many to be rare
    membership = _membership({0: [0, 1, 2, 3], 1: [4, 5, 6], 2: [100, 101, 102]})
    accounts = pl.DataFrame({"account_id": [f"a{i}" for i in range(n)], "idx": list(range(n))},
                            schema={"account_id": pl.String, "idx": pl.Int32})
    uses = pl.DataFrame({"account_id": [f"a{i}" for i in users], "kind": ["prompt"] * len(users),
                         "entity_id": ["op-template"] * len(users)})

    def groups(anomalous: set[int]) -> list[set[int]]:
        feats = _feats(n, anomalous)
        # what linking measured of each entity (``Links.entities``)
        entities = entity_strength(
            uses.join(accounts, on="account_id").with_columns(pl.lit("prompt").alias("family")),
            feats.select("account_id", anomaly(feats)).join(accounts, on="account_id"),
            LinkParams())
        out = merge_fragments(membership, accounts, uses, FleetParams(), feats, LinkParams(),
                              entities)
        return sorted(({int(x) for x in g} for g in out.group_by("fleet").agg("idx")["idx"]),
                      key=min)

    apart = [{0, 1, 2, 3}, {4, 5, 6}, {100, 101, 102}]
    assert groups(set()) == apart
    assert groups({*users, 2, 3, 6}) == [{0, 1, 2, 3, 4, 5, 6}, {100, 101, 102}]


def test_a_fleet_holding_two_operations_accounts_welds_neither() -> None:
    # Operation A's template "ta" and operation B's "tb"; fleet 2 is two of A's accounts
    # and one of B's, linked by chance: it touches both templates.
    uses = [(i, "prompt", "ta") for i in (0, 1, 2, 3, 10, 11)]
    uses += [(i, "prompt", "tb") for i in (4, 5, 6, 7, 12)]
    got = _fragments(uses, {0: [0, 1, 2, 3], 1: [4, 5, 6, 7], 2: [10, 11, 12]})
    assert got == [{0, 1, 2, 3}, {4, 5, 6, 7}, {10, 11, 12}]


def test_an_operation_with_two_templates_is_one_operation() -> None:
    # One operation runs two templates; its accounts use both, so its pieces merge.
    uses = [(i, "prompt", "t1") for i in (0, 1, 2, 4, 5)]
    uses += [(i, "prompt", "t2") for i in (1, 2, 3, 5, 6)]
    got = _fragments(uses, {0: [0, 1, 2, 3], 1: [4, 5, 6]})
    assert got == [{0, 1, 2, 3, 4, 5, 6}]


def test_an_operations_accounts_with_the_team_whose_card_they_used_still_merge() -> None:
    # Fleet 2 is four of the operation's accounts and the two employees whose corporate
    # card they used: the card is nobody else's, so fleet 2 bridges nothing and joins
    # the operation's other pieces (attribution follows the card to the organization).
    uses = [(i, "prompt", "ta") for i in (0, 1, 2, 3, 4, 5, 10, 11, 12)]
    uses += [(i, "payment", "corp-card") for i in (10, 11, 13, 14)]
    got = _fragments(uses, {0: [0, 1, 2, 3], 1: [4, 5, 6], 2: [10, 11, 12, 13, 14, 15]})
    assert got == [{0, 1, 2, 3, 4, 5, 6, 10, 11, 12, 13, 14, 15}]


def _random_group(rng: np.random.Generator, first: int, n: int, degree: int,
                  edges: set[tuple[int, int]]) -> None:
    """Links among accounts first..first+n-1, each pair drawn uniformly."""
    target = len(edges) + n * degree // 2
    while len(edges) < target:
        a, b = (int(x) for x in rng.integers(first, first + n, 2))
        if a != b:
            edges.add((min(a, b), max(a, b)))


def test_a_team_tied_to_an_operation_by_one_stray_link_stays_its_own_fleet() -> None:
    """In a large component the configuration model expects almost nothing between a
    team and a small operation, so one chance link (a CI bot in the operation's
    lockstep block) looked like a reason to merge; the team keeps all but that link
    inside and is a fleet of its own, while both operations come out whole."""
    rng = np.random.default_rng(0)
    edges: set[tuple[int, int]] = set()
    _random_group(rng, 0, 2000, 10, edges)       # a large operation, uniformly linked
    _random_group(rng, 2000, 40, 8, edges)       # a small one
    team = list(range(2040, 2050))
    edges.update((i, j) for i in team for j in team if i < j)  # a team on its card
    edges.update({(0, 2000), (1, 2001), (2002, 2040)})          # stray links
    e = np.array(sorted(edges))
    links = pl.DataFrame({"a": e[:, 0], "b": e[:, 1], "weight": np.full(len(e), 2.0)})

    def fleets(params: FleetParams) -> dict[int, int]:
        m = find_fleets(2050, links, params)
        return dict(zip(m["idx"].to_list(), m["fleet"].to_list(), strict=True))

    fleet = fleets(FleetParams())
    assert {fleet[i] for i in team} == {fleet[2040]}
    assert sum(f == fleet[2040] for f in fleet.values()) == len(team)
    assert len({fleet[i] for i in range(2000) if i in fleet}) == 1
    assert len({fleet[i] for i in range(2000, 2040)}) == 1
    # Without the rule the team is merged into the small operation.
    merged = fleets(FleetParams(closed_share=0.0))
    assert merged[2040] == merged[2000]


def _python_louvain_level0(nodes: np.ndarray, a: np.ndarray, b: np.ndarray, w: np.ndarray,
                           seed: int) -> np.ndarray:
    """python-louvain's own first level over an ``nx.Graph``: the reference the engine's
    list-based pass must reproduce exactly."""
    import networkx as nx
    from community import community_louvain
    from community.community_status import Status

    graph = nx.Graph()
    graph.add_nodes_from(nodes.tolist())
    graph.add_weighted_edges_from(zip(a.tolist(), b.tolist(), w.tolist(), strict=True))
    status = Status()
    status.init(graph, "weight", None)
    getattr(community_louvain, "__one_level")(graph, status, "weight", 1.0,
                                              community_louvain.check_random_state(seed))
    level0 = getattr(community_louvain, "__renumber")(status.node2com)
    return np.array([level0[int(v)] for v in nodes], dtype=np.int64)


def test_the_louvain_pass_is_python_louvains_step_for_step() -> None:
    """Random graphs (planted groups, noise, a repeated edge, a self-loop, an isolated
    pair): the same labels, node for node, as python-louvain gives on an nx.Graph."""
    rng = np.random.default_rng(5)
    for trial in range(12):
        n = int(rng.integers(5, 400))
        groups = rng.integers(0, max(1, n // 25), n)
        m = int(rng.integers(n, 6 * n))
        a = rng.integers(0, n, m)
        b = np.where(rng.random(m) < 0.8,
                     # mostly inside a group: a random member of a's group
                     np.array([rng.choice(np.flatnonzero(groups == groups[x])) for x in a]),
                     rng.integers(0, n, m))
        keep = a != b
        a, b = a[keep], b[keep]
        w = rng.choice([0.4, 0.7, 1.0, 1.3, 2.0], len(a)) * rng.random(len(a))
        if trial % 3 == 0 and len(a):  # a repeated edge with another weight, a self-loop
            a, b, w = np.append(a, [a[0], 1]), np.append(b, [b[0], 1]), np.append(w, [0.9, 0.5])
        ids = np.sort(rng.choice(10 * n, n, replace=False))  # account indices, not 0..n-1
        nodes = np.unique(np.concatenate([ids[a], ids[b]]))
        for seed in (0, 7):
            mine = _louvain_level0(nodes, ids[a], ids[b], w, seed)
            theirs = _python_louvain_level0(nodes, ids[a], ids[b], w, seed)
            assert mine.tolist() == theirs.tolist(), (trial, seed)
