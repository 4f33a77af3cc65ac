"""The Neo4j store: the property graph and every run's results in one Neo4j database.

Graph model (one node per key, uniqueness constraints on every key)::

    (:Account {every accounts column, activity})
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
absent from ``ips``) carries its key only. ``Account.activity`` is the account's
activity (the lockstep method's raw incidences) as one JSON text,
``{"m": [minute, ...], "n": [network, ...]}``: one text value costs the server
less to store than lists (see ``neo4j_codec.pack_activity``), and a later run
(``attribution reattribute``) reads it back with the graph.

Replacing the graph: *stamp and sweep*. A graph's stamp is its snapshot digest
plus a hash of its frames. Every node a load writes gets ``_snapshot = stamp``
(rows of a frame also ``_row = stamp``), and so does every relationship a load
over an existing graph MERGEs; after the last batch, what carries another stamp
(a relationship of the graph's types: another stamp or none) is deleted, except
nodes that run results still point at, which are stripped to their key. The
relationships a first load CREATEs into an empty database carry no stamp
(KNOWN_AS excepted): there is nothing to sweep then, and the stamp cost about a
sixth of a relationship's server time. A ``(:GraphState)`` node
records digest, stamp and whether the load finished: ``read_graph`` refuses a
graph whose load did not finish, and re-running that load completes it (over a
graph already there every batch is an idempotent ``MERGE``; only a first load
into an empty database CREATEs, and needs no sweep). A graph already loaded whole
under the same stamp is not sent again, nor read back. Column dtypes are kept on the state node as empty
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

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any, Literal, LiteralString, TypeVar

import polars as pl
from neo4j import Driver, GraphDatabase, ManagedTransaction, Session
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

from attribution.contracts.graph import PropertyGraph
from attribution.contracts.results import RunRecord
from attribution.contracts.settings import Neo4jSettings
from attribution.job.killpoints import checkpoint
from attribution.store.neo4j_codec import (
    ColumnBatches,
    Columns,
    endpoint_keys,
    payload,
    schema_blob,
    schema_from_blob,
    stored_frames,
    unpack_activity,
    with_seq,
)
from attribution.store.neo4j_cypher import (
    AWAIT_INDEXES,
    BEGIN_LOAD,
    BEGIN_RUN,
    COUNT_NODES,
    COUNT_RELS,
    COUNT_RUN,
    CREATE_EXIT_OF,
    CREATE_FIXED,
    CREATE_IN_ASN,
    CREATE_KEYS,
    CREATE_KNOWN,
    CREATE_ROWS,
    CREATE_USES,
    CURRENT_RUN,
    DROP_RUN_STEPS,
    FINISH_LOAD,
    FRAME_LABEL,
    GRAPH_EMPTY,
    GRAPH_STATE,
    LINK_LABEL,
    LIST_RUNS,
    MAKE_CURRENT,
    MERGE_EXIT_OF,
    MERGE_FIXED,
    MERGE_IN_ASN,
    MERGE_KEYS,
    MERGE_KNOWN,
    MERGE_ROWS,
    MERGE_USES,
    NODE_IDS,
    NODE_KEYS,
    READ_ACCOUNTS,
    READ_ASSIGNMENTS,
    READ_EVIDENCE,
    READ_FLEETS,
    READ_ORGANIZATIONS,
    READ_ROWS,
    READ_RUN,
    REL_KIND,
    ROW_COLUMNS,
    RUN_STATE,
    RUNS_TO_DROP,
    SCHEMA,
    STRIP_NODES,
    SWEEP_NODES,
    SWEEP_ORPHANS,
    SWEEP_RELS,
    USE_REL,
    WRITE_ASSIGNMENTS,
    WRITE_ATTRIBUTED,
    WRITE_EVIDENCE,
    WRITE_FLEETS,
)

__all__ = ["CREATE_ROWS", "CREATE_USES", "FINISH_LOAD", "LINK_LABEL", "MERGE_ROWS", "MERGE_USES",
           "NODE_IDS", "SCHEMA", "USE_REL", "Neo4jStore", "StoreError", "StoreUnavailable"]

log = logging.getLogger(__name__)

KeepRuns = Literal["all", "current"]
T = TypeVar("T")
# One load transaction: its statement, the MERGE twin a resend runs (if any), parameters.
Batch = tuple[LiteralString, LiteralString | None, dict[str, Any]]

# Measured with bench/neo4j_load.py (2 cores shared with other work, so noisy):
# 20k accounts, 244k rows, pure-Python driver: 1k rows per transaction 5.7k rows/s,
# 5k 6.3-6.5k, 10k 7.4-8.6k, 20k 4.6k; with neo4j-rust-ext 8.4k / 12.8k / 10.7k /
# 6.0k; 200k accounts, 2.59M rows, rust-ext: 5k 9.4k, 10k 11.1k. 10k it is: the
# plateau is 5k-10k, and larger batches only hold larger transactions.
# Column batches, CREATE on a fresh database (family world seed 11, 200k accounts,
# 2.84M rows, before activity was stored): 10k rows, 1 session 20.8k-33k rows/s,
# 2 sessions 49k-53k (the old row maps with MERGE: 17.0k); 50k-row batches were
# slower (27k). 1M accounts (seed 11, 13.3M rows, activity on the accounts): 30.4k.
# Relationship ends by element id (server CPU per USES_IP relationship 27 -> 20 us):
# 200k, 2 sessions, load avg ~4: 32.4k -> 42.7k rows/s (server CPU 82 -> 64 s);
# 1M, load avg 4.1: 32.7k (408 s). Account rows are now the slow part (about 85 us
# of server CPU each, 8.3k rows/s at 1M): their 13 plain columns cost ~3 us each as
# dynamic SETs, their five lists (activity ~25 elements each) ~35 us; moving the
# activity lists to separate SET batches measured no cheaper in server CPU.
# Account rows alone (200k, 1 session, server CPU per row, median of 3 at load ~3-4):
# dynamic SETs 92 us, one literal map per row 79, and activity as one JSON text
# instead of two lists 67 (hours/capabilities/minute_sig as text too: 59, not done:
# they stay lists an analyst can index; no lists at all: 43; key only: 14).
# Relationships (USES_IP, 549k): 20 us each, of which the _snapshot stamp ~3.5 (now
# left off a first load's CREATEs), a bare CREATE between two nodes found by element
# id ~10; a literal map instead of the FOREACH SETs, or id() instead of elementId(),
# measured no cheaper there.
# With both: the 200k load 95 -> 71 s of server CPU (2 sessions, alternated), 1M
# (13.3M rows) 39.5k rows/s, 338 s, 27.3 us of server CPU a row (load avg 1.9-4.5);
# 3 sessions measured no better than 2.
DEFAULT_BATCH_SIZE = 10_000
DEFAULT_PAGE_SIZE = 10_000
# Sessions writing load batches at once (nodes freely; relationships CREATEd on a
# fresh graph take their node locks at commit, sorted, and a deadlock is retried).
DEFAULT_WORKERS = 2
RESERVED = ("_snapshot", "_row")


class StoreError(RuntimeError):
    """The Neo4j store cannot do what was asked (bad settings, unfinished load, ...)."""


class StoreUnavailable(StoreError):
    """The Neo4j server cannot be reached, or went away during the work."""


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
        workers: int = DEFAULT_WORKERS,
        driver: Driver | None = None,
    ) -> None:
        if batch_size < 1 or page_size < 2 or workers < 1:
            raise ValueError("batch_size and workers must be >= 1 and page_size >= 2")
        if keep_runs not in ("all", "current"):
            raise ValueError(f"keep_runs must be 'all' or 'current', not {keep_runs!r}")
        self.settings = settings
        self.batch_size = batch_size
        self.page_size = page_size
        self.keep_runs: KeepRuns = keep_runs
        self.retries = retries
        self.workers = workers
        self._schema_ready = False
        self._meter = LoadMeter(0, None)  # the load in progress, if any
        # (stamp, graph): a graph this store found already loaded whole under its stamp
        self._vouched: tuple[str, PropertyGraph] | None = None
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

        Every unit of work here is idempotent (MERGE, or SET to fixed values), or
        carries a MERGE twin to resend (``_write``'s fallback for CREATE batches), so
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

    def _write(self, query: LiteralString, fallback: LiteralString | None = None,
               **params: Any) -> list[dict[str, Any]]:
        """One managed write transaction (retried by the driver, resent on unknown commit).

        ``fallback`` is what a resend runs instead: a CREATE batch whose commit outcome
        is unknown may have committed, so it is resent as its MERGE twin.
        """
        sent = False

        def work() -> list[dict[str, Any]]:
            nonlocal sent
            text = fallback if sent and fallback is not None else query
            sent = True
            with self._session() as session:
                return session.execute_write(_records, text, params)
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

    def _send_all(self, batches: Iterable[Batch],
                  sink: Callable[[dict[str, Any], list[dict[str, Any]]], None] | None = None
                  ) -> None:
        """Write ``(query, fallback, params)`` batches on ``workers`` sessions at once.

        At most twice ``workers`` batches are built ahead (memory stays flat on a
        large load); the first failure stops the submission and is raised once the
        batches in flight have ended. ``sink`` gets each batch's parameters and records.
        """
        def one(query: LiteralString, fallback: LiteralString | None,
                params: dict[str, Any]) -> None:
            records = self._write(query, fallback=fallback, **params)
            if sink is not None:
                sink(params, records)
            self._meter.add(int(params["n"]))

        if self.workers == 1:
            for query, fallback, params in batches:
                one(query, fallback, params)
            return
        with ThreadPoolExecutor(self.workers, thread_name_prefix="neo4j-load") as pool:
            pending: set[Future[None]] = set()
            try:
                for query, fallback, params in batches:
                    if len(pending) >= 2 * self.workers:
                        done, pending = wait(pending, return_when=FIRST_EXCEPTION)
                        for future in done:
                            future.result()
                    pending.add(pool.submit(one, query, fallback, params))
                for future in pending:
                    future.result()
            except BaseException:
                for future in pending:
                    future.cancel()
                raise

    def _batches(self, create: LiteralString, merge: LiteralString, columns: ColumnBatches,
                 fresh: bool, **params: Any) -> Iterator[Batch]:
        """One frame's batches: CREATE (MERGE on a resend) on a fresh graph, else MERGE."""
        for start in range(0, columns.height, self.batch_size):
            batch = {**columns.batch(start, self.batch_size), **params}
            yield (create, merge, batch) if fresh else (merge, None, batch)

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

    def load_snapshot(self, graph: PropertyGraph, *, digest: str, force: bool = False,
                      progress: Callable[[str], None] | None = None) -> dict[str, int]:
        """Write the graph in column batches, then sweep what an older graph left.

        The graph is stamped with its *stamp*: the snapshot digest and a hash of
        the frames (the same snapshot read by another engine version may give
        another graph). A graph already loaded whole under the same stamp is not
        sent again unless ``force``. Into an empty database the batches CREATE
        (nothing to look up, nothing to sweep); otherwise they MERGE. Nodes first,
        then relationships, each on ``workers`` sessions. ``progress`` gets a line
        every few seconds: rows sent, rows/s and the time left.
        """
        self.ensure_schema()
        frames, counts = stored_frames(graph, RESERVED, StoreError)
        stamp = _stamp(graph, digest)
        state = self.graph_state()
        loaded = state is not None and state["stamp"] == stamp and bool(state["complete"])
        self._vouched = None
        if loaded and not force:
            self._vouched = (stamp, graph)  # every frame is in the database (activity too)
            return counts
        uses, links = graph.uses, graph.known_links
        unknown = set(uses["kind"].unique().to_list()) - set(USE_REL)
        if unknown:
            raise StoreError(f"uses has unknown kind(s): {', '.join(sorted(map(str, unknown)))}")
        unknown = set(links["kind"].unique().to_list()) - set(LINK_LABEL)
        if unknown:
            raise StoreError("known_links has unresolvable kind(s): "
                             + ", ".join(sorted(map(str, unknown))))
        empty = self._read(GRAPH_EMPTY) if state is None else []
        fresh = bool(empty and empty[0]["empty"])
        schema = json.dumps({name: schema_blob(frame) for name, frame in frames.items()})
        self._write(BEGIN_LOAD, digest=digest, stamp=stamp, schema=schema)

        touched = endpoint_keys(graph)
        nodes = []
        for name, label in FRAME_LABEL.items():
            frame, key = frames[name], NODE_KEYS[label]
            fixed = _fixed_columns(frame, label)
            create, merge = ((CREATE_FIXED[label], MERGE_FIXED[label]) if fixed is not None
                             else (CREATE_ROWS[label], MERGE_ROWS[label]))
            nodes.append((label, ColumnBatches(frame, lift={"keys": key}, fixed=fixed or ()),
                          _unique(frame, key), create, merge))
        keys = [(label, ColumnBatches(pl.DataFrame({"k": values}), lift={"keys": "k"}))
                for label, values in touched.items()]
        ips = graph.ips
        # CREATE only where a row cannot meet another of its own kind: frames whose
        # keys repeat go through MERGE as before, whatever the database holds.
        rels_unique = (_unique(uses, "account_id", "kind", "entity_id")
                       and _unique(ips, "ip")
                       and _unique(links, "kind", "key", "org_id", "entity_type", "entity_id"))
        n_rels = (uses.height + ips.filter(pl.col("asn").is_not_null()).height
                  + ips.filter(pl.col("proxy_id").is_not_null()).height + links.height)
        self._meter = LoadMeter(
            sum(c.height for _, c, *_ in nodes) + sum(c.height for _, c in keys) + n_rels,
            progress)

        def node_batches() -> Iterator[Batch]:
            for label, columns, unique, create, merge in nodes:
                yield from self._batches(create, merge, columns,
                                         fresh and unique, stamp=stamp, label=label)
            for label, columns in keys:
                yield from self._batches(CREATE_KEYS[label], MERGE_KEYS[label], columns,
                                         fresh, stamp=stamp, label=label)

        ids = NodeIds()
        self._send_all(node_batches(), ids.add)  # every end exists before a relationship
        end = ids.frames()

        def rel_batches() -> Iterator[Batch]:
            # Relationship ends travel as element ids (see NODE_IDS), joined on here
            # one frame at a time; the key columns they replace are not properties.
            create = fresh and rels_unique
            for kind, (_, label) in USE_REL.items():
                part = _ends(uses.filter(pl.col("kind") == kind),
                             a=(end, "Account", "account_id"), e=(end, label, "entity_id"))
                yield from self._batches(
                    CREATE_USES[kind], MERGE_USES[kind],
                    ColumnBatches(part, lift={"a": "a", "e": "e"},
                                  drop=("kind", "account_id", "entity_id")),
                    create, stamp=stamp)
            in_asn = _ends(ips.filter(pl.col("asn").is_not_null()).select(
                "ip", pl.col("asn").cast(pl.String)), i4=(end, "IP", "ip"),
                a=(end, "ASN", "asn"))
            yield from self._batches(CREATE_IN_ASN, MERGE_IN_ASN, ColumnBatches(
                in_asn, lift={"ip": "i4", "asn": "a"}), create, stamp=stamp)
            exit_of = _ends(ips.filter(pl.col("proxy_id").is_not_null()).select(
                "ip", "proxy_id"), i4=(end, "IP", "ip"), p=(end, "Proxy", "proxy_id"))
            yield from self._batches(CREATE_EXIT_OF, MERGE_EXIT_OF, ColumnBatches(
                exit_of, lift={"ip": "i4", "proxy": "p"}), create, stamp=stamp)
            for kind, label in LINK_LABEL.items():
                part = _ends(links.filter(pl.col("kind") == kind),
                             o=(end, "Organization", "org_id"), e=(end, label, "key"))
                yield from self._batches(CREATE_KNOWN[kind], MERGE_KNOWN[kind], ColumnBatches(
                    part, lift={"org": "o", "key": "e", "etype": "entity_type",
                                "eid": "entity_id"},
                    keep=("entity_type", "entity_id"), drop=("org_id",)), create, stamp=stamp)

        self._send_all(rel_batches())
        self._meter.finish()
        self._meter = LoadMeter(0, None)
        checkpoint("load:rows")  # every batch written, nothing of the older graph swept
        if not loaded and not fresh:
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
        """The graph of the last complete load, read page by page.

        Unless this store was just handed that very graph: a ``load_snapshot`` that
        found it loaded whole under the same stamp (a hash of every row) sent nothing,
        and the same stamp, still current, vouches for the read-back too. A re-run of
        an unchanged snapshot then reads nothing over Bolt (2.8M rows at 200k accounts).
        """
        state = self.graph_state()
        if state is None:
            raise StoreError("no graph loaded in Neo4j yet")
        stamp = state["stamp"]
        if not state["complete"]:
            raise StoreError(f"the load of snapshot {str(state['digest'])[:12]} did not finish; "
                             "run it again to complete it")
        if self._vouched is not None and self._vouched[0] == stamp:
            return self._vouched[1]
        schemas = {name: schema_from_blob(blob)
                   for name, blob in json.loads(state["schema"]).items()}

        accounts = Columns(schemas["accounts"])
        uses = Columns(schemas["uses"], fixed=("account_id", "kind", "entity_id"))
        for page in self._pages(READ_ACCOUNTS, "", stamp=stamp, **accounts.params(),
                                **uses.params("u")):
            accounts.extend(page)
            kinds = [REL_KIND[t] for t in page["u_type"]]
            uses.extend(page, "u", (page["u_account"], kinds, page["u_entity"]))
        organizations = Columns(schemas["organizations"])
        links = Columns(schemas["known_links"], fixed=("org_id",))
        for page in self._pages(READ_ORGANIZATIONS, "", stamp=stamp,
                                **organizations.params(), **links.params("l")):
            organizations.extend(page)
            links.extend(page, "l", (page["l_org"],))
        account_frame, activity = unpack_activity(accounts.frame())
        frames = {"accounts": account_frame, "uses": uses.frame(), "activity": activity,
                  "organizations": organizations.frame(), "known_links": links.frame()}
        for name in ("payments", "devices", "ips", "proxies"):
            columns = Columns(schemas[name])
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

        assignments = with_seq(record.assignments)
        fleets = with_seq(record.fleets)
        evidence = with_seq(record.evidence)
        manifest = record.manifest
        self._write(
            BEGIN_RUN,
            run_id=run_id,
            manifest=json.dumps(manifest, indent=2, default=str),
            schema=json.dumps({
                "assignments": schema_blob(record.assignments),
                "fleets": schema_blob(record.fleets),
                "evidence": schema_blob(record.evidence),
            }),
            started_at=_text(manifest.get("started_at")),
            finished_at=_text(manifest.get("finished_at")),
            digest=_text((manifest.get("input") or {}).get("digest")),
            previous_run_id=_text(manifest.get("previous_run_id")),
            n_assignments=assignments.height,
            n_fleets=fleets.height,
            n_evidence=evidence.height,
        )
        self._write_batches(WRITE_FLEETS, payload(fleets), run_id=run_id)
        checkpoint("write:fleets")
        if "org_id" in fleets.columns:
            attributed = fleets.filter(pl.col("org_id").is_not_null()).select(
                "fleet_id", "org_id",
                pl.col("confidence") if "confidence" in fleets.columns
                else pl.lit(None).alias("confidence"))
            self._write_batches(WRITE_ATTRIBUTED, attributed, run_id=run_id)
        self._write_batches(WRITE_EVIDENCE, payload(evidence), run_id=run_id)
        checkpoint("write:evidence")
        self._write_batches(WRITE_ASSIGNMENTS, payload(assignments), run_id=run_id)
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
            schemas = {name: schema_from_blob(blob)
                       for name, blob in json.loads(head[0]["schema"]).items()}
            tables = {}
            for name, query in (("assignments", READ_ASSIGNMENTS), ("fleets", READ_FLEETS),
                                ("evidence", READ_EVIDENCE)):
                columns = Columns(schemas[name])
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
        from attribution.store import named_queries as cypher

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


class LoadMeter:
    """Rows sent over Bolt so far, told to ``say`` every ``every`` seconds with the rate and
    the time left (a 1M-account load takes minutes: the operator must see it move)."""

    def __init__(self, total: int, say: Callable[[str], None] | None, *, every: float = 5.0
                 ) -> None:
        self.total, self.say, self.every = total, say, every
        self.done = 0
        self.started = self._last = time.perf_counter()
        self._lock = threading.Lock()  # batches end on several threads

    def add(self, rows: int) -> None:
        with self._lock:
            self.done += rows
            now = time.perf_counter()
            due = self.say is not None and now - self._last >= self.every
            if due:
                self._last = now
        if due and self.say is not None:
            self.say(self.line(now))

    def line(self, now: float) -> str:
        rate = self.done / max(now - self.started, 1e-9)
        left = max(self.total - self.done, 0) / rate if rate > 0 else float("inf")
        return (f"load: {self.done:,} of {self.total:,} rows, {rate:,.0f} rows/s, "
                f"about {left:,.0f}s left")

    def finish(self) -> None:
        if self.say is not None and self.done:
            now = time.perf_counter()
            rate = self.done / max(now - self.started, 1e-9)
            self.say(f"load: {self.done:,} of {self.total:,} rows in "
                     f"{now - self.started:,.1f}s, {rate:,.0f} rows/s")


class NodeIds:
    """Element ids of the nodes a load wrote, by label and key, as node batches end.

    The node statements return them (``NODE_IDS``); batches end on several threads,
    and ``list.append`` is atomic, so the parts are only put together at the end.
    """

    def __init__(self) -> None:
        self._parts: list[tuple[str, list[Any], list[str]]] = []

    def add(self, params: dict[str, Any], records: list[dict[str, Any]]) -> None:
        if not records or len(records[0]["ids"]) != params["n"]:
            raise StoreError(f"a {params['label']} batch did not return the ids of its "
                             f"{params['n']} nodes")
        keys = params["keys"]
        self._parts.append((params["label"], [keys[i] for i in records[0]["at"]],
                            records[0]["ids"]))

    def frames(self) -> dict[str, pl.DataFrame]:
        """label -> frame of ``key`` (as text) and ``id``, one row per node."""
        out: dict[str, list[pl.DataFrame]] = {}
        for label, keys, ids in self._parts:
            out.setdefault(label, []).append(pl.DataFrame(
                {"key": pl.Series(keys).cast(pl.String), "id": pl.Series(ids, dtype=pl.String)}))
        return {label: pl.concat(parts).unique("key", keep="first")
                for label, parts in out.items()}


def _ends(frame: pl.DataFrame, **ends: tuple[dict[str, pl.DataFrame], str, str]
          ) -> pl.DataFrame:
    """``frame`` with, for each ``name=(ids, label, column)``, a column ``name`` holding the
    element id of the ``label`` node whose key is ``column`` (rows keep their order)."""
    for name, (ids, label, column) in ends.items():
        table = ids.get(label, pl.DataFrame(schema={"key": pl.String, "id": pl.String}))
        frame = frame.with_columns(pl.col(column).cast(pl.String).alias("_key")).join(
            table.rename({"id": name}), left_on="_key", right_on="key", how="left",
            maintain_order="left").drop("_key")
        missing = frame.filter(pl.col(name).is_null() & pl.col(column).is_not_null()).height
        if missing:
            raise StoreError(f"{missing} relationship end(s) with no {label} node loaded")
    return frame


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


def _unique(frame: pl.DataFrame, *key: str) -> bool:
    """Whether no two rows of ``frame`` share ``key`` (then CREATE cannot double one)."""
    return frame.select(key).is_unique().all() if frame.height else True


def _fixed_columns(frame: pl.DataFrame, label: str) -> tuple[str, ...] | None:
    """The label's ``ROW_COLUMNS`` if the frame holds them all, timestamps where the table
    has them (its rows then go by ``CREATE_FIXED`` / ``MERGE_FIXED``), else None."""
    table = ROW_COLUMNS.get(label)
    if table is None or any(name not in frame.schema
                            or isinstance(frame.schema[name], pl.Datetime) != is_time
                            for name, is_time in table):
        return None
    return tuple(name for name, _ in table)


def _stamp(graph: PropertyGraph, digest: str) -> str:
    """Snapshot digest plus a hash of the graph's dtypes and rows, shortened."""
    h = hashlib.sha256(digest.encode())
    for name, frame in graph.frames().items():
        h.update(name.encode())
        h.update(schema_blob(frame).encode())
        h.update(frame.hash_rows(seed=1).to_numpy().tobytes())
    return h.hexdigest()[:20]


