"""The fleet's shared-identifier evidence rows: who shares what, and how many use it in all."""

from __future__ import annotations

import polars as pl

from attribution.contracts.graph import USES_SCHEMA, PropertyGraph
from attribution.contracts.settings import RunParams
from attribution.engine.assemble import shared_evidence


def _graph(uses: list[tuple[str, str, str]]) -> PropertyGraph:
    """uses: (account, kind, entity); only the uses matter here."""
    rows = [{"account_id": a, "kind": k, "entity_id": e, "first_seen": None, "last_seen": None,
             "count": 3} for a, k, e in uses]
    empty = pl.DataFrame()
    return PropertyGraph(
        accounts=pl.DataFrame({"account_id": sorted({u[0] for u in uses})}),
        uses=pl.DataFrame(rows, schema=dict(USES_SCHEMA)),  # type: ignore[arg-type]
        payments=empty, devices=empty, ips=empty, proxies=empty, organizations=empty,
        known_links=empty,
    )


def test_an_entity_counts_each_of_its_accounts_once_in_all() -> None:
    """Two members share a card used by one outsider besides; the outsider and a member used
    the shared IP both to sign up and afterwards (one account each, not two); an IP only one
    member used is nobody's shared evidence."""
    graph = _graph([
        ("m1", "payment", "card"), ("m2", "payment", "card"), ("x1", "payment", "card"),
        ("m1", "ip", "10.0.0.1"), ("m1", "signup_ip", "10.0.0.1"), ("m2", "ip", "10.0.0.1"),
        ("x1", "ip", "10.0.0.1"), ("x1", "signup_ip", "10.0.0.1"), ("x2", "signup_ip", "10.0.0.1"),
        ("m1", "ip", "10.0.9.9"), ("x3", "ip", "10.0.9.9"),
    ])
    members = pl.DataFrame({"account_id": ["m1", "m2"], "fleet": [0, 0]})
    rows = shared_evidence(graph, members, RunParams()).sort("kind")
    assert rows["kind"].to_list() == ["shared_ip", "shared_payment"]
    ip, card = rows["detail"].to_list()
    assert ip.startswith("2 accounts share IP ") and ip.endswith("(used by 4 accounts in all)")
    assert card.startswith("2 accounts share card fingerprint ")
    assert card.endswith("(used by 3 accounts in all)")
    assert abs(rows["weight"].sum() - 1.0) < 1e-9


def test_members_of_two_fleets_share_only_within_their_own() -> None:
    """A card used by one member of each of two fleets is shared evidence of neither."""
    graph = _graph([("a1", "payment", "c"), ("b1", "payment", "c"),
                    ("a1", "device", "d"), ("a2", "device", "d")])
    members = pl.DataFrame({"account_id": ["a1", "a2", "b1"], "fleet": [0, 0, 1]})
    rows = shared_evidence(graph, members, RunParams())
    assert rows.select("fleet", "kind").rows() == [(0, "shared_device")]
