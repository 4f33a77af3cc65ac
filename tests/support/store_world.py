"""A tiny world every store must hold exactly, and the equality checks of the store tests.

Used by the store contract suite (``tests/store/test_store_contract.py``) and by the
other tests that need a small graph or run in a store.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import polars as pl
from polars.testing import assert_frame_equal

from attribution.contracts.graph import PropertyGraph
from attribution.contracts.results import RunRecord
from attribution.contracts.settings import Neo4jSettings
from attribution.stages.build import build_graph
from tests.support.tables import tables, ts

# --------------------------------------------------------------------------- a tiny world


def tiny_tables(*, extra_account: bool = False) -> dict[str, pl.DataFrame]:
    """Twelve accounts, two fleets, two organizations and every kind of link.

    Fleet X (a01-a05) shares card fingerprint fp-1, device d-1, IP 10.0.0.1 (an
    exit of proxy px-1 in AS 64500) and prompt template ph-1; fleet Y (a06-a08)
    shares device d-2 and IP 10.0.0.2 (AS 64501); a06 also used d-1 once. Org O1 is known by fp-1 and
    ph-1, org O2 by AS 64501, the e-mail domain acme.test and account a12.
    Some relationship ends are not rows of their table (IP 192.0.2.99, device
    d-x seen only in exchanges, device d-9 and IP 10.9.9.9 named only by links).
    """
    fleet_x = [f"a{i:02d}" for i in range(1, 6)]
    fleet_y = [f"a{i:02d}" for i in range(6, 9)]
    loners = [f"a{i:02d}" for i in range(9, 13)]
    everyone = fleet_x + fleet_y + loners
    if extra_account:
        everyone.append("a13")
    accounts = [
        {"account_id": a, "created_at": ts(i * 7), "email": f"user{i}@"
         + ("acme.test" if a in fleet_y else "mail.test"),
         "country": "DE" if a in fleet_x else None, "plan": "free" if i % 2 else "pro",
         "org_claim": "Acme" if a == "a12" else None,
         "signup_ip": "10.0.0.1" if a in fleet_x else None}
        for i, a in enumerate(everyone)
    ]
    payment_methods = [
        {"payment_method_id": f"pm-{a}", "fingerprint": "fp-1" if a in fleet_x else f"fp-{a}",
         "kind": "card", "bin": "411111" if a in fleet_x else None, "issuer_country": "US"}
        for a in fleet_x + loners[:2]
    ]
    account_payments = [
        {"account_id": a, "payment_method_id": f"pm-{a}", "first_seen": ts(10), "last_seen": ts(500)}
        for a in fleet_x + loners[:2]
    ]
    devices = [
        {"device_id": d, "user_agent": "UA/1", "platform": p, "timezone": "Asia/Shanghai",
         "language": "zh"}
        for d, p in (("d-1", "linux"), ("d-2", "mac"), ("d-3", None))
    ]
    account_devices = (
        [{"account_id": a, "device_id": "d-1", "first_seen": ts(20), "last_seen": ts(400),
          "sessions": 3} for a in fleet_x]
        + [{"account_id": a, "device_id": "d-2", "first_seen": ts(30), "last_seen": ts(300),
            "sessions": 5} for a in fleet_y]
        + [{"account_id": "a09", "device_id": "d-3", "first_seen": ts(1), "last_seen": ts(2),
            "sessions": 1},
           {"account_id": "a06", "device_id": "d-1", "first_seen": ts(7), "last_seen": ts(8),
            "sessions": 1}]
    )
    proxies = [{"proxy_id": "px-1", "provider": "ResiNet", "kind": "residential"},
               {"proxy_id": "px-2", "provider": "CloudVPN", "kind": "vpn"}]
    ips: list[dict[str, Any]] = [
        {"ip": "10.0.0.1", "asn": 64500, "as_org": "Example Transit", "country": "DE",
         "hosting": False, "proxy_id": "px-1"},
        {"ip": "10.0.0.2", "asn": 64501, "as_org": "Acme Corp Net", "country": "US",
         "hosting": True, "proxy_id": None},
        {"ip": "10.0.0.3", "asn": None, "as_org": None, "country": None, "hosting": None,
         "proxy_id": "px-2"},
    ]
    account_ips = (
        [{"account_id": a, "ip": "10.0.0.1", "first_seen": ts(40), "last_seen": ts(600),
          "requests": 12} for a in fleet_x]
        + [{"account_id": a, "ip": "10.0.0.2", "first_seen": ts(45), "last_seen": ts(610),
            "requests": 7} for a in fleet_y]
        + [{"account_id": "a10", "ip": "192.0.2.99", "first_seen": ts(3), "last_seen": ts(4),
            "requests": 1},
           {"account_id": "a11", "ip": "10.0.0.3", "first_seen": ts(3), "last_seen": ts(9),
            "requests": 2}]
    )
    exchanges = [
        {"account_id": a, "ts": ts(100 + 3 * k + j), "ip": "10.0.0.1", "device_id": "d-1",
         "model": "m1", "input_tokens": 100 + k, "output_tokens": 50, "capability":
         ("coding", "agentic")[k % 2], "prompt_hash": "ph-1"}
        for j, a in enumerate(fleet_x) for k in range(4)
    ] + [
        {"account_id": "a12", "ts": ts(900), "ip": None, "device_id": "d-x", "model": "m2",
         "input_tokens": 5, "output_tokens": 6, "capability": None, "prompt_hash": None},
    ]
    organizations = [
        {"org_id": "O1", "name": "Frontier Lab", "country": "CN", "kind": "ai_lab"},
        {"org_id": "O2", "name": "Acme", "country": "US", "kind": "company"},
    ]
    known_links: list[dict[str, Any]] = [
        {"entity_type": "fingerprint", "entity_id": "fp-1", "org_id": "O1",
         "source": "corporate_card_registry", "confidence": 0.95, "observed_at": ts(-100)},
        {"entity_type": "payment_method", "entity_id": "pm-a01", "org_id": "O1",
         "source": "prior_case", "confidence": None, "observed_at": None},
        {"entity_type": "prompt_hash", "entity_id": "ph-1", "org_id": "O1",
         "source": "prior_case", "confidence": 0.8, "observed_at": ts(-50)},
        {"entity_type": "device", "entity_id": "d-9", "org_id": "O1", "source": "prior_case",
         "confidence": 0.7, "observed_at": None},
        {"entity_type": "asn", "entity_id": "64501", "org_id": "O2", "source": "whois",
         "confidence": 1.0, "observed_at": ts(-10)},
        {"entity_type": "email_domain", "entity_id": "acme.test", "org_id": "O2",
         "source": "whois", "confidence": 0.9, "observed_at": None},
        {"entity_type": "account", "entity_id": "a12", "org_id": "O2", "source": "prior_case",
         "confidence": 0.6, "observed_at": None},
        {"entity_type": "ip", "entity_id": "10.9.9.9", "org_id": "O2", "source": "whois",
         "confidence": 0.5, "observed_at": None},
    ]
    out = tables(accounts=accounts, payment_methods=payment_methods,
                 account_payments=account_payments, devices=devices,
                 account_devices=account_devices, proxies=proxies, ips=ips,
                 account_ips=account_ips, exchanges=exchanges, organizations=organizations,
                 known_links=known_links)
    # Extra columns are kept as properties (the contract): one of each awkward dtype.
    out["accounts"] = out["accounts"].with_columns(
        pl.Series("score_hint", [float(i) / 3 for i in range(len(everyone))]),
        pl.Series("tags_n", [i % 3 for i in range(len(everyone))], dtype=pl.Int32),
        pl.Series("note", [None] * len(everyone), dtype=pl.String),
    )
    return out


def tiny_graph(**kw: Any) -> PropertyGraph:
    return build_graph(tiny_tables(**kw))


def tiny_record(run_id: str = "run-1", *, org: str | None = "O1", started: str = "2026-02-01"
                ) -> RunRecord:
    """A hand-made run over the tiny world: two fleets, one attributed."""
    fleet_x = [f"a{i:02d}" for i in range(1, 6)]
    fleet_y = [f"a{i:02d}" for i in range(6, 9)]
    rows = []
    for i in range(1, 13):
        a = f"a{i:02d}"
        fleet = "F-X" if a in fleet_x else "F-Y" if a in fleet_y else None
        score = 0.9 if fleet == "F-X" else 0.3 if fleet == "F-Y" else 0.05 + i / 1000
        rows.append({"account_id": a, "fleet_id": fleet, "sybil_score": score,
                     "org_id": org if fleet == "F-X" else None,
                     "confidence": 0.81 if fleet == "F-X" and org else None})
    fleets = [
        {"fleet_id": "F-X", "size": 5, "sybil_score": 0.9, "org_id": org,
         "confidence": 0.81 if org else None, "runner_up_org_id": "O2",
         "runner_up_confidence": 0.05, "first_seen": ts(0), "last_seen": ts(600),
         "exchanges": 20, "top_capabilities": "coding 50%, agentic 50%",
         "affiliated_org_id": None, "affiliation_confidence": None},
        {"fleet_id": "F-Y", "size": 3, "sybil_score": 0.3, "org_id": None, "confidence": None,
         "runner_up_org_id": None, "runner_up_confidence": None, "first_seen": ts(35),
         "last_seen": ts(610), "exchanges": 0, "top_capabilities": None,
         "affiliated_org_id": "O2", "affiliation_confidence": 0.7},
    ]
    evidence = [
        {"fleet_id": "F-X", "org_id": org, "kind": "shared_payment",
         "detail": "5 accounts share card fingerprint fp-…", "weight": 0.6},
        {"fleet_id": "F-X", "org_id": org, "kind": "prompt_template",
         "detail": "prompt template ph-…", "weight": 0.4},
        {"fleet_id": "F-Y", "org_id": None, "kind": "shared_device", "detail": "3 share d-2",
         "weight": 1.0},
    ]
    manifest = {"run_id": run_id, "started_at": started, "finished_at": started + "T01",
                "engine_version": "0.1.0", "input": {"path": "/x", "digest": "abc"},
                "params": {"seed": 42, "nested": {"a": [1, 2.5, None]}},
                "counts": {"fleets": 2, "accounts": 12}, "previous_run_id": None}
    return RunRecord(
        manifest=manifest,
        assignments=pl.DataFrame(rows, orient="row"),
        fleets=pl.DataFrame(fleets, orient="row"),
        evidence=pl.DataFrame(evidence, orient="row"),
    ).conformed()


def settings_of(server: Any) -> Neo4jSettings:
    """Connection settings of the session's test server fixture."""
    return Neo4jSettings(uri=server.uri, user=server.user, password=server.password,
                         database=server.database)


def assert_graph_equal(left: PropertyGraph, right: PropertyGraph) -> None:
    a, b = left.canonical().frames(), right.canonical().frames()
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].schema == b[name].schema, name
        assert_frame_equal(a[name], b[name], check_exact=True)


def assert_record_equal(left: RunRecord, right: RunRecord) -> None:
    assert left.manifest == right.manifest
    for name in ("assignments", "fleets", "evidence"):
        assert_frame_equal(getattr(left, name), getattr(right, name), check_exact=True)


def roundtrip_manifest(record: RunRecord) -> dict[str, Any]:
    return json.loads(json.dumps(record.manifest, default=str))




def record_queries(store: Any, method: str) -> list[Any]:
    """The queries ``store`` sends through one of its methods from now on (still sent)."""
    sent: list[Any] = []
    real = getattr(store, method)

    def spy(query: Any, *args: Any, **params: Any) -> Any:
        sent.append(query)
        return real(query, *args, **params)

    setattr(store, method, spy)
    return sent


def with_odd_accounts(graph: PropertyGraph, **extra: pl.Series) -> PropertyGraph:
    """``graph`` with account columns a store must carry exactly: pre-1970 and nanosecond
    timestamps, dates, nullable booleans, NaN (plus ``extra`` columns of the caller's)."""
    n = graph.accounts.height
    accounts = graph.accounts.with_columns(
        pl.Series("born", [dt.date(1950 + i, 1, 2) for i in range(n)]),
        pl.Series("old_ts", [dt.datetime(1969, 12, 31, 23, 59, 59, 500_001)] * (n - 1) + [None],
                  dtype=pl.Datetime("us", "UTC")),
        pl.Series("naive_ns", [dt.datetime(2030, 1, 1, 0, 0, 0, 7)] * n,
                  dtype=pl.Datetime("ns")).dt.offset_by("123ns"),
        pl.Series("flag", [True, None] * (n // 2), dtype=pl.Boolean),
        pl.Series("nan", [float("nan")] * n),
        *extra.values(),
    )
    return PropertyGraph.from_frames({**graph.frames(), "accounts": accounts})
