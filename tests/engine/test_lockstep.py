"""The group-level lockstep detector on planted blocks in busy backgrounds.

Each world is an activity table (account, minute, network) built here: ordinary users
with daily rhythms on a carrier NAT shared by thousands, on home ASNs and on a rented
proxy, plus what a test plants: a campaign firing a few accounts at a time, cron bots,
an onboarding day. No pair of campaign members shares more than a few minutes.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest

from attribution.contracts.graph import ACTIVITY_SCHEMA
from attribution.contracts.settings import LockstepParams
from attribution.engine.features import account_zones
from attribution.engine.lockstep import (
    binomial_surprise,
    describe_network,
    find_blocks,
    shifted,
    split_by_zone,
    support,
)
from attribution.stages.activity import activity

DAYS = 35
START = int(dt.datetime(2026, 3, 2, tzinfo=dt.UTC).timestamp()) // 60  # a Monday, in minutes


def _rows(account: str, minutes: np.ndarray, network: str) -> pl.DataFrame:
    return pl.DataFrame({"account_id": account, "minute": (START + minutes).astype(np.int32),
                         "network": network})


def _background(rng: np.random.Generator, n: int, network: str, prefix: str,
                sessions: tuple[int, int] = (3, 15)) -> list[pl.DataFrame]:
    """Ordinary users: sessions of a few to tens of minutes around each one's own hour."""
    out = []
    for i in range(n):
        hour = rng.normal(14, 4)
        days = rng.integers(0, DAYS, int(rng.integers(*sessions)))
        out.append(_rows(f"{prefix}{i:05d}", _sessions(rng, days, hour, (1, 30)), network))
    return out


def _sessions(rng: np.random.Generator, days: np.ndarray, hour: float,
              minutes: tuple[int, int]) -> np.ndarray:
    """One session a day on ``days``, starting around ``hour``, each of ``minutes`` long."""
    starts = days * 1440 + np.clip(rng.normal(hour, 2, days.size), 0, 23.9) * 60
    return np.concatenate([s + np.arange(int(rng.integers(*minutes))) for s in starts.astype(int)])


def _campaign(rng: np.random.Generator, n: int, network: str, wave: tuple[int, int],
              waves_per_account: tuple[int, int] = (4, 7), jitter: int = 4) -> list[pl.DataFrame]:
    """Accounts fired a few at a time: each wave takes a handful of members at one moment."""
    members = [f"op{i:04d}" for i in range(n)]
    acts: dict[str, list[int]] = {m: [] for m in members}
    fired = dict.fromkeys(members, 0)
    target = {m: int(rng.integers(*waves_per_account)) for m in members}
    while any(fired[m] < target[m] for m in members):
        open_ = [m for m in members if fired[m] < target[m]]
        size = min(int(rng.integers(*wave)), len(open_))
        at = int(rng.integers(0, DAYS)) * 1440 + int(rng.integers(6 * 60, 22 * 60))
        for m in map(str, rng.choice(open_, size, replace=False)):
            t = at + int(rng.integers(0, jitter + 1))
            acts[m].extend(range(t, t + int(rng.integers(2, 6))))
            fired[m] += 1
    return [_rows(m, np.array(v), network) for m, v in acts.items()]


def _world(*planted: list[pl.DataFrame], seed: int = 7) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    parts = (_background(rng, 3000, "asn:64500", "nat")  # a carrier NAT: thousands of phones
             + _background(rng, 60, "proxy:Quietline", "dev", sessions=(10, 30))  # proxied developers
             + _background(rng, 1500, "asn:64600", "home"))
    frames = [f for group in (parts, *planted) for f in group]
    return pl.concat(frames).unique().cast(ACTIVITY_SCHEMA).sort("account_id", "minute")  # type: ignore[arg-type]


def _found(act: pl.DataFrame, prefix: str = "op") -> tuple[float, float, pl.DataFrame]:
    blocks = find_blocks(act, LockstepParams())
    members = blocks.members["account_id"]
    planted = act.filter(pl.col("account_id").str.starts_with(prefix))["account_id"].n_unique()
    hit = members.str.starts_with(prefix).sum()
    recall = hit / planted if planted else 0.0
    purity = hit / members.len() if members.len() else 1.0
    return recall, purity, blocks.blocks


@pytest.mark.parametrize(("network", "wave"), [
    ("asn:64500", (15, 26)),          # on the carrier NAT, among 3,000 phone users
    ("proxy:Quietline", (3, 6)),      # on the proxy the developers use, in small waves
    ("asn:64600", (10, 16)),          # on a home ISP of 1,500 users
])
def test_a_planted_campaign_is_one_block(network: str, wave: tuple[int, int]) -> None:
    rng = np.random.default_rng(11)
    act = _world(_campaign(rng, 150, network, wave))
    recall, purity, blocks = _found(act)
    assert recall >= 0.8
    assert purity >= 0.95
    assert blocks.height == 1
    row = blocks.row(0, named=True)
    assert row["network"] == network
    assert row["log10_chance"] >= 6 and row["days"] >= 10 and row["waves"] >= 20


def test_small_waves_on_a_carrier_nat_accuse_no_one() -> None:
    """The detector's limit: waves of four to six inside a NAT holding about ten other
    users every five minutes are not surprising cells, so the campaign is not found
    there (the README quotes this), and no phone user is put in a block either."""
    rng = np.random.default_rng(11)
    act = _world(_campaign(rng, 150, "asn:64500", (4, 7)))
    members = find_blocks(act, LockstepParams()).members["account_id"]
    assert (~members.str.starts_with("op")).sum() == 0


def test_no_pair_of_the_campaign_is_suspicious_on_its_own() -> None:
    """The planted campaign is the case the detector exists for: members share few minutes."""
    rng = np.random.default_rng(11)
    camp = pl.concat(_campaign(rng, 150, "asn:64500", (4, 7)))
    pairs = camp.join(camp, on="minute").filter(pl.col("account_id") < pl.col("account_id_right"))
    per_pair = pairs.group_by("account_id", "account_id_right").agg(pl.col("minute").n_unique())
    assert per_pair["minute"].median() <= 5  # type: ignore[operator]


def test_the_null_world_holds_no_block() -> None:
    """Each account's timeline moved by whole days: rhythm stays, coordination goes."""
    rng = np.random.default_rng(11)
    act = _world(_campaign(rng, 150, "proxy:Quietline", (4, 7)))
    assert find_blocks(act, LockstepParams()).blocks.height == 1
    for seed in (1, 2, 3):
        assert find_blocks(shifted(act, seed), LockstepParams()).blocks.height == 0


def test_cron_bots_and_an_onboarding_day_are_not_blocks() -> None:
    """Openly synchronised crowds: bots on the same weekday cron, a team's first morning."""
    rng = np.random.default_rng(3)
    cron = []
    weekdays = [d for d in range(DAYS) if d % 7 < 5]
    for i in range(25):
        minutes = np.array([d * 1440 + 9 * 60 + 15 * k + int(rng.integers(0, 2))
                            for d in weekdays for k in range(4)])
        cron.append(_rows(f"bot{i:03d}", minutes, "asn:64700"))
    onboarding = [_rows(f"new{i:03d}", 10 * 1440 + 9 * 60 + rng.integers(0, 45, 20), "asn:64800")
                  for i in range(60)]
    blocks = find_blocks(_world(cron, onboarding), LockstepParams())
    assert blocks.members.height == 0


def test_two_campaigns_on_one_network_accuse_no_bystander() -> None:
    """Two operations renting one service cross now and then (a wave of each in the same
    five minutes), which joins their seeds: the larger is found, the smaller only in
    part (the README quotes this limit), and no developer of that proxy is in a block."""
    rng = np.random.default_rng(5)
    first = _campaign(rng, 120, "proxy:Quietline", (4, 7))
    second = [f.with_columns(pl.col("account_id").str.replace("op", "ox")) for f in
              _campaign(np.random.default_rng(6), 80, "proxy:Quietline", (3, 6))]
    blocks = find_blocks(_world(first, second), LockstepParams())
    found = blocks.members["account_id"]
    assert found.str.starts_with("op").sum() >= 0.8 * 120
    assert found.str.starts_with("ox").sum() >= 0.2 * 80
    assert (~found.str.starts_with("op") & ~found.str.starts_with("ox")).sum() == 0


def _joined(rng: np.random.Generator, n: int, network: str, day: int) -> list[pl.DataFrame]:
    """Ordinary users who all signed up on ``day`` (a tool's launch) and use the service most
    days since, each around their own hour: no coordination, only a shared birthday."""
    out = []
    for i in range(n):
        hour = rng.normal(14, 4)
        days = np.arange(day, DAYS)
        days = days[rng.random(days.size) < 0.8]
        out.append(_rows(f"new{i:05d}", _sessions(rng, days, hour, (5, 40)), network))
    return out


def _born(ids: list[str], day: int) -> pl.DataFrame:
    """(account_id, minute): every one of ``ids`` signed up at the start of ``day``."""
    return pl.DataFrame({"account_id": ids, "minute": START + day * 1440}).cast({"minute": pl.Int64})


def test_a_crowd_of_recent_sign_ups_is_not_a_block() -> None:
    """300 users of a home ISP who signed up on day 24 of 35: moved to any day of the
    snapshot, their real hits on each other's busy cells look many, since they did not
    exist on most of those days ("1 in 10^194 by chance"); moved only to days since their
    sign-up, they are nobody's block."""
    act = _world(_joined(np.random.default_rng(21), 300, "asn:64600", 24))
    assert find_blocks(act, LockstepParams()).members.height >= 100
    born = _born([f"new{i:05d}" for i in range(300)], 24)
    assert find_blocks(act, LockstepParams(), born=born).members.height == 0


def test_a_young_campaign_is_found_in_its_own_lifetime() -> None:
    """A campaign whose accounts were born on day 20 and fire waves from then on is still
    a block when its null knows their birthday: its waves are what is unlikely, not its
    age."""
    rng = np.random.default_rng(11)
    camp = [f.with_columns((pl.col("minute") - START) % (15 * 1440) + START + 20 * 1440)
            for f in _campaign(rng, 150, "proxy:Quietline", (4, 7))]
    blocks = find_blocks(_world(camp), LockstepParams(), born=_born([f"op{i:04d}" for i in range(150)], 20))
    found = blocks.members["account_id"]
    assert found.str.starts_with("op").sum() >= 0.6 * 150
    assert (~found.str.starts_with("op")).sum() == 0
    assert blocks.blocks.height == 1 and blocks.blocks["log10_chance"][0] >= 6


def test_describe_network_names_values_not_organizations() -> None:
    assert describe_network("proxy:Quietline") == "the same proxy service (Quietline)"
    assert describe_network("asn:64500") == "the same network (AS64500)"
    assert describe_network("net:10.1.2.0/24") == "the same network range"
    assert (describe_network("proxy:Quietline|tz:Asia/Shanghai")
            == "the same proxy service (Quietline) from devices set to Asia/Shanghai")


def _zoned_world() -> tuple[pl.DataFrame, pl.DataFrame]:
    """A busy residential proxy service: 2,000 customers set to the exits' zone, 60
    developers from a region the service is not offered in (Asia/Shanghai), and a
    campaign of 150 firing waves of four to six whose devices leak the same zone."""
    rng = np.random.default_rng(13)
    service = "proxy:Busyline"
    customers = _background(rng, 2000, service, "cus", sessions=(5, 20))
    abroad = _background(rng, 60, service, "dev", sessions=(10, 30))
    act = _world(customers, abroad, _campaign(rng, 150, service, (4, 7)))
    ids = act.select(pl.col("account_id").unique())
    zones = ids.with_columns(
        pl.when(pl.col("account_id").str.starts_with("op") | pl.col("account_id").str.starts_with("dev"))
        .then(pl.lit("Asia/Shanghai")).otherwise(pl.lit("America/New_York")).alias("timezone"))
    return act, zones


def test_a_campaign_leaking_its_zone_behind_a_busy_proxy_is_found_in_that_zone() -> None:
    """Small waves on a service of two thousand are not surprising cells; among the
    service's few Shanghai devices they are. The developers who share that zone and
    that service, without acting in waves, stay out."""
    act, zones = _zoned_world()
    plain = find_blocks(act, LockstepParams()).members["account_id"]
    assert plain.str.starts_with("op").sum() <= 0.2 * 150
    blocks = find_blocks(act, LockstepParams(), zones)
    found = blocks.members["account_id"]
    assert found.str.starts_with("op").sum() >= 0.8 * 150
    assert (~found.str.starts_with("op")).sum() == 0
    assert blocks.blocks["network"].to_list() == ["proxy:Busyline|tz:Asia/Shanghai"]
    assert found.is_unique().all()  # one block an account: the zone is its service again
    assert find_blocks(act, LockstepParams(zones=False), zones).members.equals(
        find_blocks(act, LockstepParams()).members)
    for seed in (1, 2):
        assert find_blocks(shifted(act, seed), LockstepParams(), zones).blocks.height == 0


def test_only_proxy_traffic_off_the_services_own_zone_is_split() -> None:
    act = pl.DataFrame({"account_id": ["a", "b", "c", "d", "e"], "minute": [1, 2, 3, 4, 5],
                        "network": ["proxy:P", "proxy:P", "proxy:P", "asn:64500", "proxy:P"]}
                       ).cast(ACTIVITY_SCHEMA)  # type: ignore[arg-type]
    zones = pl.DataFrame({"account_id": ["a", "b", "c", "d"],
                          "timezone": ["Europe/Paris", "Europe/Paris", "Asia/Seoul", "Asia/Seoul"]})
    split = split_by_zone(act, zones)
    assert split.height == act.height + 1
    assert split.filter(pl.col("network").str.contains("|tz:", literal=True)).rows() == [
        ("c", 3, "proxy:P|tz:Asia/Seoul")]


def test_an_accounts_zone_is_that_of_the_devices_it_used_most() -> None:
    uses = pl.DataFrame({"account_id": ["a", "a", "b", "b", "c"], "kind": ["device"] * 4 + ["payment"],
                         "entity_id": ["d1", "d2", "d1", "d3", "d1"], "count": [3, 5, 2, 2, 9]})
    devices = pl.DataFrame({"device_id": ["d1", "d2", "d3"],
                            "timezone": ["Europe/Paris", "Asia/Seoul", "America/Lima"]})
    assert account_zones(uses, devices).sort("account_id").rows() == [
        ("a", "Asia/Seoul"), ("b", "America/Lima")]


def test_activity_is_one_row_per_account_minute_and_network() -> None:
    """Proxy exits collapse to their provider, other IPs to their ASN, unknown IPs to a /24."""
    ts = dt.datetime(2026, 3, 2, 10, 0, 5, tzinfo=dt.UTC)
    ex = pl.DataFrame({
        "account_id": ["a", "a", "a", "b", "b", "c"],
        "ts": [ts, ts + dt.timedelta(seconds=20), ts + dt.timedelta(minutes=3), ts, ts, ts],
        "ip": ["10.0.0.1", "10.0.0.2", "10.0.0.1", "192.0.2.7", "198.51.100.9", None],
    })
    ips = pl.DataFrame({"ip": ["10.0.0.1", "10.0.0.2", "192.0.2.7"], "asn": [64501, 64501, 64502],
                        "proxy_id": ["p1", "p1", None]})
    proxies = pl.DataFrame({"proxy_id": ["p1"], "provider": ["Quietline"]})
    act = activity(ex, ips, proxies)
    minute = int(ts.timestamp()) // 60
    assert act.rows() == [
        ("a", minute, "proxy:Quietline"),
        ("a", minute + 3, "proxy:Quietline"),
        ("b", minute, "asn:64502"),
        ("b", minute, "net:198.51.100.0/24"),
    ]
    assert dict(act.schema) == ACTIVITY_SCHEMA
    # In ranges of accounts (one exchange per range at most), the same table in the same order.
    assert activity(ex, ips, proxies, rows_per_part=1).equals(act)


def test_two_runs_give_the_same_blocks_to_the_last_digit() -> None:
    """Group sums come in no fixed order; the surprises a run decides on and reports are
    rounded so that a re-run over the same snapshot is identical."""
    rng = np.random.default_rng(11)
    act = _world(_campaign(rng, 150, "proxy:Quietline", (3, 6)),
                 [f.with_columns(pl.col("account_id").str.replace("op", "ox")) for f in
                  _campaign(np.random.default_rng(6), 80, "asn:64600", (10, 16))])
    runs = [find_blocks(act.sample(fraction=1.0, shuffle=True, seed=k), LockstepParams())
            for k in range(3)]
    assert runs[0].blocks.height == 2
    for other in runs[1:]:
        assert other.members.equals(runs[0].members)
        assert other.blocks.equals(runs[0].blocks)


def test_blocks_of_equal_size_are_numbered_the_same_in_every_run() -> None:
    """Two operations of the same size on two services: which block is 0 must not follow
    the row order of a group-by (it did, and at a million accounts two runs differed)."""
    first = _campaign(np.random.default_rng(11), 100, "proxy:Calmwater", (3, 6))
    second = [f.with_columns(pl.col("account_id").str.replace("op", "ox"),
                             pl.lit("proxy:Stillwater").alias("network"))
              for f in _campaign(np.random.default_rng(11), 100, "proxy:Calmwater", (3, 6))]
    act = _world(first, second)
    runs = [find_blocks(act.sample(fraction=1.0, shuffle=True, seed=k), LockstepParams())
            for k in range(4)]
    assert runs[0].blocks.height == 2 and runs[0].blocks["size"].n_unique() == 1
    for other in runs[1:]:
        assert other.members.equals(runs[0].members)
        assert other.blocks.equals(runs[0].blocks)


def test_support_weighs_a_members_few_sessions_against_a_bystanders_many() -> None:
    """Members meet a wave in four sessions of ten, anyone's own timeline in one of
    twenty: two hits in three sessions support membership ten to one and more, three
    hits in thirty sessions (a bystander on the same service) count against it, though
    the null's tail alone calls them surprising."""
    k, n = np.array([2, 3, 1, 0]), np.array([3, 30, 1, 5])
    got = support(k, n, np.full(4, 0.4), np.full(4, 0.05))
    assert got[0] >= 1.0
    assert got[1] < 0.0 < float(binomial_surprise(k[1:2], n[1:2], np.array([0.05]))[0])
    assert 0.0 < got[2] < 1.0  # one session is never enough
    assert got[3] < 0.0
    # a block whose members meet waves no more often than chance supports nobody
    assert float(support(np.array([3]), np.array([3]), np.array([0.05]), np.array([0.05]))[0]) == 0.0
