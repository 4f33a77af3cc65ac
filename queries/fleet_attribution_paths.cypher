// name: fleet_attribution_paths
// description: Evidence paths from a fleet's accounts to an organization's known entities
// description: (a shared card, device, IP, ASN, e-mail domain or prompt template the analysts
// description: tied to the organization, or a member account itself), strongest links first.
// param: fleet_id (string) the fleet
// param: org_id (string?, default null) the organization; null means the one the fleet is attributed to
// param: run_id (string?, default null) a run; null means the current run
// param: limit (int: 1..10000000, default 200) at most this many paths
// returns: account_id, via, entity_label, entity_id, source, link_confidence, org_id, hops, path
MATCH (r:Run)
WHERE ($run_id IS NULL AND r:Current) OR r.run_id = $run_id
MATCH (f:Fleet {fleet_id: $fleet_id, run_id: r.run_id})
MATCH (o:Organization {org_id: coalesce($org_id, f.org_id)})
MATCH (a:Account)-[:MEMBER_OF]->(f)
MATCH p = (a)-[:USES_PAYMENT|USES_DEVICE|USES_IP|SIGNED_UP_FROM|HAS_EMAIL_DOMAIN|USES_PROMPT|IN_ASN*0..2]->(e)-[k:KNOWN_AS]->(o)
RETURN a.account_id AS account_id,
       [rel IN relationships(p) | type(rel)] AS via,
       labels(e)[0] AS entity_label,
       k.key AS entity_id,
       k.source AS source,
       k.confidence AS link_confidence,
       o.org_id AS org_id,
       length(p) AS hops,
       p AS path
ORDER BY link_confidence DESC, hops, account_id, entity_id, via
LIMIT $limit
