"""Worlds for the API tests: a hand-made one with known answers, and a generated one.

The hand-made world has two runs whose differences are known exactly (a fleet
created, dissolved, grown, shrunk; attributions gained, lost, changed; one
confidence move), personal identifiers whose masking can be checked, and an
organization without fleets. The generated world runs the real pipeline over
``fixtures.worldgen`` output when that is available.

This module holds no tests; the ``test_api*`` modules import it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from attribution.api.keys import KeyStore
from attribution.contracts.graph import PropertyGraph
from attribution.contracts.results import RunRecord
from attribution.store import Store
from attribution.store.embedded import EmbeddedStore

T0 = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)
TS = pl.Datetime("us", "UTC")

# Personal identifiers that must never appear in full in any response or error.
ALPHA_CARD = "fp_alpha_card_0001_9f2c"
ALPHA_DEVICE = "dev_alpha_aa11bb22_77b1"
ALPHA_IP = "203.0.113.77"
BETA_IP = "198.51.100.23"
V6_IP = "2001:db8:1234:5678::42"
EMAIL = "john.doe.1987@alpha-labs.test"
SECRETS_IN_WORLD = (ALPHA_CARD, ALPHA_DEVICE, ALPHA_IP, BETA_IP, V6_IP, "john.doe.1987")


def acc(i: int) -> str:
    return f"a{i:03d}"


@dataclass
class Keys:
    """The key file and one secret of each kind."""

    store: KeyStore
    read: str
    admin: str
    revoked: str
    read_id: str
    admin_id: str


def make_keys(path: Path) -> Keys:
    store = KeyStore(path)
    read_rec, read = store.create("reader", "read")
    admin_rec, admin = store.create("admin", "admin")
    old_rec, old = store.create("old", "admin")
    store.revoke(old_rec.key_id)
    return Keys(store, read, admin, old, read_rec.key_id, admin_rec.key_id)


DTYPES: dict[str, Any] = {"str": pl.String, "ip": pl.String, "int": pl.Int64,
                          "float": pl.Float64, "bool": pl.Boolean, "ts": TS}


def _table(name: str, rows: list[dict[str, Any]]) -> pl.DataFrame:
    from attribution.contracts.schema import TABLES

    schema = {c.name: DTYPES[c.kind] for c in TABLES[name].columns}
    return pl.DataFrame([{c: r.get(c) for c in schema} for r in rows], schema=schema,
                        orient="row")


def hand_tables(n: int = 30) -> dict[str, pl.DataFrame]:
    """Snapshot tables: a000-a009 share a card, a device, an IP; a010-a014 share an IP."""
    from attribution.contracts.schema import TABLES

    def when(i: int, days: int = 0) -> dt.datetime:
        return T0 + dt.timedelta(hours=i, days=days)

    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in TABLES}
    for i in range(n):
        a = acc(i)
        domain = "alpha-labs.test" if i < 10 else "mail.test"
        rows["accounts"].append({
            "account_id": a, "created_at": when(i), "country": "SG" if i < 10 else "US",
            "plan": "pro", "signup_ip": ALPHA_IP if i < 10 else None,
            "email": EMAIL if i == 0 else f"user{i}@{domain}"})
        ip = ALPHA_IP if i < 10 else BETA_IP if i < 15 else V6_IP if i == 29 else f"10.0.{i}.9"
        rows["account_ips"].append({"account_id": a, "ip": ip, "first_seen": when(i),
                                    "last_seen": when(i, 10), "requests": 40})
        rows["exchanges"].append({"account_id": a, "ts": when(i, 1), "input_tokens": 100,
                                  "output_tokens": 200, "capability": "coding"})
        if i < 10:
            rows["payment_methods"].append({"payment_method_id": f"pm_{i}",
                                            "fingerprint": ALPHA_CARD, "kind": "card"})
            rows["account_payments"].append({"account_id": a, "payment_method_id": f"pm_{i}",
                                             "first_seen": when(i), "last_seen": when(i, 10)})
        device = ALPHA_DEVICE if i < 10 else f"dev_beta_{i:04d}_solo" if i < 15 else None
        if device is not None:
            rows["account_devices"].append({"account_id": a, "device_id": device,
                                            "first_seen": when(i), "last_seen": when(i, 10),
                                            "sessions": 5})
    for ip in {r["ip"] for r in rows["account_ips"]} | {ALPHA_IP}:
        rows["ips"].append({"ip": ip, "asn": 64500 if ip == ALPHA_IP else 64501})
    for device in {r["device_id"] for r in rows["account_devices"]}:
        rows["devices"].append({"device_id": device, "platform": "linux"})
    rows["organizations"] = [
        {"org_id": "org-1", "name": "Alpha Labs", "country": "SG", "kind": "ai_lab"},
        {"org_id": "org-2", "name": "Beta Corp", "country": "US", "kind": "company"},
        {"org_id": "org-3", "name": "Gamma Univ", "country": "US", "kind": "university"},
    ]
    rows["known_links"] = [{"entity_type": "fingerprint", "entity_id": ALPHA_CARD,
                            "org_id": "org-1", "source": "corporate_card_registry"}]
    return {name: _table(name, r) for name, r in rows.items()}


def write_snapshot(folder: Path, tables: dict[str, pl.DataFrame]) -> Path:
    """The tables as a snapshot directory of Parquet files."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, frame in tables.items():
        frame.write_parquet(folder / f"{name}.parquet")
    return folder


def hand_graph() -> PropertyGraph:
    from attribution.stages.build import build_graph

    return build_graph(hand_tables()).canonical()


def _record(run_id: str, started: dt.datetime, fleets: list[dict[str, Any]],
            previous: str | None, n: int = 30) -> RunRecord:
    member: dict[str, dict[str, Any]] = {}
    for f in fleets:
        for a in f.pop("members"):
            member[a] = f
    assignments = pl.DataFrame([
        {"account_id": acc(i),
         "fleet_id": member[acc(i)]["fleet_id"] if acc(i) in member else None,
         "sybil_score": member[acc(i)]["sybil_score"] if acc(i) in member else 0.02,
         "org_id": member[acc(i)].get("org_id") if acc(i) in member else None,
         "confidence": member[acc(i)].get("confidence") if acc(i) in member else None}
        for i in range(n)
    ])
    for f in fleets:
        f["size"] = sum(1 for m in member.values() if m is f)
        f.setdefault("exchanges", 1000 * f["size"])
        f.setdefault("first_seen", T0)
        f.setdefault("last_seen", T0 + dt.timedelta(days=20))
    fleet_frame = pl.DataFrame(fleets)
    evidence = pl.DataFrame([
        {"fleet_id": "F-alpha", "org_id": None, "kind": "shared_payment",
         "detail": "10 accounts share card fingerprint ...9f2c", "weight": 0.5},
        {"fleet_id": "F-alpha", "org_id": "org-1", "kind": "org_asn",
         "detail": "fleet IPs in AS 64500 (Alpha Labs corporate network)", "weight": 0.3},
        {"fleet_id": "F-alpha", "org_id": None, "kind": "creation_burst",
         "detail": "10 accounts created within 10 hours", "weight": 0.2},
    ] + [{"fleet_id": f["fleet_id"], "org_id": None, "kind": "shared_ip",
          "detail": "accounts share an IP", "weight": 1.0}
         for f in fleets if f["fleet_id"] != "F-alpha"])
    manifest = {
        "run_id": run_id, "started_at": started.isoformat(),
        "finished_at": (started + dt.timedelta(minutes=3)).isoformat(),
        "engine_version": "0.1.0", "input": {"path": "/snap", "digest": "d" * 64},
        "params": {"seed": 42}, "timings": {"total": 1.5}, "previous_run_id": previous,
        "counts": {"accounts": n, "fleets": len(fleets),
                   "attributed_fleets": sum(1 for f in fleets if f.get("org_id"))},
    }
    return RunRecord(manifest=manifest, assignments=assignments, fleets=fleet_frame,
                     evidence=evidence).conformed()


BASE_RUN = "run-20260201T000000-aaaaaaaa"
HEAD_RUN = "run-20260301T000000-bbbbbbbb"


def base_record() -> RunRecord:
    return _record(BASE_RUN, dt.datetime(2026, 2, 1, tzinfo=dt.UTC), [
        {"fleet_id": "F-alpha", "members": [acc(i) for i in range(10)], "sybil_score": 0.95,
         "org_id": "org-1", "confidence": 0.90, "top_capabilities": "coding 70%"},
        {"fleet_id": "F-beta", "members": [acc(i) for i in range(10, 15)], "sybil_score": 0.7},
        {"fleet_id": "F-gamma", "members": [acc(15), acc(16), acc(17)], "sybil_score": 0.6},
        {"fleet_id": "F-eps", "members": [acc(21), acc(22)], "sybil_score": 0.8,
         "org_id": "org-1", "confidence": 0.7},
        {"fleet_id": "F-zeta", "members": [acc(23), acc(24)], "sybil_score": 0.8,
         "org_id": "org-2", "confidence": 0.6},
    ], None)


def head_record() -> RunRecord:
    return _record(HEAD_RUN, dt.datetime(2026, 3, 1, tzinfo=dt.UTC), [
        {"fleet_id": "F-alpha", "members": [acc(i) for i in range(10)] + [acc(18), acc(19)],
         "sybil_score": 0.97, "org_id": "org-1", "confidence": 0.95,
         "top_capabilities": "coding 72%", "exchanges": 50_000,
         "first_seen": T0 - dt.timedelta(days=5), "last_seen": T0 + dt.timedelta(days=30)},
        {"fleet_id": "F-delta", "members": [acc(i) for i in range(10, 15)] + [acc(20)],
         "sybil_score": 0.75, "org_id": "org-2", "confidence": 0.62},
        {"fleet_id": "F-gamma", "members": [acc(15), acc(16)], "sybil_score": 0.6,
         "org_id": "org-2", "confidence": 0.55},
        {"fleet_id": "F-eps", "members": [acc(21), acc(22)], "sybil_score": 0.8,
         "org_id": "org-2", "confidence": 0.6},
        {"fleet_id": "F-zeta", "members": [acc(23), acc(24)], "sybil_score": 0.3},
    ], BASE_RUN)


def fill_store(store: Store) -> None:
    """Load the hand graph and both runs (head current) into any store."""
    store.load_snapshot(hand_graph(), digest="d" * 64)
    store.write_run(base_record())
    store.write_run(head_record())


def hand_store(root: Path) -> Path:
    """An embedded store holding the hand world."""
    fill_store(EmbeddedStore(root))
    return root


def generated_store(root: Path, *, accounts: int = 2000, seed: int = 1) -> tuple[Path, Path]:
    """Run the real pipeline over a generated world; returns (store root, snapshot dir)."""
    from attribution.job.jobs import run_job
    from fixtures.worldgen import generate_world

    generate_world(root / "world", accounts=accounts, seed=seed)
    store = EmbeddedStore(root / "store")
    run_job(store, home=root, snapshot=root / "world" / "snapshot", out=root / "run")
    store.close()
    return root / "store", root / "world" / "snapshot"
