"""Merging the fleets one sign-up surge is made of (``fleets.merge_surges``).

Hand-made memberships and episodes: pieces of one careful operation found as several
fleets, beside a second operator renting the same service in the same weeks and company
teams signed up through one business ISP.
"""

from __future__ import annotations

from dataclasses import replace

import polars as pl

from attribution.contracts.settings import FleetParams
from attribution.engine.fleets import merge_surges
from attribution.engine.linking import Links
from attribution.engine.lockstep import Blocks

N = 2000


def _membership(fleets: dict[int, range]) -> pl.DataFrame:
    rows = [(i, f, 3.0, 1.0) for f, idx in fleets.items() for i in idx]
    return pl.DataFrame(rows, schema={"idx": pl.Int32, "fleet": pl.Int64,
                                      "attachment": pl.Float64, "belief": pl.Float64},
                        orient="row").sort("idx")


def _episodes(rows: list[tuple[range, int, str, int]],
              doubt: tuple[tuple[range, int], ...] = (),
              used_doubt: tuple[tuple[range, int, str], ...] = ()) -> pl.DataFrame:
    """(idx range, episode, zone, main capability; -1: unused): every member on the free
    plan at level 1, a strong surge member, signed up at minute ``idx``; ``doubt`` (idx
    range, episode): unused members of a weaker surge of the episode's network;
    ``used_doubt`` (idx range, episode, zone): used ones."""
    out = [(i, ep, True, i, 1, cap, "free", zone if cap >= 0 else "")
           for idx, ep, zone, cap in rows for i in idx]
    out += [(i, ep, False, i, 0, -1, "free", "") for idx, ep in doubt for i in idx]
    out += [(i, ep, False, i, 1, 0, "free", zone) for idx, ep, zone in used_doubt for i in idx]
    return pl.DataFrame(out, schema={"idx": pl.Int32, "episode": pl.Int64, "strong": pl.Boolean,
                                     "minute": pl.Int64, "level": pl.Int32,
                                     "cap_main": pl.Int32, "plan": pl.String,
                                     "zone": pl.String}, orient="row")


def _on_day(episodes: pl.DataFrame, days: dict[range, int]) -> pl.DataFrame:
    """``episodes`` with the members of each range signed up on the given day."""
    minute = pl.col("minute")
    for idx, day in days.items():
        minute = pl.when(pl.col("idx").is_between(idx.start, idx.stop - 1)).then(
            pl.lit(day * 1440 + 600, dtype=pl.Int64)).otherwise(minute)
    return episodes.with_columns(minute.alias("minute"))


def _links(episodes: pl.DataFrame, lockstep: Blocks | None = None) -> Links:
    accounts = pl.DataFrame({"account_id": [f"a{i:03d}" for i in range(N)]}).with_row_index(
        "idx").with_columns(pl.col("idx").cast(pl.Int32))
    empty = pl.DataFrame(schema={"a": pl.Int32, "b": pl.Int32, "weight": pl.Float64})
    return Links(accounts=accounts, edges=empty, candidates=0, bursts=pl.DataFrame(),
                 near=pl.DataFrame(), episodes=episodes,
                 lockstep=lockstep if lockstep is not None else Blocks.empty())


NO_USES = pl.DataFrame(schema={"account_id": pl.String, "kind": pl.String,
                               "entity_id": pl.String})


def _merged(fleets: dict[int, range], episodes: pl.DataFrame,
            uses: pl.DataFrame = NO_USES) -> dict[int, int]:
    """{fleet before: fleet after} for the first member of each fleet."""
    before = _membership(fleets)
    after = merge_surges(before, _links(episodes), uses, FleetParams())
    assert after.select("idx", "attachment", "belief").equals(
        before.select("idx", "attachment", "belief"))
    got = dict(after.select("idx", "fleet").iter_rows())
    return {f: got[idx[0]] for f, idx in fleets.items()}


def test_pieces_of_one_surge_that_look_alike_become_one_fleet() -> None:
    # a lockstep wave, a batch and a cohort of unused accounts, all of one episode
    fleets = {4: range(0, 60), 9: range(60, 80), 2: range(80, 84), 7: range(84, 120)}
    episodes = _episodes([
        (range(0, 45), 0, "Europe/Moscow", 0), (range(45, 60), 0, "America/Chicago", 1),
        (range(60, 75), 0, "Europe/Moscow", 0), (range(75, 80), 0, "America/Chicago", 1),
        (range(80, 84), 0, "Europe/Moscow", 0),
        (range(84, 120), 0, "", -1),  # unused: only their plan is compared
    ])
    assert _merged(fleets, episodes) == {4: 2, 9: 2, 2: 2, 7: 2}


def test_two_operators_on_one_service_in_one_surge_stay_apart() -> None:
    # same service, same weeks, but each operator's accounts leak its own time zone
    fleets = {0: range(0, 50), 1: range(50, 90), 2: range(90, 130), 3: range(130, 150)}
    episodes = _episodes([
        (range(0, 50), 0, "Europe/Berlin", 0), (range(50, 90), 0, "Asia/Seoul", 0),
        (range(90, 130), 0, "Europe/Berlin", 0), (range(130, 150), 0, "Asia/Seoul", 0),
    ])
    assert _merged(fleets, episodes) == {0: 0, 1: 1, 2: 0, 3: 1}


def test_one_operators_mix_drifting_over_weeks_still_merges_but_a_different_one_does_not(
) -> None:
    # 88 % against 78 % on the main capability: a G-test of 800 against 800 tells them
    # apart (p ~ 1e-6), the distance (0.1) is a drift; 88 % against 30 % is another
    def mixed(idx: range, share: float, ep: int = 0) -> list[tuple[range, int, str, int]]:
        cut = idx.start + round(share * len(idx))
        return [(range(idx.start, cut), ep, "Europe/Moscow", 0),
                (range(cut, idx.stop), ep, "Europe/Moscow", 1)]
    fleets = {0: range(0, 800), 1: range(800, 1600), 2: range(1600, 1680)}
    episodes = _episodes(mixed(fleets[0], 0.88) + mixed(fleets[1], 0.78)
                         + mixed(fleets[2], 0.30))
    assert _merged(fleets, episodes) == {0: 0, 1: 0, 2: 2}
    # (by the distance alone: the test would keep the first two apart)
    alone = merge_surges(_membership(fleets), _links(episodes), NO_USES,
                         replace(FleetParams(), surge_gap=0.0))
    assert alone["fleet"].n_unique() == 3


def test_two_teams_with_cards_of_their_own_never_merge() -> None:
    # two companies' onboarding days on one business ISP: alike, but each team pays with
    # its own corporate card; a third, cardless piece may join one of them
    fleets = {0: range(0, 20), 1: range(20, 40), 2: range(40, 45)}
    episodes = _episodes([(range(0, 45), 0, "Europe/Berlin", 0)])
    uses = pl.DataFrame({
        "account_id": [f"a{i:03d}" for i in range(40)], "kind": ["payment"] * 40,
        "entity_id": ["card-a" if i < 20 else "card-b" for i in range(40)]})
    got = _merged(fleets, episodes, uses)
    assert got[0] != got[1]
    assert got[2] in (got[0], got[1])


def test_a_fleet_mostly_outside_the_surge_and_other_episodes_stay_where_they_are() -> None:
    fleets = {0: range(0, 40), 1: range(40, 60), 2: range(60, 100), 3: range(100, 120)}
    episodes = _episodes([
        (range(0, 40), 0, "Europe/Moscow", 0),
        (range(40, 49), 0, "Europe/Moscow", 0),  # 9 of 20: less than half in the surge
        (range(60, 100), 1, "Europe/Moscow", 0),  # the same traits, another episode
        (range(100, 120), 2, "Europe/Moscow", 0),
    ])
    assert _merged(fleets, episodes) == {0: 0, 1: 1, 2: 2, 3: 3}


def test_unused_members_in_doubt_count_neither_way_used_ones_count_against() -> None:
    # an operation's last batches: a few used members in the surge, the unused ones in a
    # weaker surge of the same service; a crowd of the network's customers, used, in doubt
    fleets = {0: range(0, 40), 1: range(40, 50), 2: range(50, 78), 3: range(78, 88),
              4: range(88, 116)}
    episodes = _episodes([
        (range(0, 40), 0, "Europe/Moscow", 0),
        (range(40, 43), 0, "Europe/Moscow", 0),  # 3 sure of 10, 6 in doubt, 1 outside
        (range(50, 53), 0, "Europe/Moscow", 0),  # 3 sure of 28, 25 unused in doubt
        (range(78, 81), 0, "Europe/Moscow", 0),  # 3 sure of 10, none in doubt
        (range(88, 91), 0, "Europe/Moscow", 0),  # 3 sure of 28, 25 used in doubt
    ], doubt=((range(43, 49), 0), (range(53, 78), 0)),
        used_doubt=((range(91, 116), 0, "Europe/Moscow"),))
    assert _merged(fleets, episodes) == {0: 0, 1: 0, 2: 0, 3: 3, 4: 4}


def test_a_last_batch_in_doubt_joins_the_operator_whose_sign_ups_it_follows() -> None:
    # two operators rent one service, alike but each paying with its own card; a last
    # batch (3 sure, 25 unused in doubt, no card) is alike to both: when it signed up
    # says whose it is
    fleets = {0: range(0, 60), 1: range(60, 100), 2: range(100, 128)}
    episodes = _episodes([(range(0, 103), 0, "Europe/Moscow", 0)],
                         doubt=((range(103, 128), 0),))
    uses = pl.DataFrame({
        "account_id": [f"a{i:03d}" for i in range(100)], "kind": ["payment"] * 100,
        "entity_id": ["card-a" if i < 60 else "card-b" for i in range(100)]})
    # the first operator signs up on days 5-20, the second on days 30-50, the batch on
    # day 55: the second's
    days = {range(0, 30): 5, range(30, 60): 20, range(60, 80): 30, range(80, 100): 50,
            range(100, 128): 55}
    assert _merged(fleets, _on_day(episodes, days), uses) == {0: 0, 1: 1, 2: 1}
    # ... on day 25, within a week of both: nobody's
    days[range(100, 128)] = 25
    assert _merged(fleets, _on_day(episodes, days), uses) == {0: 0, 1: 1, 2: 2}
    # ... on day 10: the first's
    days[range(100, 128)] = 10
    assert _merged(fleets, _on_day(episodes, days), uses) == {0: 0, 1: 1, 2: 0}


def _mail(domains: dict[range, str]) -> pl.DataFrame:
    rows = [(f"a{i:03d}", "email_domain", d) for idx, d in domains.items() for i in idx]
    return pl.DataFrame(rows, schema={"account_id": pl.String, "kind": pl.String,
                                      "entity_id": pl.String}, orient="row")


def test_two_teams_on_mail_domains_of_their_own_never_merge_but_one_domains_pieces_do(
) -> None:
    # no cards: each team signs in with its company's domain; the third and fourth
    # fleets are two pieces of one operation on its own domain; everyone else, and the
    # fifth fleet, on a public mail service that says nothing about whose they are
    fleets = {0: range(0, 20), 1: range(20, 40), 2: range(40, 60), 3: range(60, 70),
              4: range(70, 80)}
    episodes = _episodes([(range(0, 80), 0, "Europe/Berlin", 0)])
    uses = _mail({range(0, 20): "team-a.test", range(20, 40): "team-b.test",
                  range(40, 70): "ops.test", range(70, N): "mailbox.test"})
    got = _merged(fleets, episodes, uses)
    assert got[0] != got[1]
    assert got[2] == got[3]
    assert got[4] in (got[0], got[1], got[2])  # (most alike: any)


def _block(idx: range, network: str) -> Blocks:
    """One lockstep block of the accounts ``idx`` on ``network``."""
    empty = Blocks.empty()
    members = pl.DataFrame({"account_id": [f"a{i:03d}" for i in idx], "block": [0] * len(idx),
                            "surprise": [3.0] * len(idx)}, schema=empty.members.schema)
    blocks = pl.DataFrame([(0, len(idx), network, 20, 15, 5, 9.0)], schema=empty.blocks.schema,
                          orient="row")
    return Blocks(members=members, blocks=blocks)


def test_members_found_among_one_zones_customers_are_not_compared_on_zone() -> None:
    # one careful operation whose accounts' devices are set to New York or Los Angeles:
    # a lockstep block among the New York customers of its service found 60 of them (all
    # New York, by the way they were found), a batch found 40 others, half and half
    fleets = {0: range(0, 60), 1: range(60, 100)}
    episodes = _episodes([(range(0, 60), 0, "America/New_York", 0),
                          (range(60, 80), 0, "America/New_York", 0),
                          (range(80, 100), 0, "America/Los_Angeles", 0)])
    before = _membership(fleets)
    zoned = _block(range(0, 60), "proxy:Strata|tz:America/New_York")
    after = merge_surges(before, _links(episodes, zoned), NO_USES, FleetParams())
    assert after["fleet"].n_unique() == 1
    # found on the whole service instead, their zone is an observation: two mixes
    plain = _block(range(0, 60), "proxy:Strata")
    after = merge_surges(before, _links(episodes, plain), NO_USES, FleetParams())
    assert after["fleet"].n_unique() == 2
