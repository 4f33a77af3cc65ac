"""The API over a real run: the embedded pipeline on a generated world (2,000 accounts).

Asserts properties rather than ids: pages partition the fleets, member counts
match fleet sizes, accounts agree with their fleets, organization totals add
up, and no identifier of the snapshot (email, IP, card fingerprint, device)
appears in any response.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest
from fastapi.testclient import TestClient

from attribution.api import create_app
from attribution.store.embedded import EmbeddedStore
from tests.support.api_world import generated_store, make_keys


@dataclass
class Served:
    client: TestClient
    snapshot: Path
    headers: dict[str, str]

    def get(self, url: str) -> httpx.Response:
        r = self.client.get(url, headers=self.headers)
        assert r.status_code == 200, (url, r.status_code, r.text[:300])
        return r

    def all_pages(self, url: str, limit: int = 500) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        offset: int | None = 0
        sep = "&" if "?" in url else "?"
        while offset is not None:
            page = self.get(f"{url}{sep}limit={limit}&offset={offset}").json()
            items += page["items"]
            offset = page["next_offset"]
        return items


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("generated")
    store_root, snapshot = generated_store(root, accounts=2000, seed=1)
    keys = make_keys(root / "api_keys.json")
    app = create_app(lambda: EmbeddedStore(store_root), keys=keys.store, home=root)
    with TestClient(app) as client:
        yield Served(client, snapshot, {"X-API-Key": keys.read})


def test_fleet_pages_partition_the_fleets(served: Served) -> None:
    fleets = served.all_pages("/fleets", limit=37)
    ids = [f["fleet_id"] for f in fleets]
    assert len(ids) == len(set(ids)) > 0
    scores = [f["sybil_score"] for f in fleets]
    assert scores == sorted(scores, reverse=True)
    run = served.get("/runs").json()["items"][0]
    assert run["current"] and run["counts"]["fleets"] == len(ids)
    attributed = [f for f in fleets if f["org_id"] is not None]
    assert run["counts"]["attributed_fleets"] == len(attributed)
    assert all(f["size"] >= 2 for f in fleets)


def test_members_match_sizes_and_accounts_match_fleets(served: Served) -> None:
    fleets = served.all_pages("/fleets?sort=size&order=desc")
    for fleet in fleets[:15] + fleets[-5:]:
        members = served.all_pages(f"/fleets/{fleet['fleet_id']}/members")
        assert len(members) == fleet["size"]
        for m in members[:5]:
            account = served.get(f"/accounts/{m['account_id']}").json()
            assert account["fleet"]["fleet_id"] == fleet["fleet_id"]
            assert account["sybil_score"] == m["sybil_score"]
            if account["attribution"] is not None:
                assert account["attribution"]["org_id"] == fleet["org_id"]
        infra = served.all_pages(f"/fleets/{fleet['fleet_id']}/infrastructure")
        assert all(2 <= e["accounts_in_fleet"] <= min(fleet["size"], e["accounts_total"])
                   for e in infra)


def test_organization_totals_add_up(served: Served) -> None:
    orgs = served.all_pages("/organizations")
    fleets = served.all_pages("/fleets")
    by_org: dict[str, list[dict[str, Any]]] = {}
    for f in fleets:
        if f["org_id"] is not None:
            by_org.setdefault(f["org_id"], []).append(f)
    for org in orgs:
        mine = by_org.get(org["org_id"], [])
        assert org["fleets"] == len(mine)
        assert org["exchanges"] == sum(f["exchanges"] or 0 for f in mine)
        if mine:
            confs = sorted(f["confidence"] for f in mine)
            assert org["confidence_min"] == confs[0] and org["confidence_max"] == confs[-1]
            detail = served.get(f"/organizations/{org['org_id']}").json()
            assert {f["fleet_id"] for f in detail["fleets_page"]["items"]} <= {
                f["fleet_id"] for f in mine}


def test_no_snapshot_identifier_leaks(served: Served) -> None:
    snap = served.snapshot
    accounts = pl.read_parquet(snap / "accounts.parquet")
    secrets: set[str] = set(accounts["email"].to_list())
    secrets |= {e.split("@")[0] for e in accounts["email"].to_list() if len(e.split("@")[0]) > 6}
    secrets |= set(pl.read_parquet(snap / "ips.parquet")["ip"].to_list())
    secrets |= set(pl.read_parquet(snap / "payment_methods.parquet")["fingerprint"].to_list())
    secrets |= set(pl.read_parquet(snap / "devices.parquet")["device_id"].to_list())
    fleets = served.all_pages("/fleets")
    texts: list[str] = []
    for fleet in fleets[:25]:
        base = f"/fleets/{fleet['fleet_id']}"
        texts += [served.get(base).text, served.get(base + "/infrastructure?limit=500").text]
        members = served.get(base + "/members?limit=3").json()["items"]
        texts += [served.get(f"/accounts/{m['account_id']}").text for m in members]
    texts += [served.get(f"/accounts/{a}").text for a in accounts["account_id"].head(40)]
    blob = "\n".join(texts)
    tokens = set(blob.replace('"', " ").replace(",", " ").split())
    leaked = [s for s in secrets if s and (s in tokens or (len(s) >= 7 and s in blob))]
    assert leaked == []
