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

Replacing the graph: *stamp and sweep*. Every node and relationship a load
writes is stamped ``_snapshot = digest`` (rows also ``_row = digest``); after
the last batch, what carries another stamp is deleted, except nodes that run
results still point at, which are stripped to their key. A ``(:GraphState)``
node records the digest and whether the load finished: ``read_graph`` refuses
a graph whose load did not finish, and re-running that load completes it
(every batch is an idempotent ``MERGE``; the sweep is skipped when the same
snapshot was already complete). Column dtypes are kept on the state node as
empty Arrow IPC frames, so ``read_graph`` returns exactly the loaded frames.

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
half. One writer at a time: a run left incomplete by a failure is deleted by
the next ``write_run``.

All Cypher is constant text: templates below are expanded at import time over
a fixed table of labels and relationship types, and data only ever travels as
parameters.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import io
import json
import logging
from collections.abc import Callable, Iterator
from typing import Any, Literal, LiteralString, TypeVar

import polars as pl
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
from attribution.results import RunRecord
from attribution.settings import Neo4jSettings

log = logging.getLogger(__name__)

KeepRuns = Literal["all", "current"]
T = TypeVar("T")

# Measured with bench/neo4j_load.py (see its docstring): 5k rows per transaction
# is the knee; larger batches gain nothing and hold bigger transactions.
DEFAULT_BATCH_SIZE = 5_000
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
    "payment": ("USES_PAYMENT", "PaymentMethod"),
    "device": ("USES_DEVICE", "Device"),
    "ip": ("USES_IP", "IP"),
    "signup_ip": ("SIGNED_UP_FROM", "IP"),
    "email_domain": ("HAS_EMAIL_DOMAIN", "EmailDomain"),
    "prompt": ("USES_PROMPT", "PromptTemplate"),
}
REL_KIND = {rel: kind for kind, (rel, _) in USE_REL.items()}
# known_links.kind -> label of the entity node.
LINK_LABEL: dict[str, LiteralString] = {
    "account": "Account",
    "payment": "PaymentMethod",
    "device": "Device",
    "ip": "IP",
    "asn": "ASN",
    "email_domain": "EmailDomain",
    "prompt": "PromptTemplate",
}
GRAPH_RELS: tuple[LiteralString, ...] = (
    *(rel for rel, _ in USE_REL.values()), "KNOWN_AS", "IN_ASN", "EXIT_OF"
)


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

UPSERT_ROWS = _per_label(
    "UNWIND $rows AS row MERGE (n:<L> {<K>: row.<K>}) "
    "SET n = row, n._snapshot = $digest, n._row = $digest"
)
TOUCH_NODES = _per_label(
    "UNWIND $keys AS key MERGE (n:<L> {<K>: key}) SET n._snapshot = $digest"
)
UPSERT_USES = {
    kind: _expand(
        "UNWIND $rows AS row "
        "MATCH (a:Account {account_id: row.a}) MATCH (e:<L> {<K>: row.e}) "
        "MERGE (a)-[r:<T>]->(e) SET r = row.props, r._snapshot = $digest",
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
        "SET r = row.props, r._snapshot = $digest",
        L=label, K=NODE_KEYS[label],
    )
    for kind, label in LINK_LABEL.items()
}
UPSERT_IN_ASN: LiteralString = (
    "UNWIND $rows AS row MATCH (i:IP {ip: row.ip}) MATCH (a:ASN {asn: row.asn}) "
    "MERGE (i)-[r:IN_ASN]->(a) SET r._snapshot = $digest"
)
UPSERT_EXIT_OF: LiteralString = (
    "UNWIND $rows AS row MATCH (i:IP {ip: row.ip}) MATCH (p:Proxy {proxy_id: row.proxy_id}) "
    "MERGE (i)-[r:EXIT_OF]->(p) SET r._snapshot = $digest"
)
SWEEP_RELS = {
    rel: _expand(
        "MATCH ()-[r:<T>]->() WHERE coalesce(r._snapshot, '') <> $digest "
        "WITH r LIMIT $limit DELETE r RETURN count(*) AS n",
        T=rel,
    )
    for rel in GRAPH_RELS
}
# Nodes of an older snapshot: gone, unless run results point at them.
SWEEP_NODES = _per_label(
    "MATCH (n:<L>) WHERE coalesce(n._snapshot, '') <> $digest AND NOT EXISTS { (n)--() } "
    "WITH n LIMIT $limit DELETE n RETURN count(*) AS n"
)
STRIP_STALE = _per_label(
    "MATCH (n:<L>) WHERE coalesce(n._snapshot, '') <> $digest AND n._row IS NOT NULL "
    "WITH n LIMIT $limit SET n = {<K>: n.<K>} RETURN count(*) AS n"
)
# A row of an older snapshot that is now only a relationship end: drop its columns.
STRIP_ENDPOINTS = _per_label(
    "MATCH (n:<L>) WHERE n._snapshot = $digest AND n._row <> $digest "
    "WITH n LIMIT $limit SET n = {<K>: n.<K>, _snapshot: $digest} RETURN count(*) AS n"
)
# Nodes created only for run results, once no run points at them any more.
SWEEP_ORPHANS = {
    label: _expand(
        "MATCH (n:<L>) WHERE n._snapshot IS NULL AND NOT EXISTS { (n)--() } "
        "WITH n LIMIT $limit DELETE n RETURN count(*) AS n",
        L=label,
    )
    for label in ("Account", "Organization")
}
BEGIN_LOAD: LiteralString = (
    "MERGE (g:GraphState {id: 'graph'}) "
    "SET g.digest = $digest, g.complete = false, g.schema = $schema, "
    "g.load_started_at = datetime()"
)
FINISH_LOAD: LiteralString = (
    "MATCH (g:GraphState {id: 'graph'}) WHERE g.digest = $digest "
    "SET g.complete = true, g.counts = $counts, g.loaded_at = datetime() RETURN g.digest AS d"
)
GRAPH_STATE: LiteralString = (
    "MATCH (g:GraphState {id: 'graph'}) "
    "RETURN g.digest AS digest, g.complete AS complete, g.schema AS schema, g.counts AS counts"
)

READ_ROWS = _per_label(
    "MATCH (n:<L>) WHERE n.<K> >= $after AND n._row = $digest "
    "WITH n ORDER BY n.<K> LIMIT $limit RETURN n.<K> AS key, properties(n) AS props"
)
READ_ACCOUNTS: LiteralString = (
    "MATCH (a:Account) WHERE a.account_id >= $after AND a._snapshot = $digest "
    "WITH a ORDER BY a.account_id LIMIT $limit "
    "RETURN a.account_id AS key, coalesce(a._row = $digest, false) AS row, "
    "properties(a) AS props, "
    "[(a)-[r:USES_PAYMENT|USES_DEVICE|USES_IP|SIGNED_UP_FROM|HAS_EMAIL_DOMAIN|USES_PROMPT]->(e)"
    " | [type(r), CASE type(r) WHEN 'USES_PAYMENT' THEN e.fingerprint"
    " WHEN 'USES_DEVICE' THEN e.device_id WHEN 'HAS_EMAIL_DOMAIN' THEN e.domain"
    " WHEN 'USES_PROMPT' THEN e.prompt_hash ELSE e.ip END, properties(r)]] AS uses"
)
READ_ORGANIZATIONS: LiteralString = (
    "MATCH (o:Organization) WHERE o.org_id >= $after AND o._snapshot = $digest "
    "WITH o ORDER BY o.org_id LIMIT $limit "
    "RETURN o.org_id AS key, coalesce(o._row = $digest, false) AS row, "
    "properties(o) AS props, "
    "[(e)-[k:KNOWN_AS]->(o) WHERE k._snapshot = $digest | properties(k)] AS links"
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
    "UNWIND $rows AS row MERGE (f:Fleet {fleet_id: row.fleet_id, run_id: $run_id}) "
    "SET f = row, f.run_id = $run_id"
)
WRITE_ATTRIBUTED: LiteralString = (
    "UNWIND $rows AS row MATCH (f:Fleet {fleet_id: row.fleet_id, run_id: $run_id}) "
    "MERGE (o:Organization {org_id: row.org_id}) "
    "MERGE (f)-[x:ATTRIBUTED_TO]->(o) SET x.run_id = $run_id, x.confidence = row.confidence"
)
WRITE_EVIDENCE: LiteralString = (
    "UNWIND $rows AS row MERGE (e:Evidence {run_id: $run_id, seq: row.seq}) "
    "SET e = row, e.run_id = $run_id "
    "WITH e, row MATCH (f:Fleet {fleet_id: row.fleet_id, run_id: $run_id}) "
    "MERGE (e)-[:SUPPORTS]->(f)"
)
WRITE_ASSIGNMENTS: LiteralString = (
    "MATCH (r:Run {run_id: $run_id}) UNWIND $rows AS row "
    "MERGE (a:Account {account_id: row.account_id}) "
    "MERGE (a)-[s:SCORED]->(r) SET s = row, s.run_id = $run_id "
    "WITH a, row WHERE row.fleet_id IS NOT NULL "
    "MATCH (f:Fleet {fleet_id: row.fleet_id, run_id: $run_id}) "
    "MERGE (a)-[m:MEMBER_OF]->(f) SET m.run_id = $run_id, m.sybil_score = row.sybil_score"
)
COUNT_RUN: LiteralString = (
    "MATCH (r:Run {run_id: $run_id}) "
    "RETURN COUNT { (r)<-[:SCORED]-() } AS assignments, "
    "COUNT { MATCH (f:Fleet) WHERE f.run_id = $run_id } AS fleets, "
    "COUNT { MATCH (e:Evidence) WHERE e.run_id = $run_id } AS evidence, "
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
    "WITH f ORDER BY f.seq LIMIT $limit RETURN f.seq AS key, properties(f) AS props"
)
READ_EVIDENCE: LiteralString = (
    "MATCH (e:Evidence) WHERE e.run_id = $run_id AND e.seq >= $after "
    "WITH e ORDER BY e.seq LIMIT $limit RETURN e.seq AS key, properties(e) AS props"
)
READ_ASSIGNMENTS: LiteralString = (
    "MATCH ()-[s:SCORED]->() WHERE s.run_id = $run_id AND s.seq >= $after "
    "WITH s ORDER BY s.seq LIMIT $limit RETURN s.seq AS key, properties(s) AS props"
)
DROP_RUN_STEPS: tuple[LiteralString, ...] = (
    "MATCH ()-[m:MEMBER_OF]->() WHERE m.run_id = $run_id "
    "WITH m LIMIT $limit DELETE m RETURN count(*) AS n",
    "MATCH ()-[s:SCORED]->() WHERE s.run_id = $run_id "
    "WITH s LIMIT $limit DELETE s RETURN count(*) AS n",
    "MATCH (e:Evidence) WHERE e.run_id = $run_id "
    "WITH e LIMIT $limit DETACH DELETE e RETURN count(*) AS n",
    "MATCH (f:Fleet) WHERE f.run_id = $run_id "
    "WITH f LIMIT $limit DETACH DELETE f RETURN count(*) AS n",
    "MATCH (r:Run {run_id: $run_id}) WHERE NOT r:Current "
    "DETACH DELETE r RETURN count(*) AS n",
)

# --------------------------------------------------------------------------- the store


class Neo4jStore:
    """Neo4j implementation of ``attribution.store.Store``.

    >>> store = Neo4jStore(Neo4jSettings.from_env())  # doctest: +SKIP
    >>> store.load_snapshot(graph, digest="sha256...")  # doctest: +SKIP
    """

    name = "neo4j"

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
                )
            except (ConfigurationError, ValueError) as exc:
                raise StoreError(f"bad Neo4j settings ({settings.uri}): {_line(exc)}") from exc
        self._guarded(lambda: self._driver.verify_connectivity())

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

    def _until_done(self, query: LiteralString, **params: Any) -> int:
        """Repeat a ``... LIMIT $limit ... RETURN count(*) AS n`` query until it does nothing."""
        total = 0
        while True:
            rows = self._write(query, limit=self.batch_size, **params)
            n = int(rows[0]["n"]) if rows else 0
            total += n
            if n < self.batch_size:
                return total

    def _pages(self, query: LiteralString, start: Any, **params: Any
               ) -> Iterator[dict[str, Any]]:
        """Keyset pagination: ``key >= $after ORDER BY key LIMIT $limit``, one read each."""
        after, skip = start, False
        while True:
            rows = self._read(query, after=after, limit=self.page_size, **params)
            full = len(rows) == self.page_size
            if skip and rows and rows[0]["key"] == after:
                rows = rows[1:]
            yield from rows
            if not full:
                return
            after, skip = rows[-1]["key"], True

    def ensure_schema(self) -> None:
        """Create every constraint and index (IF NOT EXISTS), once per store object."""
        if self._schema_ready:
            return
        def create() -> None:
            for statement in SCHEMA:
                self._run_auto(statement)
            self._run_auto("CALL db.awaitIndexes(300)")
        self._guarded(create)
        self._schema_ready = True

    def _run_auto(self, query: LiteralString) -> None:
        """Schema commands cannot run inside a managed transaction with data writes."""
        with self._session() as session:
            session.run(query).consume()

    # ----------------------------------------------------------------- graph

    def load_snapshot(self, graph: PropertyGraph, *, digest: str) -> dict[str, int]:
        """MERGE the graph in batches, then sweep what an older snapshot left."""
        self.ensure_schema()
        frames = graph.frames()
        for name, frame in frames.items():
            clash = [c for c in frame.columns if c in RESERVED]
            if clash:
                raise StoreError(f"frame {name} has reserved column(s) {', '.join(clash)}")
        state = self.graph_state()
        resume_same = state is not None and state["digest"] == digest
        needs_sweep = not (resume_same and state is not None and state["complete"])
        schema = json.dumps({name: _schema_blob(frame) for name, frame in frames.items()})
        self._write(BEGIN_LOAD, digest=digest, schema=schema)

        for name, label in FRAME_LABEL.items():
            frame = _to_neo4j(frames[name])
            self._write_batches(UPSERT_ROWS[label], frame, digest=digest)
        for label, keys in _endpoint_keys(graph).items():
            self._write_keys(TOUCH_NODES[label], keys, digest=digest)

        uses = _to_neo4j(graph.uses)
        props = [c for c in uses.columns if c not in ("account_id", "kind", "entity_id")]
        unknown = set(uses["kind"].unique().to_list()) - set(USE_REL)
        if unknown:
            raise StoreError(f"uses has unknown kind(s): {', '.join(sorted(map(str, unknown)))}")
        for kind in USE_REL:
            part = uses.filter(pl.col("kind") == kind).select(
                pl.col("account_id").alias("a"),
                pl.col("entity_id").alias("e"),
                pl.struct(props).alias("props"),
            )
            self._write_batches(UPSERT_USES[kind], part, digest=digest)

        ips = graph.ips
        in_asn = ips.filter(pl.col("asn").is_not_null()).select(
            "ip", pl.col("asn").cast(pl.String))
        self._write_batches(UPSERT_IN_ASN, in_asn, digest=digest)
        exit_of = ips.filter(pl.col("proxy_id").is_not_null()).select("ip", "proxy_id")
        self._write_batches(UPSERT_EXIT_OF, exit_of, digest=digest)

        links = _to_neo4j(graph.known_links)
        unknown = set(links["kind"].unique().to_list()) - set(LINK_LABEL)
        if unknown:
            raise StoreError("known_links has unresolvable kind(s): "
                             + ", ".join(sorted(map(str, unknown))))
        link_props = [c for c in links.columns if c != "org_id"]
        for kind in LINK_LABEL:
            part = links.filter(pl.col("kind") == kind).select(
                "key", "org_id", pl.struct(link_props).alias("props"))
            self._write_batches(UPSERT_KNOWN[kind], part, digest=digest)

        if needs_sweep:
            self._sweep(digest)
        counts = {name: frame.height for name, frame in frames.items()}
        done = self._write(FINISH_LOAD, digest=digest, counts=json.dumps(counts))
        if not done:
            raise StoreError("another load replaced the graph while this one ran")
        return counts

    def _sweep(self, digest: str) -> None:
        for rel in GRAPH_RELS:
            self._until_done(SWEEP_RELS[rel], digest=digest)
        for label in NODE_KEYS:
            self._until_done(SWEEP_NODES[label], digest=digest)
            self._until_done(STRIP_STALE[label], digest=digest)
            self._until_done(STRIP_ENDPOINTS[label], digest=digest)

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
        digest = state["digest"]
        if not state["complete"]:
            raise StoreError(f"the load of snapshot {str(digest)[:12]} did not finish; "
                             "run it again to complete it")
        schemas = {name: _schema_from_blob(blob)
                   for name, blob in json.loads(state["schema"]).items()}

        accounts: list[dict[str, Any]] = []
        uses: list[dict[str, Any]] = []
        for rec in self._pages(READ_ACCOUNTS, "", digest=digest):
            if rec["row"]:
                accounts.append(rec["props"])
            for rel, entity, props in rec["uses"]:
                props.update(account_id=rec["key"], kind=REL_KIND[rel], entity_id=entity)
                uses.append(props)
        organizations: list[dict[str, Any]] = []
        links: list[dict[str, Any]] = []
        for rec in self._pages(READ_ORGANIZATIONS, "", digest=digest):
            if rec["row"]:
                organizations.append(rec["props"])
            for props in rec["links"]:
                props["org_id"] = rec["key"]
                links.append(props)
        rows = {"accounts": accounts, "uses": uses, "organizations": organizations,
                "known_links": links}
        for name in ("payments", "devices", "ips", "proxies"):
            rows[name] = [rec["props"] for rec in
                          self._pages(READ_ROWS[FRAME_LABEL[name]], "", digest=digest)]
        return PropertyGraph.from_frames(
            {name: _frame(rows[name], schemas[name]) for name in schemas})

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

        assignments = _with_seq(_to_neo4j(record.assignments))
        fleets = _with_seq(_to_neo4j(record.fleets))
        evidence = _with_seq(_to_neo4j(record.evidence))
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
        self._write_batches(WRITE_FLEETS, fleets, run_id=run_id)
        if "org_id" in fleets.columns:
            attributed = fleets.filter(pl.col("org_id").is_not_null()).select(
                "fleet_id", "org_id",
                pl.col("confidence") if "confidence" in fleets.columns
                else pl.lit(None).alias("confidence"))
            self._write_batches(WRITE_ATTRIBUTED, attributed, run_id=run_id)
        self._write_batches(WRITE_EVIDENCE, evidence, run_id=run_id)
        if "fleet_id" not in assignments.columns:
            assignments = assignments.with_columns(pl.lit(None, pl.String).alias("fleet_id"))
        self._write_batches(WRITE_ASSIGNMENTS, assignments, run_id=run_id)
        self._guarded(lambda: self._make_current(run_id))

        if self.keep_runs == "current":
            for row in self._read(RUNS_TO_DROP, keep=run_id, old_complete=True):
                self._drop_run(row["run_id"])
        for label in SWEEP_ORPHANS:
            self._until_done(SWEEP_ORPHANS[label])

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

    def _drop_run(self, run_id: str) -> None:
        for step in DROP_RUN_STEPS:
            self._until_done(step, run_id=run_id)

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
            tables = {
                name: _frame([r["props"] for r in self._pages(query, 0, run_id=wanted)],
                             schemas[name])
                for name, query in (("assignments", READ_ASSIGNMENTS),
                                    ("fleets", READ_FLEETS),
                                    ("evidence", READ_EVIDENCE))
            }
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

    def close(self) -> None:
        self._driver.close()

    def __enter__(self) -> Neo4jStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------- helpers


def _records(tx: ManagedTransaction, query: LiteralString, params: dict[str, Any]
             ) -> list[dict[str, Any]]:
    return tx.run(query, params).data()


def _line(exc: BaseException) -> str:
    """An exception as one short line (driver messages span several)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _schema_blob(frame: pl.DataFrame) -> str:
    """The frame's exact column names and dtypes, as an empty Arrow IPC file (base64)."""
    buf = io.BytesIO()
    frame.clear().write_ipc(buf)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _schema_from_blob(blob: str) -> pl.Schema:
    return pl.read_ipc(io.BytesIO(base64.b64decode(blob))).schema


def _to_neo4j(frame: pl.DataFrame) -> pl.DataFrame:
    """Columns as Neo4j can hold them: decimals as text (``_frame`` casts them back)."""
    decimals = [c for c, t in frame.schema.items() if isinstance(t, pl.Decimal)]
    return frame.with_columns(pl.col(decimals).cast(pl.String)) if decimals else frame


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


def _frame(rows: list[dict[str, Any]], schema: pl.Schema) -> pl.DataFrame:
    """Rows of properties as a frame with exactly ``schema`` (absent property = null)."""
    columns = []
    for name, dtype in schema.items():
        values = [row.get(name) for row in rows]
        if dtype.is_temporal():
            values = [_native(v) for v in values]
        if isinstance(dtype, pl.Decimal):
            values = [None if v is None else decimal.Decimal(v) for v in values]
        columns.append(pl.Series(name, values, dtype=dtype))
    return pl.DataFrame(columns)
