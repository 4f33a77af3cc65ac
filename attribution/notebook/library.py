"""Notebook-only named queries, in the query library's header format (checked like it)."""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

from attribution.notebook.connection import NotebookError
from attribution.store.named_queries import NamedQuery, QueryError, get_query, load_queries, parse_query

if TYPE_CHECKING:
    pass

# Shipped as package data (``attribution/notebooks``, mapped from the repo's

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
# format as queries/*.cypher, parsed and parameter-checked by attribution.store.named_queries.
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
        " of attribution.contracts.schema.CAPABILITIES): the population a fleet's mix is compared with.\n"
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
