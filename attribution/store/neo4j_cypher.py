"""The Neo4j store's Cypher: every statement it runs, as vetted text.

Query text is never composed from data: the only substitutions are fixed
vocabulary (labels, keys, relationship types from ``attribution.contracts.vocabulary``)
filled into ``<NAME>`` slots at import time; values always travel as
parameters. The store (``attribution.store.neo4j``) and its frame codec
(``attribution.store.neo4j_codec``) import these names.
"""

from __future__ import annotations

from typing import LiteralString

from attribution.contracts.vocabulary import ENTITY_KINDS, LINK_KIND

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
# Every relationship type of the graph (not of the runs), as a type expression.
GRAPH_RELS: LiteralString = "|".join([*(rel for rel, _ in USE_REL.values()),
                                      "IN_ASN", "EXIT_OF", "KNOWN_AS"])


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


# Graph loads send columns, not row maps: ``$n`` rows, the key lists named in
# each statement, and for the remaining columns their names (``$cols``,
# ``$times``) with one list of values per name (``$vals``; timestamps as
# ``$secs`` / ``$nanos``), so no property name travels per row and the client
# builds no dict per row. Each statement comes twice: CREATE for a first load
# into an empty graph (no lookup before the write), MERGE for a load over an
# older graph or the resend of a batch whose commit outcome is unknown. Timestamps
# are built with ``datetime.fromepoch`` (the same UTC value as the map form, without
# building and reading a map per value).
SET_COLUMNS: LiteralString = (
    " FOREACH (j IN range(0, size($cols) - 1) | SET <V>[$cols[j]] = $vals[j][i])"
    " FOREACH (j IN range(0, size($times) - 1) | SET <V>[$times[j]] ="
    " CASE WHEN $secs[j][i] IS NULL THEN NULL"
    " ELSE datetime.fromepoch($secs[j][i], $nanos[j][i]) END)"
)


def _set_columns(var: LiteralString) -> LiteralString:
    return _expand(SET_COLUMNS, V=var)


# Every node statement returns the element ids of its nodes (``ids``, for the rows
# ``at``), and relationship statements find their ends by element id: a seek by id
# costs the server far less than two unique-index seeks on text keys (USES_IP on the
# 200k world: 27 us of server CPU per relationship by key, 20 by element id).
NODE_IDS: LiteralString = " RETURN collect(i) AS at, collect(elementId(n)) AS ids"
CREATE_ROWS = _per_label(
    "UNWIND range(0, $n - 1) AS i "
    "CREATE (n:<L> {<K>: $keys[i], _snapshot: $stamp, _row: $stamp})" + _set_columns("n")
    + NODE_IDS
)
# The columns ``build_graph`` gives each node frame besides its key (the accounts'
# ``activity`` is the codec's), each with whether it is a timestamp, in the order the
# fixed-map statements take their values (``$fvals``; timestamps ``$fsecs`` /
# ``$fnanos``). A frame holding these columns is written with one literal property
# map per row (``CREATE_FIXED`` / ``MERGE_FIXED``) instead of a FOREACH of dynamic
# SETs, which only its other columns (a snapshot's extra ones) still take: about
# 14 us of server CPU less per Account row on the 200k world. A frame without them
# (or with other dtypes) takes ``CREATE_ROWS`` / ``MERGE_ROWS``.
ROW_COLUMNS: dict[LiteralString, tuple[tuple[LiteralString, bool], ...]] = {
    "Account": (("created_at", True), ("country", False), ("plan", False),
                ("org_claim", False), ("signup_ip", False), ("email_local", False),
                ("email_domain", False), ("exchanges", False), ("input_tokens", False),
                ("output_tokens", False), ("first_ts", True), ("last_ts", True),
                ("active_days", False), ("active_minutes", False), ("hours", False),
                ("capabilities", False), ("minute_sig", False), ("activity", False)),
    "PaymentMethod": (("kind", False), ("bin", False), ("issuer_country", False),
                      ("payment_method_ids", False)),
    "Device": (("user_agent", False), ("platform", False), ("timezone", False),
               ("language", False)),
    "IP": (("asn", False), ("as_org", False), ("country", False), ("hosting", False),
           ("proxy_id", False)),
    "Proxy": (("provider", False), ("kind", False)),
    "Organization": (("name", False), ("country", False), ("kind", False)),
}
# Literal list indexes for the fixed maps (``$fvals[<J>][i]``).
_INDEX: tuple[LiteralString, ...] = (
    "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15",
    "16", "17", "18", "19", "20", "21", "22", "23")


def _fixed_map(label: LiteralString, key: LiteralString) -> LiteralString:
    """``{key: $keys[i], _snapshot, _row, column: $fvals[j][i], ...}`` over ROW_COLUMNS."""
    table = ROW_COLUMNS[label]
    plain = [name for name, is_time in table if not is_time]
    times = [name for name, is_time in table if is_time]
    parts: list[LiteralString] = [_expand("<K>: $keys[i], _snapshot: $stamp, _row: $stamp",
                                          K=key)]
    parts += [_expand("<C>: $fvals[<J>][i]", C=name, J=_INDEX[j])
              for j, name in enumerate(plain)]
    parts += [_expand("<C>: CASE WHEN $fsecs[<J>][i] IS NULL THEN NULL"
                      " ELSE datetime.fromepoch($fsecs[<J>][i], $fnanos[<J>][i]) END",
                      C=name, J=_INDEX[j]) for j, name in enumerate(times)]
    return "{" + ", ".join(parts) + "}"


CREATE_FIXED = {
    label: _expand("UNWIND range(0, $n - 1) AS i CREATE (n:<L> ", L=label)
    + _fixed_map(label, NODE_KEYS[label]) + ")" + _set_columns("n") + NODE_IDS
    for label in ROW_COLUMNS
}
MERGE_FIXED = {
    label: _expand("UNWIND range(0, $n - 1) AS i MERGE (n:<L> {<K>: $keys[i]}) SET n = ",
                   L=label, K=NODE_KEYS[label])
    + _fixed_map(label, NODE_KEYS[label]) + _set_columns("n") + NODE_IDS
    for label in ROW_COLUMNS
}
MERGE_ROWS = _per_label(
    "UNWIND range(0, $n - 1) AS i MERGE (n:<L> {<K>: $keys[i]}) "
    "SET n = {<K>: $keys[i], _snapshot: $stamp, _row: $stamp}" + _set_columns("n") + NODE_IDS
)
CREATE_KEYS = _per_label(
    "UNWIND range(0, $n - 1) AS i CREATE (n:<L> {<K>: $keys[i], _snapshot: $stamp})" + NODE_IDS
)
MERGE_KEYS = _per_label(
    "UNWIND range(0, $n - 1) AS i MERGE (n:<L> {<K>: $keys[i]}) SET n._snapshot = $stamp"
    + NODE_IDS
)
USE_ENDS: LiteralString = (
    "UNWIND range(0, $n - 1) AS i "
    "MATCH (a:Account) WHERE elementId(a) = $a[i] MATCH (e:<L>) WHERE elementId(e) = $e[i] "
)
# Relationships a first load CREATEs carry no ``_snapshot`` (KNOWN_AS excepted: few,
# and read by stamp): the stamp cost a USES_IP relationship about 3.5 us of server CPU
# in ~20 (200k world), and nothing needs it. A later load MERGEs and stamps every
# relationship it writes, and its sweep deletes the graph's relationships that carry
# another stamp or none (``SWEEP_RELS``).
CREATE_USES = {
    kind: _expand(USE_ENDS + "CREATE (a)-[r:<T>]->(e)" + _set_columns("r"),
                  L=label, K=NODE_KEYS[label], T=rel)
    for kind, (rel, label) in USE_REL.items()
}
MERGE_USES = {
    kind: _expand(USE_ENDS + "MERGE (a)-[r:<T>]->(e) SET r = {_snapshot: $stamp}"
                  + _set_columns("r"), L=label, K=NODE_KEYS[label], T=rel)
    for kind, (rel, label) in USE_REL.items()
}
KNOWN_ENDS: LiteralString = (
    "UNWIND range(0, $n - 1) AS i "
    "MATCH (e:<L>) WHERE elementId(e) = $key[i] "
    "MATCH (o:Organization) WHERE elementId(o) = $org[i] "
)
CREATE_KNOWN = {
    kind: _expand(KNOWN_ENDS + "CREATE (e)-[r:KNOWN_AS {_snapshot: $stamp}]->(o)"
                  + _set_columns("r"), L=label, K=NODE_KEYS[label])
    for kind, label in LINK_LABEL.items()
}
MERGE_KNOWN = {
    kind: _expand(KNOWN_ENDS + "MERGE (e)-[r:KNOWN_AS {entity_type: $etype[i], "
                  "entity_id: $eid[i]}]->(o) SET r = {_snapshot: $stamp}" + _set_columns("r"),
                  L=label, K=NODE_KEYS[label])
    for kind, label in LINK_LABEL.items()
}
IN_ASN_ENDS: LiteralString = (
    "UNWIND range(0, $n - 1) AS i MATCH (i4:IP) WHERE elementId(i4) = $ip[i] "
    "MATCH (a:ASN) WHERE elementId(a) = $asn[i] "
)
CREATE_IN_ASN: LiteralString = IN_ASN_ENDS + "CREATE (i4)-[:IN_ASN]->(a)"
MERGE_IN_ASN: LiteralString = IN_ASN_ENDS + "MERGE (i4)-[r:IN_ASN]->(a) SET r._snapshot = $stamp"
EXIT_OF_ENDS: LiteralString = (
    "UNWIND range(0, $n - 1) AS i MATCH (i4:IP) WHERE elementId(i4) = $ip[i] "
    "MATCH (p:Proxy) WHERE elementId(p) = $proxy[i] "
)
CREATE_EXIT_OF: LiteralString = EXIT_OF_ENDS + "CREATE (i4)-[:EXIT_OF]->(p)"
MERGE_EXIT_OF: LiteralString = (
    EXIT_OF_ENDS + "MERGE (i4)-[r:EXIT_OF]->(p) SET r._snapshot = $stamp"
)
# A first load may CREATE: the database holds no graph node and no graph state.
GRAPH_EMPTY: LiteralString = (
    "RETURN NOT EXISTS { MATCH (:GraphState) } "
    + "".join(_expand("AND NOT EXISTS { MATCH (:<L>) } ", L=label) for label in NODE_KEYS)
    + "AS empty"
)
# The sweep: three passes over the whole store, each in batches of its own
# transactions (an implicit transaction; every pass can simply be run again).
# Relationships of the graph's types only: run results carry no stamp.
SWEEP_RELS: LiteralString = (
    "MATCH ()-[r:" + GRAPH_RELS + "]->() WHERE r._snapshot IS NULL OR r._snapshot <> $stamp "
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
