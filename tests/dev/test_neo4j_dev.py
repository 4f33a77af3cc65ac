"""The dev/test Neo4j server (attribution.dev.neo4j_harness) and its pytest fixtures."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest
from neo4j import GraphDatabase
from neo4j.exceptions import AuthError

from attribution.dev import neo4j_harness as neo4j_dev
from tests.support.neo4j_server import Neo4jTestServer, candidate_ports

ROOT = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------- no server needed


def test_missing_java_is_one_line_with_a_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(neo4j_dev.ToolMissing) as info:
        neo4j_dev.find_java()
    msg = str(info.value)
    assert "\n" not in msg
    assert "java not found" in msg and "apt-get install" in msg


def test_missing_maven_is_one_line_with_a_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(neo4j_dev.ToolMissing) as info:
        neo4j_dev.find_mvn()
    msg = str(info.value)
    assert "\n" not in msg
    assert "mvn" in msg and "apt-get install maven" in msg


def test_cli_error_is_one_line_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = _parse(["neo4j-dev", "start", "--heap", "lots", "--data", str(tmp_path / "data")])
    assert args.handler(args) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "bad heap size" in err


# ---------------------------------------------------------------- the session server


@pytest.mark.neo4j
def test_server_answers(neo4j_server: Neo4jTestServer) -> None:
    assert neo4j_server.port in candidate_ports()
    assert neo4j_server.uri == f"bolt://127.0.0.1:{neo4j_server.port}"
    assert neo4j_server.query("RETURN 1 AS x") == [{"x": 1}]
    info = neo4j_server.driver.get_server_info()
    assert info.agent == f"Neo4j/{neo4j_dev.NEO4J_VERSION}"


@pytest.mark.neo4j
def test_wrong_password_is_rejected(neo4j_server: Neo4jTestServer) -> None:
    # one attempt only: Neo4j locks the user for a few seconds after 3 failures
    wrong = (neo4j_server.user, "wrong")
    with GraphDatabase.driver(neo4j_server.uri, auth=wrong) as driver, pytest.raises(AuthError):
        driver.verify_connectivity()
    assert neo4j_server.query("RETURN 2 AS x") == [{"x": 2}]


@pytest.mark.neo4j
def test_clean_deletes_data_but_keeps_constraints(neo4j_clean: Neo4jTestServer) -> None:
    db = neo4j_clean
    assert db.query("MATCH (n) RETURN count(n) AS n") == [{"n": 0}]
    db.query("CREATE CONSTRAINT test_clean_id IF NOT EXISTS "
             "FOR (a:CleanProbe) REQUIRE a.id IS UNIQUE")
    db.query("UNWIND range(1, 2500) AS i CREATE (:CleanProbe {id: i})-[:NEXT]->(:Other)")
    db.clear()
    assert db.query("MATCH (n) RETURN count(n) AS n") == [{"n": 0}]
    names = [r["name"] for r in db.query("SHOW CONSTRAINTS YIELD name")]
    assert "test_clean_id" in names
    db.query("DROP CONSTRAINT test_clean_id IF EXISTS")


@pytest.mark.neo4j
def test_data_survives_restart_and_kill(neo4j_clean: Neo4jTestServer) -> None:
    db = neo4j_clean
    db.query("CREATE (:Probe {id: 'before-restart'})")
    old_pid = db.pid
    db.restart()
    assert db.pid != old_pid
    assert db.query("MATCH (p:Probe) RETURN p.id AS id") == [{"id": "before-restart"}]

    db.query("CREATE (:Probe {id: 'before-kill'})")
    db.kill()  # SIGKILL: no checkpoint; the next start recovers from the transaction log
    assert not db.running
    db.start()
    ids = sorted(r["id"] for r in db.query("MATCH (p:Probe) RETURN p.id AS id"))
    assert ids == ["before-kill", "before-restart"]


@pytest.mark.neo4j
def test_start_refuses_a_port_in_use(neo4j_server: Neo4jTestServer, tmp_path: Path) -> None:
    with pytest.raises(neo4j_dev.Neo4jDevError, match="already in use"):
        neo4j_dev.start(port=neo4j_server.port, data_dir=tmp_path / "data")


# ---------------------------------------------------------------- the command line


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="attribution")
    subparsers = parser.add_subparsers(dest="command")
    neo4j_dev.register(subparsers)
    return parser.parse_args(argv)


def _cli(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p))
    return subprocess.run([sys.executable, "-m", "attribution.dev.neo4j_harness", *argv], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=300, check=False)


@pytest.mark.neo4j
def test_cli_start_status_stop(neo4j_server: Neo4jTestServer, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    # neo4j_server: the jar is built (and the CDS archive made) before this runs
    port = next(p for p in range(neo4j_server.port + 1, neo4j_server.port + 40)
                if not neo4j_dev.port_answers(p))
    data = tmp_path / "state" / "data"
    status = _parse(["neo4j-dev", "status", "--data", str(data)])
    assert status.handler(status) == 3
    try:
        started = _cli("start", "--port", str(port), "--data", str(data), "--password",
                       "cli-secret", "--heap", "768m", cwd=tmp_path)
        assert started.returncode == 0, started.stderr + started.stdout
        assert f"export NEO4J_URI=bolt://127.0.0.1:{port}" in started.stdout
        assert "export NEO4J_PASSWORD=cli-secret" in started.stdout
        assert (data.parent / "neo4j.pid").is_file()
        assert (data.parent / "neo4j.log").is_file()

        capsys.readouterr()
        assert status.handler(status) == 0
        assert f"bolt://127.0.0.1:{port} (answering)" in capsys.readouterr().out

        again = _cli("start", "--port", str(port), "--data", str(data), cwd=tmp_path)
        assert again.returncode == 0 and "already running" in again.stdout

        uri = f"bolt://127.0.0.1:{port}"
        with GraphDatabase.driver(uri, auth=("neo4j", "cli-secret")) as driver:
            records, _, _ = driver.execute_query("RETURN 42 AS x", database_="neo4j")
            assert records[0]["x"] == 42

        stopped = _cli("stop", "--data", str(data), cwd=tmp_path)
        assert stopped.returncode == 0 and "stopped" in stopped.stdout, stopped.stderr
        assert not neo4j_dev.port_answers(port)
        assert status.handler(status) == 3
        assert not (data.parent / "neo4j.pid").exists()
    finally:
        neo4j_dev.stop(data_dir=data, timeout=20)
