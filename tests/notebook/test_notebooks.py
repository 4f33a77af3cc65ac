"""The analysts' notebooks (``notebooks/``) and their helper, against the real Neo4j.

One generated world is loaded once for the module, as two runs of the pipeline
into the session's Neo4j (T1 at day 44, T2 at day 58 with T1 as previous), so
"what changed" has something to show. Every notebook is executed headless in a
real kernel; a cell error fails the test. What each produced is asserted from
its outputs and from a probe cell appended at the end that prints the
notebook's variables as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
import polars as pl
import pytest

from attribution import notebook
from attribution.contracts.results import RunRecord
from attribution.contracts.settings import Neo4jSettings
from attribution.notebook import frames, headless
from attribution.store.named_queries import load_queries

pytestmark = pytest.mark.neo4j

NOTEBOOKS = ["01_triage", "02_fleet_dossier", "03_org_exposure", "04_what_changed",
             "05_account_lookup"]
PROBE = "PROBE:"


@dataclass
class World:
    server: Any
    t1: RunRecord
    t2: RunRecord

    @property
    def fleets(self) -> pl.DataFrame:
        return self.t2.fleets

    def attributed(self) -> pl.DataFrame:
        """T2's attributed fleets, largest first."""
        return self.fleets.filter(pl.col("org_id").is_not_null()).sort(
            ["size", "fleet_id"], descending=[True, False])


@pytest.fixture(scope="module")
def world(neo4j_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """A 1,000-account world (4 attributed fleets; ~20 s to load), run twice into Neo4j;
    NEO4J_* set for the kernels."""
    from attribution.job.jobs import run_job
    from attribution.store.neo4j import Neo4jStore
    from fixtures.worldgen import generate_world

    if not neo4j_server.started or not neo4j_server.running:
        neo4j_server.start()
    neo4j_server.clear()
    base = tmp_path_factory.mktemp("notebook-world")
    for name, day in (("t1", 44), ("t2", 58)):
        generate_world(base / name, accounts=1000, seed=7, days=58, as_of_day=day)
    settings = Neo4jSettings(uri=neo4j_server.uri, user=neo4j_server.user,
                             password=neo4j_server.password, database=neo4j_server.database)
    with Neo4jStore(settings) as store:
        t1 = run_job(store, home=base, snapshot=base / "t1" / "snapshot", out=base / "r1").record
        t2 = run_job(store, home=base, snapshot=base / "t2" / "snapshot", out=base / "r2",
                     previous=base / "r1").record
    assert t2.fleets.height and t2.fleets["org_id"].is_not_null().any()
    with pytest.MonkeyPatch.context() as mp:
        for key, value in neo4j_server.env().items():
            mp.setenv(key, value)
        try:
            yield World(neo4j_server, t1, t2)
        finally:
            notebook.close()


# --------------------------------------------------------------------------- helpers


def execute(name: str, tmp_path: Path, probe: str, **params: Any) -> tuple[Any, dict[str, Any]]:
    """Execute a repo notebook (a copy with a probe cell appended) through
    ``notebook.execute``; the executed notebook and the probe's JSON."""
    nb = nbformat.read(notebook.resolve_notebook(name), as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(
        "import json as _json\n" + probe + f"\nprint({PROBE!r} + _json.dumps(_probe, default=str))"))
    path = tmp_path / f"{name}.ipynb"
    nbformat.write(nb, path)
    done = notebook.execute(path, params, timeout=300)
    errors = [o for c in done.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors, errors
    text = "".join(o.get("text", "") for o in done.cells[-1].outputs)
    assert PROBE in text, text
    return done, json.loads(text.split(PROBE, 1)[1])


def cell(nb: Any, tag: str) -> Any:
    found = [c for c in nb.cells if tag in c.metadata.get("tags", [])]
    assert len(found) == 1, f"no single cell tagged {tag}"
    return found[0]


def texts(c: Any) -> str:
    """Everything a cell displayed, as text (plain, HTML and Markdown, and streams)."""
    parts = []
    for o in c.get("outputs", []):
        parts.append(o.get("text", ""))
        for kind in ("text/plain", "text/html", "text/markdown"):
            parts.append(o.get("data", {}).get(kind, ""))
    return "\n".join(parts)


def shapes(c: Any) -> list[tuple[int, int]]:
    """The ``shape: (rows, cols)`` of every polars frame a cell displayed."""
    plain = "\n".join(o.get("data", {}).get("text/plain", "") for o in c.get("outputs", []))
    return [(int(r), int(k)) for r, k in re.findall(r"shape: \((\d+), (\d+)\)", plain)]


def pngs(c: Any) -> list[str]:
    return [o["data"]["image/png"] for o in c.get("outputs", [])
            if "image/png" in o.get("data", {})]


def assert_figure(c: Any) -> None:
    images = pngs(c)
    assert images, f"cell {c.metadata.get('tags')} drew no figure"
    assert all(len(img) > 5_000 for img in images), "a figure is (nearly) empty"


def raw_entities(world: World, fleet_id: str) -> list[str]:
    """Unmasked card fingerprints, device ids and IPs the fleet's accounts use."""
    rows = world.server.query(
        "MATCH (:Fleet {fleet_id: $f, run_id: $r})<-[:MEMBER_OF]-(:Account)"
        "-[:USES_PAYMENT|USES_DEVICE|USES_IP]->(e) "
        "RETURN DISTINCT coalesce(e.fingerprint, e.device_id, e.ip) AS id",
        f=fleet_id, r=world.t2.run_id)
    return [r["id"] for r in rows if r["id"] and len(r["id"]) > 4]


# --------------------------------------------------------------------------- without a server


def test_repo_notebooks_are_stored_clean_and_start_with_parameters() -> None:
    paths = sorted(notebook.NOTEBOOKS_DIR.glob("*.ipynb"))
    assert [p.stem for p in paths] == NOTEBOOKS
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        for c in nb.cells:
            if c.cell_type == "code":
                assert c.outputs == [] and c.execution_count is None, f"{path.name} has outputs"
        assert "parameters" in nb.cells[0].metadata.get("tags", []), path.name
        assert nb.cells[1].source.startswith("%load_ext attribution.notebook"), path.name
        assert notebook.notebook_parameters(nb), path.name
        assert nb.metadata.kernelspec.name == "python3"


def test_notebook_queries_are_well_formed_and_distinct_from_the_library() -> None:
    local = notebook.notebook_queries()
    assert set(local) == set(notebook.NOTEBOOK_QUERIES)
    assert not set(local) & set(load_queries()), "a notebook query shadows queries/"
    writes = re.compile(r"\b(CREATE|MERGE|DELETE|DETACH|SET|REMOVE|LOAD\s+CSV|FOREACH)\b", re.I)
    for q in local.values():
        body = "\n".join(line for line in q.text.splitlines() if not line.startswith("//"))
        assert not writes.search(body), q.name
    with pytest.raises(notebook.NotebookError, match="no query named"):
        notebook.named_query("drop_everything")


def test_cell_parameters_skip_strings_and_comments() -> None:
    text = ("MATCH (a {id: $fleet_id}) // $commented\n WHERE a.x = '$not_a_param' "
            "AND a.y = \"$nor_this\" /* $nor\n this */ RETURN $`odd name`, $fleet_id, $limit")
    assert notebook.cell_parameters(text) == ["fleet_id", "odd name", "limit"]


def test_parameters_are_injected_after_the_parameters_cell_and_checked() -> None:
    nb = nbformat.read(notebook.resolve_notebook("02_fleet_dossier"), as_version=4)
    assert notebook.notebook_parameters(nb) == {"fleet_id": None, "run_id": None,
                                                "max_entities": 60}
    out = notebook.inject_parameters(nb, {"fleet_id": "F'1\"\\"})
    assert out.cells[1].metadata.tags == ["injected-parameters"]
    ns: dict[str, Any] = {}
    exec(out.cells[1].source, ns)  # the injected cell is plain literals
    assert ns["fleet_id"] == "F'1\"\\"
    again = notebook.inject_parameters(out, {"fleet_id": "F2"})  # re-injection replaces
    assert sum("injected-parameters" in c.metadata.get("tags", []) for c in again.cells) == 1
    with pytest.raises(notebook.NotebookError, match="no parameter fleet"):
        notebook.inject_parameters(nb, {"fleet": "F1"})
    with pytest.raises(notebook.NotebookError, match="plain literal"):
        notebook.inject_parameters(nb, {"fleet_id": object()})


def test_cli_values_are_typed_like_the_defaults() -> None:
    assert headless._cli_value("12345", None) == "12345"   # ids stay text
    assert headless._cli_value("None", None) is None
    assert headless._cli_value("30", 20) == 30
    assert headless._cli_value("0.5", 0.0) == 0.5
    assert headless._cli_value("true", False) is True
    with pytest.raises(notebook.NotebookError, match="expected a int"):
        headless._cli_value("many", 20)


def test_connect_without_settings_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NEO4J_URI", raising=False)
    with pytest.raises(notebook.NotebookError, match="NEO4J_URI is not set") as info:
        notebook.connect()
    assert info.value._render_traceback_() == [f"NotebookError: {info.value}"]
    assert "\n" not in str(info.value)


def test_masking_of_displayed_identifiers() -> None:
    frame = pl.DataFrame({"entity_label": ["PaymentMethod", "Device", "IP", "IP", "ASN"],
                          "entity_id": ["fp-1234abcd", "dev-99887766", "203.0.113.77",
                                        "2001:db8:1:2::5", "64500"]})
    assert notebook.masked(frame)["entity_id"].to_list() == [
        "…abcd", "…7766", "203.0.113.0/24", "2001:db8:1::/48", "64500"]
    assert notebook.masked_labels(["IP 198.51.100.9", "EmailDomain x.test"]) == [
        "IP 198.51.100.0/24", "EmailDomain x.test"]


def command(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="attribution")
    notebook.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    return int(args.handler(args))


def test_cli_list_and_bad_usage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                capsys: pytest.CaptureFixture[str]) -> None:
    assert command("notebook", "list") == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in NOTEBOOKS) and "fleet_id=None" in listed
    out = tmp_path / "x.html"
    assert command("notebook", "render", "02_fleet_dossier", "--out", str(out),
                   "-p", "fleet", "F1") == 2
    assert "no parameter fleet" in capsys.readouterr().err
    assert command("notebook", "render", "99_nothing", "--out", str(out)) == 2
    monkeypatch.delenv("NEO4J_URI", raising=False)
    assert command("notebook", "render", "01_triage", "--out", str(out)) == 2
    assert "NEO4J_URI is not set" in capsys.readouterr().err
    assert not out.exists()


# --------------------------------------------------------------------------- against Neo4j


def test_notebook_queries_only_read(world: World) -> None:
    driver = notebook.connect()
    with driver.session(database=world.server.database) as session:
        for q in notebook.notebook_queries().values():
            params = q.bind({p.name: "x" for p in q.params if p.required})
            assert session.run("EXPLAIN " + q.text, params).consume().query_type == "r", q.name


def test_query_and_cypher_return_frames(world: World) -> None:
    overview = notebook.query("fleet_overview", limit=100_000)
    assert overview.height == world.fleets.height
    assert overview.schema["first_seen"] == pl.Datetime("us", "UTC")
    with pytest.raises(notebook.NotebookError, match="needs parameter fleet_id"):
        notebook.query("fleet_members")
    fleet = world.attributed()["fleet_id"][0]
    rows = notebook.cypher("MATCH (f:Fleet {fleet_id: $f})-[:ATTRIBUTED_TO]->(o) "
                           "WHERE f.run_id = $r RETURN f, o.org_id AS org;", {"f": fleet,
                                                                             "r": world.t2.run_id})
    assert rows.height == 1 and rows["f"][0]["fleet_id"] == fleet
    assert "_snapshot" not in rows["f"][0]
    path = notebook.cypher("MATCH p = (:Account)-[:USES_IP]->(:IP)-[:IN_ASN]->(:ASN) "
                           "RETURN p LIMIT 1")["p"][0]
    assert re.fullmatch(r"\(:Account \w+\)-\[:USES_IP\]->\(:IP [^)]*/\d+\)-\[:IN_ASN\]->"
                        r"\(:ASN \d+\)", path), path
    with pytest.raises(notebook.NotebookError, match="SyntaxError"):
        notebook.cypher("MATCH (n RETURN n")


@pytest.mark.parametrize("text", [
    "CREATE (x:NotebookProbe) RETURN x",
    "MATCH (a:Account) WITH a LIMIT 1 SET a.touched = true",
    "MERGE (x:NotebookProbe {id: 1})",
    "MATCH (r:Run) DETACH DELETE r",
    "CREATE INDEX nb_probe IF NOT EXISTS FOR (n:NotebookProbe) ON (n.id)",
])
def test_ad_hoc_cypher_that_would_write_is_refused(world: World, text: str) -> None:
    before = world.server.query("MATCH (n) RETURN count(n) AS n")[0]["n"]
    with pytest.raises(notebook.NotebookError, match="refused: this Cypher would write"):
        notebook.cypher(text)
    # and were the EXPLAIN check bypassed, the read transaction still refuses
    with pytest.raises(notebook.NotebookError):
        frames._run_read(text, {}, check=False)
    assert world.server.query("MATCH (n) RETURN count(n) AS n")[0]["n"] == before
    assert not world.server.query("MATCH (a:Account) WHERE a.touched RETURN a LIMIT 1")
    assert not world.server.query("SHOW INDEXES YIELD name WHERE name = 'nb_probe' RETURN name")


class FakeShell:
    """What ``load_ipython_extension`` needs of IPython: a namespace and magic registration."""

    def __init__(self) -> None:
        self.user_ns: dict[str, Any] = {}
        self.magics: dict[tuple[str, str], Any] = {}

    def register_magic_function(self, func: Any, magic_kind: str, magic_name: str) -> None:
        self.magics[(magic_kind, magic_name)] = func


def test_cypher_magic_takes_parameters_from_the_notebook(world: World) -> None:
    shell = FakeShell()
    notebook.load_ipython_extension(shell)
    magic = shell.magics[("cell", "cypher")]
    fleet = world.attributed()["fleet_id"][0]
    shell.user_ns.update(fleet=fleet, run=world.t2.run_id)
    frame = magic(
        "members",
        "MATCH (a:Account)-[:MEMBER_OF]->(:Fleet {fleet_id: $fleet, run_id: $run})\n"
        "WHERE a.account_id <> '$fleet' // $not_needed\n"
        "RETURN a.account_id AS account_id ORDER BY account_id")
    expected = sorted(world.t2.assignments.filter(pl.col("fleet_id") == fleet)["account_id"])
    assert isinstance(frame, pl.DataFrame)
    assert frame["account_id"].to_list() == expected
    assert shell.user_ns["members"] is frame
    shell.user_ns["ids"] = pl.Series(expected[:2])  # a polars series travels as a list
    assert magic("", "UNWIND $ids AS i RETURN i").height == 2
    with pytest.raises(notebook.NotebookError, match=r"\$missing has no value"):
        magic("", "RETURN $missing")
    with pytest.raises(notebook.NotebookError, match="refused"):
        magic("", "CREATE (x:NotebookProbe) RETURN x")
    with pytest.raises(notebook.NotebookError, match="usage"):
        magic("two words", "RETURN 1")


def test_triage(world: World, tmp_path: Path) -> None:
    nb, probe = execute("01_triage", tmp_path, "_probe = {'ids': fleets['fleet_id'].to_list(), "
                        "'ranks': fleets['rank'].to_list(), 'risk': fleets['risk'].to_list()}")
    n = world.fleets.height
    assert shapes(cell(nb, "fleet-table")) == [(n, 12)]
    assert sorted(probe["ids"]) == sorted(world.fleets["fleet_id"])
    assert probe["ranks"] == list(range(1, n + 1))
    order = {"high": 0, "medium": 1, "low": 2}
    assert [order[r] for r in probe["risk"]] == sorted(order[r] for r in probe["risk"])
    assert_figure(cell(nb, "distributions"))
    assert_figure(cell(nb, "activity"))
    assert shapes(cell(nb, "proxies"))


def test_fleet_dossier(world: World, tmp_path: Path) -> None:
    fleet = world.attributed().row(0, named=True)
    nb, probe = execute("02_fleet_dossier", tmp_path,
                        "_probe = {'members': members['account_id'].to_list(), "
                        "'evidence': evidence.height, 'entities': entities.height}",
                        fleet_id=fleet["fleet_id"])
    members = world.t2.assignments.filter(pl.col("fleet_id") == fleet["fleet_id"])
    assert members.height == fleet["size"]
    assert shapes(cell(nb, "members")) == [(fleet["size"], 8)]
    assert sorted(probe["members"]) == sorted(members["account_id"])
    evidence = world.t2.evidence.filter(pl.col("fleet_id") == fleet["fleet_id"])
    assert shapes(cell(nb, "evidence")) == [(evidence.height, 5)] and probe["evidence"] > 0
    summary = texts(cell(nb, "summary"))
    assert fleet["fleet_id"] in summary and f"{fleet['size']} accounts" in summary
    assert notebook.md_escape(fleet["org_id"]) in summary
    assert "attributed to" in summary.lower() and "Strongest evidence" in summary
    assert shapes(cell(nb, "attribution"))  # what ties it to the organization
    for tag in ("timeline", "capabilities", "subgraph"):
        assert_figure(cell(nb, tag))
    shown = "\n".join(texts(c) for c in nb.cells)
    leaked = [e for e in raw_entities(world, fleet["fleet_id"]) if e in shown]
    assert not leaked, f"unmasked identifiers displayed: {leaked[:3]}"


def test_org_exposure(world: World, tmp_path: Path) -> None:
    counts = world.attributed().group_by("org_id").len().sort(["len", "org_id"],
                                                                descending=[True, False])
    org = counts["org_id"][0]
    nb, probe = execute("03_org_exposure", tmp_path,
                        "_probe = {'fleets': fleets['fleet_id'].to_list()}", org_id=org)
    expected = world.fleets.filter(pl.col("org_id") == org)
    assert sorted(probe["fleets"]) == sorted(expected["fleet_id"])
    assert shapes(cell(nb, "attributed-fleets")) == [(expected.height, 10)]
    table = texts(cell(nb, "attributed-fleets"))
    others = world.fleets.filter(pl.col("org_id").is_not_null() & (pl.col("org_id") != org))
    assert not [f for f in others["fleet_id"] if f in table]
    summary = texts(cell(nb, "summary"))
    assert f"{expected.height} fleets" in summary
    assert f"{int(expected['exchanges'].sum()):,} exchanges" in summary
    assert_figure(cell(nb, "exposure-chart"))
    assert shapes(cell(nb, "known-entities"))


def test_what_changed(world: World, tmp_path: Path) -> None:
    nb, probe = execute("04_what_changed", tmp_path,
                        "_probe = {'from': from_run, 'to': to_run, "
                        "'changes': dict(diff.group_by('change').len().iter_rows())}")
    assert (probe["from"], probe["to"]) == (world.t1.run_id, world.t2.run_id)
    before = dict(world.t1.fleets.select("fleet_id", "size").iter_rows())
    after = dict(world.t2.fleets.select("fleet_id", "size").iter_rows())
    kept = set(before) & set(after)
    expected = {
        "created": len(set(after) - set(before)),
        "dissolved": len(set(before) - set(after)),
        "grown": sum(after[f] > before[f] for f in kept),
        "shrunk": sum(after[f] < before[f] for f in kept),
    }
    orgs1 = dict(world.t1.fleets.select("fleet_id", "org_id").iter_rows())
    orgs2 = dict(world.t2.fleets.select("fleet_id", "org_id").iter_rows())
    changed = {f for f in kept if orgs1[f] != orgs2[f]}
    expected["grown"] -= sum(after[f] > before[f] for f in changed)
    expected["shrunk"] -= sum(after[f] < before[f] for f in changed)
    expected["attribution_changed"] = len(changed)
    assert {k: probe["changes"].get(k, 0) for k in expected} == expected
    assert expected["created"] + expected["dissolved"] + expected["grown"] > 0
    summary = texts(cell(nb, "summary"))
    assert f"{expected['created']} fleets created" in summary and world.t1.run_id in summary
    assert_figure(cell(nb, "summary"))
    assert shapes(cell(nb, "resized"))[0][0] == expected["grown"] + expected["shrunk"]


def test_account_lookup(world: World, tmp_path: Path) -> None:
    fleet = world.attributed().row(0, named=True)
    account = (world.t2.assignments.filter(pl.col("fleet_id") == fleet["fleet_id"])
               .sort("account_id")["account_id"][0])
    nb, probe = execute("05_account_lookup", tmp_path,
                        "_probe = {'fleet': fleet_id, 'uses': uses.height, "
                        "'nearby': created_nearby.height}", account_id=account)
    assert probe["fleet"] == fleet["fleet_id"]
    summary = texts(cell(nb, "summary"))
    assert account in summary and fleet["fleet_id"] in summary
    name = world.server.query("MATCH (o:Organization {org_id: $o}) RETURN o.name AS name",
                              o=fleet["org_id"])[0]["name"]
    assert f"attributed to **{notebook.md_escape(name)}**" in summary
    assert shapes(cell(nb, "entities"))[0][0] == probe["uses"] > 0
    assert_figure(cell(nb, "neighbourhood"))
    assert shapes(cell(nb, "history"))[0][0] == 2  # scored in both runs
    assert shapes(cell(nb, "created-nearby"))  # the %%cypher cell ran with $account_id
    shown = "\n".join(texts(c) for c in nb.cells)
    leaked = [e for e in raw_entities(world, fleet["fleet_id"]) if e in shown]
    assert not leaked, f"unmasked identifiers displayed: {leaked[:3]}"


def test_render_cli_writes_html_with_figures(world: World, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "reports" / "dossier.html"
    assert command("notebook", "render", "02_fleet_dossier", "--out", str(out)) == 0
    html = out.read_text(encoding="utf-8")
    assert "data:image/png;base64," in html
    top = notebook.rank_fleets(world.fleets)["fleet_id"][0]
    assert f"Fleet dossier: {top}" in html  # the default is the fleet triage ranks first
    assert "<title>Fleet dossier</title>" in html
    assert "wrote" in capsys.readouterr().out
    assert not [p for p in out.parent.iterdir() if p.name != out.name]  # no temp files left
    assert os.environ["NEO4J_URI"] == world.server.uri


def test_render_cli_reports_a_failing_cell_and_keeps_the_partial_html(
        world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "missing.html"
    assert command("notebook", "render", "02_fleet_dossier", "--out", str(out),
                   "-p", "fleet_id", "F-not-a-fleet", "--quiet") == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "NotebookError: no fleet F-not-a-fleet" in err, err
    assert "partial HTML" in err
    html = out.read_text(encoding="utf-8")
    assert "no fleet F-not-a-fleet" in html and "<title>Fleet dossier</title>" in html
