"""Link inference on hand-made worlds: hubs carry nothing, strong ids link, families stay apart."""

from __future__ import annotations

import polars as pl
import pytest

from attribution.contracts.settings import LinkParams
from attribution.contracts.vocabulary import FAMILIES
from attribution.engine.features import account_features
from attribution.engine.linking import (
    SignUps,
    _same_block,
    corroborating,
    entity_strength,
    infer_links,
)
from attribution.stages.build import build_graph
from tests.support.tables import tables, ts


def world(n_hub: int = 300) -> dict[str, pl.DataFrame]:
    accounts = [
        {"account_id": f"u{i:04d}", "created_at": ts(i * 97.0), "email": f"person{i}@mailbox.test"}
        for i in range(n_hub)
    ]
    # Everyone on one carrier NAT IP; u0000..u0002 also share a card; u0010/u0011 share one home IP.
    ips = [{"ip": "198.51.100.7", "asn": 64501}, {"ip": "203.0.113.9", "asn": 64502}]
    account_ips = [
        {"account_id": a["account_id"], "ip": "198.51.100.7", "first_seen": ts(0),
         "last_seen": ts(5000), "requests": 5}
        for a in accounts
    ] + [
        {"account_id": f"u{i:04d}", "ip": "203.0.113.9", "first_seen": ts(0),
         "last_seen": ts(5000), "requests": 3}
        for i in (10, 11)
    ]
    pms = [{"payment_method_id": f"pm{i}", "fingerprint": "fpA", "kind": "card"} for i in range(3)]
    aps = [{"account_id": f"u{i:04d}", "payment_method_id": f"pm{i}", "first_seen": ts(0),
            "last_seen": ts(10)} for i in range(3)]
    return tables(accounts=accounts, ips=ips, account_ips=account_ips, payment_methods=pms,
                  account_payments=aps)


def pairs(links_edges: pl.DataFrame, accounts: pl.DataFrame) -> set[tuple[str, str]]:
    ids = accounts["account_id"].to_list()
    return {(ids[a], ids[b]) for a, b in links_edges.select("a", "b").iter_rows()}


def test_card_links_and_hub_ip_does_not() -> None:
    graph = build_graph(world())
    links = infer_links(graph, LinkParams())
    got = pairs(links.edges, links.accounts)
    assert got == {("u0000", "u0001"), ("u0000", "u0002"), ("u0001", "u0002")}


def test_one_weak_family_alone_forms_no_edge() -> None:
    # u0010 and u0011 share a rare home IP (network family) and nothing else.
    graph = build_graph(world())
    links = infer_links(graph, LinkParams())
    scored = links.edges
    assert ("u0010", "u0011") not in pairs(scored, links.accounts)


def test_big_blocks_cost_linear_pairs() -> None:
    graph = build_graph(world(n_hub=2000))
    params = LinkParams(min_block_strength=0.0)  # even the hub forms pairs now
    links = infer_links(graph, params)
    assert links.candidates <= 2000 * params.window * 3


# A batch whose operator varied the e-mail of every account (no two share a shape or domain).
MIXED_EMAILS = ("amber.falcon1@mailbox.test", "k9x2q@inbox.test", "jsmith@post.test",
                "lee_77@mail.test", "z.q.r@box.test")


def batch_world(same_network: bool, emails: tuple[str, ...] | None = None) -> dict[str, pl.DataFrame]:
    """200 ordinary sign-ups over a month, and a batch of 5 created in 5 minutes, unused."""
    accounts = [
        {"account_id": f"o{i:03d}", "created_at": ts(i * 211.0),
         "email": f"person{i}@mailbox.test", "signup_ip": f"198.51.100.{i % 200 + 1}"}
        for i in range(200)
    ] + [
        {"account_id": f"b{i}", "created_at": ts(20_000.0 + i),
         "email": emails[i] if emails else f"amber.falcon{i}@mailbox.test",
         "signup_ip": f"203.0.113.{i + 1}"}
        for i in range(5)
    ]
    ips = [{"ip": f"198.51.100.{i + 1}", "asn": 64501 + i % 20} for i in range(200)] + [
        {"ip": f"203.0.113.{i + 1}", "asn": 64900 + (0 if same_network else i),
         "proxy_id": "prx_rent" if same_network else None}
        for i in range(5)
    ]
    return tables(accounts=accounts, ips=ips)


def test_an_unused_batch_signed_up_through_one_rented_network_is_linked() -> None:
    links = infer_links(build_graph(batch_world(same_network=True)), LinkParams())
    got = pairs(links.edges, links.accounts)
    assert {(a, b) for a, b in got if a.startswith("b")} == {
        (f"b{i}", f"b{j}") for i in range(5) for j in range(i + 1, 5)}
    assert all(a.startswith("b") and b.startswith("b") for a, b in got)


def test_the_lockstep_null_moves_a_batch_over_the_whole_snapshot() -> None:
    """``SignUps.born``: an ordinary account's timeline starts at its sign-up; a batch's
    members have none (when they were born is part of what was coordinated), and the
    run's links read the same sign-ups as the lockstep step."""
    graph = build_graph(batch_world(same_network=True))
    feats = account_features(graph)
    signups = SignUps.of(graph, LinkParams(), feats)
    born = signups.born(graph, LinkParams())
    assert born.height == 200
    assert not born["account_id"].str.starts_with("b").any()
    created = graph.accounts.filter(pl.col("account_id") == "o007")["created_at"]
    assert born.filter(pl.col("account_id") == "o007")["minute"].item() == created.dt.epoch("s").item() // 60
    again = infer_links(graph, LinkParams(), feats, signups=signups)
    assert again.edges.equals(infer_links(graph, LinkParams()).edges)


def test_an_unused_batch_from_unrelated_networks_is_not() -> None:
    # The sign-up burst alone is one family: no edge.
    links = infer_links(build_graph(batch_world(same_network=False)), LinkParams())
    assert links.edges.height == 0


def test_a_batch_with_varied_emails_signed_up_through_one_rented_network_is_linked() -> None:
    # No e-mail pattern in common: the burst is the sign-ups on one proxy service.
    links = infer_links(build_graph(batch_world(same_network=True, emails=MIXED_EMAILS)),
                        LinkParams())
    assert pairs(links.edges, links.accounts) == {
        (f"b{i}", f"b{j}") for i in range(5) for j in range(i + 1, 5)}
    unrelated = infer_links(build_graph(batch_world(same_network=False, emails=MIXED_EMAILS)),
                            LinkParams())
    assert unrelated.edges.height == 0


def test_steady_sign_ups_through_one_busy_network_are_no_burst() -> None:
    # 400 people sign up through one carrier NAT over a month, two minutes apart at the busiest:
    # the network's own rate explains every window.
    accounts = [{"account_id": f"o{i:03d}", "created_at": ts(i * 100.0 + (i % 3) * 49.0),
                 "email": f"person{i}@mailbox.test", "signup_ip": f"198.51.100.{i % 250 + 1}"}
                for i in range(400)]
    ips = [{"ip": f"198.51.100.{i + 1}", "asn": 64501, "proxy_id": "prx_nat"} for i in range(250)]
    account_ips = [{"account_id": a["account_id"], "ip": a["signup_ip"], "first_seen": ts(0),
                    "last_seen": ts(5000), "requests": 5} for a in accounts]
    links = infer_links(build_graph(tables(accounts=accounts, ips=ips, account_ips=account_ips)),
                        LinkParams())
    assert links.edges.height == 0


def crowd(n: int = 30, *, card_pair: bool = False) -> dict[str, pl.DataFrame]:
    """Developers from a region the service does not reach: 30 US-claimed accounts on the
    same three residential proxy exits, device time zones foreign to the exits' country,
    one throwaway mail service and one popular tool's template, each at its own minutes.
    With ``card_pair``, c000 and c001 also pay with one card."""
    accounts = [{"account_id": f"c{i:03d}", "created_at": ts(i * 613.0),
                 "email": f"dev{i}@throwmail.test", "country": "US"} for i in range(n)]
    accounts += [{"account_id": f"h{i:03d}", "created_at": ts(i * 211.0),
                  "email": f"person{i}@mailbox.test", "country": "US"} for i in range(60)]
    exits = [f"198.18.0.{k}" for k in range(3)]
    ips = [{"ip": x, "asn": 64520, "country": "US", "proxy_id": "prx1"} for x in exits]
    ips += [{"ip": f"203.0.113.{i}", "asn": 64502, "country": "US"} for i in range(60)]
    devices = [{"device_id": f"d{i:03d}", "platform": "windows", "timezone": "Asia/Shanghai",
                "user_agent": "Mozilla/5.0 (Windows NT 10.0)"} for i in range(n)]
    devices += [{"device_id": f"hd{i:03d}", "platform": "windows",
                 "timezone": "America/New_York", "user_agent": "Mozilla/5.0 (Windows NT 10.0)"}
                for i in range(60)]
    account_ips, account_devices, exchanges = [], [], []
    for i in range(n):
        a = f"c{i:03d}"
        for x in exits:
            account_ips.append({"account_id": a, "ip": x, "first_seen": ts(0),
                                "last_seen": ts(90_000), "requests": 20})
        account_devices.append({"account_id": a, "device_id": f"d{i:03d}", "first_seen": ts(0),
                                "last_seen": ts(90_000), "sessions": 10})
        for k in range(6):  # each developer at minutes of their own
            exchanges.append({"account_id": a, "ts": ts(i * 1009.0 + k * 131.0 + 7),
                              "ip": exits[k % 3], "device_id": f"d{i:03d}", "input_tokens": 100,
                              "output_tokens": 200, "capability": "coding",
                              "prompt_hash": "tool-mode-prompt"})
    for i in range(60):
        account_ips.append({"account_id": f"h{i:03d}", "ip": f"203.0.113.{i}",
                            "first_seen": ts(0), "last_seen": ts(90_000), "requests": 10})
        account_devices.append({"account_id": f"h{i:03d}", "device_id": f"hd{i:03d}",
                                "first_seen": ts(0), "last_seen": ts(90_000), "sessions": 5})
    pms, aps = [], []
    if card_pair:
        pms = [{"payment_method_id": f"pm{i}", "fingerprint": "fpC", "kind": "card"}
               for i in range(2)]
        aps = [{"account_id": f"c{i:03d}", "payment_method_id": f"pm{i}", "first_seen": ts(0),
                "last_seen": ts(10)} for i in range(2)]
    return tables(accounts=accounts, ips=ips, devices=devices, account_ips=account_ips,
                  account_devices=account_devices, exchanges=exchanges,
                  proxies=[{"proxy_id": "prx1", "provider": "Strata", "kind": "residential"}],
                  payment_methods=pms, account_payments=aps)


def test_a_crowd_on_rented_exits_with_foreign_time_zones_forms_no_fleet() -> None:
    graph = build_graph(crowd())
    links = infer_links(graph, LinkParams())
    # Exits, mail service and template agree on every pair, strongly enough for an edge
    # by family count and weight (243 links without the rule): what is missing is any
    # identity or synchrony.
    assert links.edges.height == 0


def test_a_card_inside_the_crowd_still_links_its_two_accounts() -> None:
    graph = build_graph(crowd(card_pair=True))
    links = infer_links(graph, LinkParams())
    assert pairs(links.edges, links.accounts) == {("c000", "c001")}


def test_a_shared_network_does_not_corroborate_the_lockstep_block_read_off_it() -> None:
    # lockstep + the same service's exits: one observation; with an e-mail pattern or a
    # sign-up burst beside them the network counts again.
    cols = [f"s_{f}" for f in FAMILIES]
    rows = [{"s_lockstep": 1.0, "s_network": 1.0}, {"s_lockstep": 1.0, "s_email": 1.0},
            {"s_lockstep": 1.0, "s_network": 1.0, "s_creation": 1.0}, {"s_network": 1.0, "s_device": 1.0}]
    scored = pl.DataFrame([{c: r.get(c, 0.0) for c in cols} for r in rows])
    assert scored.select(corroborating(0.4).alias("n"))["n"].to_list() == [1, 2, 3, 2]


def test_a_pair_in_one_block_carries_lockstep_once_though_an_end_is_in_two_blocks() -> None:
    """An account can be in a block on each of two networks; its candidate pairs stay
    one row each, with lockstep where the two ends share either block."""
    scored = pl.DataFrame({"a": [0, 0, 1], "b": [1, 2, 2], "s_lockstep": [0.0, 0.0, 0.0]},
                          schema={"a": pl.Int32, "b": pl.Int32, "s_lockstep": pl.Float64})
    in_block = pl.DataFrame({"idx": [0, 0, 1, 2], "block": [5, 9, 5, 7]},
                            schema={"idx": pl.UInt32, "block": pl.Int64})
    out = _same_block(scored, in_block, LinkParams())
    assert out.select("a", "b").rows() == [(0, 1), (0, 2), (1, 2)]
    assert out["s_lockstep"].to_list() == [LinkParams().cap["lockstep"], 0.0, 0.0]


def test_a_popular_template_is_no_evidence_for_the_anomalous_minority_among_its_users() -> None:
    # 10,000 accounts; a public tool's template used by 2,000 of them, 500 of whom sit on
    # rented networks with foreign zones (its users together a sixth of the way to fully
    # anomalous), and an operation's template used by 300 accounts that all do.
    n = 10_000
    anomaly = pl.DataFrame({"idx": list(range(n)),
                            "anomaly": [0.9 if 1_800 <= i < 2_300 or i < 300 else 0.05
                                        for i in range(n)]})
    public = [{"idx": i, "entity_id": "public"} for i in range(300, 2_300)]
    own = [{"idx": i, "entity_id": "own"} for i in range(300)]
    uses = pl.DataFrame(public + own).with_columns(pl.lit("prompt").alias("kind"),
                                                  pl.lit("prompt").alias("family"))
    p = LinkParams()
    got = {e: (s, lift) for e, s, lift in
           entity_strength(uses, anomaly, p).select("entity_id", "s", "lift").iter_rows()}
    assert 0.1 < got["public"][1] < p.coherence_from  # anomalous together, but a crowd
    assert got["public"][0] < p.family_threshold  # so sharing it does not count
    assert got["own"][1] > p.coherence_full  # all anomalous: one operation's
    assert got["own"][0] == pytest.approx(p.cap["prompt"] * p.coherence_share)
