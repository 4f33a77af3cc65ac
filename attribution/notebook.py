"""Helpers for the analysts' Jupyter notebooks (``notebooks/``): Neo4j in, polars out.

Notebooks hold no credentials and no connection code: ``connect()`` reads the
same ``NEO4J_*`` variables as ``attribution run``. Everything they read goes
through read transactions: the named queries of ``queries/`` (``query``), a
few notebook-only queries written here in the same header format
(``NOTEBOOK_QUERIES``; candidates for ``queries/``), and ad-hoc Cypher
(``cypher`` and the ``%%cypher`` cell magic), which is first checked with
``EXPLAIN`` to be read-only and then run in a read transaction (the server
refuses writes there as well).

In a notebook::

    %load_ext attribution.notebook
    from attribution import notebook as nb
    fleets = nb.query("fleet_overview", limit=100)

    %%cypher members
    MATCH (a:Account)-[:MEMBER_OF]->(f:Fleet {fleet_id: $fleet_id}) RETURN a.account_id

Headless: ``render(path, out_html, {"fleet_id": "F..."})`` executes a notebook
with nbclient (parameters injected after the cell tagged ``parameters``, as
papermill does) and exports HTML with its outputs; ``attribution notebook
render|list`` on the command line (see ``register``).
"""

from __future__ import annotations

import argparse
import ast
import datetime as dt
import json
import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl
from neo4j import Driver, GraphDatabase, ManagedTransaction, unit_of_work
from neo4j import time as neo4j_time
from neo4j.exceptions import DriverError, Neo4jError
from neo4j.graph import Node, Relationship
from neo4j.graph import Path as GraphPath

from attribution.cypher import NamedQuery, QueryError, get_query, load_queries, parse_query
from attribution.masking import LABELS, label_kind, mask, mask_labelled, mask_node
from attribution.settings import Neo4jSettings

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from nbformat import NotebookNode

# Shipped as package data (``attribution/notebooks``, mapped from the repo's
# ``notebooks/`` at build time) or, in a checkout, at the repo root: one source.
NOTEBOOKS_DIR = next(
    (d for d in (Path(__file__).resolve().parent / "notebooks",
                 Path(__file__).resolve().parent.parent / "notebooks")
     if any(d.glob("*.ipynb"))),
    Path(__file__).resolve().parent.parent / "notebooks")
EXTRA_HINT = "pip install 'attribution[notebooks]'"
QUERY_TIMEOUT = 300.0  # seconds: an analyst's runaway query must not hold the server forever
RENDER_TIMEOUT = 600   # seconds per cell when rendering headless
UNSET = ("NEO4J_URI is not set: start a dev server with `eval \"$(attribution neo4j-dev start)\"` "
         "or export NEO4J_URI, NEO4J_USER, NEO4J_PASSWORD and NEO4J_DATABASE")


class NotebookError(RuntimeError):
    """A notebook helper cannot do what was asked; shown as one line, not a traceback."""

    def _render_traceback_(self) -> list[str]:
        # IPython shows this instead of a traceback: the message is the whole story.
        return [f"{type(self).__name__}: {self}"]


# --------------------------------------------------------------------------- connection


@dataclass
class _Connection:
    settings: Neo4jSettings | None = None
    driver: Driver | None = None


_connection = _Connection()


def settings() -> Neo4jSettings:
    """The ``NEO4J_*`` settings, or a one-line error saying how to set them."""
    found = Neo4jSettings.from_env()
    if found is None:
        raise NotebookError(UNSET)
    return found


def connect(*, reconnect: bool = False) -> Driver:
    """The notebook's driver, made once from ``NEO4J_*`` and checked to answer.

    A new driver is made when the environment changed (or ``reconnect``), so a
    notebook re-pointed at another server does not keep talking to the old one.
    """
    wanted = settings()
    if _connection.driver is not None and _connection.settings == wanted and not reconnect:
        return _connection.driver
    close()
    try:
        driver = GraphDatabase.driver(wanted.uri, auth=(wanted.user, wanted.password),
                                      notifications_min_severity="OFF")
    except (DriverError, ValueError) as exc:
        raise NotebookError(f"bad Neo4j settings ({wanted.uri}): {_line(exc)}") from exc
    try:
        driver.verify_connectivity()
    except (DriverError, Neo4jError, OSError) as exc:
        driver.close()
        raise NotebookError(f"cannot use Neo4j at {wanted.uri} as {wanted.user!r}: "
                            f"{_line(exc)}") from exc
    _connection.settings, _connection.driver = wanted, driver
    return driver


def close() -> None:
    """Close the notebook's driver (the next query reconnects)."""
    if _connection.driver is not None:
        _connection.driver.close()
    _connection.settings = _connection.driver = None


def _line(exc: BaseException) -> str:
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    text = " ".join(str(message).split())
    return text if len(text) <= 300 else text[:297] + "..."


# --------------------------------------------------------------------------- notebook-only queries

_RUN: str = "MATCH (r:Run) WHERE ($run_id IS NULL AND r:Current) OR r.run_id = $run_id\n"
_USES = "USES_PAYMENT|USES_DEVICE|USES_IP|SIGNED_UP_FROM|HAS_EMAIL_DOMAIN|USES_PROMPT"
_RUN_PARAM = "// param: run_id (string?, default null) a run; null means the current run\n"


def _key(var: str) -> str:
    """The key property of whatever node ``var`` is (fixed vocabulary, never data)."""
    return (f"CASE WHEN {var}:PaymentMethod THEN {var}.fingerprint "
            f"WHEN {var}:Device THEN {var}.device_id WHEN {var}:IP THEN {var}.ip "
            f"WHEN {var}:EmailDomain THEN {var}.domain "
            f"WHEN {var}:PromptTemplate THEN {var}.prompt_hash WHEN {var}:ASN THEN {var}.asn "
            f"WHEN {var}:Account THEN {var}.account_id END")


# Read-only queries the notebooks need and queries/ does not have (yet). Same header
# format as queries/*.cypher, parsed and parameter-checked by attribution.cypher.
NOTEBOOK_QUERIES: dict[str, str] = {
    "runs": (
        "// name: runs\n"
        "// description: Complete runs, newest first, with their fleet and account counts.\n"
        "// param: limit (int, default 20) at most this many runs\n"
        "// returns: run_id, current, started_at, finished_at, previous_run_id, fleets,"
        " sybil_fleets, attributed_fleets, accounts\n"
        "MATCH (r:Run) WHERE r.complete\n"
        "RETURN r.run_id AS run_id, r:Current AS current, r.started_at AS started_at,\n"
        "       r.finished_at AS finished_at, r.previous_run_id AS previous_run_id,\n"
        "       r.n_fleets AS fleets,\n"
        "       COUNT { MATCH (f:Fleet) WHERE f.run_id = r.run_id AND f.sybil_score >= 0.5 }"
        " AS sybil_fleets,\n"
        "       COUNT { MATCH (f:Fleet) WHERE f.run_id = r.run_id AND f.org_id IS NOT NULL }"
        " AS attributed_fleets,\n"
        "       r.n_assignments AS accounts\n"
        "ORDER BY started_at DESC, run_id DESC\n"
        "LIMIT $limit\n"
    ),
    "fleet_detail": (
        "// name: fleet_detail\n"
        "// description: One fleet of a run with the names of the organizations it is attributed\n"
        "// description: or affiliated to.\n"
        "// param: fleet_id (string) the fleet\n" + _RUN_PARAM +
        "// returns: fleet_id, run_id, size, sybil_score, org_id, org_name, confidence,"
        " runner_up_org_id, runner_up_name, runner_up_confidence, affiliated_org_id,"
        " affiliated_name, affiliation_confidence, exchanges, top_capabilities, first_seen,"
        " last_seen\n"
        + _RUN +
        "MATCH (f:Fleet {fleet_id: $fleet_id, run_id: r.run_id})\n"
        "OPTIONAL MATCH (o:Organization {org_id: f.org_id})\n"
        "OPTIONAL MATCH (ru:Organization {org_id: f.runner_up_org_id})\n"
        "OPTIONAL MATCH (af:Organization {org_id: f.affiliated_org_id})\n"
        "RETURN f.fleet_id AS fleet_id, r.run_id AS run_id, f.size AS size,\n"
        "       f.sybil_score AS sybil_score, f.org_id AS org_id, o.name AS org_name,\n"
        "       f.confidence AS confidence, f.runner_up_org_id AS runner_up_org_id,\n"
        "       ru.name AS runner_up_name, f.runner_up_confidence AS runner_up_confidence,\n"
        "       f.affiliated_org_id AS affiliated_org_id, af.name AS affiliated_name,\n"
        "       f.affiliation_confidence AS affiliation_confidence, f.exchanges AS exchanges,\n"
        "       f.top_capabilities AS top_capabilities, f.first_seen AS first_seen,\n"
        "       f.last_seen AS last_seen\n"
    ),
    "fleet_evidence": (
        "// name: fleet_evidence\n"
        "// description: The evidence rows of one fleet, in the order the run wrote them"
        " (strongest first).\n"
        "// param: fleet_id (string) the fleet\n" + _RUN_PARAM +
        "// returns: kind, detail, weight, org_id, org_name\n"
        + _RUN +
        "MATCH (e:Evidence)-[:SUPPORTS]->(:Fleet {fleet_id: $fleet_id, run_id: r.run_id})\n"
        "OPTIONAL MATCH (o:Organization {org_id: e.org_id})\n"
        "RETURN e.kind AS kind, e.detail AS detail, e.weight AS weight, e.org_id AS org_id,\n"
        "       o.name AS org_name\n"
        "ORDER BY e.seq\n"
    ),
    "fleet_member_activity": (
        "// name: fleet_member_activity\n"
        "// description: When each account of a fleet was created and active, and its"
        " exchanges by capability.\n"
        "// param: fleet_id (string) the fleet\n" + _RUN_PARAM +
        "// returns: account_id, created_at, first_exchange, last_exchange, active_days,"
        " exchanges, capabilities\n"
        + _RUN +
        "MATCH (:Fleet {fleet_id: $fleet_id, run_id: r.run_id})<-[:MEMBER_OF]-(a:Account)\n"
        "RETURN a.account_id AS account_id, a.created_at AS created_at,\n"
        "       a.first_ts AS first_exchange, a.last_ts AS last_exchange,\n"
        "       a.active_days AS active_days, a.exchanges AS exchanges,\n"
        "       a.capabilities AS capabilities\n"
        "ORDER BY created_at, account_id\n"
    ),
    "fleet_accounts_activity": (
        "// name: fleet_accounts_activity\n"
        "// description: Every account in a fleet of the current run with its fleet's score and"
        " when it was created and active.\n"
        "// param: min_sybil (float, default 0.0) only fleets with at least this sybil score\n"
        "// returns: fleet_id, fleet_sybil_score, account_id, created_at, first_exchange,"
        " last_exchange, exchanges\n"
        "MATCH (r:Run:Current)\n"
        "MATCH (f:Fleet) WHERE f.run_id = r.run_id AND f.sybil_score >= $min_sybil\n"
        "MATCH (f)<-[:MEMBER_OF]-(a:Account)\n"
        "RETURN f.fleet_id AS fleet_id, f.sybil_score AS fleet_sybil_score,\n"
        "       a.account_id AS account_id, a.created_at AS created_at,\n"
        "       a.first_ts AS first_exchange, a.last_ts AS last_exchange,\n"
        "       a.exchanges AS exchanges\n"
        "ORDER BY fleet_id, account_id\n"
    ),
    "capability_totals": (
        "// name: capability_totals\n"
        "// description: Exchanges of every account in the graph by capability index (the order"
        " of attribution.schema.CAPABILITIES): the population a fleet's mix is compared with.\n"
        "// returns: capability, exchanges\n"
        "MATCH (a:Account) WHERE a.capabilities IS NOT NULL\n"
        "UNWIND range(0, size(a.capabilities) - 1) AS capability\n"
        "RETURN capability, sum(a.capabilities[capability]) AS exchanges\n"
        "ORDER BY capability\n"
    ),
    "fleet_entities": (
        "// name: fleet_entities\n"
        "// description: Cards, devices, IPs, e-mail domains and prompt templates a fleet's"
        " accounts use that at least $min_members of them share or that an organization is"
        " known by (directly, through the IP's ASN, or through a known account on the same"
        " card or device).\n"
        "// param: fleet_id (string) the fleet\n" + _RUN_PARAM +
        "// param: min_members (int, default 2) entities used by fewer members are left out"
        " unless known\n"
        "// param: limit (int, default 200) at most this many entities\n"
        "// returns: entity_label, entity_id, relationships, fleet_accounts, accounts_on_entity,"
        " known_as, members\n"
        + _RUN +
        "MATCH (:Fleet {fleet_id: $fleet_id, run_id: r.run_id})<-[:MEMBER_OF]-(a:Account)\n"
        f"MATCH (a)-[u:{_USES}]->(e)\n"
        "WITH e, collect(DISTINCT type(u)) AS relationships, count(DISTINCT a) AS fleet_accounts,\n"
        "     collect(DISTINCT a.account_id) AS members\n"
        "WITH e, relationships, fleet_accounts, members,\n"
        "     COLLECT { MATCH (e)-[:IN_ASN*0..1]->()-[:KNOWN_AS]->(o:Organization)"
        " RETURN o.org_id AS org\n"
        "               UNION MATCH (e)<-[:USES_PAYMENT|USES_DEVICE]-(:Account)-[:KNOWN_AS]->"
        "(o:Organization) RETURN o.org_id AS org } AS known_as\n"
        "WHERE fleet_accounts >= $min_members OR size(known_as) > 0\n"
        f"RETURN labels(e)[0] AS entity_label, {_key('e')} AS entity_id, relationships,\n"
        "       fleet_accounts,\n"
        f"       COUNT {{ MATCH (e)<-[:{_USES}]-(b:Account) RETURN DISTINCT b }}"
        " AS accounts_on_entity,\n"
        "       known_as, members\n"
        "ORDER BY size(known_as) DESC, fleet_accounts DESC, accounts_on_entity, entity_label,"
        " entity_id\n"
        "LIMIT $limit\n"
    ),
    "fleet_org_links": (
        "// name: fleet_org_links\n"
        "// description: The organization side of a fleet's subgraph, as edges: member accounts"
        " and entities of the members known as an organization, IPs in a known ASN, and known"
        " accounts outside the fleet on a member's card or device.\n"
        "// param: fleet_id (string) the fleet\n" + _RUN_PARAM +
        "// param: limit (int, default 500) at most this many edges\n"
        "// returns: source_label, source_id, relationship, target_label, target_id\n"
        + _RUN +
        "MATCH (f:Fleet {fleet_id: $fleet_id, run_id: r.run_id})\n"
        "CALL (f) {\n"
        "  MATCH (f)<-[:MEMBER_OF]-(a:Account)-[:KNOWN_AS]->(o:Organization)\n"
        "  RETURN 'Account' AS source_label, a.account_id AS source_id,"
        " 'KNOWN_AS' AS relationship, 'Organization' AS target_label, o.org_id AS target_id\n"
        "  UNION\n"
        f"  MATCH (f)<-[:MEMBER_OF]-(:Account)-[:{_USES}]->(e)-[:KNOWN_AS]->(o:Organization)\n"
        f"  RETURN labels(e)[0] AS source_label, {_key('e')} AS source_id,"
        " 'KNOWN_AS' AS relationship, 'Organization' AS target_label, o.org_id AS target_id\n"
        "  UNION\n"
        "  MATCH (f)<-[:MEMBER_OF]-(:Account)-[:USES_IP|SIGNED_UP_FROM]->(ip:IP)-[:IN_ASN]->"
        "(n:ASN)-[:KNOWN_AS]->(o:Organization)\n"
        "  UNWIND [['IP', ip.ip, 'IN_ASN', 'ASN', n.asn],"
        " ['ASN', n.asn, 'KNOWN_AS', 'Organization', o.org_id]] AS edge\n"
        "  RETURN edge[0] AS source_label, edge[1] AS source_id, edge[2] AS relationship,"
        " edge[3] AS target_label, edge[4] AS target_id\n"
        "  UNION\n"
        "  MATCH (f)<-[:MEMBER_OF]-(:Account)-[:USES_PAYMENT|USES_DEVICE]->(e)"
        "<-[u:USES_PAYMENT|USES_DEVICE]-(k:Account)-[:KNOWN_AS]->(o:Organization)\n"
        "  WHERE NOT (k)-[:MEMBER_OF]->(f)\n"
        f"  UNWIND [['Account', k.account_id, type(u), labels(e)[0], {_key('e')}],"
        " ['Account', k.account_id, 'KNOWN_AS', 'Organization', o.org_id]] AS edge\n"
        "  RETURN edge[0] AS source_label, edge[1] AS source_id, edge[2] AS relationship,"
        " edge[3] AS target_label, edge[4] AS target_id\n"
        "}\n"
        "RETURN source_label, source_id, relationship, target_label, target_id\n"
        "ORDER BY relationship, source_label, source_id, target_label, target_id\n"
        "LIMIT $limit\n"
    ),
    "org_overview": (
        "// name: org_overview\n"
        "// description: Organizations with fleets attributed to them in the current run, most"
        " fleets first.\n"
        "// param: limit (int, default 100) at most this many organizations\n"
        "// returns: org_id, name, kind, country, fleets, accounts, exchanges, mean_confidence\n"
        "MATCH (r:Run:Current)\n"
        "MATCH (f:Fleet)-[x:ATTRIBUTED_TO]->(o:Organization) WHERE f.run_id = r.run_id\n"
        "RETURN o.org_id AS org_id, o.name AS name, o.kind AS kind, o.country AS country,\n"
        "       count(f) AS fleets, sum(f.size) AS accounts, sum(f.exchanges) AS exchanges,\n"
        "       avg(x.confidence) AS mean_confidence\n"
        "ORDER BY fleets DESC, exchanges DESC, org_id\n"
        "LIMIT $limit\n"
    ),
    "organization": (
        "// name: organization\n"
        "// description: One organization and how many entities the analysts tied to it.\n"
        "// param: org_id (string) the organization\n"
        "// returns: org_id, name, kind, country, known_entities\n"
        "MATCH (o:Organization {org_id: $org_id})\n"
        "RETURN o.org_id AS org_id, o.name AS name, o.kind AS kind, o.country AS country,\n"
        "       COUNT { (o)<-[:KNOWN_AS]-() } AS known_entities\n"
    ),
    "org_attributed_fleets": (
        "// name: org_attributed_fleets\n"
        "// description: Fleets of a run attributed to an organization, most confident first,"
        " with their volume.\n"
        "// param: org_id (string) the organization\n" + _RUN_PARAM +
        "// param: limit (int, default 1000) at most this many fleets\n"
        "// returns: fleet_id, size, sybil_score, confidence, runner_up_org_id,"
        " runner_up_confidence, exchanges, top_capabilities, first_seen, last_seen\n"
        + _RUN +
        "MATCH (f:Fleet)-[x:ATTRIBUTED_TO]->(:Organization {org_id: $org_id})\n"
        "WHERE f.run_id = r.run_id\n"
        "RETURN f.fleet_id AS fleet_id, f.size AS size, f.sybil_score AS sybil_score,\n"
        "       x.confidence AS confidence, f.runner_up_org_id AS runner_up_org_id,\n"
        "       f.runner_up_confidence AS runner_up_confidence, f.exchanges AS exchanges,\n"
        "       f.top_capabilities AS top_capabilities, f.first_seen AS first_seen,\n"
        "       f.last_seen AS last_seen\n"
        "ORDER BY confidence DESC, exchanges DESC, fleet_id\n"
        "LIMIT $limit\n"
    ),
    "org_known_entities": (
        "// name: org_known_entities\n"
        "// description: What the analysts tied to an organization (known_links), with how many"
        " accounts use each entity.\n"
        "// param: org_id (string) the organization\n"
        "// param: limit (int, default 500) at most this many entities\n"
        "// returns: entity_label, entity_id, source, link_confidence, observed_at,"
        " accounts_on_entity\n"
        "MATCH (o:Organization {org_id: $org_id})<-[k:KNOWN_AS]-(e)\n"
        "RETURN labels(e)[0] AS entity_label, k.key AS entity_id, k.source AS source,\n"
        "       k.confidence AS link_confidence, k.observed_at AS observed_at,\n"
        f"       COUNT {{ MATCH (e)<-[:{_USES}|IN_ASN*1..2]-(b:Account) RETURN DISTINCT b }}"
        " AS accounts_on_entity\n"
        "ORDER BY entity_label, entity_id\n"
        "LIMIT $limit\n"
    ),
    "account_summary": (
        "// name: account_summary\n"
        "// description: One account: what the graph holds about it and where a run put it"
        " (fleet, scores, attribution).\n"
        "// param: account_id (string) the account\n" + _RUN_PARAM +
        "// returns: account_id, created_at, country, plan, email_domain, org_claim, exchanges,"
        " first_exchange, last_exchange, active_days, run_id, fleet_id, sybil_score, org_id,"
        " confidence, fleet_size, fleet_sybil_score, fleet_org_id, fleet_org_name,"
        " fleet_confidence, known_as\n"
        + _RUN +
        "MATCH (a:Account {account_id: $account_id})\n"
        "OPTIONAL MATCH (a)-[s:SCORED]->(r)\n"
        "OPTIONAL MATCH (f:Fleet {fleet_id: s.fleet_id, run_id: r.run_id})\n"
        "OPTIONAL MATCH (o:Organization {org_id: f.org_id})\n"
        "RETURN a.account_id AS account_id, a.created_at AS created_at, a.country AS country,\n"
        "       a.plan AS plan, a.email_domain AS email_domain, a.org_claim AS org_claim,\n"
        "       a.exchanges AS exchanges, a.first_ts AS first_exchange,\n"
        "       a.last_ts AS last_exchange, a.active_days AS active_days, r.run_id AS run_id,\n"
        "       s.fleet_id AS fleet_id, s.sybil_score AS sybil_score, s.org_id AS org_id,\n"
        "       s.confidence AS confidence, f.size AS fleet_size,\n"
        "       f.sybil_score AS fleet_sybil_score, f.org_id AS fleet_org_id,\n"
        "       o.name AS fleet_org_name, f.confidence AS fleet_confidence,\n"
        "       COLLECT { MATCH (a)-[:KNOWN_AS]->(k:Organization) RETURN k.org_id } AS known_as\n"
    ),
    "account_history": (
        "// name: account_history\n"
        "// description: Where every stored run put one account, newest run first.\n"
        "// param: account_id (string) the account\n"
        "// param: limit (int, default 20) at most this many runs\n"
        "// returns: run_id, current, started_at, fleet_id, sybil_score, org_id, confidence\n"
        "MATCH (:Account {account_id: $account_id})-[s:SCORED]->(r:Run) WHERE r.complete\n"
        "RETURN r.run_id AS run_id, r:Current AS current, r.started_at AS started_at,\n"
        "       s.fleet_id AS fleet_id, s.sybil_score AS sybil_score, s.org_id AS org_id,\n"
        "       s.confidence AS confidence\n"
        "ORDER BY started_at DESC, run_id DESC\n"
        "LIMIT $limit\n"
    ),
}


@cache
def notebook_queries() -> dict[str, NamedQuery]:
    """``NOTEBOOK_QUERIES`` parsed (headers checked like the files of ``queries/``)."""
    return {name: parse_query(text) for name, text in NOTEBOOK_QUERIES.items()}


def named_query(name: str) -> NamedQuery:
    """A query of ``queries/`` or, failing that, a notebook-only one."""
    try:
        return get_query(name)
    except QueryError:
        local = notebook_queries()
        if name in local:
            return local[name]
        known = sorted(set(load_queries()) | set(local))
        raise NotebookError(f"no query named {name!r} (known: {', '.join(known)})") from None


# --------------------------------------------------------------------------- running queries


def query(name: str, /, **params: Any) -> pl.DataFrame:
    """Run a named read-only query with checked parameters; rows as a polars frame."""
    named = named_query(name)
    try:
        bound = named.bind({k: _param(v) for k, v in params.items()})
    except QueryError as exc:
        raise NotebookError(str(exc)) from exc
    return _run_read(named.text, bound, check=False, columns=named.returns)


def cypher(text: str, params: Mapping[str, Any] | None = None, *,
           timeout: float = QUERY_TIMEOUT) -> pl.DataFrame:
    """Run ad-hoc Cypher, refused unless ``EXPLAIN`` says it only reads; rows as a frame."""
    clean = text.strip().rstrip(";").strip()
    if not clean:
        raise NotebookError("empty Cypher")
    return _run_read(clean, {k: _param(v) for k, v in (params or {}).items()}, check=True,
                     timeout=timeout)


def _run_read(text: str, params: dict[str, Any], *, check: bool,
              columns: Iterable[str] = (), timeout: float = QUERY_TIMEOUT) -> pl.DataFrame:
    """One read transaction (after a read-only check for ad-hoc text)."""
    driver = connect()
    assert _connection.settings is not None

    def work(tx: ManagedTransaction) -> tuple[list[str], list[list[Any]]]:
        if check:
            kind = tx.run("EXPLAIN " + text, params).consume().query_type
            if kind != "r":
                raise NotebookError(f"refused: this Cypher would write (query type {kind!r}); "
                                    "notebooks only read")
        result = tx.run(text, params)
        keys = list(result.keys())
        return keys, [[_plain(v) for v in record.values()] for record in result]

    try:
        with driver.session(database=_connection.settings.database) as session:
            keys, rows = session.execute_read(unit_of_work(timeout=timeout)(work))
    except NotebookError:
        raise
    except Neo4jError as exc:
        raise NotebookError(f"{exc.code}: {_line(exc)}") from exc
    except (DriverError, OSError) as exc:
        raise NotebookError(f"Neo4j at {_connection.settings.uri}: {_line(exc)}") from exc
    return to_frame(keys or list(columns), rows)


def to_frame(keys: list[str], rows: list[list[Any]]) -> pl.DataFrame:
    """Rows as a frame with the result's column order; mixed columns fall back to text."""
    series = []
    for i, key in enumerate(keys):
        values = [row[i] for row in rows]
        try:
            series.append(pl.Series(key, values, strict=False))
        except (TypeError, ValueError, pl.exceptions.PolarsError):
            series.append(pl.Series(key, [None if v is None else str(v) for v in values],
                                    dtype=pl.String))
    return pl.DataFrame(series, height=len(rows)) if series else pl.DataFrame()


def _plain(value: Any) -> Any:
    """Driver values as plain Python: temporal types native, nodes as the small masked dicts
    the API shows (``attribution.masking.mask_node``), relationships as their type, paths as
    readable text with masked keys."""
    if isinstance(value, neo4j_time.DateTime | neo4j_time.Date | neo4j_time.Time):
        return value.to_native()
    if isinstance(value, neo4j_time.Duration):
        months, days, seconds, nanos = value
        return dt.timedelta(days=days + 30 * months, seconds=seconds, microseconds=nanos // 1000)
    if isinstance(value, Node):
        return mask_node(value)
    if isinstance(value, Relationship):
        return value.type
    if isinstance(value, GraphPath):
        parts = [_node_text(value.start_node)]
        for rel, before, after in zip(value.relationships, value.nodes, value.nodes[1:],
                                      strict=False):
            forward = rel.start_node is not None and rel.start_node.element_id == before.element_id
            parts += [f"-[:{rel.type}]->" if forward else f"<-[:{rel.type}]-", _node_text(after)]
        return "".join(parts)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _node_text(node: Node | None) -> str:
    if node is None:
        return "()"
    label = next((lb for lb in LABELS if lb in node.labels), next(iter(node.labels), ""))
    key = node.get(LABELS[label][1]) if label in LABELS else None
    shown = mask_entity(label, str(key)) if key is not None else ""
    return f"(:{label} {shown})".replace(" )", ")")


def _param(value: Any) -> Any:
    """Notebook values the driver cannot send (numpy scalars, polars series...) as plain ones."""
    if isinstance(value, pl.Series):
        return value.to_list()
    if isinstance(value, pl.DataFrame):
        return value.to_dicts()
    if isinstance(value, tuple | set | frozenset):
        return [_param(v) for v in value]
    if isinstance(value, list):
        return [_param(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _param(v) for k, v in value.items()}
    if type(value).__module__ == "numpy":
        tolist = getattr(value, "tolist", None)
        if callable(tolist):
            return tolist()
    return value


# --------------------------------------------------------------------------- masking


def mask_entity(label: str, value: str | None) -> str | None:
    """An entity id as shown to people, by its node label's kind (``attribution.masking``:
    cards, devices and prompt hashes to the last 4, IPs to /24, accounts and ASNs in full)."""
    if value is None:
        return None
    return mask(label_kind(label) or "unknown", value)


def masked(frame: pl.DataFrame, id_column: str = "entity_id",
           label_column: str = "entity_label") -> pl.DataFrame:
    """``frame`` with its entity ids masked according to each row's label."""
    if frame.is_empty() or id_column not in frame.columns:
        return frame
    values = [mask_entity(str(label), None if v is None else str(v))
              for label, v in frame.select(label_column, id_column).iter_rows()]
    return frame.with_columns(pl.Series(id_column, values, dtype=pl.String))


def masked_labels(items: Iterable[str]) -> list[str]:
    """``"Label id"`` strings (as ``org_fleets`` returns them) with the ids masked."""
    return [mask_labelled(item) for item in items]


# --------------------------------------------------------------------------- shortcuts


def md_escape(text: object) -> str:
    """Text for a generated Markdown cell: data must not turn into emphasis or links."""
    return re.sub(r"([\\`*_\[\]<>#|])", r"\\\1", str(text))




def duration_text(delta: dt.timedelta) -> str:
    """A time span as people say it (a sign-up burst is minutes, a campaign weeks)."""
    seconds = delta.total_seconds()
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} minutes"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.0f} hours"
    return f"{seconds / 86400:.0f} days"


def current_run() -> dict[str, Any]:
    """The current run's row of the ``runs`` query, or a one-line error if there is none."""
    runs = query("runs", limit=1000).filter(pl.col("current"))
    if runs.is_empty():
        raise NotebookError("no run in Neo4j yet: run `attribution run SNAPSHOT --out RUN` "
                            "with NEO4J_URI set")
    return runs.row(0, named=True)


def rank_fleets(fleets: pl.DataFrame) -> pl.DataFrame:
    """Fleets (``fleet_overview`` rows) by risk tier, then size: what triage looks at first.

    Tiers rather than the raw score: a 0.97 fleet of 300 accounts matters more
    than a 0.99 pair, yet any likely-inauthentic fleet comes before a team.
    """
    tier = (pl.when(pl.col("sybil_score") >= 0.8).then(pl.lit("high"))
            .when(pl.col("sybil_score") >= 0.5).then(pl.lit("medium")).otherwise(pl.lit("low")))
    order = pl.col("risk").replace_strict({"high": 0, "medium": 1, "low": 2}, return_dtype=pl.Int8)
    return (fleets.with_columns(tier.alias("risk"))
            .sort([order, pl.col("size"), pl.col("sybil_score"), pl.col("fleet_id")],
                  descending=[False, True, True, False])
            .with_row_index("rank", offset=1))


def top_fleet() -> str:
    """The fleet triage ranks first in the current run (the notebooks' default fleet)."""
    for min_sybil in (0.5, 0.0):
        fleets = query("fleet_overview", min_sybil=min_sybil, limit=10_000_000)
        if fleets.height:
            return str(rank_fleets(fleets)["fleet_id"][0])
    raise NotebookError("the current run has no fleets")


def capability_names() -> tuple[str, ...]:
    """Capability names in the order of the ``capabilities`` lists on Account nodes."""
    from attribution.schema import CAPABILITIES

    return CAPABILITIES


def capability_mix(lists: Iterable[list[int] | None]) -> pl.DataFrame:
    """Summed per-capability exchange counts of some accounts, with each one's share."""
    names = capability_names()
    totals = [0] * len(names)
    for counts in lists:
        for i, c in enumerate(counts or []):
            if i < len(totals) and c:
                totals[i] += int(c)
    frame = pl.DataFrame({"capability": list(names), "exchanges": totals})
    whole = sum(totals)
    return frame.with_columns((pl.col("exchanges") / whole if whole else pl.lit(0.0)).alias("share"))


# --------------------------------------------------------------------------- drawing

_STYLE: dict[str, tuple[str, str, float]] = {   # label -> (colour, marker, size)
    "focus": ("#ffbf00", "o", 260.0),
    "member": ("#d62728", "o", 70.0),
    "Account": ("#7f7f7f", "o", 70.0),
    "PaymentMethod": ("#1f77b4", "s", 150.0),
    "Device": ("#2ca02c", "D", 120.0),
    "IP": ("#ff7f0e", "^", 120.0),
    "ASN": ("#8c564b", "v", 150.0),
    "EmailDomain": ("#9467bd", "P", 130.0),
    "PromptTemplate": ("#e377c2", "X", 130.0),
    "Organization": ("#000000", "*", 450.0),
}
_LEGEND = {"focus": "this account", "member": "fleet account", "Account": "other account"}
_LABEL_RANK = {"Organization": 0, "ASN": 1, "PaymentMethod": 3, "Device": 3, "EmailDomain": 4,
               "PromptTemplate": 4}


def draw_graph(edges: Iterable[tuple[str, str, str, str]], *, members: Iterable[str] = (),
               focus: Iterable[str] = (), names: Mapping[str, str] | None = None,
               title: str = "", ax: Axes | None = None, seed: int = 7,
               label_accounts: int = 12, max_labels: int = 18) -> Figure:
    """Draw ``(source_label, source_id, target_label, target_id)`` edges with networkx.

    Accounts in ``members`` are red, other accounts grey, ``focus`` accounts gold
    and named. Entity labels are masked and capped at ``max_labels`` (organizations,
    ASNs and what touches them first, then cards and devices, then the busiest);
    IPs are named only when few or tied to an organization, so a fleet on forty
    proxy IPs stays readable. Account ids are written only
    when there are at most ``label_accounts`` accounts.
    """
    import matplotlib.pyplot as plt
    import networkx as nx
    from matplotlib.lines import Line2D

    member_set, focus_set = set(members), set(focus)
    graph = nx.Graph()
    for sl, sid, tl, tid in edges:
        graph.add_edge((sl, str(sid)), (tl, str(tid)))
    if ax is None:
        fig, ax = plt.subplots(figsize=(10, 7))
    else:
        fig = ax.figure  # type: ignore[assignment]
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    if graph.number_of_nodes() == 0:
        ax.text(0.5, 0.5, "nothing to draw", ha="center", va="center")
        return fig
    pos = nx.spring_layout(graph, seed=seed, k=1.5 / max(1.0, graph.number_of_nodes() ** 0.5))
    nx.draw_networkx_edges(graph, pos, ax=ax, width=0.8,
                           alpha=0.3 if graph.number_of_edges() < 300 else 0.12)

    def group(node: tuple[str, str]) -> str:
        label, key = node
        if label != "Account":
            return label
        return "focus" if key in focus_set else "member" if key in member_set else "Account"

    groups: dict[str, list[tuple[str, str]]] = {}
    for node in graph.nodes:
        groups.setdefault(group(node), []).append(node)
    handles = []
    for name, nodes in sorted(groups.items()):
        colour, marker, size = _STYLE.get(name, ("#17becf", "o", 90.0))
        nx.draw_networkx_nodes(graph, pos, nodelist=nodes, ax=ax, node_color=colour,
                               node_shape=marker, node_size=size, alpha=0.9,
                               edgecolors="black" if name == "focus" else None)
        text = _LEGEND.get(name, name)
        handles.append(Line2D([], [], color=colour, marker=marker, linestyle="",
                              markersize=8, label=f"{text} ({len(nodes)})"))

    def priority(node: tuple[str, str]) -> tuple[int, int, str]:
        label, key = node
        near_org = any(n[0] in ("Organization", "ASN") for n in graph.neighbors(node))
        rank = _LABEL_RANK.get(label, 5)
        return (min(rank, 2) if near_org else rank, -int(graph.degree(node)), key)

    ips = sum(1 for n in graph.nodes if n[0] == "IP")
    entities = sorted((n for n in graph.nodes if n[0] != "Account"
                       and (n[0] != "IP" or ips <= 8 or priority(n)[0] <= 2)), key=priority)
    accounts = [n for n in graph.nodes if n[0] == "Account"]
    labels: dict[tuple[str, str], str] = {}
    for label, key in entities[:max_labels]:
        labels[(label, key)] = ((names or {}).get(key, key) if label == "Organization"
                                else mask_entity(label, key) or "")
    for node in accounts:
        if node[1] in focus_set or len(accounts) <= label_accounts:
            labels[node] = node[1]
    ys = [y for _, y in pos.values()]
    lift = 0.03 * ((max(ys) - min(ys)) or 1.0)
    nx.draw_networkx_labels(graph, {n: (x, y + lift) for n, (x, y) in pos.items()},
                            labels=labels, ax=ax, font_size=7)
    ax.legend(handles=handles, loc="upper left", fontsize=8, frameon=False)
    return fig


# --------------------------------------------------------------------------- %%cypher magic

_TOKENS = re.compile(
    r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|`[^`]*`|//[^\n]*|/\*.*?\*/"
    r"|\$(?P<name>[A-Za-z_][A-Za-z0-9_]*)|\$`(?P<quoted>[^`]+)`",
    re.S,
)


def cell_parameters(text: str) -> list[str]:
    """``$name`` parameters of Cypher text, outside strings and comments, in order."""
    found: list[str] = []
    for m in _TOKENS.finditer(text):
        name = m.group("name") or m.group("quoted")
        if name and name not in found:
            found.append(name)
    return found


def run_cell(line: str, cell: str, namespace: Mapping[str, Any]) -> pl.DataFrame:
    """The ``%%cypher [result_var]`` magic: ``$name`` parameters come from ``namespace``."""
    args = line.split()
    if len(args) > 1 or (args and not args[0].isidentifier()):
        raise NotebookError("usage: %%cypher [result_var]  (then the Cypher on the next lines)")
    params: dict[str, Any] = {}
    for name in cell_parameters(cell):
        if name not in namespace:
            raise NotebookError(f"%%cypher: ${name} has no value: define {name} in the notebook "
                                "first")
        params[name] = namespace[name]
    frame = cypher(cell, params)
    if args and isinstance(namespace, dict):
        namespace[args[0]] = frame
    return frame


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext attribution.notebook``: registers the ``%%cypher`` cell magic."""
    def cypher_magic(line: str, cell: str) -> pl.DataFrame:
        return run_cell(line, cell, ipython.user_ns)

    cypher_magic.__doc__ = run_cell.__doc__
    ipython.register_magic_function(cypher_magic, magic_kind="cell", magic_name="cypher")


# --------------------------------------------------------------------------- headless rendering


def resolve_notebook(name: str | Path) -> Path:
    """A notebook path, or a bare name (``02_fleet_dossier``) found in ``notebooks/``."""
    path = Path(name)
    candidates = [path, NOTEBOOKS_DIR / path, NOTEBOOKS_DIR / f"{path}.ipynb"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise NotebookError(f"no notebook {str(name)!r} (looked in . and {NOTEBOOKS_DIR})")


def _is_parameters(cell: Any, tag: str = "parameters") -> bool:
    return cell.get("cell_type") == "code" and tag in cell.get("metadata", {}).get("tags", [])


def notebook_parameters(nb: NotebookNode) -> dict[str, Any]:
    """Names and default values assigned in the cell tagged ``parameters``."""
    cell = next((c for c in nb.cells if _is_parameters(c)), None)
    if cell is None:
        return {}
    try:
        tree = ast.parse(cell.source)
    except SyntaxError as exc:
        raise NotebookError(f"the parameters cell is not plain Python: {exc}") from exc
    out: dict[str, Any] = {}
    for stmt in tree.body:
        targets = stmt.targets if isinstance(stmt, ast.Assign) else (
            [stmt.target] if isinstance(stmt, ast.AnnAssign) and stmt.value else [])
        value = getattr(stmt, "value", None)
        for target in targets:
            if isinstance(target, ast.Name) and value is not None:
                try:
                    out[target.id] = ast.literal_eval(value)
                except ValueError:
                    out[target.id] = None
    return out


def _literal(name: str, value: Any) -> str:
    """``name = value`` as code; only plain literals (a parameter must not carry code)."""
    text = repr(value)
    try:
        same = ast.literal_eval(text) == value
    except (ValueError, SyntaxError):
        same = False
    if not same:
        raise NotebookError(f"parameter {name} must be a plain literal (str, number, bool, "
                            f"None, list, dict), not {type(value).__name__}")
    return f"{name} = {text}"


def inject_parameters(nb: NotebookNode, parameters: Mapping[str, Any]) -> NotebookNode:
    """Add an ``injected-parameters`` cell after the ``parameters`` cell (papermill-style).

    Unknown names are refused: a typo would otherwise silently run the defaults.
    """
    import nbformat

    declared = notebook_parameters(nb)
    unknown = sorted(set(parameters) - set(declared))
    if unknown:
        raise NotebookError(f"no parameter {', '.join(unknown)} in this notebook "
                            f"(parameters: {', '.join(declared) or 'none'})")
    nb.cells = [c for c in nb.cells if not _is_parameters(c, "injected-parameters")]
    if not parameters:
        return nb
    source = "# Parameters\n" + "\n".join(_literal(k, v) for k, v in parameters.items()) + "\n"
    cell = nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]})
    cell.id = "injected-parameters"
    index = next((i + 1 for i, c in enumerate(nb.cells) if _is_parameters(c)), 0)
    nb.cells.insert(index, cell)
    return nb


def _kernel_manager(kernel_name: str) -> Any:
    """A kernel manager that runs ``kernel_name`` ('python3': this very interpreter).

    Only ipykernel's own spec is offered for python3, so a stray user-level
    kernelspec cannot run the notebook in an environment without ``attribution``.
    """
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    specs = KernelSpecManager(kernel_dirs=[]) if kernel_name == "python3" else KernelSpecManager()
    return KernelManager(kernel_name=kernel_name, kernel_spec_manager=specs)


def execute(notebook: str | Path, parameters: Mapping[str, Any] | None = None, *,
            timeout: int = RENDER_TIMEOUT, kernel_name: str = "python3",
            on_error: Callable[[NotebookNode], None] | None = None) -> NotebookNode:
    """Execute a notebook headless (in its own folder) and return it with its outputs.

    A failing cell raises ``NotebookError`` naming the cell; ``on_error`` first
    gets the partly executed notebook (to save what ran).
    """
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    path = resolve_notebook(notebook)
    nb = inject_parameters(nbformat.read(path, as_version=4), dict(parameters or {}))
    client = NotebookClient(nb, timeout=timeout, kernel_name=kernel_name,
                            km=_kernel_manager(kernel_name),
                            # the kernel's own log (e.g. "running over TCP") is not the report's
                            extra_arguments=["--IPKernelApp.log_level=ERROR"],
                            resources={"metadata": {"path": str(path.parent.resolve())}})
    try:
        client.execute()
    except (CellExecutionError, CellTimeoutError, DeadKernelError) as exc:
        if on_error is not None:
            on_error(nb)
        raise NotebookError(f"{path.name}: {_failed_cell(nb) or _line(exc)}") from exc
    return nb


def _failed_cell(nb: NotebookNode) -> str | None:
    for index, cell in enumerate(nb.cells):
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                return f"cell {index} failed: {output.get('ename')}: {output.get('evalue')}"
    return None


def to_html(nb: NotebookNode, *, no_input: bool = False) -> str:
    """The notebook as one self-contained HTML page (figures embedded as PNG)."""
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="lab")
    exporter.exclude_input = no_input
    exporter.exclude_input_prompt = no_input
    body, _ = exporter.from_notebook_node(nb)
    return body


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def render(notebook_path: str | Path, out_html: str | Path,
           parameters: Mapping[str, Any] | None = None, *, no_input: bool = False,
           timeout: int = RENDER_TIMEOUT) -> NotebookNode:
    """Execute a notebook with ``parameters`` and write it as HTML with its outputs.

    On a failing cell the HTML is still written (it shows the error), then
    ``NotebookError`` is raised.
    """
    out = Path(out_html)

    def save_partial(nb: NotebookNode) -> None:
        _write_atomic(out, to_html(nb, no_input=no_input))

    nb = execute(notebook_path, parameters, timeout=timeout, on_error=save_partial)
    if parameters:  # the page title says which fleet / organization / account it is about
        shown = ", ".join(f"{k}={v}" for k, v in parameters.items())
        nb.metadata["title"] = f"{_title(nb) or Path(notebook_path).stem} ({shown})"
    _write_atomic(out, to_html(nb, no_input=no_input))
    return nb


# --------------------------------------------------------------------------- command line


def _cli_value(text: str, default: Any) -> Any:
    """A ``-p`` value typed after the notebook's default (ids stay text even if numeric)."""
    if text in ("None", "null") and not isinstance(default, str):
        return None
    if isinstance(default, bool):
        if text.lower() in ("true", "1", "yes"):
            return True
        if text.lower() in ("false", "0", "no"):
            return False
        raise NotebookError(f"expected true or false, got {text!r}")
    if isinstance(default, int | float):
        try:
            return type(default)(text)
        except ValueError:
            raise NotebookError(f"expected a {type(default).__name__}, got {text!r}") from None
    if isinstance(default, list | dict):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise NotebookError(f"expected JSON, got {text!r}") from exc
    return text


def _render_command(args: argparse.Namespace) -> int:
    """``notebook render``: 0 written, 2 bad usage or no Neo4j settings, 1 a cell failed."""
    try:
        for module in ("nbformat", "nbclient", "nbconvert", "ipykernel"):
            try:
                __import__(module)
            except ImportError:
                raise NotebookError(f"rendering needs the notebook extra ({module} is not "
                                    f"installed): {EXTRA_HINT}") from None
        path = resolve_notebook(args.notebook)
        defaults = notebook_parameters(_read_plain(path))
        params: dict[str, Any] = {}
        for name, text in args.parameter or []:
            if name not in defaults:
                raise NotebookError(f"{path.name} has no parameter {name} "
                                    f"(parameters: {', '.join(defaults) or 'none'})")
            try:
                params[name] = _cli_value(text, defaults[name])
            except NotebookError as exc:
                raise NotebookError(f"parameter {name}: {exc}") from None
        settings()
    except NotebookError as exc:
        print(f"notebook render: {exc}", file=sys.stderr)
        return 2
    try:
        render(path, args.out, params, no_input=args.no_input, timeout=args.timeout)
    except NotebookError as exc:
        print(f"notebook render: {exc} (partial HTML in {args.out})"
              if Path(args.out).exists() else f"notebook render: {exc}", file=sys.stderr)
        return 1
    if not args.quiet:
        print(f"notebook render: wrote {args.out}")
    return 0


def _title(nb: NotebookNode) -> str:
    """The notebook's ``metadata.title`` (also the HTML page title), else its first heading."""
    title = nb.metadata.get("title")
    if title:
        return str(title)
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return ""


class _Plain(dict[str, Any]):
    """A notebook's JSON with attribute access, as nbformat gives it: reading a
    notebook's title and parameters needs no notebook extra."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def _read_plain(path: Path) -> Any:
    """An ``.ipynb`` (format 4) read as plain JSON, sources joined like nbformat's."""
    def node(value: Any, key: str = "") -> Any:
        if isinstance(value, dict):
            return _Plain({k: node(v, k) for k, v in value.items()})
        if isinstance(value, list):
            return "".join(value) if key == "source" else [node(v) for v in value]
        return value

    try:
        return node(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError) as exc:
        raise NotebookError(f"cannot read {path}: {exc}") from None


def _list_command(args: argparse.Namespace) -> int:
    """``notebook list``: each notebook with its title and parameters (no extra needed)."""
    folder = Path(args.dir) if args.dir else NOTEBOOKS_DIR
    paths = sorted(folder.glob("*.ipynb"))
    if not paths:
        print(f"notebook list: no notebooks in {folder}", file=sys.stderr)
        return 2
    for path in paths:
        nb = _read_plain(path)
        params = ", ".join(f"{k}={v!r}" for k, v in notebook_parameters(nb).items())
        print(f"{path.stem:<22} {_title(nb)}")
        print(f"{'':<22} parameters: {params or 'none'}")
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``notebook render`` and ``notebook list`` to the ``attribution`` command."""
    parser = subparsers.add_parser(
        "notebook", help="render the analysts' notebooks headless, or list them",
        description="The analysts' Jupyter notebooks (notebooks/), read from the Neo4j of "
        "NEO4J_URI / NEO4J_USER / NEO4J_PASSWORD / NEO4J_DATABASE.")
    sub = parser.add_subparsers(dest="notebook_command", required=True, metavar="COMMAND")
    render_p = sub.add_parser(
        "render", help="execute a notebook and write it as HTML with its outputs",
        description="Execute NOTEBOOK headless (parameters injected after its cell tagged "
        "'parameters') and write HTML with every table and figure. Exit 0 written, 1 a cell "
        "failed (the HTML shows it), 2 bad usage.")
    render_p.add_argument("notebook", help="a .ipynb path, or a name in notebooks/ "
                          "such as 02_fleet_dossier")
    render_p.add_argument("--out", required=True, type=Path, help="the HTML file to write")
    render_p.add_argument("-p", "--parameter", nargs=2, action="append",
                          metavar=("NAME", "VALUE"),
                          help="set a parameter (typed like its default; repeatable)")
    render_p.add_argument("--no-input", action="store_true",
                          help="leave the code out of the HTML (for readers, not analysts)")
    render_p.add_argument("--timeout", type=int, default=RENDER_TIMEOUT,
                          help=f"seconds per cell (default {RENDER_TIMEOUT})")
    render_p.add_argument("--quiet", action="store_true", help="print nothing on success")
    render_p.set_defaults(handler=_render_command)
    list_p = sub.add_parser("list", help="the notebooks with their titles and parameters")
    list_p.add_argument("--dir", default=None, help=f"folder (default {NOTEBOOKS_DIR})")
    list_p.set_defaults(handler=_list_command)
