// name: org_fleets
// description: Fleets of the current run whose accounts touch an organization's known entities
// description: (directly, or through an IP in a known ASN), whatever the fleet is attributed to.
// param: org_id (string) the organization
// param: limit (int: 1..10000000, default 100) at most this many fleets
// returns: fleet_id, size, sybil_score, attributed_org_id, confidence, accounts_touching, entities
MATCH (o:Organization {org_id: $org_id})<-[:KNOWN_AS]-(e)
MATCH (r:Run:Current)
MATCH (e)<-[:USES_PAYMENT|USES_DEVICE|USES_IP|SIGNED_UP_FROM|HAS_EMAIL_DOMAIN|USES_PROMPT|IN_ASN*0..2]-(a:Account)
MATCH (a)-[:MEMBER_OF]->(f:Fleet)
WHERE f.run_id = r.run_id
WITH f, count(DISTINCT a) AS accounts_touching,
     collect(DISTINCT labels(e)[0] + ' ' + CASE WHEN e:PaymentMethod THEN e.fingerprint
       WHEN e:Device THEN e.device_id WHEN e:IP THEN e.ip WHEN e:EmailDomain THEN e.domain
       WHEN e:PromptTemplate THEN e.prompt_hash WHEN e:ASN THEN e.asn
       ELSE e.account_id END) AS entities
RETURN f.fleet_id AS fleet_id, f.size AS size, f.sybil_score AS sybil_score,
       f.org_id AS attributed_org_id, f.confidence AS confidence, accounts_touching,
       entities
ORDER BY accounts_touching DESC, sybil_score DESC, fleet_id
LIMIT $limit
