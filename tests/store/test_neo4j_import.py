"""The bulk path: neo4j-admin import files round-trip, and the real importer loads them.

The importer test runs ``neo4j-admin database import full`` from the test
server's own classpath (``org.neo4j.cli.AdminTool`` ships in the neo4j-harness
artifact's dependencies) into the stopped session server's data directory,
then starts the server again and compares with the same graph loaded over Bolt.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from neo4j.time import DateTime

from attribution.contracts.graph import PropertyGraph
from attribution.dev import neo4j_harness as neo4j_dev
from attribution.store.neo4j import Neo4jStore, _stamp
from attribution.store.neo4j_import import (
    BulkImportError,
    read_import_files,
    write_import_files,
)
from tests.support.api_world import write_snapshot
from tests.support.store_world import (
    assert_graph_equal,
    record_queries,
    settings_of,
    tiny_graph,
    tiny_tables,
    with_odd_accounts,
)


def odd_graph() -> PropertyGraph:
    n = tiny_graph().accounts.height
    return with_odd_accounts(
        tiny_graph(),
        words=pl.Series("words", [["a", "b,c"]] * n, dtype=pl.List(pl.String)),
        quote=pl.Series("quote", ['say "hi"', "", None] * (n // 3), dtype=pl.String))


def test_import_files_round_trip_exactly(tmp_path: Path) -> None:
    graph = odd_graph()
    files = write_import_files(graph, "digest-1", tmp_path / "import")
    back, state = read_import_files(tmp_path / "import")
    assert_graph_equal(back, graph)
    assert state["digest"] == "digest-1" and state["stamp"] == _stamp(graph, "digest-1")
    assert state["complete:boolean"] == "true"
    # one header line first, IDs in a space per label, types in the header
    header = (tmp_path / "import" / "rels_USES_IP.csv").read_text().splitlines()[0]
    assert header.startswith('":START_ID(Account)",":END_ID(IP)",')
    assert '"first_seen:datetime"' in header and '"count:long"' in header
    assert files.rows == sum(
        len(path.read_text().splitlines()) - 1 for _, path in files.nodes + files.relationships)


def test_the_command_names_every_file(tmp_path: Path) -> None:
    files = write_import_files(tiny_graph(), "d", tmp_path)
    cmd = files.command(database="graph", folder="/srv/import")
    assert cmd[:5] == ["neo4j-admin", "database", "import", "full", "graph"]
    assert "--nodes=Account=/srv/import/nodes_Account.csv" in cmd
    assert "--nodes=GraphState=/srv/import/nodes_GraphState.csv" in cmd
    assert "--relationships=USES_IP=/srv/import/rels_USES_IP.csv" in cmd
    assert "--relationships=KNOWN_AS=/srv/import/rels_KNOWN_AS_asn.csv" in cmd
    written = {p.name for p in tmp_path.glob("*.csv")}
    named = {a.split("=")[-1].rsplit("/", 1)[-1] for a in cmd if a.startswith("--nodes")
             or a.startswith("--relationships")}
    assert named == written
    assert "--multiline-fields=true" not in cmd
    assert files.command_line().startswith("neo4j-admin database import full ")


def test_the_command_writes_files_only_into_a_new_or_empty_folder(tmp_path: Path) -> None:
    """``attribution neo4j-import``: files and the command for a snapshot; a folder that
    holds anything, or the snapshot itself, is refused before any work (exit 2)."""
    snapshot = write_snapshot(tmp_path / "snap", tiny_tables())
    out = tmp_path / "import"
    done = subprocess.run([sys.executable, "-m", "attribution.cli", "neo4j-import", str(snapshot),
                           "--out", str(out), "--server-dir", "/srv/import"],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "neo4j-admin database import full neo4j" in done.stdout
    assert "--nodes=Account=/srv/import/nodes_Account.csv" in done.stdout
    assert (out / "nodes_Account.csv").is_file()
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    for target in (mine, snapshot, snapshot / "sub"):
        refused = subprocess.run([sys.executable, "-m", "attribution.cli", "neo4j-import",
                                  str(snapshot), "--out", str(target)],
                                 capture_output=True, text=True, check=False)
        assert refused.returncode == 2, refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    assert (mine / "notes.txt").read_text() == "keep me"
    assert not (snapshot / "sub").exists()


def test_values_the_importer_cannot_carry_are_refused(tmp_path: Path) -> None:
    graph = tiny_graph()
    n = graph.accounts.height
    empty = graph.accounts.with_columns(pl.Series("xs", [[]] * n, dtype=pl.List(pl.Int64)))
    with pytest.raises(BulkImportError, match="empty lists"):
        write_import_files(PropertyGraph.from_frames({**graph.frames(), "accounts": empty}),
                           "d", tmp_path)
    nested = graph.accounts.with_columns(pl.lit(dt.timedelta(1)).alias("gap"))
    with pytest.raises(BulkImportError, match="gap"):
        write_import_files(PropertyGraph.from_frames({**graph.frames(), "accounts": nested}),
                           "d", tmp_path)


def run_importer(files_cmd: list[str], data_dir: Path, home: Path) -> None:
    """``neo4j-admin`` from the dev server's own classpath, against ``data_dir``."""
    lib = neo4j_dev.build().parent / "lib"
    (home / "conf").mkdir(parents=True, exist_ok=True)
    (home / "conf" / "neo4j.conf").write_text(
        f"server.directories.data={data_dir}\nserver.directories.logs={home / 'logs'}\n")
    env = {**os.environ, "NEO4J_HOME": str(home), "NEO4J_CONF": str(home / "conf")}
    cmd = [neo4j_dev.find_java(), "-Xmx512m", "-cp", f"{lib}/*", "org.neo4j.cli.AdminTool",
           *files_cmd[1:], "--threads=2", "--max-off-heap-memory=256m",
           f"--report-file={home / 'import.report'}"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300,
                          check=False, cwd=home)  # its import.report goes there
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


@pytest.mark.neo4j
def test_the_real_importer_loads_what_bolt_loads(neo4j_clean: Any, tmp_path: Path) -> None:
    server = neo4j_clean
    graph = odd_graph()  # the Bolt load and the importer get the same graph
    with Neo4jStore(settings_of(server)) as store:
        store.load_snapshot(graph, digest="bulk")
        over_bolt = store.stats()
    files = write_import_files(graph, "bulk", tmp_path / "import")
    server.stop()
    try:
        run_importer(files.command(), server.data_dir, tmp_path / "home")
    finally:
        server.start()
    with Neo4jStore(settings_of(server)) as store:
        assert store.graph_digest() == "bulk"
        assert store.stats() == over_bolt
        assert_graph_equal(store.read_graph(), graph)
        sent = record_queries(store, "_write")
        store.load_snapshot(graph, digest="bulk")
        assert sent == []  # the imported graph is the loaded graph: nothing sent again
        rows = server.query("MATCH (:Account {account_id: 'a01'})-[u:USES_IP]->(i:IP) "
                            "RETURN u.first_seen AS t, i.ip AS ip")
        assert rows and all(isinstance(r["t"], DateTime) for r in rows)  # DATETIME, not text
