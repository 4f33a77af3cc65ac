"""The Neo4j store: the property graph and every run's results in one Neo4j database.

Graph model (one node per key, uniqueness constraints on every key)::

    (:Account {every accounts column})
      -[:USES_PAYMENT|USES_DEVICE|USES_IP|SIGNED_UP_FROM|HAS_EMAIL_DOMAIN|USES_PROMPT
        {first_seen, last_seen, count}]->
    (:PaymentMethod {fingerprint, ...}) (:Device {device_id, ...}) (:IP {ip, asn, ...})
    (:EmailDomain {domain}) (:PromptTemplate {prompt_hash})
    (:IP)-[:IN_ASN]->(:ASN {asn})   (:IP)-[:EXIT_OF]->(:Proxy {proxy_id, ...})
    (entity)-[:KNOWN_AS {entity_type, entity_id, source, confidence, observed_at, kind, key}]
      ->(:Organization {org_id, ...})

``ASN.asn`` is text (the form ``known_links`` name it in); ``IP.asn`` keeps the
integer column. A node that is a row of a ``PropertyGraph`` frame carries all
its columns; a node that only ends a relationship (an IP seen in exchanges but
absent from ``ips``) carries its key only.

Replacing the graph: *stamp and sweep*. A graph's stamp is its snapshot digest
plus a hash of its frames. Every node and relationship a load writes gets
``_snapshot = stamp`` (rows of a frame also ``_row = stamp``); after the last
batch, what carries another stamp is deleted, except nodes that run results
still point at, which are stripped to their key. A ``(:GraphState)`` node
records digest, stamp and whether the load finished: ``read_graph`` refuses a
graph whose load did not finish, and re-running that load completes it (every
batch is an idempotent ``MERGE``). A graph already loaded whole under the same
stamp is not sent again. Column dtypes are kept on the state node as empty
Arrow IPC frames, so ``read_graph`` returns exactly the loaded frames.

Runs::

    (:Run {run_id, manifest (JSON), complete})   one of them also :Current
    (:Fleet {fleet_id, run_id, seq, every fleets column})   key (fleet_id, run_id)
    (:Account)-[:SCORED {run_id, seq, every assignments column}]->(:Run)
    (:Account)-[:MEMBER_OF {run_id, sybil_score}]->(:Fleet)
    (:Fleet)-[:ATTRIBUTED_TO {run_id, confidence}]->(:Organization)
    (:Evidence {run_id, seq, fleet_id, org_id, kind, detail, weight})-[:SUPPORTS]->(:Fleet)

``seq`` is the row's position in its table, so results come back in the order
written. A run is written stamped with its ``run_id`` and becomes current only
in one final transaction that checks the counts and moves ``:Current``;
readers go through ``:Current`` and see the old run or the new one, never
half. One writer at a time: a run left incomplete by a failure (or a ``kill
-9``) is deleted by the next ``recover`` or ``write_run``. Unlike the embedded
store, the graph is not versioned with the runs: a load killed half-way leaves
the current run whole and served, and the graph unfinished until a load of a
snapshot completes it.

All Cypher is constant text: templates below are expanded at import time over
a fixed table of labels and relationship types, and data only ever travels as
parameters.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import hashlib
import io
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal, LiteralString, TypeVar

import polars as pl
import pyarrow as pa
from neo4j import Driver, GraphDatabase, ManagedTransaction, Session
from neo4j import time as neo4j_time
from neo4j.exceptions import (
    AuthError,
    ClientError,
    ConfigurationError,
    ConnectionAcquisitionTimeoutError,
    DatabaseUnavailable,
    IncompleteCommit,
    ServiceUnavailable,
    SessionExpired,
)

from attribution.graph import PropertyGraph
from attribution.progress import checkpoint
from attribution.results import RunRecord
from attribution.settings import Neo4jSettings
from attribution.vocabulary import ENTITY_KINDS, LINK_KIND

log = logging.getLogger(__name__)

KeepRuns = Literal["all", "current"]
T = TypeVar("T")

# Measured with bench/neo4j_load.py (2 cores shared with other work, so noisy):
# 20k accounts, 244k rows, pure-Python driver: 1k rows per transaction 5.7k rows/s,
# 5k 6.3-6.5k, 10k 7.4-8.6k, 20k 4.6k; with neo4j-rust-ext 8.4k / 12.8k / 10.7k /
# 6.0k; 200k accounts, 2.59M rows, rust-ext: 5k 9.4k, 10k 11.1k. 10k it is: the
# plateau is 5k-10k, and larger batches only hold larger transactions.
DEFAULT_BATCH_SIZE = 10_000
DEFAULT_PAGE_SIZE = 10_000
RESERVED = ("_snapshot", "_row")


class StoreError(RuntimeError):
    """The Neo4j store cannot do what was asked (bad settings, unfinished load, ...)."""


class StoreUnavailable(StoreError):
    """The Neo4j server cannot be reached, or went away during the work."""


# --------------------------------------------------------------------------- queries

# label -> key property: the fixed vocabulary every per-label query is made from.
NODE_KEYS: dict[LiteralString, LiteralString] = {
    "Account": "account_id",
    "PaymentMethod": "fingerprint",
    "Device": "device_id",
    "IP": "ip",
    "Proxy": "proxy_id",
    "ASN": "asn",
    "EmailDomain": "domain",
    "PromptTemplate": "prompt_hash",
    "Organization": "org_id",
}
# PropertyGraph node frames -> label.
FRAME_LABEL: dict[str, LiteralString] = {
    "accounts": "Account",
    "payments": "PaymentMethod",
    "devices": "Device",
    "ips": "IP",
    "proxies": "Proxy",
    "organizations": "Organization",
}
# uses.kind -> (relationship type, entity label).
USE_REL: dict[str, tuple[LiteralString, LiteralString]] = {
    k.kind: (k.relationship, k.label) for k in ENTITY_KINDS if k.relationship is not None}
REL_KIND = {rel: kind for kind, (rel, _) in USE_REL.items()}
# known_links.kind -> label of the entity node.
LINK_LABEL: dict[str, LiteralString] = {
    k.kind: k.label for k in ENTITY_KINDS if k.kind in set(LINK_KIND.values())}


def _expand(template: LiteralString, **parts: LiteralString) -> LiteralString:
    """Fill ``<NAME>`` slots of a query template with fixed vocabulary (never data)."""
    for name, value in parts.items():
        template = template.replace(f"<{name}>", value)
    return template


def _per_label(template: LiteralString) -> dict[str, LiteralString]:
    return {label: _expand(template, L=label, K=key) for label, key in NODE_KEYS.items()}


def _key_constraint(label: LiteralString, key: LiteralString) -> LiteralString:
    return _expand(
        "CREATE CONSTRAINT <l>_key IF NOT EXISTS FOR (n:<L>) REQUIRE n.<K> IS UNIQUE",
        l=label.lower(), L=label, K=key,
    )


SCHEMA: tuple[LiteralString, ...] = (
    *(_key_constraint(label, key) for label, key in NODE_KEYS.items()),
    "CREATE CONSTRAINT graphstate_key IF NOT EXISTS FOR (n:GraphState) REQUIRE n.id IS UNIQUE",
    "CREATE CONSTRAINT run_key IF NOT EXISTS FOR (n:Run) REQUIRE n.run_id IS UNIQUE",
    "CREATE CONSTRAINT fleet_key IF NOT EXISTS "
    "FOR (n:Fleet) REQUIRE (n.fleet_id, n.run_id) IS UNIQUE",
    "CREATE CONSTRAINT evidence_key IF NOT EXISTS "
    "FOR (n:Evidence) REQUIRE (n.run_id, n.seq) IS UNIQUE",
    "CREATE INDEX fleet_run IF NOT EXISTS FOR (n:Fleet) ON (n.run_id, n.seq)",
    "CREATE INDEX scored_run IF NOT EXISTS FOR ()-[r:SCORED]-() ON (r.run_id, r.seq)",
    "CREATE INDEX member_run IF NOT EXISTS FOR ()-[r:MEMBER_OF]-() ON (r.run_id)",
)
AWAIT_INDEXES: LiteralString = "CALL db.awaitIndexes(300)"

# Timestamps travel as [epoch seconds, nanoseconds] pairs (the driver's own temporal
# types cost 20x an integer each way) and are stored as Neo4j DATETIME values.
SET_TIMES: LiteralString = (
    " WITH * CALL (<V>, row) {"
    " UNWIND [k IN keys(row.ts) WHERE row.ts[k] IS NOT NULL] AS k"
    " SET <V>[k] = datetime({epochSeconds: row.ts[k][0], nanosecond: row.ts[k][1]}) }"
)
# Reads come in pages of columns: one record per page holding, for the columns
# named in $cols / $times (from the stored dtypes), a list of values each, so no
# property name travels per row and the client has nothing to transpose.
# DATETIME values come as floor epoch seconds and nanoseconds (epochSeconds
# truncates towards zero before 1970). A page is the rows with key >= $after;
# with $skip the first is dropped when it is $after (the last of the page before).
PAGE: LiteralString = (
    "WITH collect(<V>) AS got "
    "WITH got, CASE WHEN $skip AND size(got) > 0 AND got[0].<K> = $after"
    " THEN got[1..] ELSE got END AS page "
)
COLUMNS: LiteralString = (
    "[k IN $<P>cols | [x IN <R> | x[k]]] AS <P>values, "
    "[k IN $<P>times | [x IN <R> | x[k].epochSeconds - CASE WHEN x[k].nanosecond > 0"
    " AND x[k] < datetime({epochSeconds: 0}) THEN 1 ELSE 0 END]] AS <P>seconds, "
    "[k IN $<P>times | [x IN <R> | x[k].nanosecond]] AS <P>nanos"
)


def _page(var: LiteralString, key: LiteralString) -> LiteralString:
    return _expand(PAGE, V=var, K=key)


def _columns(rows: LiteralString, prefix: LiteralString = "") -> LiteralString:
    """Columns of the nodes or relationships in list ``rows`` (see COLUMNS)."""
    return _expand(COLUMNS, R=rows, P=prefix)


def _times(var: LiteralString) -> LiteralString:
    return _expand(SET_TIMES, V=var)


UPSERT_ROWS = _per_label(
    "UNWIND $rows AS row MERGE (n:<L> {<K>: row.props.<K>}) "
    "SET n = row.props, n._snapshot = $stamp, n._row = $stamp" + _times("n")
)
TOUCH_NODES = _per_label(
    "UNWIND $keys AS key MERGE (n:<L> {<K>: key}) SET n._snapshot = $stamp"
)
UPSERT_USES = {
    kind: _expand(
        "UNWIND $rows AS row "
        "MATCH (a:Account {account_id: row.a}) MATCH (e:<L> {<K>: row.e}) "
        "MERGE (a)-[r:<T>]->(e) SET r = coalesce(row.props, {}), r._snapshot = $stamp"
        + _times("r"),
        L=label, K=NODE_KEYS[label], T=rel,
    )
    for kind, (rel, label) in USE_REL.items()
}
UPSERT_KNOWN = {
    kind: _expand(
        "UNWIND $rows AS row "
        "MATCH (e:<L> {<K>: row.key}) MATCH (o:Organization {org_id: row.org_id}) "
        "MERGE (e)-[r:KNOWN_AS {entity_type: row.props.entity_type, "
        "entity_id: row.props.entity_id}]->(o) "
        "SET r = row.props, r._snapshot = $stamp" + _times("r"),
        L=label, K=NODE_KEYS[label],
    )
    for kind, label in LINK_LABEL.items()
}
UPSERT_IN_ASN: LiteralString = (
    "UNWIND $rows AS row MATCH (i:IP {ip: row.ip}) MATCH (a:ASN {asn: row.asn}) "
    "MERGE (i)-[r:IN_ASN]->(a) SET r._snapshot = $stamp"
)
UPSERT_EXIT_OF: LiteralString = (
    "UNWIND $rows AS row MATCH (i:IP {ip: row.ip}) MATCH (p:Proxy {proxy_id: row.proxy_id}) "
    "MERGE (i)-[r:EXIT_OF]->(p) SET r._snapshot = $stamp"
)
# The sweep: three passes over the whole store, each in batches of its own
# transactions (an implicit transaction; every pass can simply be run again).
SWEEP_RELS: LiteralString = (
    "MATCH ()-[r]->() WHERE r._snapshot <> $stamp "
    "CALL (r) { DELETE r } IN TRANSACTIONS OF 10000 ROWS"
)
# Nodes of an older graph: gone, unless run results point at them.
SWEEP_NODES: LiteralString = (
    "MATCH (n) WHERE n._snapshot <> $stamp AND NOT EXISTS { (n)--() } "
    "CALL (n) { DELETE n } IN TRANSACTIONS OF 10000 ROWS"
)
# What remains of an older graph is stripped to its key (outside the graph now);
# a row of an older graph that is only a relationship end now loses its columns.
STRIP_NODES: LiteralString = (
    "MATCH (n) WHERE n._snapshot <> $stamp OR n._row <> $stamp "
    "CALL (n) { "
    "WITH n, CASE WHEN n:Account THEN {account_id: n.account_id}"
    " WHEN n:PaymentMethod THEN {fingerprint: n.fingerprint}"
    " WHEN n:Device THEN {device_id: n.device_id} WHEN n:IP THEN {ip: n.ip}"
    " WHEN n:Proxy THEN {proxy_id: n.proxy_id} WHEN n:ASN THEN {asn: n.asn}"
    " WHEN n:EmailDomain THEN {domain: n.domain}"
    " WHEN n:PromptTemplate THEN {prompt_hash: n.prompt_hash}"
    " WHEN n:Organization THEN {org_id: n.org_id} END AS key "
    "SET n = CASE WHEN n._snapshot = $stamp THEN key{.*, _snapshot: $stamp} ELSE key END "
    "} IN TRANSACTIONS OF 10000 ROWS"
)
# Nodes created only for run results, once no run points at them any more.
SWEEP_ORPHANS: LiteralString = (
    "MATCH (n) WHERE (n:Account OR n:Organization) AND n._snapshot IS NULL "
    "AND NOT EXISTS { (n)--() } CALL (n) { DELETE n } IN TRANSACTIONS OF 10000 ROWS"
)
BEGIN_LOAD: LiteralString = (
    "MERGE (g:GraphState {id: 'graph'}) "
    "SET g.digest = $digest, g.stamp = $stamp, g.complete = false, g.schema = $schema, "
    "g.load_started_at = datetime()"
)
FINISH_LOAD: LiteralString = (
    "MATCH (g:GraphState {id: 'graph'}) WHERE g.stamp = $stamp "
    "SET g.complete = true, g.counts = $counts, g.loaded_at = datetime() RETURN g.stamp AS s"
)
GRAPH_STATE: LiteralString = (
    "MATCH (g:GraphState {id: 'graph'}) "
    "RETURN g.digest AS digest, g.stamp AS stamp, g.complete AS complete, g.schema AS schema, "
    "g.counts AS counts"
)

READ_ROWS = _per_label(
    "MATCH (n:<L>) WHERE n.<K> >= $after AND n._row = $stamp "
    "WITH n ORDER BY n.<K> LIMIT $limit " + _page("n", "<K>")
    + "RETURN size(got) AS fetched, page[-1].<K> AS key, " + _columns("page")
)
USES_OF_PAGE: LiteralString = (
    "CALL (page) { UNWIND page AS a "
    "MATCH (a)-[r:USES_PAYMENT|USES_DEVICE|USES_IP|SIGNED_UP_FROM|HAS_EMAIL_DOMAIN|USES_PROMPT]"
    "->(e) RETURN collect(a.account_id) AS u_account, collect(type(r)) AS u_type, "
    "collect(CASE type(r) WHEN 'USES_PAYMENT' THEN e.fingerprint"
    " WHEN 'USES_DEVICE' THEN e.device_id WHEN 'HAS_EMAIL_DOMAIN' THEN e.domain"
    " WHEN 'USES_PROMPT' THEN e.prompt_hash ELSE e.ip END) AS u_entity, "
    "collect(r) AS rels } "
)
READ_ACCOUNTS: LiteralString = (
    "MATCH (a:Account) WHERE a.account_id >= $after AND a._snapshot = $stamp "
    "WITH a ORDER BY a.account_id LIMIT $limit " + _page("a", "account_id")
    + USES_OF_PAGE
    + "WITH got, page, [x IN page WHERE x._row = $stamp] AS rows, u_account, u_type, "
    "u_entity, rels "
    "RETURN size(got) AS fetched, page[-1].account_id AS key, " + _columns("rows") + ", "
    "u_account, u_type, u_entity, " + _columns("rels", "u")
)
READ_ORGANIZATIONS: LiteralString = (
    "MATCH (o:Organization) WHERE o.org_id >= $after AND o._snapshot = $stamp "
    "WITH o ORDER BY o.org_id LIMIT $limit " + _page("o", "org_id")
    + "CALL (page) { UNWIND page AS o MATCH (e)-[l:KNOWN_AS]->(o) WHERE l._snapshot = $stamp "
    "RETURN collect(o.org_id) AS l_org, collect(l) AS links } "
    "WITH got, page, [x IN page WHERE x._row = $stamp] AS rows, l_org, links "
    "RETURN size(got) AS fetched, page[-1].org_id AS key, " + _columns("rows") + ", "
    "l_org, " + _columns("links", "l")
)
COUNT_NODES: LiteralString = "MATCH (n) UNWIND labels(n) AS label RETURN label, count(*) AS n"
COUNT_RELS: LiteralString = "MATCH ()-[r]->() RETURN type(r) AS type, count(*) AS n"

RUN_STATE: LiteralString = (
    "MATCH (r:Run {run_id: $run_id}) RETURN r.complete AS complete, r:Current AS current"
)
BEGIN_RUN: LiteralString = (
    "MERGE (r:Run {run_id: $run_id}) "
    "SET r.complete = false, r.manifest = $manifest, r.schema = $schema, "
    "r.started_at = $started_at, r.finished_at = $finished_at, r.digest = $digest, "
    "r.previous_run_id = $previous_run_id, r.n_assignments = $n_assignments, "
    "r.n_fleets = $n_fleets, r.n_evidence = $n_evidence, r.write_started_at = datetime()"
)
WRITE_FLEETS: LiteralString = (
    "UNWIND $rows AS row MERGE (f:Fleet {fleet_id: row.props.fleet_id, run_id: $run_id}) "
    "SET f = row.props, f.run_id = $run_id" + _times("f")
)
WRITE_ATTRIBUTED: LiteralString = (
    "UNWIND $rows AS row MATCH (f:Fleet {fleet_id: row.fleet_id, run_id: $run_id}) "
    "MERGE (o:Organization {org_id: row.org_id}) "
    "MERGE (f)-[x:ATTRIBUTED_TO]->(o) SET x.run_id = $run_id, x.confidence = row.confidence"
)
WRITE_EVIDENCE: LiteralString = (
    "UNWIND $rows AS row MERGE (e:Evidence {run_id: $run_id, seq: row.props.seq}) "
    "SET e = row.props, e.run_id = $run_id" + _times("e") + " "
    "WITH e, row MATCH (f:Fleet {fleet_id: row.props.fleet_id, run_id: $run_id}) "
    "MERGE (e)-[:SUPPORTS]->(f)"
)
WRITE_ASSIGNMENTS: LiteralString = (
    "MATCH (r:Run {run_id: $run_id}) UNWIND $rows AS row "
    "MERGE (a:Account {account_id: row.props.account_id}) "
    "MERGE (a)-[s:SCORED]->(r) SET s = row.props, s.run_id = $run_id" + _times("s") + " "
    "WITH a, row WHERE row.props.fleet_id IS NOT NULL "
    "MATCH (f:Fleet {fleet_id: row.props.fleet_id, run_id: $run_id}) "
    "MERGE (a)-[m:MEMBER_OF]->(f) "
    "SET m.run_id = $run_id, m.sybil_score = row.props.sybil_score"
)
COUNT_RUN: LiteralString = (
    "MATCH (r:Run {run_id: $run_id}) "
    "RETURN COUNT { (r)<-[:SCORED]-() } AS assignments, "
    "COUNT { MATCH (f:Fleet) WHERE f.run_id = $run_id AND f.seq IS NOT NULL } AS fleets, "
    "COUNT { MATCH (e:Evidence) WHERE e.run_id = $run_id AND e.seq IS NOT NULL } AS evidence, "
    "r.n_assignments AS n_assignments, r.n_fleets AS n_fleets, r.n_evidence AS n_evidence, "
    "r.complete AS complete"
)
MAKE_CURRENT: LiteralString = (
    "MATCH (r:Run {run_id: $run_id}) "
    "OPTIONAL MATCH (old:Run:Current) WHERE old <> r "
    "REMOVE old:Current "
    "SET r:Current, r.complete = true, r.current_since = datetime() "
    "RETURN DISTINCT r.run_id AS run_id"
)
CURRENT_RUN: LiteralString = "MATCH (r:Run:Current) RETURN r.run_id AS run_id"
READ_RUN: LiteralString = (
    "MATCH (r:Run {run_id: $run_id}) WHERE r.complete "
    "RETURN r.manifest AS manifest, r.schema AS schema"
)
LIST_RUNS: LiteralString = "MATCH (r:Run) WHERE r.complete RETURN r.manifest AS manifest"
RUNS_TO_DROP: LiteralString = (
    "MATCH (r:Run) WHERE NOT r:Current AND (r.complete = false OR $old_complete) "
    "AND r.run_id <> $keep RETURN r.run_id AS run_id"
)
READ_FLEETS: LiteralString = (
    "MATCH (f:Fleet) WHERE f.run_id = $run_id AND f.seq >= $after "
    "WITH f ORDER BY f.run_id, f.seq LIMIT $limit " + _page("f", "seq")
    + "RETURN size(got) AS fetched, page[-1].seq AS key, " + _columns("page")
)
READ_EVIDENCE: LiteralString = (
    "MATCH (e:Evidence) WHERE e.run_id = $run_id AND e.seq >= $after "
    "WITH e ORDER BY e.run_id, e.seq LIMIT $limit " + _page("e", "seq")
    + "RETURN size(got) AS fetched, page[-1].seq AS key, " + _columns("page")
)
READ_ASSIGNMENTS: LiteralString = (
    "MATCH ()-[s:SCORED]->() WHERE s.run_id = $run_id AND s.seq >= $after "
    "WITH s ORDER BY s.run_id, s.seq LIMIT $limit " + _page("s", "seq")
    + "RETURN size(got) AS fetched, page[-1].seq AS key, " + _columns("page")
)
DROP_RUN_STEPS: tuple[LiteralString, ...] = (
    "MATCH ()-[m:MEMBER_OF]->() WHERE m.run_id = $run_id "
    "CALL (m) { DELETE m } IN TRANSACTIONS OF 10000 ROWS",
    "MATCH ()-[s:SCORED]->() WHERE s.run_id = $run_id AND s.seq IS NOT NULL "
    "CALL (s) { DELETE s } IN TRANSACTIONS OF 10000 ROWS",
    "MATCH (e:Evidence) WHERE e.run_id = $run_id AND e.seq IS NOT NULL "
    "CALL (e) { DETACH DELETE e } IN TRANSACTIONS OF 10000 ROWS",
    "MATCH (f:Fleet) WHERE f.run_id = $run_id AND f.seq IS NOT NULL "
    "CALL (f) { DETACH DELETE f } IN TRANSACTIONS OF 1000 ROWS",
    "MATCH (r:Run {run_id: $run_id}) WHERE NOT r:Current DETACH DELETE r",
)

# --------------------------------------------------------------------------- the store


class Neo4jStore:
    """Neo4j implementation of ``attribution.store.Store``.

    >>> store = Neo4jStore(Neo4jSettings.from_env())  # doctest: +SKIP
    >>> store.load_snapshot(graph, digest="sha256...")  # doctest: +SKIP
    """

    name = "neo4j"
    named_queries = True

    def __init__(
        self,
        settings: Neo4jSettings,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        page_size: int = DEFAULT_PAGE_SIZE,
        keep_runs: KeepRuns = "all",
        retry_seconds: float = 15.0,
        retries: int = 3,
        driver: Driver | None = None,
    ) -> None:
        if batch_size < 1 or page_size < 2:
            raise ValueError("batch_size must be >= 1 and page_size >= 2")
        if keep_runs not in ("all", "current"):
            raise ValueError(f"keep_runs must be 'all' or 'current', not {keep_runs!r}")
        self.settings = settings
        self.batch_size = batch_size
        self.page_size = page_size
        self.keep_runs: KeepRuns = keep_runs
        self.retries = retries
        self._schema_ready = False
        if driver is not None:
            self._driver = driver
        else:
            try:
                self._driver = GraphDatabase.driver(
                    settings.uri,
                    auth=(settings.user, settings.password),
                    max_transaction_retry_time=retry_seconds,
                    connection_timeout=min(retry_seconds, 30.0),
                    connection_acquisition_timeout=max(retry_seconds, 5.0),
                    # the store's own queries are vetted; "unknown label" on an empty
                    # database is expected, not worth a warning per query
                    notifications_min_severity="OFF",
                )
            except (ConfigurationError, ValueError) as exc:
                raise StoreError(f"bad Neo4j settings ({settings.uri}): {_line(exc)}") from exc
        self._guarded(lambda: self._driver.verify_connectivity())

    @property
    def location(self) -> str:
        return f"neo4j:{self.settings.uri}/{self.settings.database}"

    @property
    def path(self) -> None:
        return None

    def job_lock_path(self, home: Path) -> Path:
        # In $ATTRIBUTION_HOME: two hosts against one Neo4j are not refused (README).
        return Path(home) / "neo4j-job.lock"

    def verdict_log_path(self, home: Path) -> Path:
        return Path(home) / "verdicts.jsonl"

    # ----------------------------------------------------------------- plumbing

    def _unavailable(self, exc: BaseException) -> StoreUnavailable:
        return StoreUnavailable(f"Neo4j at {self.settings.uri} is unavailable: {_line(exc)}")

    def _guarded(self, work: Callable[[], T]) -> T:
        """Run ``work``, resending it after ``IncompleteCommit`` and mapping driver errors.

        Every unit of work here is idempotent (MERGE, or SET to fixed values), so
        a commit whose outcome is unknown is simply sent again.
        """
        for attempt in range(self.retries + 1):
            try:
                return work()
            except IncompleteCommit as exc:
                if attempt == self.retries:
                    raise self._unavailable(exc) from exc
                log.warning("commit outcome unknown (%s); resending the batch", _line(exc))
            except (ServiceUnavailable, SessionExpired, ConnectionAcquisitionTimeoutError,
                    DatabaseUnavailable, OSError) as exc:
                raise self._unavailable(exc) from exc
            except AuthError as exc:
                raise StoreUnavailable(
                    f"Neo4j at {self.settings.uri} refused the credentials of user "
                    f"{self.settings.user!r}: {_line(exc)}") from exc
            except ClientError as exc:
                if "DatabaseNotFound" in str(exc.code):
                    raise StoreError(f"Neo4j at {self.settings.uri} has no database "
                                     f"{self.settings.database!r}") from exc
                raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _session(self) -> Session:
        return self._driver.session(database=self.settings.database)

    def _write(self, query: LiteralString, **params: Any) -> list[dict[str, Any]]:
        """One managed write transaction (retried by the driver, resent on unknown commit)."""
        def work() -> list[dict[str, Any]]:
            with self._session() as session:
                return session.execute_write(_records, query, params)
        return self._guarded(work)

    def _read(self, query: LiteralString, **params: Any) -> list[dict[str, Any]]:
        def work() -> list[dict[str, Any]]:
            with self._session() as session:
                return session.execute_read(_records, query, params)
        return self._guarded(work)

    def _write_batches(self, query: LiteralString, rows: pl.DataFrame, **params: Any) -> None:
        """``UNWIND $rows`` in batches of ``batch_size`` rows, one transaction each."""
        for start in range(0, rows.height, self.batch_size):
            chunk = rows.slice(start, self.batch_size).to_dicts()
            self._write(query, rows=chunk, **params)

    def _write_keys(self, query: LiteralString, keys: list[Any], **params: Any) -> None:
        for start in range(0, len(keys), self.batch_size):
            self._write(query, keys=keys[start:start + self.batch_size], **params)

    def _pages(self, query: LiteralString, start: Any, **params: Any
               ) -> Iterator[dict[str, Any]]:
        """Keyset pagination (``key >= $after ORDER BY key LIMIT $limit``), a read each.

        Each page is one record of columns (see ``PAGE``); ``key`` is its last key.
        """
        after, skip = start, False
        while True:
            rows = self._read(query, after=after, skip=skip, limit=self.page_size, **params)
            page = rows[0]
            yield page
            if page["fetched"] < self.page_size or page["key"] is None:
                return
            after, skip = page["key"], True

    def ensure_schema(self) -> None:
        """Create every constraint and index (IF NOT EXISTS), once per store object."""
        if self._schema_ready:
            return
        for statement in SCHEMA:
            self._auto(statement)
        self._auto(AWAIT_INDEXES)
        self._schema_ready = True

    def _auto(self, query: LiteralString, **params: Any) -> None:
        """An implicit transaction: schema commands and ``CALL {} IN TRANSACTIONS`` need one.

        Only for statements that may simply be run again after a failure.
        """
        def work() -> None:
            with self._session() as session:
                session.run(query, params).consume()
        self._guarded(work)

    # ----------------------------------------------------------------- graph

    def load_snapshot(self, graph: PropertyGraph, *, digest: str, force: bool = False
                      ) -> dict[str, int]:
        """MERGE the graph in batches, then sweep what an older graph left.

        The graph is stamped with its *stamp*: the snapshot digest and a hash of
        the frames (the same snapshot read by another engine version may give
        another graph). A graph already loaded whole under the same stamp is not
        sent again unless ``force``.
        """
        self.ensure_schema()
        frames = graph.frames()
        for name, frame in frames.items():
            clash = [c for c in frame.columns if c in RESERVED]
            if clash:
                raise StoreError(f"frame {name} has reserved column(s) {', '.join(clash)}")
        counts = {name: frame.height for name, frame in frames.items()}
        stamp = _stamp(graph, digest)
        state = self.graph_state()
        loaded = state is not None and state["stamp"] == stamp and bool(state["complete"])
        if loaded and not force:
            return counts
        schema = json.dumps({name: _schema_blob(frame) for name, frame in frames.items()})
        self._write(BEGIN_LOAD, digest=digest, stamp=stamp, schema=schema)

        for name, label in FRAME_LABEL.items():
            self._write_batches(UPSERT_ROWS[label], _payload(frames[name]), stamp=stamp)
        for label, keys in _endpoint_keys(graph).items():
            self._write_keys(TOUCH_NODES[label], keys, stamp=stamp)

        uses = graph.uses
        unknown = set(uses["kind"].unique().to_list()) - set(USE_REL)
        if unknown:
            raise StoreError(f"uses has unknown kind(s): {', '.join(sorted(map(str, unknown)))}")
        for kind in USE_REL:
            part = _payload(uses.filter(pl.col("kind") == kind),
                            a="account_id", e="entity_id", drop=("kind",))
            self._write_batches(UPSERT_USES[kind], part, stamp=stamp)

        ips = graph.ips
        in_asn = ips.filter(pl.col("asn").is_not_null()).select(
            "ip", pl.col("asn").cast(pl.String))
        self._write_batches(UPSERT_IN_ASN, in_asn, stamp=stamp)
        exit_of = ips.filter(pl.col("proxy_id").is_not_null()).select("ip", "proxy_id")
        self._write_batches(UPSERT_EXIT_OF, exit_of, stamp=stamp)

        links = graph.known_links
        unknown = set(links["kind"].unique().to_list()) - set(LINK_LABEL)
        if unknown:
            raise StoreError("known_links has unresolvable kind(s): "
                             + ", ".join(sorted(map(str, unknown))))
        for kind in LINK_LABEL:
            part = _payload(links.filter(pl.col("kind") == kind), org_id="org_id",
                            key="key", keep=("key",))
            self._write_batches(UPSERT_KNOWN[kind], part, stamp=stamp)

        checkpoint("load:rows")  # every batch merged, nothing of the older graph swept
        if not loaded:
            self._sweep(stamp)
        checkpoint("load:swept")  # swept, not marked complete
        done = self._write(FINISH_LOAD, stamp=stamp, counts=json.dumps(counts))
        if not done:
            raise StoreError("another load replaced the graph while this one ran")
        return counts

    def _sweep(self, stamp: str) -> None:
        for query in (SWEEP_RELS, SWEEP_NODES, STRIP_NODES):
            self._auto(query, stamp=stamp)

    def graph_state(self) -> dict[str, Any] | None:
        """The last load's digest, whether it finished, its dtypes and counts."""
        rows = self._read(GRAPH_STATE)
        return rows[0] if rows else None

    def graph_digest(self) -> str | None:
        """Digest of the loaded snapshot (None if none, or if its load did not finish)."""
        state = self.graph_state()
        return str(state["digest"]) if state and state["complete"] else None

    def read_graph(self) -> PropertyGraph:
        """The graph of the last complete load, read page by page."""
        state = self.graph_state()
        if state is None:
            raise StoreError("no graph loaded in Neo4j yet")
        stamp = state["stamp"]
        if not state["complete"]:
            raise StoreError(f"the load of snapshot {str(state['digest'])[:12]} did not finish; "
                             "run it again to complete it")
        schemas = {name: _schema_from_blob(blob)
                   for name, blob in json.loads(state["schema"]).items()}

        accounts = _Columns(schemas["accounts"])
        uses = _Columns(schemas["uses"], fixed=("account_id", "kind", "entity_id"))
        for page in self._pages(READ_ACCOUNTS, "", stamp=stamp, **accounts.params(),
                                **uses.params("u")):
            accounts.extend(page)
            kinds = [REL_KIND[t] for t in page["u_type"]]
            uses.extend(page, "u", (page["u_account"], kinds, page["u_entity"]))
        organizations = _Columns(schemas["organizations"])
        links = _Columns(schemas["known_links"], fixed=("org_id",))
        for page in self._pages(READ_ORGANIZATIONS, "", stamp=stamp,
                                **organizations.params(), **links.params("l")):
            organizations.extend(page)
            links.extend(page, "l", (page["l_org"],))
        frames = {"accounts": accounts.frame(), "uses": uses.frame(),
                  "organizations": organizations.frame(), "known_links": links.frame()}
        for name in ("payments", "devices", "ips", "proxies"):
            columns = _Columns(schemas[name])
            for page in self._pages(READ_ROWS[FRAME_LABEL[name]], "", stamp=stamp,
                                    **columns.params()):
                columns.extend(page)
            frames[name] = columns.frame()
        return PropertyGraph.from_frames(frames)

    def stats(self) -> dict[str, dict[str, int]]:
        """Node counts by label and relationship counts by type (for tests and benchmarks)."""
        nodes = {r["label"]: int(r["n"]) for r in self._read(COUNT_NODES)}
        rels = {r["type"]: int(r["n"]) for r in self._read(COUNT_RELS)}
        return {"nodes": {k: v for k, v in nodes.items() if v},
                "relationships": {k: v for k, v in rels.items() if v}}

    # ----------------------------------------------------------------- runs

    def write_run(self, record: RunRecord) -> None:
        """Write the run stamped with its id, then make it current in one transaction."""
        self.ensure_schema()
        run_id = record.run_id
        existing = self._read(RUN_STATE, run_id=run_id)
        if existing and existing[0]["complete"]:
            raise StoreError(f"run {run_id} is already stored")
        # Leftovers of failed writes (this run's included) are invisible: drop them.
        for row in self._read(RUNS_TO_DROP, keep="", old_complete=False):
            self._drop_run(row["run_id"])

        assignments = _with_seq(record.assignments)
        fleets = _with_seq(record.fleets)
        evidence = _with_seq(record.evidence)
        manifest = record.manifest
        self._write(
            BEGIN_RUN,
            run_id=run_id,
            manifest=json.dumps(manifest, indent=2, default=str),
            schema=json.dumps({
                "assignments": _schema_blob(record.assignments),
                "fleets": _schema_blob(record.fleets),
                "evidence": _schema_blob(record.evidence),
            }),
            started_at=_text(manifest.get("started_at")),
            finished_at=_text(manifest.get("finished_at")),
            digest=_text((manifest.get("input") or {}).get("digest")),
            previous_run_id=_text(manifest.get("previous_run_id")),
            n_assignments=assignments.height,
            n_fleets=fleets.height,
            n_evidence=evidence.height,
        )
        self._write_batches(WRITE_FLEETS, _payload(fleets), run_id=run_id)
        checkpoint("write:fleets")
        if "org_id" in fleets.columns:
            attributed = fleets.filter(pl.col("org_id").is_not_null()).select(
                "fleet_id", "org_id",
                pl.col("confidence") if "confidence" in fleets.columns
                else pl.lit(None).alias("confidence"))
            self._write_batches(WRITE_ATTRIBUTED, attributed, run_id=run_id)
        self._write_batches(WRITE_EVIDENCE, _payload(evidence), run_id=run_id)
        checkpoint("write:evidence")
        self._write_batches(WRITE_ASSIGNMENTS, _payload(assignments), run_id=run_id)
        checkpoint("write:rows")  # every row stored, the run not current yet
        self._guarded(lambda: self._make_current(run_id))
        checkpoint("write:current")  # current; older runs and orphans not dropped yet

        if self.keep_runs == "current":
            for row in self._read(RUNS_TO_DROP, keep=run_id, old_complete=True):
                self._drop_run(row["run_id"])
        self._auto(SWEEP_ORPHANS)

    def _make_current(self, run_id: str) -> None:
        """The switch: check every row is there, then move ``:Current``, all in one transaction."""
        def switch(tx: ManagedTransaction) -> None:
            counts = tx.run(COUNT_RUN, run_id=run_id).single()
            if counts is None:
                raise StoreError(f"run {run_id} vanished before it became current")
            for part in ("assignments", "fleets", "evidence"):
                if counts[part] != counts[f"n_{part}"]:
                    raise StoreError(f"run {run_id} is incomplete: {counts[part]} of "
                                     f"{counts[f'n_{part}']} {part} written")
            tx.run(MAKE_CURRENT, run_id=run_id).consume()

        with self._session() as session:
            session.execute_write(switch)

    def recover(self) -> list[str]:
        """Drop the runs a killed or failed writer left incomplete (call holding the job
        lock; readers never see them). Returns one note per run dropped."""
        self.ensure_schema()
        done = []
        for row in self._read(RUNS_TO_DROP, keep="", old_complete=False):
            self._drop_run(row["run_id"])
            done.append(f"dropped incomplete run {row['run_id']}")
        return done

    def _drop_run(self, run_id: str) -> None:
        for step in DROP_RUN_STEPS:
            self._auto(step, run_id=run_id)

    def current_run_id(self) -> str | None:
        rows = self._read(CURRENT_RUN)
        return str(rows[0]["run_id"]) if rows else None

    def read_results(self, run_id: str | None = None) -> RunRecord | None:
        """A complete run (the current one by default), checked whole after reading."""
        for _ in range(5):
            wanted = run_id or self.current_run_id()
            if wanted is None:
                return None
            head = self._read(READ_RUN, run_id=wanted)
            if not head:
                if run_id is not None:
                    return None
                continue  # the current run was replaced between the two reads
            schemas = {name: _schema_from_blob(blob)
                       for name, blob in json.loads(head[0]["schema"]).items()}
            tables = {}
            for name, query in (("assignments", READ_ASSIGNMENTS), ("fleets", READ_FLEETS),
                                ("evidence", READ_EVIDENCE)):
                columns = _Columns(schemas[name])
                for page in self._pages(query, 0, run_id=wanted, **columns.params()):
                    columns.extend(page)
                tables[name] = columns.frame()
            check = self._read(COUNT_RUN, run_id=wanted)
            if check and check[0]["complete"] and all(
                tables[p].height == check[0][f"n_{p}"] for p in tables
            ):
                return RunRecord(manifest=json.loads(head[0]["manifest"]),
                                 assignments=tables["assignments"], fleets=tables["fleets"],
                                 evidence=tables["evidence"])
            if run_id is not None and not check:
                return None
        raise StoreError("the runs changed under every attempt to read them")

    def list_runs(self) -> list[dict[str, Any]]:
        manifests = [json.loads(r["manifest"]) for r in self._read(LIST_RUNS)]
        return sorted(manifests, key=lambda m: (str(m["started_at"]), str(m["run_id"])))

    def run_query(self, name: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        from attribution import cypher

        query = cypher.get_query(name)
        bound = query.bind(params)

        def read(tx: ManagedTransaction) -> list[dict[str, Any]]:
            # ``Record.data()`` would turn nodes into bare property maps and drop labels.
            return [dict(record.items()) for record in tx.run(query.text, bound)]

        with self._session() as session:
            return session.execute_read(read)

    def close(self) -> None:
        self._driver.close()

    def __enter__(self) -> Neo4jStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------- helpers


def _records(tx: ManagedTransaction, query: LiteralString, params: dict[str, Any]
             ) -> list[dict[str, Any]]:
    result = tx.run(query, params)
    keys = result.keys()
    # not Record.data(): it walks every value again to convert graph types
    return [dict(zip(keys, record, strict=True)) for record in result]


def _line(exc: BaseException) -> str:
    """An exception as one short line (driver messages span several)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _stamp(graph: PropertyGraph, digest: str) -> str:
    """Snapshot digest plus a hash of the graph's dtypes and rows, shortened."""
    h = hashlib.sha256(digest.encode())
    for name, frame in graph.frames().items():
        h.update(name.encode())
        h.update(_schema_blob(frame).encode())
        h.update(frame.hash_rows(seed=1).to_numpy().tobytes())
    return h.hexdigest()[:20]


def _schema_blob(frame: pl.DataFrame) -> str:
    """The frame's exact column names and dtypes, as an empty Arrow IPC file (base64)."""
    buf = io.BytesIO()
    frame.clear().write_ipc(buf)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _schema_from_blob(blob: str) -> pl.Schema:
    return pl.read_ipc(io.BytesIO(base64.b64decode(blob))).schema


def _payload(frame: pl.DataFrame, *, drop: tuple[str, ...] = (), keep: tuple[str, ...] = (),
             **top: str) -> pl.DataFrame:
    """Rows as ``{<top>..., props: {...}, ts: {col: [seconds, nanos]}}`` for the write queries.

    ``top`` names columns lifted out of ``props`` (renamed); ``keep`` of those
    also stay in ``props``; ``drop`` are left out. Decimals go as text.
    """
    lifted = set(top.values()) - set(keep)
    columns = [c for c in frame.columns if c not in lifted and c not in drop]
    times = [c for c in columns if isinstance(frame.schema[c], pl.Datetime)]
    plain = [c for c in columns if c not in times]
    exprs = [pl.col(source).alias(name) for name, source in top.items()]
    exprs.append(pl.struct([_plain(c, frame.schema[c]) for c in plain]).alias("props")
                 if plain else pl.lit(None).alias("props"))
    exprs.append(pl.struct([_epoch_pair(c, frame.schema[c]) for c in times]).alias("ts")
                 if times else pl.lit(None).alias("ts"))
    return frame.select(exprs)


def _plain(column: str, dtype: pl.DataType) -> pl.Expr:
    return pl.col(column).cast(pl.String) if isinstance(dtype, pl.Decimal) else pl.col(column)


_PER_SECOND = {"ns": 10**9, "us": 10**6, "ms": 10**3}


def _epoch_pair(column: str, dtype: pl.DataType) -> pl.Expr:
    """A timestamp as [floor epoch seconds, nanoseconds] (naive ones read as UTC)."""
    assert isinstance(dtype, pl.Datetime)
    per = _PER_SECOND[dtype.time_unit or "us"]
    epoch = pl.col(column).dt.epoch(dtype.time_unit or "us")
    seconds = epoch // per
    nanos = (epoch - seconds * per) * (10**9 // per)
    return pl.when(epoch.is_null()).then(None).otherwise(
        pl.concat_list([seconds, nanos])).alias(column)


def _with_seq(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.with_columns(pl.int_range(pl.len(), dtype=pl.Int64).alias("seq"))


def _endpoint_keys(graph: PropertyGraph) -> dict[LiteralString, list[Any]]:
    """Keys of nodes that end a relationship but are not a row of their frame."""
    wanted: dict[LiteralString, list[pl.Series]] = {label: [] for label in NODE_KEYS}
    uses = graph.uses
    for kind, (_, label) in USE_REL.items():
        wanted[label].append(uses.filter(pl.col("kind") == kind)["entity_id"])
    wanted["Account"].append(uses["account_id"])
    links = graph.known_links
    for kind, label in LINK_LABEL.items():
        wanted[label].append(links.filter(pl.col("kind") == kind)["key"])
    wanted["Organization"].append(links["org_id"])
    wanted["ASN"].append(graph.ips["asn"].drop_nulls().cast(pl.String))
    wanted["Proxy"].append(graph.ips["proxy_id"])
    rows = {label: graph.frames()[name][NODE_KEYS[label]]
            for name, label in FRAME_LABEL.items()}
    out: dict[LiteralString, list[Any]] = {}
    for label, parts in wanted.items():
        if not parts:
            continue
        keys = pl.concat([p.cast(pl.String).rename("k") for p in parts]).drop_nulls().unique()
        if label in rows:
            keys = keys.filter(~keys.is_in(rows[label].cast(pl.String).implode()))
        if keys.len():
            out[label] = keys.sort().to_list()
    return out


def _native(value: Any) -> Any:
    """Driver temporal values as Python ones (polars builds columns from these)."""
    if isinstance(value, neo4j_time.DateTime | neo4j_time.Date | neo4j_time.Time):
        return value.to_native()
    if isinstance(value, neo4j_time.Duration):
        months, days, seconds, nanos = value
        return dt.timedelta(days=days + 30 * months, seconds=seconds, microseconds=nanos // 1000)
    return value


class _Columns:
    """Pages of columns (see ``COLUMNS``) gathered into a frame of exact dtypes.

    ``fixed`` columns are not properties: the caller passes their values with
    each page (the account and kind of a relationship, say).
    """

    def __init__(self, schema: pl.Schema, fixed: tuple[str, ...] = ()) -> None:
        self.schema = schema
        self.fixed = fixed
        self.cols = [c for c, t in schema.items()
                     if c not in fixed and not isinstance(t, pl.Datetime)]
        self.times = [c for c, t in schema.items()
                      if c not in fixed and isinstance(t, pl.Datetime)]
        self.data: dict[str, list[Any]] = {c: [] for c in schema}
        self.seconds: dict[str, list[Any]] = {c: [] for c in self.times}
        self.nanos: dict[str, list[Any]] = {c: [] for c in self.times}

    def params(self, prefix: str = "") -> dict[str, list[str]]:
        return {f"{prefix}cols": self.cols, f"{prefix}times": self.times}

    def extend(self, page: dict[str, Any], prefix: str = "",
               fixed: tuple[list[Any], ...] = ()) -> None:
        for name, values in zip(self.cols, page[f"{prefix}values"], strict=True):
            self.data[name].extend(values)
        for name, values in zip(self.times, page[f"{prefix}seconds"], strict=True):
            self.seconds[name].extend(values)
        for name, values in zip(self.times, page[f"{prefix}nanos"], strict=True):
            self.nanos[name].extend(values)
        for name, values in zip(self.fixed, fixed, strict=True):
            self.data[name].extend(values)

    def frame(self) -> pl.DataFrame:
        columns = [
            _datetimes(name, self.seconds[name], self.nanos[name], dtype)
            if isinstance(dtype, pl.Datetime) else _series(name, self.data[name], dtype)
            for name, dtype in self.schema.items()
        ]
        return pl.DataFrame(columns)


def _series(name: str, values: list[Any], dtype: pl.DataType) -> pl.Series:
    if dtype.is_nested() and not isinstance(dtype, pl.Struct):
        # pyarrow builds list columns from Python lists far faster than polars does
        arrow_type = pl.Series(name, [], dtype=dtype).to_arrow().type
        series = pl.from_arrow(pa.array(values, type=arrow_type))
        assert isinstance(series, pl.Series)
        return series.cast(dtype).rename(name)
    if dtype.is_temporal():
        values = [_native(v) for v in values]
    elif isinstance(dtype, pl.Decimal):
        values = [None if v is None else decimal.Decimal(v) for v in values]
    return pl.Series(name, values, dtype=dtype)


def _datetimes(name: str, seconds: list[Any], nanos: list[Any], dtype: pl.Datetime
               ) -> pl.Series:
    """Floor epoch seconds and nanoseconds as a Datetime column of ``dtype``, vectorized."""
    unit = dtype.time_unit or "us"
    per = _PER_SECOND[unit]
    epoch = (pl.Series(seconds, dtype=pl.Int64) * per
             + pl.Series(nanos, dtype=pl.Int64) // (10**9 // per))
    out = pl.from_epoch(epoch, time_unit=unit)
    if dtype.time_zone is not None:
        out = out.dt.replace_time_zone("UTC").dt.convert_time_zone(dtype.time_zone)
    return out.cast(dtype).rename(name)
