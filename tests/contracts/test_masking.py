"""The masking rules of ``attribution.contracts.masking``, one kind of entity at a time.

Each rule is checked on its own (what is shown, what never is), then the places
that apply them: graph values by label, named-query rows by declared column
kind, duplicate rows after masking, the audit log's parameters, the old API
import path, and the schema's entity kinds.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from neo4j.graph import Graph, Node, Path, Relationship

from attribution.contracts import masking
from attribution.contracts.masking import (
    COLUMN_KINDS,
    EMAIL_SHOWN,
    HIDDEN,
    LABELS,
    MERGED,
    mask,
    mask_graph,
    mask_ip,
    mask_labelled,
    mask_param,
    mask_row,
    mask_value,
    merge_duplicates,
    scrub_text,
)

CARD = "A9W8XFSWRPBX"
DEVICE = "7a4e4c237fdeb689"
PROMPT = "0bb317e37fa79478"
EMAIL = "gary.durand@postbox.test"


@pytest.mark.parametrize(("kind", "value", "shown"), [
    # the engine's own handles and networks: in full
    ("account", "u00c3tqcqqej", "u00c3tqcqqej"),
    ("fleet", "F6fec315eab", "F6fec315eab"),
    ("organization", "org_xcs01z10", "org_xcs01z10"),
    ("run", "run-20261123T183549-2db38ed2", "run-20261123T183549-2db38ed2"),
    ("proxy", "prx_0562em", "prx_0562em"),
    ("asn", "64500", "64500"),
    ("public", "Hivegate Proxies", "Hivegate Proxies"),
    # a domain is shown, a person's address never
    ("email_domain", "qinghe-intelligence.test", "qinghe-intelligence.test"),
    ("email_domain", EMAIL, EMAIL_SHOWN),
    ("email", EMAIL, EMAIL_SHOWN),
    ("email", "x", EMAIL_SHOWN),
    # cards, payment methods, devices, prompt templates: the last 4 characters
    ("payment", CARD, HIDDEN + "RPBX"),
    ("fingerprint", CARD, HIDDEN + "RPBX"),
    ("payment_method", "pm_4wswprnm84sf", HIDDEN + "84sf"),
    ("device", DEVICE, HIDDEN + "b689"),
    ("prompt", PROMPT, HIDDEN + "9478"),
    ("prompt_hash", PROMPT, HIDDEN + "9478"),
    ("device", "d1b2c3", HIDDEN),           # too short to show any of it
    # IPs: the /24 or /48 network
    ("ip", "203.0.113.77", "203.0.113.0/24"),
    ("signup_ip", "203.0.113.77", "203.0.113.0/24"),
    ("ip", "2001:db8:1234:5678::42", "2001:db8:1234::/48"),
    ("ip", "not-an-ip-at-all", HIDDEN + "-all"),
    # free text: addresses in it masked, the rest kept
    ("text", f"Acme ({EMAIL}, from 198.51.100.7)", "Acme (<email>, from 198.51.100.0/24)"),
    # a kind nobody declared is hidden like a card
    ("phone_number", "+44 20 7946 0958", HIDDEN + "0958"),
])
def test_one_rule_per_kind(kind: str, value: str, shown: str) -> None:
    assert mask(kind, value) == shown


def test_nothing_identifying_survives_its_rule() -> None:
    for kind, value in (("payment", CARD), ("device", DEVICE), ("prompt", PROMPT),
                        ("ip", "203.0.113.77"), ("email", EMAIL), ("email_domain", EMAIL)):
        assert value not in mask(kind, value)
        assert "203.0.113.77" not in mask(kind, value)


def test_mask_value_handles_types_and_lists() -> None:
    assert mask_value("device", None) is None
    assert mask_value("asn", 64500) == 64500
    assert mask_value("device", 1234567890) == HIDDEN + "7890"  # an id is hidden whatever its type
    assert mask_value("public", 0.5) == 0.5
    assert mask_value("ip", ["203.0.113.77", "203.0.113.9"]) == ["203.0.113.0/24"] * 2
    assert mask_value("account", ["u1", "u2"]) == ["u1", "u2"]


def test_scrub_text_masks_addresses_but_not_times_or_networks_twice() -> None:
    text = "at 09:30:00 user a.b@c.test from 10.1.2.3 and 2001:db8:1:2::5"
    assert scrub_text(text, tokens=False) == (
        "at 09:30:00 user <email> from 10.1.2.0/24 and 2001:db8:1::/48")
    assert scrub_text("10.1.2.0/24 and 2001:db8:1::/48") == "10.1.2.0/24 and 2001:db8:1::/48"
    assert scrub_text("host 10.1.2.3/32") == "host 10.1.2.0/24"
    assert scrub_text(f"device {DEVICE}") == f"device {HIDDEN}b689"
    assert scrub_text(f"device {DEVICE}", tokens=False) == f"device {DEVICE}"


def test_mask_ip_keeps_its_old_keyword() -> None:
    assert mask_ip("bad", hidden="...") == "..."
    assert mask_ip("203.0.113.77") == "203.0.113.0/24"


def test_labelled_strings_are_masked_by_their_label() -> None:
    assert [mask_labelled(x) for x in (
        "IP 10.1.2.3", "ASN 64500", f"PaymentMethod {CARD}", "EmailDomain x.test",
        f"PromptTemplate {PROMPT}", "Account u1", "Proxy prx_1", "Gadget secret-value-1")] == [
        "IP 10.1.2.0/24", "ASN 64500", f"PaymentMethod {HIDDEN}RPBX", "EmailDomain x.test",
        f"PromptTemplate {HIDDEN}9478", "Account u1", "Proxy prx_1", f"Gadget {HIDDEN}ue-1"]


# --------------------------------------------------------------------------- graph values


def _graph() -> tuple[Node, Node, Node, Relationship, Relationship]:
    """An account using a card known as an organization's, with internal properties."""
    g = Graph()
    account = Node(g, "n1", 1, ["Account"], {
        "account_id": "u1", "email_local": "gary.durand", "minute_sig": list(range(64)),
        "_snapshot": "s", "_row": "s", "signup_ip": "203.0.113.77", "country": "DE"})
    card = Node(g, "n2", 2, ["PaymentMethod"], {
        "fingerprint": CARD, "payment_method_ids": "pm_1,pm_2", "kind": "card", "_row": "s"})
    org = Node(g, "n3", 3, ["Organization"], {"org_id": "org_1", "name": "Tianmu Models"})
    uses = g.relationship_type("USES_PAYMENT")(g, "r1", 1, {"count": 3, "_snapshot": "s"})
    known = g.relationship_type("KNOWN_AS")(g, "r2", 2, {
        "key": CARD, "entity_id": CARD, "source": "corporate_card_registry", "confidence": 0.9})
    uses._start_node, uses._end_node = account, card
    known._start_node, known._end_node = card, org
    return account, card, org, uses, known


def test_nodes_are_small_dicts_masked_by_label() -> None:
    account, card, org, _, _ = _graph()
    assert mask_graph(account) == {"label": "Account", "account_id": "u1"}
    assert mask_graph(card) == {"label": "PaymentMethod", "fingerprint": HIDDEN + "RPBX",
                                "kind": "card"}
    assert mask_graph(org) == {"label": "Organization", "org_id": "org_1",
                               "name": "Tianmu Models"}


def test_relationships_and_paths_leave_internals_and_keys_behind() -> None:
    account, _, _, uses, known = _graph()
    assert mask_graph(known) == {"type": "KNOWN_AS", "source": "corporate_card_registry",
                                 "confidence": 0.9}
    assert mask_graph(uses) == {"type": "USES_PAYMENT"}
    path = Path(account, uses, known)
    shown = mask_graph(path)
    assert [n["label"] for n in shown["nodes"]] == ["Account", "PaymentMethod", "Organization"]
    assert shown["relationships"] == [
        {"type": "USES_PAYMENT", "start": 0, "end": 1},
        {"type": "KNOWN_AS", "source": "corporate_card_registry", "confidence": 0.9,
         "start": 1, "end": 2}]
    text = json.dumps(shown)
    for hidden in (CARD, "gary.durand", "minute_sig", "_snapshot", "_row", "203.0.113",
                   "payment_method_ids"):
        assert hidden not in text
    assert len(text) < 400


# --------------------------------------------------------------------------- query rows


def test_rows_are_masked_by_kind_not_by_column_name() -> None:
    rows = [
        {"entity_label": "ASN", "entity_id": "64500"},
        {"entity_label": "PromptTemplate", "entity_id": PROMPT},
        {"entity_label": "IP", "entity_id": "10.1.2.3"},
        {"entity_label": "Account", "entity_id": "u1"},
        {"entity_label": "EmailDomain", "entity_id": "qinghe-intelligence.test"},
    ]
    assert [mask_row(r)["entity_id"] for r in rows] == [
        "64500", HIDDEN + "9478", "10.1.2.0/24", "u1", "qinghe-intelligence.test"]
    # what the column-name rule got wrong: the label and the domain stay readable
    assert mask_row(rows[1])["entity_label"] == "PromptTemplate"
    row = mask_row({"account_id": "u1", "email_domain": "x.test", "org_claim": f"me {EMAIL}",
                    "neighbours": ["u2", "u3"], "entities": ["IP 10.1.2.3", "ASN 64500"],
                    "source_label": "Device", "source_id": DEVICE, "sybil_score": 0.9})
    assert row == {"account_id": "u1", "email_domain": "x.test", "org_claim": "me <email>",
                   "neighbours": ["u2", "u3"], "entities": ["IP 10.1.2.0/24", "ASN 64500"],
                   "source_label": "Device", "source_id": HIDDEN + "b689", "sybil_score": 0.9}


def test_an_undeclared_column_is_scrubbed() -> None:
    row = mask_row({"contact": EMAIL, "seen_from": "10.1.2.3", "token": DEVICE, "note": "ok",
                    "n": 3, "node": _graph()[1]})
    assert row == {"contact": EMAIL_SHOWN, "seen_from": "10.1.2.0/24",
                   "token": HIDDEN + "b689", "note": "ok", "n": 3,
                   "node": {"label": "PaymentMethod", "fingerprint": HIDDEN + "RPBX",
                            "kind": "card"}}


def test_every_query_column_has_a_declared_kind() -> None:
    from attribution import notebook
    from attribution.store import named_queries as cypher

    queries = list(cypher.load_queries().values()) + list(notebook.notebook_queries().values())
    undeclared = sorted({f"{q.name}.{c}" for q in queries for c in q.returns
                         if c not in COLUMN_KINDS and c not in masking.LABELLED_BY})
    assert undeclared == []
    for column, label_column in masking.LABELLED_BY.items():
        assert COLUMN_KINDS[label_column] == "public" and column not in COLUMN_KINDS


def test_rows_made_identical_by_masking_are_merged_with_a_count() -> None:
    rows = [mask_row({"entity_label": "IP", "entity_id": ip, "accounts_a": 2})
            for ip in ("10.1.2.3", "10.1.2.4", "10.9.9.9", "10.1.2.5")]
    merged, any_merged = merge_duplicates(rows)
    assert any_merged
    assert merged == [
        {"entity_label": "IP", "entity_id": "10.1.2.0/24", "accounts_a": 2, MERGED: 3},
        {"entity_label": "IP", "entity_id": "10.9.9.0/24", "accounts_a": 2, MERGED: 1}]
    distinct, any_merged = merge_duplicates([{"a": 1}, {"a": 2}])
    assert distinct == [{"a": 1}, {"a": 2}] and not any_merged


# --------------------------------------------------------------------------- other callers


@pytest.mark.parametrize(("key", "value", "logged"), [
    ("org_id", "203.0.113.77", "203.0.113.0/24"),     # an IP is masked whatever the name
    ("account_id", "u00c3tqcqqej", "u00c3tqcqqej"),
    ("fleet_id", "F6fec315eab", "F6fec315eab"),
    ("q", EMAIL, EMAIL_SHOWN),
    ("email", "not-an-address", EMAIL_SHOWN),
    ("entity_id", PROMPT, HIDDEN + "9478"),
    ("device", DEVICE, HIDDEN + "b689"),
    ("description", "a plain words value", "a plain words value"),  # "ip" inside a word
    ("limit", "20", "20"),
])
def test_audit_parameters(key: str, value: str, logged: str) -> None:
    assert mask_param(key, value) == logged


def test_audit_parameters_nested() -> None:
    logged = mask_param("params", {"kind": "payment", "entity_id": CARD, "limit": 5})
    assert logged == {"kind": "payment", "entity_id": HIDDEN + "RPBX", "limit": 5}
    assert mask_param("ids", [str(i) for i in range(30)]) == [str(i) for i in range(20)]
    assert mask_param("x", "y" * 100) == "y" * 77 + HIDDEN


def test_the_old_api_import_path_is_the_same_module() -> None:
    from attribution.api import masking as api_masking
    from attribution.engine.attribute import mask as evidence_mask
    from attribution.notebook import mask_entity as notebook_mask

    assert api_masking.mask_param is mask_param and api_masking.scrub_text is scrub_text
    assert api_masking.mask_entity is mask and evidence_mask is mask
    assert notebook_mask("PromptTemplate", PROMPT) == mask("prompt", PROMPT)


def test_schema_entity_kinds_are_masking_kinds() -> None:
    from attribution.contracts.schema import TABLES

    declared: dict[str, Any] = {}
    for table in TABLES.values():
        for column in table.columns:
            if column.entity is not None:
                declared[f"{table.name}.{column.name}"] = column.entity
                assert masking.kind_of(column.entity) is not None, column
            if column.entity_from is not None:
                assert column.entity_from in table.column_names
    assert declared["accounts.email"] == "email"
    assert declared["payment_methods.fingerprint"] == "payment"
    assert set(LABELS) >= {"Account", "PaymentMethod", "Device", "IP", "PromptTemplate"}
