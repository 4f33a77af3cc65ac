"""The HTTP query API over a hand-made world with known answers.

The main tests run against both stores: the embedded one always, the Neo4j
one when ``attribution.store.neo4j`` and the ``neo4j_server`` fixture exist.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from attribution.api import create_app
from attribution.store import Store
from attribution.store.embedded import EmbeddedStore
from tests.support.api_client import PROBLEM, World, endpoints, free_port, served_cli
from tests.support.api_world import (
    ALPHA_CARD,
    ALPHA_DEVICE,
    BASE_RUN,
    HEAD_RUN,
    SECRETS_IN_WORLD,
    Keys,
    base_record,
    fill_store,
    hand_tables,
    make_keys,
    write_snapshot,
)

# --- health and readiness ---------------------------------------------------

def test_health_and_ready_need_no_key(world: World) -> None:
    assert world.get("/health", key=None).json()["status"] == "ok"
    ready = world.get("/ready", key=None)
    assert ready.status_code == 200
    assert ready.json()["run_id"] == HEAD_RUN


def test_ready_is_503_without_a_run_and_when_the_store_is_down(tmp_path: Path) -> None:
    keys = make_keys(tmp_path / "k.json")
    empty = create_app(lambda: EmbeddedStore(tmp_path / "empty"), keys=keys.store,
                       home=tmp_path, refresh_interval=0.0)
    with TestClient(empty) as client:
        assert client.get("/health").status_code == 200
        r = client.get("/ready")
        assert r.status_code == 503 and r.headers["content-type"] == PROBLEM
        r = client.get("/fleets", headers={"X-API-Key": keys.read})
        assert r.status_code == 503 and r.json()["status"] == 503

    def broken() -> Store:
        raise ConnectionError("bolt://10.1.2.3:7687 refused")

    down = create_app(broken, keys=keys.store, home=tmp_path)
    with TestClient(down) as client:
        assert client.get("/health").status_code == 200
        r = client.get("/ready")
        assert r.status_code == 503
        assert "10.1.2.3" not in r.text and "Traceback" not in r.text
        r = client.get("/fleets/F-alpha", headers={"X-API-Key": keys.read})
        assert r.status_code == 503 and r.headers["content-type"] == PROBLEM


# --- authentication and scopes ----------------------------------------------

def test_the_matrix_covers_every_route(world: World) -> None:
    covered = {(m, _template(u)) for m, u, _, _ in endpoints(world.home)}
    paths = world.client.app.openapi()["paths"]  # type: ignore[attr-defined]
    routes = {(m.upper(), p) for p, ops in paths.items() if p not in ("/health", "/ready")
              for m in ops}
    assert routes == covered


def _template(url: str) -> str:
    for concrete, template in (("/fleets/F-alpha", "/fleets/{fleet_id}"),
                               ("/accounts/a000", "/accounts/{account_id}"),
                               ("/organizations/org-1", "/organizations/{org_id}"),
                               (f"/runs/{HEAD_RUN}", "/runs/{run_id}"),
                               ("/runs/jobs/0000", "/runs/jobs/{job_id}"),
                               ("/queries/api_test_count", "/queries/{name}")):
        if url.startswith(concrete):
            return template + url[len(concrete):]
    return url


@pytest.mark.parametrize("key", [None, "bad", "revoked", "read", "admin"])
def test_auth_matrix(world: World, key: str | None, test_query: str) -> None:
    for method, url, body, admin_only in endpoints(world.home):
        r = world.client.request(method, url, json=body, headers=world.headers(key))
        where = f"{method} {url} with {key} key"
        if key in (None, "bad", "revoked"):
            assert r.status_code == 401, where
            assert r.headers["content-type"] == PROBLEM, where
            assert "www-authenticate" in r.headers, where
        elif key == "read" and admin_only:
            assert r.status_code == 403, where
            assert r.headers["content-type"] == PROBLEM, where
        else:
            assert r.status_code not in (401, 403), where
            assert r.status_code < 500 or r.status_code == 501, where


def test_x_api_key_header_and_live_revocation(world: World) -> None:
    record, secret = world.keys.store.create("temp", "read")
    assert world.client.get("/fleets", headers={"X-API-Key": secret}).status_code == 200
    assert world.keys.store.revoke(record.key_id)
    assert world.client.get("/fleets", headers={"X-API-Key": secret}).status_code == 401


def test_keys_are_stored_hashed(world: World) -> None:
    text = (world.home / "api_keys.json").read_text()
    assert world.keys.read not in text and world.keys.admin not in text
    assert (world.home / "api_keys.json").stat().st_mode & 0o077 == 0


# --- problem details and masking --------------------------------------------

def test_unknown_ids_are_404_problems_that_echo_nothing(world: World) -> None:
    for url in ("/fleets/F-nope", "/fleets/F-nope/members", "/accounts/" + ALPHA_CARD,
                "/accounts/203.0.113.77", "/organizations/nobody", "/runs/run-nope",
                "/accounts/john.doe.1987@alpha-labs.test", "/no/such/route"):
        r = world.get(url)
        assert r.status_code == 404, url
        assert r.headers["content-type"] == PROBLEM
        body = r.json()
        assert {"type", "title", "status"} <= set(body) and body["status"] == 404
        assert body["request_id"] == r.headers["x-request-id"]
        for secret in (*SECRETS_IN_WORLD, "F-nope", "nobody", "run-nope", "john.doe"):
            assert secret not in r.text, (url, secret)


def test_bad_parameters_are_422_problems_without_the_input(world: World) -> None:
    for query in ("limit=501", "limit=0", "offset=-1", "min_sybil=2", "sort=email",
                  "first_seen_from=john.doe.1987@alpha-labs.test", "min_size=203.0.113.77",
                  "org_id=" + "x" * 300, "attributed=" + ALPHA_CARD):
        r = world.get(f"/fleets?{query}")
        assert r.status_code == 422, query
        assert r.headers["content-type"] == PROBLEM
        body = r.json()
        assert body["errors"] and all({"loc", "msg", "type"} == set(e) for e in body["errors"])
        for secret in (*SECRETS_IN_WORLD, "john.doe", "x" * 50):
            assert secret not in r.text, (query, secret)
    r = world.post("/verdicts", {"subject": "fleet", "subject_id": "F-alpha",
                                 "verdict": "maybe", "reason": "john.doe.1987@alpha-labs.test"})
    assert r.status_code == 422 and "john.doe" not in r.text


def test_an_unexpected_error_is_a_bare_500(world: World, monkeypatch: pytest.MonkeyPatch
                                            ) -> None:
    from attribution.api.routers import fleets

    def boom(*_: Any, **__: Any) -> Any:
        raise RuntimeError(f"failed on {ALPHA_CARD} from 203.0.113.77")

    monkeypatch.setattr(fleets, "sorted_page", boom)
    r = world.get("/fleets")
    assert r.status_code == 500 and r.headers["content-type"] == PROBLEM
    assert "Traceback" not in r.text and ALPHA_CARD not in r.text and "203.0.113" not in r.text
    assert r.json()["request_id"] == r.headers["x-request-id"]


def _walk(world: World) -> list[httpx.Response]:
    urls = ["/fleets?limit=500", "/organizations", "/runs", "/runs/diff?threshold=0",
            f"/runs/{BASE_RUN}"]
    fleets = world.get("/fleets?limit=500").json()["items"]
    for f in fleets:
        base = f"/fleets/{f['fleet_id']}"
        urls += [base, base + "/members?limit=500", base + "/evidence",
                 base + "/infrastructure?limit=500"]
    urls += [f"/accounts/a{i:03d}" for i in range(30)]
    urls += [f"/accounts/a{i:03d}/entities" for i in range(30)]
    urls += ["/organizations/org-1", "/organizations/org-2", "/organizations/org-3"]
    return [world.get(u) for u in urls]


def test_no_response_shows_a_full_identifier(world: World) -> None:
    responses = _walk(world)
    assert all(r.status_code == 200 for r in responses), [
        (str(r.url), r.status_code) for r in responses if r.status_code != 200]
    for r in responses:
        for secret in SECRETS_IN_WORLD:
            assert secret not in r.text, (str(r.url), secret)
        assert "@" not in r.text, str(r.url)


def test_account_entities_are_masked_and_counted(world: World) -> None:
    a = world.get("/accounts/a000").json()
    shown = {e["kind"]: e for e in a["entities"]}
    assert shown["payment"]["entity"] == "…" + ALPHA_CARD[-4:]
    assert shown["device"]["entity"] == "…" + ALPHA_DEVICE[-4:]
    assert shown["ip"]["entity"] == "203.0.113.0/24"
    assert shown["signup_ip"]["entity"] == "203.0.113.0/24"
    assert shown["email_domain"]["entity"] == "alpha-labs.test"
    assert shown["payment"]["shared_with"] == 9 and shown["payment"]["shared_in_fleet"] == 9
    v6 = world.get("/accounts/a029").json()["entities"]
    assert {e["entity"] for e in v6 if e["kind"] == "ip"} == {"2001:db8:1234::/48"}


# --- fleets -----------------------------------------------------------------

def ids(page: dict[str, Any], key: str = "fleet_id") -> list[str]:
    return [item[key] for item in page["items"]]


def test_fleet_list_sorts_and_filters(world: World) -> None:
    page = world.get("/fleets").json()
    assert page["total"] == 5
    assert ids(page) == ["F-alpha", "F-eps", "F-delta", "F-gamma", "F-zeta"]  # sybil desc
    assert ids(world.get("/fleets?org_id=org-2&sort=fleet_id&order=asc").json()) == [
        "F-delta", "F-eps", "F-gamma"]
    assert ids(world.get("/fleets?min_sybil=0.76").json()) == ["F-alpha", "F-eps"]
    assert ids(world.get("/fleets?min_confidence=0.6&sort=confidence&order=asc").json()) == [
        "F-eps", "F-delta", "F-alpha"]
    assert ids(world.get("/fleets?min_size=3&sort=size&order=asc").json()) == [
        "F-delta", "F-alpha"]
    assert ids(world.get("/fleets?attributed=false").json()) == ["F-zeta"]
    assert ids(world.get("/fleets?first_seen_to=2026-01-04T00:00:00").json()) == ["F-alpha"]
    assert ids(world.get("/fleets?last_seen_from=2026-02-01T00:00:00Z").json()) == ["F-alpha"]
    assert ids(world.get("/fleets?sort=exchanges&limit=1").json()) == ["F-alpha"]
    top = world.get("/fleets?limit=1").json()["items"][0]
    assert top["org_name"] == "Alpha Labs" and top["size"] == 12


def test_pagination_bounds(world: World) -> None:
    first = world.get("/fleets?limit=2").json()
    assert len(first["items"]) == 2 and first["total"] == 5 and first["next_offset"] == 2
    pages, offset = [], 0
    while offset is not None:
        page = world.get(f"/fleets?limit=2&offset={offset}").json()
        pages += ids(page)
        offset = page["next_offset"]
    assert len(pages) == 5 and len(set(pages)) == 5
    beyond = world.get("/fleets?offset=99").json()
    assert beyond["items"] == [] and beyond["next_offset"] is None and beyond["total"] == 5
    members: list[str] = []
    offset = 0
    while offset is not None:
        page = world.get(f"/fleets/F-alpha/members?limit=5&offset={offset}").json()
        members += ids(page, "account_id")
        offset = page["next_offset"]
    assert members == sorted(members) and len(members) == 12
    assert world.get("/fleets?limit=500").status_code == 200
    assert world.get("/fleets?limit=501").status_code == 422


def test_one_fleet(world: World) -> None:
    f = world.get("/fleets/F-alpha").json()
    assert f["size"] == 12 and f["org_id"] == "org-1" and f["run_id"] == HEAD_RUN
    weights = [e["weight"] for e in f["evidence"]]
    assert weights == sorted(weights, reverse=True) and len(weights) == 3
    assert f["shared_infrastructure"] == {"device": 1, "email_domain": 2, "ip": 1,
                                          "payment": 1, "signup_ip": 1}
    infra = world.get("/fleets/F-alpha/infrastructure").json()
    assert infra["total"] == 6
    assert {(e["kind"], e["accounts_in_fleet"]) for e in infra["items"]} >= {("payment", 10)}
    cards = world.get("/fleets/F-alpha/infrastructure?kind=payment").json()["items"]
    assert cards == [{"kind": "payment", "entity": "…9f2c", "accounts_in_fleet": 10,
                      "accounts_total": 10, "first_seen": cards[0]["first_seen"],
                      "last_seen": cards[0]["last_seen"]}]
    assert world.get("/fleets/F-alpha/infrastructure?min_accounts=11").json()["total"] == 0
    by_score = world.get("/fleets/F-alpha/members?sort=sybil_score&order=desc").json()
    assert by_score["total"] == 12


def test_one_account(world: World) -> None:
    a = world.get("/accounts/a000").json()
    assert a["fleet"]["fleet_id"] == "F-alpha" and a["sybil_score"] == 0.97
    assert a["attribution"] == {"org_id": "org-1", "org_name": "Alpha Labs", "confidence": 0.95}
    assert len(a["evidence"]) == 3 and a["entities_total"] == 5
    assert a["profile"]["country"] == "SG"
    lone = world.get("/accounts/a025").json()
    assert lone["fleet"] is None and lone["attribution"] is None and lone["evidence"] == []
    only_ip = world.get("/accounts/a000/entities?kind=ip").json()
    assert only_ip["total"] == 1 and only_ip["items"][0]["entity"] == "203.0.113.0/24"


# --- organizations ----------------------------------------------------------

def test_organizations(world: World) -> None:
    page = world.get("/organizations").json()
    assert ids(page, "org_id") == ["org-1", "org-2", "org-3"]
    assert ids(world.get("/organizations?attributed=false").json(), "org_id") == ["org-3"]
    assert ids(world.get("/organizations?sort=fleets&order=desc&limit=1").json(),
               "org_id") == ["org-2"]
    org = world.get("/organizations/org-2").json()
    assert org["fleets"] == 3 and org["name"] == "Beta Corp"
    assert (org["confidence_min"], org["confidence_median"], org["confidence_max"]) == (
        0.55, 0.6, 0.62)
    assert org["accounts"] == 10 and org["fleet_accounts"] == 10
    assert [f["fleet_id"] for f in org["fleets_page"]["items"]] == ["F-delta", "F-eps",
                                                                    "F-gamma"]
    empty = world.get("/organizations/org-3").json()
    assert empty["fleets"] == 0 and empty["fleets_page"]["items"] == []


# --- runs ---------------------------------------------------------------------

def test_runs_and_diff(world: World) -> None:
    runs = world.get("/runs").json()
    assert ids(runs, "run_id") == [HEAD_RUN, BASE_RUN]
    assert [r["current"] for r in runs["items"]] == [True, False]
    assert world.get(f"/runs/{BASE_RUN}").json()["params"] == {"seed": 42}
    diff = world.get("/runs/diff").json()
    assert (diff["base"], diff["head"]) == (BASE_RUN, HEAD_RUN)
    counts = diff["counts"]
    assert {k: counts[k] for k in ("created", "dissolved", "grown", "shrunk", "unchanged")} == {
        "created": 1, "dissolved": 1, "grown": 1, "shrunk": 1, "unchanged": 2}
    assert diff["created"] == [{"fleet_id": "F-delta", "size_before": None, "size_after": 6}]
    assert diff["dissolved"][0]["fleet_id"] == "F-beta"
    assert diff["grown"][0] == {"fleet_id": "F-alpha", "size_before": 10, "size_after": 12}
    assert diff["shrunk"][0]["fleet_id"] == "F-gamma"
    assert [c["fleet_id"] for c in diff["attribution_gained"]] == ["F-gamma"]
    assert [c["fleet_id"] for c in diff["attribution_lost"]] == ["F-zeta"]
    changed = diff["attribution_changed"]
    assert [(c["fleet_id"], c["org_before"], c["org_after"]) for c in changed] == [
        ("F-eps", "org-1", "org-2")]
    assert diff["confidence_moved"] == []  # 0.90 -> 0.95 is under the 0.1 default
    moved = world.get("/runs/diff?threshold=0.04").json()["confidence_moved"]
    assert [(m["fleet_id"], m["confidence_before"], m["confidence_after"]) for m in moved] == [
        ("F-alpha", 0.9, 0.95)]
    back = world.get(f"/runs/diff?base={HEAD_RUN}&head={BASE_RUN}").json()["counts"]
    assert (back["created"], back["dissolved"], back["grown"]) == (1, 1, 1)
    assert world.get("/runs/diff?base=run-nope").status_code == 404
    assert world.get("/runs/diff?limit=1&threshold=0").json()["counts"]["confidence_moved"] == 1


# --- verdicts, queries, audit -------------------------------------------------

def test_verdicts_are_appended_with_who_and_when(world: World) -> None:
    r = world.post("/verdicts", {"subject": "fleet", "subject_id": "F-alpha",
                                 "verdict": "attribution_confirmed", "org_id": "org-1",
                                 "reason": "same corporate card as case 12"})
    assert r.status_code == 201
    body = r.json()
    assert body["recorded_by"] == world.keys.admin_id and body["run_id"] == HEAD_RUN
    # The embedded store keeps its verdict log beside its data; Neo4j's is in the home.
    log = next(p for p in (world.home / "store" / "verdicts.jsonl",
                           world.home / "verdicts.jsonl") if p.is_file())
    lines = log.read_text().splitlines()
    last = json.loads(lines[-1])
    # One record format for the API and the command line: what every run reads.
    from attribution.contracts.verdicts import VerdictStore

    assert last["record"] == "verdict" and last["action"] == "confirm"
    assert last["verdict_id"] == body["verdict_id"] and last["why"].startswith("same")
    assert last["run_id"] == HEAD_RUN and last["key_id"] == world.keys.admin_id
    applied = VerdictStore(log).applicable()[-1]
    assert (applied.action, applied.subject, applied.org_id) == ("confirm", "F-alpha", "org-1")
    note = world.post("/verdicts", {"subject": "fleet", "subject_id": "F-alpha",
                                    "verdict": "sybil", "reason": "seen it before"})
    assert note.status_code == 201
    kept = VerdictStore(log).active()[-1]
    assert (kept.action, kept.kind, kept.label) == ("note", "fleet", "sybil")
    assert kept.verdict_id not in {v.verdict_id for v in VerdictStore(log).applicable()}
    lines = log.read_text().splitlines()
    assert world.post("/verdicts", {"subject": "account", "subject_id": "nobody",
                                    "verdict": "sybil", "reason": "x"}).status_code == 404
    assert world.post("/verdicts", {"subject": "account", "subject_id": "a001",
                                    "verdict": "sybil", "reason": "x"},
                      key="read").status_code == 403
    assert len(log.read_text().splitlines()) == len(lines)


TEST_QUERY = """// name: api_test_count
// description: Accounts scored by the current run (API test query).
// param: prefix (string) account ids starting with this
// param: limit (int, default 10) at most this many rows
// returns: account_id
MATCH (a:Account) WHERE a.account_id STARTS WITH $prefix
RETURN a.account_id AS account_id ORDER BY account_id LIMIT $limit
"""


@pytest.fixture
def test_query(monkeypatch: pytest.MonkeyPatch) -> str:
    """A query library of one vetted query, for both stores."""
    from attribution.api.routers import queries
    from attribution.store import named_queries as cypher

    query = cypher.parse_query(TEST_QUERY)
    monkeypatch.setattr(queries, "_library", lambda: {query.name: query})
    monkeypatch.setattr(cypher, "get_query", lambda name: query)
    return query.name


def test_named_queries(world: World, test_query: str) -> None:
    from attribution.api.routers.queries import NEEDS_NEO4J

    listed = world.get("/queries").json()
    assert [q["name"] for q in listed] == [test_query]
    assert listed[0]["params"][0] == {"name": "prefix", "type": "string",
                                      "description": "account ids starting with this",
                                      "required": True}
    assert world.post("/queries/no_such_query", {"params": {}}, key="read").status_code == 404
    neo4j = world.client.app.state.service.runs_named_queries()  # type: ignore[attr-defined]
    assert listed[0]["runnable"] is neo4j
    r = world.post(f"/queries/{test_query}", {"params": {"prefix": "a00"}, "limit": 3},
                   key="read")
    if not neo4j:
        assert r.status_code == 501 and r.headers["content-type"] == PROBLEM
        assert r.json()["detail"] == NEEDS_NEO4J
        return
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["rows"] == [{"account_id": f"a00{i}"} for i in range(3)] and body["truncated"]
    for bad in ({"prefix": 7}, {"prefix": "john.doe.1987@alpha-labs.test", "limit": "x"},
                {"nope": 1}, {}):
        r = world.post(f"/queries/{test_query}", {"params": bad}, key="read")
        assert r.status_code == 422, bad
        assert "john.doe" not in r.text


def test_the_library_is_listed(world: World) -> None:
    from attribution.api.routers.queries import _library

    names = [q["name"] for q in world.get("/queries").json()]
    assert names == sorted(_library())
    service = world.client.app.state.service  # type: ignore[attr-defined]
    if "fleet_overview" not in names or not service.runs_named_queries():
        return
    r = world.post("/queries/fleet_overview", {"params": {"limit": 10}}, key="read")
    assert r.status_code == 200, r.text
    assert {row["fleet_id"] for row in r.json()["rows"]} == {
        "F-alpha", "F-delta", "F-eps", "F-gamma", "F-zeta"}


def test_one_audit_line_per_request(world: World, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="attribution.audit")
    r = world.client.get("/fleets?limit=2&org_id=203.0.113.77",
                         headers={**world.headers("read"), "X-Request-ID": "req-abcdef123"})
    assert r.headers["x-request-id"] == "req-abcdef123"
    world.get("/accounts/a000", key="bad")
    lines = [json.loads(rec.getMessage()) for rec in caplog.records
             if rec.name == "attribution.audit"]
    assert len(lines) == 2
    first, second = lines
    assert first["request_id"] == "req-abcdef123" and first["key_id"] == world.keys.read_id
    assert first["endpoint"] == "/fleets" and first["status"] == 200 and first["rows"] == 0
    assert first["params"]["org_id"] == "203.0.113.0/24" and first["ms"] >= 0
    assert second["status"] == 401 and second["key_id"] is None
    assert second["endpoint"] == "/accounts/{account_id}"
    assert world.get("/fleets").headers["x-request-id"] != r.headers["x-request-id"]


# --- refresh and runs started over the API ------------------------------------

def _refreshing_app(tmp_path: Path) -> tuple[EmbeddedStore, Keys, FastAPI]:
    """A filled embedded store and an app over it that looks for a new run on every request."""
    store = EmbeddedStore(tmp_path / "store")
    fill_store(store)
    keys = make_keys(tmp_path / "k.json")
    app = create_app(lambda: EmbeddedStore(tmp_path / "store"), keys=keys.store,
                     home=tmp_path, refresh_interval=0.0)
    return store, keys, app


def test_a_new_current_run_is_served_without_restart(tmp_path: Path) -> None:
    store, keys, app = _refreshing_app(tmp_path)
    with TestClient(app) as client:
        h = {"X-API-Key": keys.read}
        assert client.get("/ready").json()["run_id"] == HEAD_RUN
        record = base_record()
        record.manifest["run_id"] = "run-20260401T000000-cccccccc"
        record.manifest["started_at"] = "2026-04-01T00:00:00+00:00"
        store.write_run(record)
        assert client.get("/fleets/F-alpha", headers=h).json()["size"] == 10
        assert client.get("/fleets/F-beta", headers=h).status_code == 200
        assert client.get("/runs", headers=h).json()["items"][0]["current"] is True


def test_post_runs_runs_the_pipeline(tmp_path: Path) -> None:
    snapshot = write_snapshot(tmp_path / "snapshot", hand_tables())
    _, keys, app = _refreshing_app(tmp_path)
    with TestClient(app) as client:
        h = {"X-API-Key": keys.admin}
        bad = client.post("/runs", json={"snapshot": str(tmp_path / "nope")}, headers=h)
        assert bad.status_code == 422
        r = client.post("/runs", json={"snapshot": str(snapshot)}, headers=h)
        assert r.status_code == 202, r.text
        job = r.json()
        assert r.headers["location"] == f"/runs/jobs/{job['job_id']}"
        client.app.state.service.jobs.wait(120)  # type: ignore[attr-defined]
        done = client.get(f"/runs/jobs/{job['job_id']}", headers=h).json()
        assert done["status"] == "succeeded", done
        assert client.get("/ready").json()["run_id"] == done["run_id"]
        runs = client.get("/runs", headers=h).json()
        assert runs["total"] == 3 and runs["items"][0]["previous_run_id"] == HEAD_RUN
        assert client.get("/runs/jobs/nope", headers=h).status_code == 404
        # Another worker process knows the job from its status file.
        client.app.state.service.jobs._jobs.clear()  # type: ignore[attr-defined]
        again = client.get(f"/runs/jobs/{job['job_id']}", headers=h).json()
        assert again == done
        # One run at a time, across processes: the run lock is held elsewhere.
        import fcntl

        with open(tmp_path / "api-runs" / ".run.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            busy = client.post("/runs", json={"snapshot": str(snapshot)}, headers=h)
            assert busy.status_code == 409 and busy.headers["content-type"] == PROBLEM


def test_post_runs_without_kept_ids_still_takes_the_one_job_path(tmp_path: Path) -> None:
    """keep_fleet_ids=false only starts fleet ids afresh: the store is still recovered and
    the analysts' verdicts are still applied (a hidden identifier never comes back)."""
    from attribution.contracts.verdicts import VerdictStore, make_verdict

    snapshot = write_snapshot(tmp_path / "snapshot", hand_tables())
    store, keys, app = _refreshing_app(tmp_path)
    verdict = make_verdict("hide", "10.9.9.9", by="analyst", why="case 7", kind="ip")
    VerdictStore(store.verdict_log_path(tmp_path)).add(verdict)
    leftover = tmp_path / "store" / "runs" / ".run.killed"  # what a killed job left
    leftover.mkdir()
    with TestClient(app) as client:
        h = {"X-API-Key": keys.admin}
        r = client.post("/runs", json={"snapshot": str(snapshot), "keep_fleet_ids": False},
                        headers=h)
        assert r.status_code == 202, r.text
        client.app.state.service.jobs.wait(120)  # type: ignore[attr-defined]
        done = client.get(f"/runs/jobs/{r.json()['job_id']}", headers=h).json()
        assert done["status"] == "succeeded", done
    record = EmbeddedStore(tmp_path / "store").read_results()
    assert record is not None and record.run_id == done["run_id"]
    seen = record.manifest["verdicts"]
    assert verdict.verdict_id in seen["applied"] + seen["not_applied"]
    assert record.manifest["previous_run_id"] is None
    assert not leftover.exists()


# --- over real HTTP ---------------------------------------------------------------

@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Keys]]:
    """The app under uvicorn on a free loopback port, in a thread."""
    import uvicorn

    home = tmp_path_factory.mktemp("http")
    fill_store(EmbeddedStore(home / "store"))
    keys = make_keys(home / "api_keys.json")
    app = create_app(lambda: EmbeddedStore(home / "store"), keys=keys.store, home=home)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started
    yield f"http://127.0.0.1:{port}", keys
    server.should_exit = True
    thread.join(10)


def test_over_http(served: tuple[str, Keys]) -> None:
    url, keys = served
    with httpx.Client(base_url=url, timeout=10) as http:
        assert http.get("/health").status_code == 200
        assert http.get("/ready").json()["run_id"] == HEAD_RUN
        assert http.get("/fleets").status_code == 401
        r = http.get("/fleets", headers={"Authorization": f"Bearer {keys.read}"})
        assert r.status_code == 200 and r.json()["total"] == 5
        assert len(r.headers["x-request-id"]) == 32
        r = http.get("/accounts/a000", headers={"X-API-Key": keys.read})
        assert r.json()["fleet"]["fleet_id"] == "F-alpha" and ALPHA_CARD not in r.text
        r = http.post("/verdicts", headers={"X-API-Key": keys.read},
                      json={"subject": "fleet", "subject_id": "F-alpha", "verdict": "sybil",
                            "reason": "x"})
        assert r.status_code == 403 and r.headers["content-type"] == PROBLEM
        assert http.get("/openapi.json").json()["info"]["title"] == "Attribution API"


def test_serve_workers_write_their_audit_lines(tmp_path: Path) -> None:
    """``attribution serve --workers 2``: each worker process logs its own audit lines."""
    with served_cli(tmp_path, "--workers", "2", ready="/ready") as served:
        for _ in range(10):  # a new connection each: either worker may answer
            r = httpx.get(f"{served.url}/fleets/F-alpha",
                          headers={"X-API-Key": served.keys.read}, timeout=10)
            assert r.status_code == 200
    lines = [json.loads(line.split(" attribution.audit ", 1)[1])
             for line in served.log.read_text().splitlines() if " attribution.audit " in line]
    fleet = [line for line in lines if line["endpoint"] == "/fleets/{fleet_id}"]
    assert len(fleet) == 10 and {line["key_id"] for line in fleet} == {served.keys.read_id}


# --- the command line ---------------------------------------------------------------

def test_keys_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from attribution.api.cli import register
    from attribution.api.keys import KeyStore

    parser = argparse.ArgumentParser(prog="attribution")
    register(parser.add_subparsers(dest="command", required=True))
    path = tmp_path / "keys.json"

    def run(*argv: str) -> int:
        args = parser.parse_args(list(argv))
        return int(args.handler(args))

    assert run("keys", "--keys", str(path), "create", "--name", "alice", "--scope", "admin") == 0
    secret = capsys.readouterr().out.strip()
    record = KeyStore(path).verify(secret)
    assert record is not None and record.name == "alice" and record.scope == "admin"
    assert run("keys", "--keys", str(path), "list", "--json") == 0
    listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert listed == [record.public()] and "hash" not in listed[0] and secret not in str(listed)
    assert run("keys", "--keys", str(path), "revoke", record.key_id) == 0
    assert KeyStore(path).verify(secret) is None
    with pytest.raises(SystemExit):
        parser.parse_args(["keys", "create", "--name", "x", "--scope", "root"])
    serve = parser.parse_args(["serve", "--port", "9000"])
    assert (serve.host, serve.port) == ("127.0.0.1", 9000)
