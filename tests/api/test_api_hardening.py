"""Issue 10, "nothing lost, nothing leaked": the API's hardening, on both stores.

Bounded numeric parameters, named-query parameters checked against their
headers, run ids that cannot name other directories, API keys refused in
query strings and masked in the audit log, security headers, a body size
limit, authentication before body validation, documentation assets served
locally, per-status examples in the OpenAPI document, and connections that
send half a request closed by ``attribution serve``.

The ``world`` fixture (the hand world on the embedded store and on the real
Neo4j) comes from ``tests.support.api_client``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from attribution.api import create_app
from attribution.store.embedded import EmbeddedStore
from tests.support.api_client import PROBLEM, World, endpoints, free_port, served_cli
from tests.support.api_world import HEAD_RUN, SECRETS_IN_WORLD, Keys, fill_store, make_keys

HUGE = "9" * 40


def _schema(world: World) -> dict[str, Any]:
    schema: dict[str, Any] = world.client.get("/openapi.json").json()
    return schema


def _assert_problem(r: httpx.Response, status: int, where: str = "") -> dict[str, Any]:
    assert r.status_code == status, (where, r.status_code, r.text)
    assert r.headers["content-type"] == PROBLEM, where
    body: dict[str, Any] = r.json()
    assert body["status"] == status and body["title"], where
    return body


# --- 6: numeric parameters are bounded ------------------------------------------------

def test_huge_numbers_are_422_not_500(world: World) -> None:
    urls = [f"/fleets?min_size={HUGE}", f"/fleets?max_size={HUGE}", f"/fleets?min_size=-{HUGE}",
            f"/fleets?offset={HUGE}", f"/fleets?limit={HUGE}", "/fleets?min_sybil=nan",
            "/fleets?min_confidence=inf", f"/fleets/F-alpha/infrastructure?min_accounts={HUGE}",
            f"/fleets/F-alpha/members?offset={HUGE}", "/runs/diff?threshold=1e400",
            f"/runs/diff?limit={HUGE}", f"/organizations/org-1?offset={HUGE}",
            f"/accounts/a000/entities?limit={HUGE}"]
    for url in urls:
        body = _assert_problem(world.get(url), 422, url)
        assert body["errors"], url
    # The bounds themselves still answer.
    assert world.get("/fleets?min_size=0&max_size=1000000000").json()["total"] == 5
    assert world.get("/fleets?min_size=1000000000").json()["total"] == 0


def _numeric(schema: dict[str, Any]) -> list[dict[str, Any]]:
    """The integer/number alternatives of a parameter or property schema."""
    if schema.get("type") in ("integer", "number"):
        return [schema]
    return [s for alt in schema.get("anyOf", []) for s in _numeric(alt)]


def test_every_numeric_parameter_has_bounds_in_the_schema(world: World) -> None:
    schema = _schema(world)
    checked = 0
    for path, ops in schema["paths"].items():
        for method, op in ops.items():
            for param in op.get("parameters", []):
                for s in _numeric(param["schema"]):
                    where = f"{method} {path} {param['name']}"
                    assert "minimum" in s or "exclusiveMinimum" in s, where
                    assert "maximum" in s or "exclusiveMaximum" in s, where
                    checked += 1
    for name, component in schema["components"]["schemas"].items():
        if name not in ("QueryRun", "RunRequest", "VerdictIn"):
            continue  # request bodies; responses describe what the server sends
        for prop, s in component.get("properties", {}).items():
            for n in _numeric(s):
                assert "minimum" in n and "maximum" in n, (name, prop)
                checked += 1
    assert checked >= 20


# --- 8: named-query parameters are checked against their headers ----------------------

def test_named_query_parameters_are_checked_before_the_store(world: World) -> None:
    bad: list[dict[str, Any]] = [
        {"limit": -1}, {"limit": 0}, {"limit": int(HUGE)}, {"limit": 2**63},
        {"limit": 1.5}, {"limit": "10"}, {"min_sybil": 2}, {"min_sybil": -0.1},
    ]
    for params in bad:
        r = world.post("/queries/fleet_overview", {"params": params}, key="read")
        body = _assert_problem(r, 422, str(params))
        assert HUGE not in r.text
        assert body["errors"] and body["errors"][0]["loc"][:2] == ["body", "params"], body
        assert "unavailable" not in r.text
    # A float that JSON can say but a query cannot use.
    r = world.client.post("/queries/fleet_overview", content=b'{"params": {"min_sybil": NaN}}',
                          headers={**world.headers("read"), "Content-Type": "application/json"})
    _assert_problem(r, 422, "NaN")
    r = world.post("/queries/accounts_on_entity",
                   {"params": {"kind": "ip", "entity_id": "x" * 5000}}, key="read")
    _assert_problem(r, 422, "long string")
    neo4j = world.client.app.state.service.runs_named_queries()  # type: ignore[attr-defined]
    r = world.post("/queries/fleet_overview", {"params": {"limit": 1}}, key="read")
    if neo4j:
        assert r.status_code == 200 and len(r.json()["rows"]) == 1, r.text
        big = world.post("/queries/fleet_overview", {"params": {"limit": 10_000_000},
                                                     "limit": 2}, key="read").json()
        assert len(big["rows"]) == 2 and big["truncated"] is True
    else:
        _assert_problem(r, 501)


def test_library_numbers_declare_ranges(tmp_path: Path) -> None:
    from attribution.store.named_queries import QueryError, load_queries, parse_query

    for query in load_queries().values():
        for p in query.params:
            if p.type in ("int", "float"):
                assert p.bounds is not None, (query.name, p.name)
                assert p.bounds[0] <= p.bounds[1]
                if p.name == "limit":
                    assert p.bounds[0] == 1 and p.bounds[1] <= 10_000_000, query.name
    head = "// name: q\n// description: d\n// returns: x\n"
    ranged = parse_query(head + "// param: n (int: 1..100, default 5) n\nRETURN $n")
    assert ranged.params[0].bounds == (1, 100) and ranged.bind({"n": 100}) == {"n": 100}
    with pytest.raises(QueryError, match="between 1 and 100"):
        ranged.bind({"n": 101})
    share = parse_query(head + "// param: s (float: 0..1, default 0.5) s\nRETURN $s")
    with pytest.raises(QueryError, match="between 0 and 1"):
        share.bind({"s": 1.01})
    with pytest.raises(QueryError, match="finite"):
        share.bind({"s": float("inf")})
    with pytest.raises(QueryError, match="bad range"):
        parse_query(head + "// param: n (int: 9..1, default 5) n\nRETURN $n")
    with pytest.raises(QueryError, match="between"):
        parse_query(head + "// param: n (int: 1..3, default 5) n\nRETURN $n")
    (tmp_path / "q.cypher").write_text(head + "// param: n (int, default 5) n\nRETURN $n")
    with pytest.raises(QueryError, match="declares no range"):
        load_queries(tmp_path)


# --- 11: run ids cannot name other directories ----------------------------------------

def test_run_ids_are_ids_not_paths(world: World) -> None:
    elsewhere = world.home / "elsewhere" / "run-decoy"
    elsewhere.mkdir(parents=True, exist_ok=True)
    (elsewhere / "manifest.json").write_text(json.dumps({"run_id": "run-decoy"}))
    store_root = world.home / "store"
    values = [str(elsewhere), str(world.home / "nothing-here"), "../../elsewhere/run-decoy",
              "../../nothing-here", "..", ".", "../runs", "/etc", "run-decoy/..",
              f"{HEAD_RUN}/../{HEAD_RUN}", str(store_root / "runs" / HEAD_RUN), "run-x\\..",
              "run x", "run-" + "a" * 200]
    for value in values:
        for name in ("base", "head"):
            r = world.get("/runs/diff", params={name: value})
            _assert_problem(r, 422, f"{name}={value}")
            assert str(world.home) not in r.text
    for raw in ("/runs/..%2F..%2Fetc", "/runs/%2E%2E", "/runs/run%20x"):
        r = world.get(raw)
        assert r.status_code in (404, 422) and r.headers["content-type"] == PROBLEM, raw
    # An unknown id that fits the pattern is a 404 whose body names nothing.
    details = set()
    for value in ("run-decoy", "run-20990101T000000-ffffffff"):
        body = _assert_problem(world.get("/runs/diff", params={"base": value}), 404, value)
        details.add(body["detail"])
        assert "decoy" not in json.dumps(body)
    assert len(details) == 1
    assert world.get(f"/runs/diff?base={HEAD_RUN}&head={HEAD_RUN}").status_code == 200


def test_run_id_pattern_in_the_schema(world: World) -> None:
    from attribution.api.routers.runs import RUN_ID_PATTERN

    pattern = re.compile(RUN_ID_PATTERN)
    schema = _schema(world)
    diff = {p["name"]: p for p in schema["paths"]["/runs/diff"]["get"]["parameters"]}
    for name in ("base", "head"):
        patterns = [alt.get("pattern") for alt in diff[name]["schema"]["anyOf"]]
        assert RUN_ID_PATTERN in patterns, name
    one = schema["paths"]["/runs/{run_id}"]["get"]["parameters"][0]["schema"]
    assert one["pattern"] == RUN_ID_PATTERN
    assert pattern.match(HEAD_RUN) and pattern.match("run-20260301T000000-bbbbbbbb-2")
    for bad in ("..", "run-a/b", "/abs", "run-.", "run-a.b", "run-", ""):
        assert not pattern.match(bad), bad


# --- 12: API keys in query strings --------------------------------------------------------

CREDENTIAL_NAMES = ("api_key", "apikey", "api-key", "key", "token", "access_token", "password",
                    "secret", "client_secret", "auth", "x-api-key", "Authorization", "passwd",
                    "session_token", "jwt")


def test_keys_in_query_strings_are_refused_and_never_logged(
        world: World, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="attribution.audit")
    key = world.keys.read
    for name in CREDENTIAL_NAMES:
        for header in ("read", None):
            r = world.get("/fleets", key=header, params={name: key, "limit": 2})
            body = _assert_problem(r, 401, f"{name} with {header}")
            assert "send the key in the Authorization or X-API-Key header" in body["detail"]
            assert "www-authenticate" in r.headers and key not in r.text
    # A key-shaped value under another name is a key too.
    r = world.get("/fleets", params={"org_id": key})
    assert "Authorization or X-API-Key" in _assert_problem(r, 401)["detail"]
    # Admin routes with a body refuse before reading it.
    r = world.client.post("/verdicts?api_key=" + world.keys.admin, content=b"{not json",
                          headers={**world.headers("admin"), "Content-Type": "application/json"})
    _assert_problem(r, 401, "POST with api_key")
    lines = [json.loads(rec.getMessage()) for rec in caplog.records
             if rec.name == "attribution.audit"]
    assert len(lines) == 2 * len(CREDENTIAL_NAMES) + 2
    for line in lines:
        for pname, value in line["params"].items():
            if pname.lower() in {n.lower() for n in CREDENTIAL_NAMES} or pname == "org_id":
                assert value == "<redacted>", line
    logged = caplog.text
    assert key not in logged and world.keys.admin not in logged
    assert key.split("_", 2)[2] not in logged  # not even the secret part


def test_path_values_shaped_like_keys_are_masked_in_the_audit_log(
        world: World, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="attribution.audit")
    assert world.get(f"/accounts/{world.keys.admin}").status_code == 404
    assert world.keys.admin not in caplog.text
    line = json.loads(next(r.getMessage() for r in caplog.records
                           if r.name == "attribution.audit"))
    assert line["params"]["account_id"] == "<redacted>"


def test_no_route_parameter_looks_like_a_credential(world: World) -> None:
    from attribution.api.credentials import is_credential_name

    for name in CREDENTIAL_NAMES:
        assert is_credential_name(name), name
    declared = [(path, p["name"]) for path, ops in _schema(world)["paths"].items()
                for op in ops.values() for p in op.get("parameters", [])]
    assert declared and not [d for d in declared if is_credential_name(d[1])]


# --- 14: authentication before the body, the body size limit ------------------------------

def _body_routes(world: World) -> list[tuple[str, bool]]:
    return [(url, admin) for method, url, body, admin in endpoints(world.home)
            if method == "POST"]


def test_authentication_comes_before_body_validation(world: World) -> None:
    routes = _body_routes(world)
    assert len(routes) == 3
    for url, admin in routes:
        for raw in (b"{not json", b"[]", b'{"unexpected": 1}', b""):
            for key, status in ((None, 401), ("bad", 401), ("revoked", 401)) + (
                    (("read", 403),) if admin else ()):
                r = world.client.post(url, content=raw, headers={
                    **world.headers(key), "Content-Type": "application/json"})
                _assert_problem(r, status, f"{url} {raw!r} key={key}")
            good = world.client.post(url, content=raw, headers={
                **world.headers("admin"), "Content-Type": "application/json"})
            assert good.status_code == 422, (url, raw, good.text)


def test_request_bodies_over_one_mebibyte_are_413(world: World) -> None:
    big = json.dumps({"subject": "fleet", "subject_id": "F-alpha", "verdict": "sybil",
                      "reason": "x" * (1024 * 1024)}).encode()
    for url, _ in _body_routes(world):
        r = world.client.post(url, content=big, headers={
            **world.headers("admin"), "Content-Type": "application/json"})
        _assert_problem(r, 413, url)

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
            for i in range(0, len(big), 64 * 1024):
                yield big[i:i + 64 * 1024]

        r = world.client.post(url, content=chunks(), headers={
            **world.headers("admin"), "Content-Type": "application/json"})
        _assert_problem(r, 413, url + " chunked")
    # Just under the limit is read (and then judged on its content).
    fits = json.dumps({"subject": "fleet", "subject_id": "F-alpha", "verdict": "maybe",
                       "reason": "x" * (1024 * 1024 - 200)}).encode()
    r = world.client.post("/verdicts", content=fits, headers={
        **world.headers("admin"), "Content-Type": "application/json"})
    assert r.status_code == 422


# --- 14: security headers ----------------------------------------------------------------

def test_security_headers_on_every_kind_of_response(world: World) -> None:
    responses = {
        "ok": world.get("/fleets"), "account": world.get("/accounts/a000"),
        "diff": world.get("/runs/diff"), "health": world.get("/health", key=None),
        "401": world.get("/fleets", key=None), "404": world.get("/fleets/F-nope"),
        "422": world.get("/fleets?limit=0"), "no route": world.get("/no/such/route"),
        "openapi": world.get("/openapi.json", key=None),
        "413": world.client.post("/verdicts", content=b"x" * (2 * 1024 * 1024),
                                 headers=world.headers("admin")),
    }
    for name, r in responses.items():
        h = r.headers
        assert h["x-content-type-options"] == "nosniff", name
        assert h["x-frame-options"] == "DENY", name
        csp = h["content-security-policy"]
        assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp, name
        assert "no-store" in h["cache-control"], name
    assert responses["ok"].status_code == 200 and responses["413"].status_code == 413


# --- 14: documentation without a CDN -------------------------------------------------------

def _inline_scripts(html: str) -> list[str]:
    return re.findall(r"<script>(.*?)</script>", html, flags=re.S)


def _local_refs(html: str) -> list[str]:
    refs = re.findall(r"""(?:src|href|spec-url)=["']([^"']+)["']""", html)
    assert refs
    for ref in refs:
        assert ref.startswith("/") and not ref.startswith("//"), ref
    return refs


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_load_their_assets_from_the_server(world: World, page: str) -> None:
    r = world.client.get(page)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    html = r.text
    assert "http://" not in html and "https://" not in html, "a page refers to another host"
    csp = r.headers["content-security-policy"]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";") if d.strip())
    assert directives["default-src"] == "'none'"
    assert "'self'" in directives["script-src"] and "'unsafe-inline'" not in \
        directives["script-src"]
    assert "https:" not in csp and "http:" not in csp and "*" not in csp
    for script in _inline_scripts(html):
        digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in directives["script-src"]
    assert r.headers["x-frame-options"] == "DENY"
    sizes = {}
    for ref in _local_refs(html):
        asset = world.client.get(ref)
        assert asset.status_code == 200, ref
        assert asset.headers["x-content-type-options"] == "nosniff"
        sizes[ref] = len(asset.content)
        if ref.endswith(".js"):
            assert "javascript" in asset.headers["content-type"], ref
        elif ref.endswith(".css"):
            assert asset.headers["content-type"].startswith("text/css"), ref
    bundle = [n for ref, n in sizes.items() if ref.endswith(".js")]
    assert bundle and min(bundle) > 500_000  # the real Swagger UI / ReDoc bundles
    assert world.client.get("/docs-assets/../pyproject.toml").status_code == 404
    assert world.client.get("/docs-assets/nope.js").status_code == 404


def test_the_docs_dependency_is_declared() -> None:
    import tomllib

    project = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    assert any(d.startswith("fastapi-offline") for d in project["project"]["dependencies"])


# --- 14: the OpenAPI document -----------------------------------------------------------

def test_each_error_response_shows_its_own_example(world: World) -> None:
    schema = _schema(world)
    seen: dict[str, set[str]] = {}
    for path, ops in schema["paths"].items():
        for method, op in ops.items():
            for status, response in op["responses"].items():
                if not status.isdigit() or int(status) < 400:
                    continue
                content = response["content"][PROBLEM]
                example = content.get("example")
                where = f"{method} {path} {status}"
                assert example is not None, where
                assert example["status"] == int(status), where
                assert example["detail"], where
                seen.setdefault(status, set()).add(example["detail"])
    assert {"401", "403", "404", "413", "422", "503"} <= set(seen)
    assert len({next(iter(v)) for v in seen.values()}) == len(seen)  # one example per status
    problem = schema["components"]["schemas"]["Problem"]
    assert "examples" not in problem  # the 404 no longer stands for every error
    runs_422 = schema["paths"]["/runs"]["post"]["responses"]["422"]
    assert "snapshot" in runs_422["description"]
    assert "snapshot" in runs_422["content"][PROBLEM]["example"]["detail"]
    for path, method in (("/verdicts", "post"), ("/runs", "post"), ("/queries/{name}", "post")):
        assert "413" in schema["paths"][path][method]["responses"], path


# --- 14: idle and half-sent connections -------------------------------------------------

def _closed_within(sock: socket.socket, limit: float) -> tuple[float, bytes]:
    """Seconds until the server closes ``sock`` (and what it sent first); fails past ``limit``."""
    started = time.monotonic()
    sock.settimeout(limit)
    received = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return time.monotonic() - started, received
            received += chunk
    except TimeoutError:
        pytest.fail(f"the connection was still open after {limit} s (got {received[:80]!r})")
    except ConnectionResetError:
        return time.monotonic() - started, received


def _check_connections(host: str, port: int, admin_key: str, *, timeout: float) -> None:
    """Idle, half-sent headers and half-sent bodies are closed; slow but whole requests work."""
    bound = timeout + 3.0
    cases = {
        "nothing sent": b"",
        "half the headers": b"GET /health HTTP/1.1\r\nHost: test\r\nX-Slow: ",
        "half the body": (b"POST /verdicts HTTP/1.1\r\nHost: test\r\n"
                          b"Content-Type: application/json\r\nContent-Length: 200\r\n"
                          b"X-API-Key: " + admin_key.encode() + b"\r\n\r\n{\"subject\": "),
    }
    for name, data in cases.items():
        with socket.create_connection((host, port), timeout=5) as sock:
            if data:
                sock.sendall(data)
            elapsed, sent = _closed_within(sock, bound)
            assert elapsed >= timeout * 0.5, (name, elapsed)
            assert b" 200 " not in sent.split(b"\r\n", 1)[0], name
    # Idle after a whole response: closed after the keep-alive timeout.
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n")
        elapsed, sent = _closed_within(sock, bound)
        assert sent.startswith(b"HTTP/1.1 200 "), sent[:80]
    # A request sent slowly but whole within the deadline is answered.
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\n")
        time.sleep(timeout * 0.3)
        sock.sendall(b"Host: test\r\nConnection: close\r\n\r\n")
        _, sent = _closed_within(sock, bound)
        assert sent.startswith(b"HTTP/1.1 200 "), sent[:80]


def test_serve_closes_idle_and_half_sent_connections(tmp_path: Path) -> None:
    """``attribution serve`` over loopback, with 1-second request and keep-alive timeouts."""
    with served_cli(tmp_path, "--timeout-request", "1", "--timeout-keep-alive", "1",
                    "--log-level", "warning") as served:
        keys = served.keys
        _check_connections("127.0.0.1", served.port, keys.admin, timeout=1.0)
        # Over the wire too: a body over the limit is refused from its Content-Length.
        r = httpx.post(f"{served.url}/verdicts", content=b"{" + b" " * (2 * 1024 * 1024) + b"}",
                       headers={"X-API-Key": keys.admin, "Content-Type": "application/json"},
                       timeout=10)
        assert r.status_code == 413 and r.headers["content-type"] == PROBLEM
        assert httpx.get(f"{served.url}/fleets", headers={"X-API-Key": keys.read},
                         timeout=10).status_code == 200


def test_the_h11_protocol_has_the_same_deadline(tmp_path: Path) -> None:
    """The pure-Python HTTP implementation (used where httptools is missing) closes them too."""
    import uvicorn

    from attribution.api.server import uvicorn_options

    fill_store(EmbeddedStore(tmp_path / "store"))
    keys: Keys = make_keys(tmp_path / "api_keys.json")
    app = create_app(lambda: EmbeddedStore(tmp_path / "store"), keys=keys.store, home=tmp_path)
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                            **uvicorn_options(timeout_request=1.0, timeout_keep_alive=1.0,
                                              http="h11"))
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        assert server.started
        _check_connections("127.0.0.1", port, keys.admin, timeout=1.0)
    finally:
        server.should_exit = True
        thread.join(10)


def test_no_error_body_repeats_a_secret(world: World) -> None:
    """The new refusals (401 for a query key, 413, 422 for run ids) echo nothing either."""
    probes = [world.get("/fleets", params={"token": SECRETS_IN_WORLD[0]}),
              world.get("/runs/diff", params={"base": "../" + SECRETS_IN_WORLD[1]}),
              world.post("/queries/accounts_on_entity",
                         {"params": {"kind": "ip", "entity_id": SECRETS_IN_WORLD[2],
                                     "limit": -1}}, key="read")]
    for r in probes:
        assert r.status_code in (401, 422), r.text
        for secret in SECRETS_IN_WORLD:
            assert secret not in r.text


def test_docs_app_without_a_store(tmp_path: Path) -> None:
    """The documentation and the schema need neither a key nor a store."""
    keys = make_keys(tmp_path / "k.json")

    def broken() -> EmbeddedStore:
        raise ConnectionError("down")

    app = create_app(broken, keys=keys.store, home=tmp_path)
    with TestClient(app) as client:
        for url in ("/docs", "/redoc", "/openapi.json"):
            assert client.get(url).status_code == 200, url
