"""Sybil score on hand-made worlds: open common control scores low, concealment high."""

from __future__ import annotations

import math
from typing import Any

import polars as pl

from attribution.engine.linking import FAMILIES, Links
from attribution.engine.scoring import sybil_scores
from attribution.stages.build import build_graph
from tests.support.tables import tables, ts

GROUP = 8
BACKGROUND = 60


def world(*, concealed: bool) -> dict[str, pl.DataFrame]:
    """60 ordinary US users at home, and one group of 8 accounts under common control.

    Open: a company's bots on one SDK client and its own cloud server (no workplace
    claim or team plan, so nothing declared clears them: only the absence of
    concealment). Concealed: the same group behind a residential proxy,
    one browser fingerprint each, device time zones foreign to the exit's country,
    nothing claimed.
    """
    accounts: list[dict[str, Any]] = []
    ips = [{"ip": f"203.0.113.{i}", "asn": 64502, "country": "US", "hosting": False}
           for i in range(BACKGROUND)]
    ips += [{"ip": "192.0.2.10", "asn": 64510, "country": "US", "hosting": True},
            {"ip": "198.18.0.7", "asn": 64520, "country": "US", "hosting": False,
             "proxy_id": "prx1"}]
    devices = [{"device_id": f"home{i}", "user_agent": "Mozilla/5.0 (Windows NT 10.0)",
                "platform": "windows", "timezone": "America/New_York"} for i in range(BACKGROUND)]
    account_ips = []
    account_devices = []
    for i in range(BACKGROUND):
        a = f"h{i:03d}"
        accounts.append({"account_id": a, "created_at": ts(i * 500.0),
                         "email": f"person{i}@mailbox.test", "country": "US", "plan": "free"})
        account_ips.append({"account_id": a, "ip": f"203.0.113.{i}", "first_seen": ts(0),
                            "last_seen": ts(5000), "requests": 20})
        account_devices.append({"account_id": a, "device_id": f"home{i}", "first_seen": ts(0),
                                "last_seen": ts(5000), "sessions": 5})
    if not concealed:
        devices.append({"device_id": "sdk", "user_agent": "atlas-sdk-python/1.51.0",
                        "platform": "server", "timezone": "America/New_York"})
    for i in range(GROUP):
        a = f"g{i:03d}"
        accounts.append({
            "account_id": a, "created_at": ts(10_000.0 + i), "email": f"bot{i}@acme.test",
            "country": "US", "plan": "free",
            "org_claim": None})
        account_ips.append({"account_id": a, "ip": "198.18.0.7" if concealed else "192.0.2.10",
                            "first_seen": ts(0), "last_seen": ts(5000), "requests": 200})
        device = f"rot{i}" if concealed else "sdk"
        if concealed:
            devices.append({"device_id": device, "user_agent": "Mozilla/5.0 (Windows NT 10.0)",
                            "platform": "windows", "timezone": "Asia/Shanghai"})
        account_devices.append({"account_id": a, "device_id": device, "first_seen": ts(0),
                                "last_seen": ts(5000), "sessions": 50})
    return tables(accounts=accounts, ips=ips, devices=devices, account_ips=account_ips,
                  account_devices=account_devices,
                  proxies=[{"proxy_id": "prx1", "provider": "Strata", "kind": "residential"}])


def score(concealed: bool, tabs: dict[str, pl.DataFrame] | None = None) -> float:
    """The group's fleet score, its members synchronized to the minute in both worlds."""
    return float(scores(tabs or world(concealed=concealed))[0]["sybil_score"][0])


def scores(tabs: dict[str, pl.DataFrame]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Fleet and account scores of the group (fleet 0) in ``tabs``."""
    graph = build_graph(tabs)
    index = graph.accounts.select("account_id").with_row_index("idx").with_columns(
        pl.col("idx").cast(pl.Int32))
    group = index.filter(pl.col("account_id").str.starts_with("g"))["idx"].to_list()
    pairs = [(a, b) for k, a in enumerate(group) for b in group[k + 1:]]
    edges = pl.DataFrame(
        [(a, b, *[3.0 if f == "timing" else 0.0 for f in FAMILIES]) for a, b in pairs],
        schema={"a": pl.Int32, "b": pl.Int32, **{f"s_{f}": pl.Float64 for f in FAMILIES}},
        orient="row",
    ).with_columns(pl.lit(3.0).alias("weight"), pl.lit(1).alias("families"))
    links = Links(accounts=index, edges=edges, candidates=edges.height,
                  bursts=pl.DataFrame(), near=pl.DataFrame())
    membership = pl.DataFrame({"idx": group, "fleet": [0] * len(group),
                               "attachment": [7.0] * len(group), "belief": [1.0] * len(group)},
                              schema={"idx": pl.Int32, "fleet": pl.Int64,
                                      "attachment": pl.Float64, "belief": pl.Float64})
    fleets, accounts, _ = sybil_scores(graph, links, membership)
    assert accounts.filter(pl.col("fleet") == 0).height == GROUP
    return fleets, accounts


def test_open_automation_scores_low_and_the_same_group_concealed_scores_high() -> None:
    assert score(concealed=False) < 0.2
    assert score(concealed=True) > 0.8


def test_a_program_on_its_own_servers_hides_nothing_a_browser_in_a_datacenter_does() -> None:
    from attribution.engine.features import account_features

    tabs = world(concealed=False)
    feats = account_features(build_graph(tabs))
    assert feats.filter(pl.col("account_id") == "g000")["infra"].item() == 0.0
    # The same hosting address used from a browser: traffic out of a datacenter.
    tabs["devices"] = tabs["devices"].with_columns(
        pl.when(pl.col("device_id") == "sdk").then(pl.lit("Mozilla/5.0 (Windows NT 10.0)"))
        .otherwise(pl.col("user_agent")).alias("user_agent"),
        pl.when(pl.col("device_id") == "sdk").then(pl.lit("windows"))
        .otherwise(pl.col("platform")).alias("platform"))
    feats = account_features(build_graph(tabs))
    assert feats.filter(pl.col("account_id") == "g000")["infra"].item() == 1.0


def test_a_member_that_declares_itself_and_hides_nothing_is_not_the_operations() -> None:
    # The concealed group posing as "Acme Data", but g000 works from its office line on
    # its own device and claims its own lab: an employee whose card an operation also used.
    tabs = world(concealed=True)
    tabs["account_ips"] = tabs["account_ips"].with_columns(
        pl.when(pl.col("account_id") == "g000").then(pl.lit("203.0.113.0"))
        .otherwise(pl.col("ip")).alias("ip"))
    tabs["account_devices"] = tabs["account_devices"].with_columns(
        pl.when(pl.col("account_id") == "g000").then(pl.lit("home0"))
        .otherwise(pl.col("device_id")).alias("device_id"))
    tabs["accounts"] = tabs["accounts"].with_columns(
        pl.when(pl.col("account_id") == "g000").then(pl.lit("Qinghe Labs"))
        .when(pl.col("account_id").str.starts_with("g")).then(pl.lit("Acme Data"))
        .otherwise(pl.col("org_claim")).alias("org_claim"))
    fleets, accounts = scores(tabs)
    assert fleets["sybil_score"][0] > 0.5
    by_id = dict(zip(accounts["account_id"], accounts["sybil_score"], strict=True))
    assert by_id["g000"] < 0.4  # 0.54 without the rule
    assert min(by_id[f"g{i:03d}"] for i in range(1, GROUP)) > 0.5


def test_one_members_hiding_counts_once_and_as_far_as_the_rest_hides() -> None:
    # The company's bots in the open, but g000 goes through the residential proxy: one
    # act of hiding. Its browser's zone, foreign to the exit's country because of the
    # exit, adds nothing to it (0.82 when the two were added, 0.54 when counted once),
    # and it counts as far as the rest of the fleet hides: an open team's member that
    # hides hides for itself (0.27).
    def member(zone: str) -> tuple[float, float]:
        tabs = world(concealed=False)
        tabs["account_ips"] = tabs["account_ips"].with_columns(
            pl.when(pl.col("account_id") == "g000").then(pl.lit("198.18.0.7"))
            .otherwise(pl.col("ip")).alias("ip"))
        tabs["devices"] = pl.concat([tabs["devices"], pl.DataFrame(
            {"device_id": ["vpn0"], "user_agent": ["Mozilla/5.0 (Windows NT 10.0)"],
             "platform": ["windows"], "timezone": [zone]})], how="diagonal_relaxed")
        tabs["account_devices"] = tabs["account_devices"].with_columns(
            pl.when(pl.col("account_id") == "g000").then(pl.lit("vpn0"))
            .otherwise(pl.col("device_id")).alias("device_id"))
        by_id = dict(zip(*scores(tabs)[1].select("account_id", "sybil_score"), strict=True))
        return by_id["g000"], by_id["g001"]

    def lift(zone: str) -> float:
        """How far g000 stands above the rest of its fleet, in log-odds."""
        mine, rest = member(zone)
        return math.log(mine / (1 - mine)) - math.log(rest / (1 - rest))

    foreign, rest = member("Asia/Shanghai")
    assert 1.4 * rest < foreign < 0.5  # it hides more than the rest: it moves up, not over
    assert abs(lift("Asia/Shanghai") - lift("America/New_York")) < 1e-9
