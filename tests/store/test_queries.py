"""The named queries in ``queries/``: headers, parameter checks, read-only, and results.

Results are asserted on the tiny world of ``tests/store/test_store_contract.py``
(two fleets, two organizations) with two hand-made runs: ``run-0`` (earlier:
F-X unattributed, F-Z instead of F-Y) and ``run-1`` (current).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from attribution.contracts.results import RunRecord
from attribution.store.named_queries import (
    QueryError,
    get_query,
    load_queries,
    parse_query,
    queries_dir,
    run_named,
)
from tests.support.store_world import settings_of, tiny_graph, tiny_record

EXPECTED = {
    "fleet_overview", "fleet_members", "fleet_attribution_paths", "account_neighbourhood",
    "shared_infrastructure", "org_fleets", "accounts_on_entity", "run_diff", "proxy_providers",
}

# --------------------------------------------------------------------------- no server


def test_every_expected_query_is_there_with_a_complete_header() -> None:
    queries = load_queries()
    assert set(queries) == EXPECTED
    for q in queries.values():
        assert q.description and q.returns
        assert q.path is not None and q.path.parent == queries_dir()
        for p in q.params:
            assert f"${p.name}" in q.text


def test_queries_write_nothing_by_their_text() -> None:
    import re

    writes = re.compile(r"\b(CREATE|MERGE|DELETE|DETACH|SET|REMOVE|LOAD\s+CSV|FOREACH)\b", re.I)
    for q in load_queries().values():
        body = "\n".join(line for line in q.text.splitlines() if not line.startswith("//"))
        assert not writes.search(body), q.name


def test_parameters_are_checked_against_the_header() -> None:
    q = get_query("accounts_on_entity")
    assert q.bind({"kind": "ip", "entity_id": "10.0.0.1"}) == {
        "kind": "ip", "entity_id": "10.0.0.1", "limit": 500}
    with pytest.raises(QueryError, match="needs parameter entity_id"):
        q.bind({"kind": "ip"})
    with pytest.raises(QueryError, match="one of"):
        q.bind({"kind": "phone", "entity_id": "x"})
    with pytest.raises(QueryError, match="must be int"):
        q.bind({"kind": "ip", "entity_id": "x", "limit": "10"})
    with pytest.raises(QueryError, match="must be int"):
        q.bind({"kind": "ip", "entity_id": "x", "limit": True})
    with pytest.raises(QueryError, match="no parameter"):
        q.bind({"kind": "ip", "entity_id": "x", "label": "IP"})
    with pytest.raises(QueryError, match="may not be null"):
        q.bind({"kind": "ip", "entity_id": None})
    members = get_query("fleet_members")
    assert members.bind({"fleet_id": "F"})["run_id"] is None
    with pytest.raises(QueryError, match="no query named"):
        get_query("drop_everything")


def test_header_parsing_rejects_incomplete_files(tmp_path: Path) -> None:
    ok = "// name: q\n// description: d\n// param: n (float, default 1) n\n// returns: x\nRETURN $n"
    q = parse_query(ok)
    assert q.bind({"n": 2}) == {"n": 2}
    with pytest.raises(QueryError, match="lacks returns"):
        parse_query("// name: q\n// description: d\nRETURN 1")
    with pytest.raises(QueryError, match="bad param"):
        parse_query("// name: q\n// description: d\n// param: n (decimal) n\n// returns: x\nRETURN $n")
    with pytest.raises(QueryError, match="never used"):
        parse_query("// name: q\n// description: d\n// param: n (int) n\n// returns: x\nRETURN 1")
    (tmp_path / "other.cypher").write_text(ok)
    with pytest.raises(QueryError, match="differs from the file name"):
        load_queries(tmp_path)


# --------------------------------------------------------------------------- real server


def earlier_record() -> RunRecord:
    """run-0: F-X not attributed, F-Z (a09, a10) instead of F-Y."""
    base = tiny_record("run-0", org=None, started="2026-01-31")
    assignments = base.assignments.with_columns(
        pl.when(pl.col("account_id").is_in(["a09", "a10"])).then(pl.lit("F-Z"))
        .when(pl.col("fleet_id") == "F-Y").then(None)
        .otherwise(pl.col("fleet_id")).alias("fleet_id"))
    fleets = base.fleets.with_columns(
        pl.when(pl.col("fleet_id") == "F-Y").then(pl.lit("F-Z")).otherwise(pl.col("fleet_id"))
        .alias("fleet_id"),
        pl.when(pl.col("fleet_id") == "F-Y").then(2).otherwise(pl.col("size")).alias("size"),
    )
    evidence = base.evidence.filter(pl.col("fleet_id") == "F-X")
    return RunRecord(manifest=base.manifest, assignments=assignments, fleets=fleets,
                     evidence=evidence)


@pytest.fixture(scope="module")
def world(neo4j_server: Any) -> Iterator[Any]:
    """The tiny world and its two runs, loaded once for the module's read-only tests."""
    from attribution.store.neo4j import Neo4jStore

    with neo4j_server.driver.session(database=neo4j_server.database) as session:
        session.run("MATCH (n) CALL (n) { DETACH DELETE n } IN TRANSACTIONS OF 10000 ROWS"
                    ).consume()
    store = Neo4jStore(settings_of(neo4j_server))
    store.load_snapshot(tiny_graph(), digest="tiny")
    store.write_run(earlier_record())
    store.write_run(tiny_record("run-1"))
    store.close()
    yield neo4j_server


def run(world: Any, name: str, **params: Any) -> list[dict[str, Any]]:
    return run_named(world.driver, name, params, database=world.database)


@pytest.mark.neo4j
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_query_is_read_only_by_explain(world: Any, name: str) -> None:
    q = get_query(name)
    params = q.bind({p.name: _example(p.name) for p in q.params if p.required})
    with world.driver.session(database=world.database) as session:
        summary = session.run("EXPLAIN " + q.text, params).consume()
    assert summary.query_type == "r"


def _example(param: str) -> Any:
    return {"kind": "ip", "fleet_a": "F-X", "fleet_b": "F-Y", "from_run": "run-0"}.get(
        param, "x")


@pytest.mark.neo4j
def test_fleet_overview(world: Any) -> None:
    rows = run(world, "fleet_overview")
    assert [r["fleet_id"] for r in rows] == ["F-X", "F-Y"]
    top = rows[0]
    assert (top["size"], top["sybil_score"], top["org_id"], top["org_name"], top["confidence"],
            top["run_id"]) == (5, 0.9, "O1", "Frontier Lab", 0.81, "run-1")
    assert top["first_seen"].to_native().year == 2026
    assert [r["fleet_id"] for r in run(world, "fleet_overview", min_sybil=0.5)] == ["F-X"]
    assert len(run(world, "fleet_overview", limit=1)) == 1


@pytest.mark.neo4j
def test_fleet_members(world: Any) -> None:
    rows = run(world, "fleet_members", fleet_id="F-X")
    assert [r["account_id"] for r in rows] == ["a01", "a02", "a03", "a04", "a05"]
    assert {(r["sybil_score"], r["org_id"], r["country"], r["email_domain"]) for r in rows} == {
        (0.9, "O1", "DE", "mail.test")}
    earlier = run(world, "fleet_members", fleet_id="F-Z", run_id="run-0")
    assert [r["account_id"] for r in earlier] == ["a10", "a09"]  # by score
    assert run(world, "fleet_members", fleet_id="F-Z") == []  # not in the current run


@pytest.mark.neo4j
def test_fleet_attribution_paths(world: Any) -> None:
    rows = run(world, "fleet_attribution_paths", fleet_id="F-X")
    assert len(rows) == 15  # 5 accounts x (card known twice + prompt template)
    assert {r["org_id"] for r in rows} == {"O1"}
    assert {(r["entity_label"], r["entity_id"], r["source"]) for r in rows} == {
        ("PaymentMethod", "fp-1", "corporate_card_registry"),
        ("PaymentMethod", "fp-1", "prior_case"),
        ("PromptTemplate", "ph-1", "prior_case"),
    }
    assert rows[0]["link_confidence"] == 1.0  # the payment_method link (confidence defaulted)
    assert {tuple(r["via"]) for r in rows} == {("USES_PAYMENT", "KNOWN_AS"),
                                              ("USES_PROMPT", "KNOWN_AS")}
    # Towards another organization: F-X's accounts touch nothing O2 is known by.
    assert run(world, "fleet_attribution_paths", fleet_id="F-X", org_id="O2") == []
    # F-Y is not attributed, but its paths to O2 go through an ASN and an e-mail domain.
    to_o2 = run(world, "fleet_attribution_paths", fleet_id="F-Y", org_id="O2")
    assert {(r["entity_label"], r["hops"]) for r in to_o2} == {("ASN", 3), ("EmailDomain", 2)}
    assert len(run(world, "fleet_attribution_paths", fleet_id="F-X", limit=4)) == 4


@pytest.mark.neo4j
def test_account_neighbourhood(world: Any) -> None:
    rows = run(world, "account_neighbourhood", account_id="a01", limit=3)
    by = {(r["relationship"], r["entity_id"]): r for r in rows}
    assert set(by) == {("USES_PAYMENT", "fp-1"), ("USES_DEVICE", "d-1"), ("USES_IP", "10.0.0.1"),
                       ("SIGNED_UP_FROM", "10.0.0.1"), ("HAS_EMAIL_DOMAIN", "mail.test"),
                       ("USES_PROMPT", "ph-1")}
    assert by[("USES_DEVICE", "d-1")]["accounts_on_entity"] == 6
    assert by[("USES_IP", "10.0.0.1")]["accounts_on_entity"] == 5
    assert by[("HAS_EMAIL_DOMAIN", "mail.test")]["accounts_on_entity"] == 9
    assert by[("USES_PAYMENT", "fp-1")]["neighbours"] == ["a02", "a03", "a04"]
    assert rows[0]["accounts_on_entity"] == 9
    assert run(world, "account_neighbourhood", account_id="nobody") == []


@pytest.mark.neo4j
def test_shared_infrastructure(world: Any) -> None:
    rows = run(world, "shared_infrastructure", fleet_a="F-X", fleet_b="F-Y")
    assert rows == [{"entity_label": "Device", "entity_id": "d-1", "accounts_a": 5,
                     "accounts_b": 1}]
    earlier = run(world, "shared_infrastructure", fleet_a="F-X", fleet_b="F-Z", run_id="run-0")
    assert earlier == [{"entity_label": "EmailDomain", "entity_id": "mail.test",
                        "accounts_a": 5, "accounts_b": 2}]


@pytest.mark.neo4j
def test_org_fleets(world: Any) -> None:
    o1 = run(world, "org_fleets", org_id="O1")
    assert [(r["fleet_id"], r["accounts_touching"], r["attributed_org_id"]) for r in o1] == [
        ("F-X", 5, "O1")]
    assert sorted(o1[0]["entities"]) == ["PaymentMethod fp-1", "PromptTemplate ph-1"]
    o2 = run(world, "org_fleets", org_id="O2")
    assert [(r["fleet_id"], r["accounts_touching"], r["attributed_org_id"]) for r in o2] == [
        ("F-Y", 3, None)]
    assert sorted(o2[0]["entities"]) == ["ASN 64501", "EmailDomain acme.test"]


@pytest.mark.neo4j
def test_accounts_on_entity(world: Any) -> None:
    ip = run(world, "accounts_on_entity", kind="ip", entity_id="10.0.0.1")
    assert len(ip) == 10
    assert {(r["relationship"]) for r in ip} == {"USES_IP", "SIGNED_UP_FROM"}
    assert {r["fleet_id"] for r in ip} == {"F-X"}
    card = run(world, "accounts_on_entity", kind="payment", entity_id="fp-1")
    assert [r["account_id"] for r in card] == ["a01", "a02", "a03", "a04", "a05"]
    assert card[0]["count"] == 1 and card[0]["first_seen"].to_native().year == 2026
    device = run(world, "accounts_on_entity", kind="device", entity_id="d-1")
    assert {r["account_id"]: r["fleet_id"] for r in device}["a06"] == "F-Y"
    assert run(world, "accounts_on_entity", kind="device", entity_id="10.0.0.1") == []
    lone = run(world, "accounts_on_entity", kind="ip", entity_id="192.0.2.99")
    assert [(r["account_id"], r["fleet_id"]) for r in lone] == [("a10", None)]
    assert lone[0]["sybil_score"] == pytest.approx(0.06)


@pytest.mark.neo4j
def test_run_diff(world: Any) -> None:
    rows = run(world, "run_diff", from_run="run-0")
    assert [(r["change"], r["fleet_id"]) for r in rows] == [
        ("attribution_changed", "F-X"), ("created", "F-Y"), ("dissolved", "F-Z")]
    changed = rows[0]
    assert (changed["org_before"], changed["org_after"], changed["confidence_after"]) == (
        None, "O1", 0.81)
    assert rows[2]["size_before"] == 2
    back = run(world, "run_diff", from_run="run-1", to_run="run-0")
    assert [(r["change"], r["fleet_id"]) for r in back] == [
        ("attribution_changed", "F-X"), ("created", "F-Z"), ("dissolved", "F-Y")]
    assert run(world, "run_diff", from_run="run-1", to_run="run-1") == []


@pytest.mark.neo4j
def test_proxy_providers(world: Any) -> None:
    rows = run(world, "proxy_providers")
    assert rows == [{"provider": "ResiNet", "kinds": ["residential"], "fleets": 1,
                     "accounts": 5, "exit_ips": 1}]
    assert run(world, "proxy_providers", min_sybil=0.95) == []


@pytest.mark.neo4j
def test_run_named_takes_a_session_too(world: Any) -> None:
    with world.driver.session(database=world.database) as session:
        rows = run_named(session, "fleet_overview", {"limit": 1})
    assert [r["fleet_id"] for r in rows] == ["F-X"]
    with pytest.raises(QueryError):
        run_named(world.driver, "fleet_overview", {"limit": "all"})
