"""Sign-up surges: a cohort registered a few at a time through one rented service.

Hand-made worlds: a year of ordinary sign-ups through home ISPs and a residential proxy
service (developers who rent it and use the service a lot), then a week in which an
operator registers accounts through the same service one at a time, hours apart, and
leaves them unused. No half hour holds a burst; the week holds a surge.
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

import polars as pl
import pytest

from attribution.contracts.settings import FleetParams, LinkParams
from attribution.contracts.vocabulary import STRENGTH_COLUMNS
from attribution.engine.features import account_features
from attribution.engine.fleets import (
    attach_cohort_by_identity,
    attach_loners,
    cohort_fleets,
    find_fleets,
    place_accounts,
)
from attribution.engine.linking import (
    HOURS_SCHEMA,
    Links,
    _hours,
    _signup_networks,
    _signups,
    _surge_blocks,
    _surge_episodes,
    infer_links,
)
from attribution.engine.scoring import sybil_scores
from attribution.stages.build import build_graph
from tests.support.tables import tables, ts

DAY = 1440.0
ISPS = 8
# e-mail addresses of every shape on several services: no burst of one pattern
SHAPES = ("{w}{n}", "{w}.{w}{n}", "{n}{w}", "{w}_{n}x", "x{n}.{w}")
WORDS = ("amber", "lee", "kim", "jones", "rivera", "sato", "novak")
DOMAINS = ("mailbox.test", "post.test", "inbox.test", "webmail.test")


HORIZON = 360.0  # the snapshot's exchanges cover days 360-400


def surge_world(*, cohort: int = 90, light: int = 0, bystanders: int = 6, launch: bool = False,
                light_rate: float = 30.0, developers: int = 240) -> dict[str, pl.DataFrame]:
    """``o``: 1,600 home users on eight ISPs signing up over 400 days; ``d``: 240
    developers signing up through the proxy service over the same days, each using it
    seven minutes a week; ``c``: the operator's ``cohort`` accounts, registered in the
    week from day 390 one at a time, never used but for the first ``light`` of them,
    which use it ``light_rate`` minutes a week (30: more than the service's customers do); ``x``:
    ``bystanders`` developers who signed up through the service in that week and use
    it as the others do. With ``launch``, that week every network
    signs up three times its usual number instead (and no operator). Exchanges fall in
    the snapshot's last 40 days, at each account's own rate, from its sign-up on."""
    accounts: list[dict[str, Any]] = []
    exchanges: list[dict[str, Any]] = []

    def sign_up(name: str, day: float, ip: str, per_week: float) -> None:
        n = len(accounts)
        local = SHAPES[n % len(SHAPES)].format(n=n, w=WORDS[n % len(WORDS)])
        accounts.append({"account_id": name, "created_at": ts(day * DAY),
                         "email": f"{local}@{DOMAINS[n % len(DOMAINS)]}", "signup_ip": ip})
        first = max(day, HORIZON)
        used = round(per_week * (400.0 - first) / 7.0)
        for k in range(used):
            at = first + (k + 0.5) * (400.0 - first) / used
            exchanges.append({"account_id": name, "ts": ts(at * DAY + n * 53 % 997),
                              "ip": ip, "input_tokens": 100, "output_tokens": 200,
                              "capability": "coding"})

    for i in range(1600):
        sign_up(f"o{i:04d}", i * 0.25, f"198.51.{i % ISPS}.{i % 200 + 1}", 0.5)
    for i in range(developers):
        sign_up(f"d{i:04d}", i * 400.0 / developers, f"198.18.0.{i % 50 + 1}", 7.0)
    week = 390.0
    if launch:
        for i in range(2 * 28):  # the ISPs' usual 28 a week, twice more
            sign_up(f"l{i:03d}", week + i * 7.0 / 56, f"198.51.{i % ISPS}.{i % 200 + 1}", 0.5)
        for i in range(2 * 4):  # and the service's usual four, twice more
            sign_up(f"m{i:03d}", week + i * 7.0 / 8, f"198.18.0.{i % 50 + 1}", 7.0)
    else:
        for i in range(cohort):  # one at a time, hours apart: no half hour holds a burst
            sign_up(f"c{i:03d}", week + i * 7.0 / cohort, f"198.18.0.{i % 50 + 1}",
                    light_rate if i < light else 0.0)
        for i in range(bystanders):
            sign_up(f"x{i:03d}", week + 0.31 + i * 7.0 / max(bystanders, 1),
                    f"198.18.0.{i % 50 + 1}", 7.0)
    ips = [{"ip": f"198.51.{n}.{h}", "asn": 64500 + n, "country": "US"}
           for n in range(ISPS) for h in range(1, 201)]
    ips += [{"ip": f"198.18.0.{h}", "asn": 64600, "country": "US", "proxy_id": "prx1"}
            for h in range(1, 51)]
    account_ips = [{"account_id": a, "ip": ip, "first_seen": ts(0), "last_seen": ts(0),
                    "requests": 1}
                   for a, ip in {(e["account_id"], e["ip"]) for e in exchanges}]
    return tables(accounts=accounts, ips=ips, account_ips=account_ips, exchanges=exchanges,
                  proxies=[{"proxy_id": "prx1", "provider": "Strata", "kind": "residential"}])


def surges_of(world: dict[str, pl.DataFrame]) -> pl.DataFrame:
    """(account_id, s): the strongest surge each account is in."""
    graph = build_graph(world)
    index = graph.accounts.select("account_id").with_row_index("idx").with_columns(
        pl.col("idx").cast(pl.Int32))
    signups = _signups(graph, index, _signup_networks(graph, index), account_features(graph))
    blocks = _surge_blocks(signups, LinkParams())
    return (blocks.join(index, on="idx").group_by("account_id").agg(pl.col("s").max())
            .sort("account_id"))


def test_a_week_of_small_batches_through_one_service_is_a_surge() -> None:
    got = surges_of(surge_world())
    strong = LinkParams().attach_min * LinkParams().cap["creation"]
    cohort = got.filter(pl.col("account_id").str.starts_with("c"))
    assert cohort.height == 90
    assert cohort["s"].min() >= strong  # type: ignore[operator]
    # Nobody else is in a surge that strong: not the home users, not the developers
    # who signed up through the service that week (they used it as the service's
    # ordinary customers do, and such customers explain them).
    others = got.filter(~pl.col("account_id").str.starts_with("c"))
    assert others.filter(pl.col("s") >= strong).height == 0
    assert others.filter(~pl.col("account_id").str.starts_with("x")).height == 0


def test_a_launch_week_raising_every_network_is_no_surge() -> None:
    # Three times the usual sign-ups on every network: each network's share is as ever.
    assert surges_of(surge_world(launch=True)).height == 0


def test_without_a_history_on_the_network_there_is_no_surge() -> None:
    world = surge_world()
    # the service's own customers gone: the cohort is all the service ever signed up
    world["accounts"] = world["accounts"].filter(~pl.col("account_id").str.starts_with("d"))
    world["exchanges"] = world["exchanges"].filter(~pl.col("account_id").str.starts_with("d"))
    world["account_ips"] = world["account_ips"].filter(~pl.col("account_id").str.starts_with("d"))
    assert surges_of(world).filter(pl.col("account_id").str.starts_with("c")).height == 0


def unmarked_signups(world: dict[str, pl.DataFrame], prefix: str) -> dict[str, pl.DataFrame]:
    """The accounts named ``prefix...`` signed up from addresses on the service's ASN that
    no list marks as its exits (and used only its marked ones since)."""
    accounts = world["accounts"].with_columns(
        pl.when(pl.col("account_id").str.starts_with(prefix))
        .then(pl.lit("198.18.9.") + (pl.col("account_id").str.slice(1).cast(pl.Int32) % 50 + 1)
              .cast(pl.String))
        .otherwise(pl.col("signup_ip")).alias("signup_ip"))
    unmarked = pl.DataFrame({"ip": [f"198.18.9.{h}" for h in range(1, 51)], "asn": 64600,
                             "country": "US"})
    return {**world, "accounts": accounts,
            "ips": pl.concat([world["ips"], unmarked], how="diagonal_relaxed")}


def networks_of(world: dict[str, pl.DataFrame]) -> dict[str, tuple[str, str | None]]:
    """account_id -> (the network it signed up through, the proxy service it mostly used)."""
    graph = build_graph(world)
    index = graph.accounts.select("account_id").with_row_index("idx").with_columns(
        pl.col("idx").cast(pl.Int32))
    got = _signups(graph, index, _signup_networks(graph, index), account_features(graph)).join(
        index, on="idx")
    return {a: (s, u) for a, s, u in got.select("account_id", "signup_net", "use_net").iter_rows()}


def test_a_signup_from_an_unmarked_exit_counts_for_the_service_its_traffic_goes_through() -> None:
    # the light members signed up from exits nobody marked and used the service's marked
    # ones since; the unused members signed up the same way have no traffic to tell
    world = unmarked_signups(surge_world(light=30), "c")
    nets = networks_of(world)
    assert {nets[f"c{i:03d}"] for i in range(30)} == {("asn:64600", "proxy:Strata")}
    assert {nets[f"c{i:03d}"] for i in range(30, 90)} == {("asn:64600", None)}
    got = surges_of(world)
    strong = LinkParams().attach_min * LinkParams().cap["creation"]
    light = got.filter(pl.col("account_id").is_in([f"c{i:03d}" for i in range(30)]))
    assert light.height == 30
    assert light["s"].min() >= strong  # type: ignore[operator]
    # counted by use, the service's customers who signed up that week are no surge either
    others = got.filter(~pl.col("account_id").str.starts_with("c"))
    assert others.filter(pl.col("s") >= strong).height == 0


def test_a_minority_of_traffic_through_a_service_is_no_use_of_it() -> None:
    world = surge_world(light=4, light_rate=7.0)
    # c000-c003 signed up from an ISP, and sent a third of their traffic through the service
    home = world["exchanges"].filter(pl.col("account_id").is_in(["c000", "c001", "c002", "c003"]))
    home = home.with_columns(pl.lit("198.51.0.7").alias("ip"))
    world = {**world,
             "accounts": world["accounts"].with_columns(
                 pl.when(pl.col("account_id").str.starts_with("c00"))
                 .then(pl.lit("198.51.0.7")).otherwise(pl.col("signup_ip")).alias("signup_ip")),
             "exchanges": pl.concat([world["exchanges"], home, home])}
    world["account_ips"] = world["exchanges"].group_by("account_id", "ip").agg(
        pl.col("ts").min().alias("first_seen"), pl.col("ts").max().alias("last_seen"),
        pl.len().cast(pl.Int64).alias("requests"))
    nets = networks_of(world)
    assert {nets[f"c{i:03d}"] for i in range(4)} == {("asn:64500", None)}
    assert nets["d0000"] == ("proxy:Strata", "proxy:Strata")


def scored(world: dict[str, pl.DataFrame]) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """(account_id, fleet, belief) after the fleet stage, (account_id, sybil_score) and the
    fleets' feature evidence (fleet, kind, detail, weight)."""
    graph = build_graph(world)
    feats = account_features(graph)
    links = infer_links(graph, LinkParams(), feats)
    params = FleetParams()
    membership = find_fleets(links.accounts.height, links.edges, params)
    membership = attach_loners(membership, links.bursts, links.accounts.height, params)
    membership, links = cohort_fleets(membership, links, params)
    _, scores, evidence = sybil_scores(graph, links, membership, feats)
    return (membership.join(links.accounts, on="idx").select("account_id", "fleet", "belief"),
            scores.select("account_id", "sybil_score"), evidence)


def fleets_of(world: dict[str, pl.DataFrame]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(account_id, fleet, belief) after the fleet stage, and (account_id, sybil_score)."""
    members, scores, _ = scored(world)
    return members, scores


def test_the_unused_cohort_forms_a_fleet_scored_inauthentic() -> None:
    members, scores = fleets_of(surge_world())
    cohort = members.filter(pl.col("account_id").str.starts_with("c"))
    assert cohort.height >= 80  # nearly all of the 90
    assert cohort["fleet"].n_unique() <= 3
    assert set(members["account_id"].str.slice(0, 1).to_list()) == {"c"}
    flagged = scores.filter(pl.col("sybil_score") >= 0.5)["account_id"]
    assert flagged.str.starts_with("c").all()
    assert flagged.len() >= 80


def test_used_members_join_the_cohort_beside_its_unused_ones() -> None:
    members, scores = fleets_of(surge_world(light=30))
    light = members.filter(pl.col("account_id").is_in([f"c{i:03d}" for i in range(30)]))
    assert light.height >= 25
    cohort = members.filter(pl.col("account_id").str.starts_with("c"))
    assert cohort["fleet"].n_unique() <= 3
    # the developers who signed up that week use it as the service's customers do: out
    assert members.filter(pl.col("account_id").str.starts_with("x")).height == 0
    assert scores.filter(pl.col("sybil_score") >= 0.5)["account_id"].str.starts_with("c").all()


def test_a_cohort_that_has_all_used_the_service_unlike_its_customers_is_a_fleet() -> None:
    # every member used it, more than the service's customers do: sure enough to link
    # used members to one another, and the developers who signed up that week stay out
    members, scores = fleets_of(surge_world(light=90))
    cohort = members.filter(pl.col("account_id").str.starts_with("c"))
    assert cohort.height >= 80
    assert cohort["fleet"].n_unique() <= 3
    # (and the one developer who signed up in the last days and has not used it yet)
    others = members.filter(~pl.col("account_id").str.starts_with("c"))["account_id"]
    assert others.to_list() in ([], ["d0239"])
    flagged = scores.filter(pl.col("sybil_score") >= 0.5)["account_id"]
    assert flagged.str.starts_with("c").sum() >= 80
    assert flagged.filter(~flagged.str.starts_with("c")).to_list() in ([], ["d0239"])


def test_a_used_cohort_that_looks_like_the_services_customers_is_not_linked() -> None:
    # a service that signs up 42 customers a week signs up 40 more, used exactly as its
    # customers use it: the surge says about half of the week's sign-ups are excess, not
    # which of the used ones
    graph = build_graph(surge_world(cohort=40, light=40, light_rate=7.0, developers=2400))
    links = infer_links(graph, LinkParams(), account_features(graph))
    cohort = links.cohort.join(links.accounts, left_on="a", right_on="idx")
    assert cohort.filter(pl.col("account_id").str.starts_with("c")).height == 0


def test_no_cohort_fleet_in_a_launch_week() -> None:
    members, scores = fleets_of(surge_world(launch=True))
    assert members.height == 0
    assert scores.filter(pl.col("sybil_score") >= 0.5).height == 0


def _links(cohort: pl.DataFrame, cohort_members: pl.DataFrame, n: int = 20) -> Links:
    accounts = pl.DataFrame({"account_id": [f"a{i:02d}" for i in range(n)]}).with_row_index(
        "idx").with_columns(pl.col("idx").cast(pl.Int32))
    empty = pl.DataFrame(schema={"a": pl.Int32, "b": pl.Int32, "weight": pl.Float64})
    return Links(accounts=accounts, edges=empty, candidates=0, bursts=pl.DataFrame(),
                 near=pl.DataFrame(), cohort=cohort, cohort_members=cohort_members)


def _edges(pairs: list[tuple[int, int]]) -> pl.DataFrame:
    return pl.DataFrame({"a": [a for a, _ in pairs], "b": [b for _, b in pairs],
                         "weight": [3.0] * len(pairs)},
                        schema={"a": pl.Int32, "b": pl.Int32, "weight": pl.Float64})


def _members(placed: dict[int, list[int]]) -> pl.DataFrame:
    rows = [(i, f, 5.0, 1.0) for f, idx in placed.items() for i in idx]
    return pl.DataFrame(rows, schema={"idx": pl.Int32, "fleet": pl.Int64, "attachment": pl.Float64,
                                      "belief": pl.Float64}, orient="row")


def _cohort_members(idx: list[int], dormant: set[int], lam: float = 0.05) -> pl.DataFrame:
    return pl.DataFrame({"block": [7] * len(idx), "idx": idx, "s": [2.0] * len(idx),
                         "lam": [lam] * len(idx), "dormant": [i in dormant for i in idx]},
                        schema={"block": pl.UInt64, "idx": pl.Int32, "s": pl.Float64,
                                "lam": pl.Float64, "dormant": pl.Boolean})


def test_a_cohort_never_moves_a_placed_account_and_its_edges_to_them_are_dropped() -> None:
    placed = _members({0: [0, 1, 2], 1: [3, 4, 5]})
    # the cohort: 10..13 unplaced, and 2 and 3, placed in two fleets, which it must not weld
    cohort = _edges([(10, 11), (11, 12), (12, 13), (2, 10), (3, 13), (2, 3)])
    members = _cohort_members([2, 3, 10, 11, 12, 13], dormant={10, 11, 12, 13})
    out, links = cohort_fleets(placed, _links(cohort, members), FleetParams())
    assert out.filter(pl.col("idx") < 6).equals(placed)
    new = out.filter(pl.col("idx") >= 10)
    assert new["fleet"].unique().to_list() == [2]  # numbered after the existing fleets
    assert new["belief"].to_list() == [1.0] * 4
    # the edges the new fleet uses join the links (its evidence); the others do not
    assert links.edges.select("a", "b").rows() == [(10, 11), (11, 12), (12, 13)]


def test_a_cohort_mostly_in_one_fleet_joins_it_with_a_belief() -> None:
    placed = _members({0: [0, 1, 2, 3], 1: [5]})
    cohort = _edges([(10, 11), (11, 12)])
    # the cohort's placed members: four in fleet 0, one in fleet 1 (80 % in one)
    members = _cohort_members([0, 1, 2, 3, 5, 10, 11, 12], dormant={10, 11, 12})
    out, links = cohort_fleets(placed, _links(cohort, members), FleetParams())
    joined = out.filter(pl.col("idx") >= 10)
    assert joined["fleet"].to_list() == [0, 0, 0]
    assert 0.5 <= joined["belief"].min() < 1.0  # type: ignore[operator]
    assert links.edges.height == 0  # nobody was left for a fleet of its own


def test_a_second_attachment_keeps_the_beliefs_of_the_first() -> None:
    placed = _members({0: [0, 1, 2, 3]}).with_columns(
        pl.when(pl.col("idx") == 3).then(0.6).otherwise(1.0).alias("belief"))
    out = attach_loners(placed, _cohort_members([0, 1, 2], dormant=set()), 5000, FleetParams())
    assert out.sort("idx")["belief"].to_list() == [1.0, 1.0, 1.0, 0.6]


def _near(rows: list[tuple[int, int, dict[str, float]]]) -> pl.DataFrame:
    return pl.DataFrame(
        [(a, b, *[s.get(c, 0.0) for c in STRENGTH_COLUMNS]) for a, b, s in rows],
        schema={"a": pl.Int32, "b": pl.Int32, **{c: pl.Float64 for c in STRENGTH_COLUMNS}},
        orient="row")


def test_a_cohort_member_holding_one_operators_template_joins_that_operator() -> None:
    # two operators register through one service in the same weeks: A (0..7) holds most
    # of the cohort's placed members, B (10..12) the rest; 20 uses B's own template and
    # shares minutes with one of A's accounts, 21 and 22 have nothing but their sign-up
    placed = _members({0: list(range(8)), 1: [10, 11, 12]})
    template = {"s_prompt": 1.5}
    near = _near([(20, 10, template), (20, 11, template), (20, 12, template),
                  (0, 20, {"s_timing": 2.3}), (1, 20, {"s_network": 1.0, "s_email": 0.5})])
    members = _cohort_members([*range(8), 10, 11, 12, 20, 21, 22], dormant={20, 21, 22})
    links = replace(_links(_edges([(21, 22)]), members, n=30), near=near)
    out, links = attach_cohort_by_identity(placed, links, FleetParams(), LinkParams())
    assert out.filter(pl.col("idx") == 20).select("fleet", "belief").row(0) == (1, 1.0)
    # 20 was placed on the cohort's own evidence and does not vote on the rest: with
    # its vote, A would hold 8 of 12 (under ``attach_share``) and 21, 22 stay out
    out, _ = cohort_fleets(out, links, FleetParams())
    joined = out.filter(pl.col("idx").is_in([21, 22]))
    assert joined["fleet"].to_list() == [0, 0]
    assert joined["belief"].max() < 1.0  # type: ignore[operator]


def test_networks_timing_and_mail_name_no_operator_of_a_cohort() -> None:
    placed = _members({0: list(range(8)), 1: [10, 11, 12]})
    crowd = {"s_network": 2.0, "s_email": 1.5, "s_timing": 3.0, "s_profile": 1.0}
    near = _near([(20, 10, crowd), (20, 11, crowd), (20, 12, crowd)])
    members = _cohort_members([*range(8), 10, 11, 12, 20], dormant={20})
    links = replace(_links(_edges([]), members, n=30), near=near)
    out, kept = attach_cohort_by_identity(placed, links, FleetParams(), LinkParams())
    assert out.equals(placed) and kept.cohort_members.equals(members)


def _hours_of(rows: dict[int, dict[int, int]]) -> pl.DataFrame:
    return pl.DataFrame([(i, h, n) for i, by_hour in rows.items() for h, n in by_hour.items()],
                        schema=HOURS_SCHEMA, orient="row")


def test_a_cohort_loner_joins_the_operator_whose_hours_it_keeps() -> None:
    # A (0..7) works its accounts 02-05 UTC, B (10..12) 14-17; the cohort's loners:
    # 20 active on six days at 15-16, 21 on two days at 03, 22 never
    placed = _members({0: list(range(8)), 1: [10, 11, 12]})
    hours = _hours_of({**{i: {2: 3, 3: 4, 4: 2, 5: 1} for i in range(8)},
                    **{i: {14: 2, 15: 5, 16: 3, 17: 1} for i in (10, 11, 12)},
                    20: {15: 4, 16: 2}, 21: {3: 2}})
    members = _cohort_members([*range(8), 10, 11, 12, 20, 21, 22], dormant={20, 21, 22})
    out = attach_loners(placed, members, 5000, FleetParams(), hours)
    fleet = dict(out.select("idx", "fleet").iter_rows())
    assert (fleet[20], fleet[21], fleet[22]) == (1, 0, 0)
    belief = dict(out.select("idx", "belief").iter_rows())
    # without hours, the share alone: all three join A
    alone = attach_loners(placed, members, 5000, FleetParams())
    assert alone.filter(pl.col("idx") >= 20)["fleet"].to_list() == [0, 0, 0]
    share = dict(alone.select("idx", "belief").iter_rows())
    assert belief[20] > 0.95 and belief[21] > share[21] and belief[22] == share[22]


def test_hours_that_fit_both_operators_leave_the_share_as_it_was() -> None:
    # two fleets of eight with one schedule; the cohort holds eight of A and three of B
    placed = _members({0: list(range(8)), 1: list(range(10, 18))})
    same = {9: 2, 10: 3, 11: 2}
    hours = _hours_of({**{i: same for i in (*range(8), *range(10, 18))}, 20: {10: 3}})
    members = _cohort_members([*range(8), 10, 11, 12, 20], dormant={20})
    out = attach_loners(placed, members, 5000, FleetParams(), hours)
    alone = attach_loners(placed, members, 5000, FleetParams())
    row = out.filter(pl.col("idx") == 20).select("fleet", "belief").row(0)
    assert row == pytest.approx(alone.filter(pl.col("idx") == 20).select("fleet", "belief").row(0))


def test_a_cohort_loner_joins_the_operator_whose_device_zone_it_shows() -> None:
    # A (0..7) leaks Asia/Singapore, B (10..12) Europe/Berlin; the cohort's loners: 20
    # shows Berlin, 21 Singapore, 22 no zone (it keeps the share: A's eight of eleven)
    placed = _members({0: list(range(8)), 1: [10, 11, 12]})
    zones = pl.DataFrame({"idx": [*range(8), 10, 11, 12, 20, 21],
                          "zone": ["Asia/Singapore"] * 8 + ["Europe/Berlin"] * 4
                          + ["Asia/Singapore"]}, schema={"idx": pl.Int32, "zone": pl.String})
    members = _cohort_members([*range(8), 10, 11, 12, 20, 21, 22], dormant={20, 21, 22})
    out = attach_loners(placed, members, 5000, FleetParams(), zones=zones)
    fleet = dict(out.select("idx", "fleet").iter_rows())
    assert (fleet[20], fleet[21], fleet[22]) == (1, 0, 0)
    belief = dict(out.select("idx", "belief").iter_rows())
    share = dict(attach_loners(placed, members, 5000, FleetParams()).select(
        "idx", "belief").iter_rows())
    assert belief[21] > share[21] and belief[22] == share[22]
    # a zone both fleets show alike leaves the share as it was
    alike = zones.with_columns(pl.lit("UTC").alias("zone"))
    same = attach_loners(placed, members, 5000, FleetParams(), zones=alike)
    assert same.filter(pl.col("idx") >= 20).equals(
        attach_loners(placed, members, 5000, FleetParams()).filter(pl.col("idx") >= 20))


def test_hours_count_days_not_minutes() -> None:
    graph = build_graph(surge_world())
    day = 20_000 * 1440  # minutes since the epoch at a day's start
    act = pl.DataFrame({
        "account_id": ["a"] * 45 + ["b"],
        # a: forty minutes at 03 UTC on one day, the same hour on four more days, and
        # 23:59 on the first day; b: once, at 15
        "minute": [day + 180 + m for m in range(40)] + [day + d * 1440 + 200 for d in (1, 2, 3, 4)]
        + [day + 1439, day + 900],
        "network": ["asn:1"] * 46,
    }, schema={"account_id": pl.String, "minute": pl.Int32, "network": pl.String})
    accounts = pl.DataFrame({"account_id": ["a", "b", "c"], "idx": [0, 1, 2]},
                            schema={"account_id": pl.String, "idx": pl.Int32})
    out = _hours(replace(graph, activity=act), accounts, pl.Series([0, 1, 0]))
    assert out.rows() == [(0, 3, 5), (0, 23, 1), (1, 15, 1)]


def test_an_operation_found_in_pieces_is_one_before_its_cohort_is_placed() -> None:
    # one operation linked in three pieces of two (10..15), all of one sign-up surge and
    # alike; four of its accounts nothing linked are in a cohort with them (20..23)
    edges = _edges([(10, 11), (12, 13), (14, 15)])
    cohort = _edges([(20, 21), (21, 22), (22, 23)])
    members = _cohort_members([*range(10, 16), 20, 21, 22, 23], dormant={20, 21, 22, 23})
    episodes = pl.DataFrame(
        [(i, 0, True, i, 1, 0, "free", "Europe/Moscow") for i in range(10, 16)],
        schema={"idx": pl.Int32, "episode": pl.Int64, "strong": pl.Boolean, "minute": pl.Int64,
                "level": pl.Int32, "cap_main": pl.Int32, "plan": pl.String, "zone": pl.String},
        orient="row")
    links = replace(_links(cohort, members, n=30), edges=edges, episodes=episodes)
    uses = pl.DataFrame(schema={"account_id": pl.String, "kind": pl.String,
                                "entity_id": pl.String})
    out, _ = place_accounts(links, uses, pl.DataFrame(), FleetParams(), LinkParams())
    fleet = dict(out.select("idx", "fleet").iter_rows())
    # the pieces are one fleet, and the cohort joined it (each piece alone held a third
    # of the cohort's placed members: the cohort would have been a fleet of its own)
    assert {fleet[i] for i in range(10, 16)} == {fleet[20]}
    assert {fleet[i] for i in (20, 21, 22, 23)} == {fleet[10]}
    assert out.filter(pl.col("idx") >= 20)["belief"].max() < 1.0  # type: ignore[operator]


def test_an_episode_says_where_when_and_against_what_it_was_a_surge() -> None:
    graph = build_graph(surge_world())
    links = infer_links(graph, LinkParams(), account_features(graph))
    stats = links.episode_stats
    assert stats.height == 1
    row = stats.row(0, named=True)
    assert row["network"] == "proxy:Strata"
    # the week's 90 cohort sign-ups, 6 developers and the service's usual four or so; its
    # share of all sign-ups (13 %) of that week's (the cohort's own included) is about 17
    assert 96 <= row["signups"] <= 105
    assert 10.0 <= row["expected"] <= 25.0
    assert row["log10_chance"] > 30  # 101 where 17: about 1 in 10^42
    assert (row["end"] - row["start"]) / DAY <= 7.0
    sure = links.episodes.filter(pl.col("strong")).join(links.accounts, on="idx")["account_id"]
    assert sure.str.starts_with("c").all() and sure.len() == 90


def test_weaker_surge_members_near_an_episode_are_in_it_in_doubt() -> None:
    # strong: 0-9 on X over days 10-14; weaker: 10-11 on X within a week of it, 12 on X a
    # month later, 13 on another network, 5 (strong already) again
    day = int(DAY)
    minute = [10 * day + i * day // 2 for i in range(10)] + [8 * day, 20 * day, 45 * day, 12 * day]
    signups = pl.DataFrame({"idx": list(range(14)), "minute": minute,
                            "signup_net": ["proxy:X"] * 13 + ["asn:1"], "use_net": [None] * 14,
                            "level": 1, "cap_main": 0, "plan": "free", "zone": ""},
                           schema_overrides={"idx": pl.Int32, "use_net": pl.String})
    rows = [(i, 1.9, "proxy:X") for i in range(10)] + [(10, 1.0, "proxy:X"), (11, 1.2, "proxy:X"),
                                                       (12, 1.2, "proxy:X"), (13, 1.5, "asn:1"),
                                                       (5, 1.0, "proxy:X")]
    every = pl.DataFrame(rows, schema={"idx": pl.Int32, "s": pl.Float64, "net": pl.String},
                         orient="row")
    episodes, stats = _surge_episodes(every.filter(pl.col("s") >= 1.8), every, signups,
                                      LinkParams())
    got = {r["idx"]: (r["episode"], r["strong"]) for r in episodes.iter_rows(named=True)}
    assert got == {**{i: (1, True) for i in range(10)}, 10: (1, False), 11: (1, False)}
    assert stats["episode"].to_list() == [1]


def test_the_fleet_of_a_surge_quotes_it_in_its_burst_sentence() -> None:
    _, _, evidence = scored(surge_world())
    burst = evidence.filter(pl.col("kind") == "creation_burst")["detail"].to_list()
    assert len(burst) == 1
    # the 90, six customers who signed up that week and the service's usual four or five
    assert ("; 90 of them signed up through the same proxy service (Strata) from 2027-01-30 to "
            "2027-02-05, or have sent most of their requests through it since, when it took 101 "
            "such accounts") in burst[0]
    assert re.search(r"such accounts where its usual share of all sign-ups predicts about 1\d; "
                     r"1 in 10\^\d+ by chance$", burst[0]), burst[0]
