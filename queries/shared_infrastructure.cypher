// name: shared_infrastructure
// description: What two fleets of the same run have in common: cards, devices, IPs, e-mail domains,
// description: prompt templates, and the ASNs and proxies behind their IPs.
// param: fleet_a (string) one fleet
// param: fleet_b (string) the other fleet
// param: run_id (string?, default null) a run; null means the current run
// param: limit (int: 1..10000000, default 100) at most this many shared entities
// returns: entity_label, entity_id, accounts_a, accounts_b
MATCH (r:Run)
WHERE ($run_id IS NULL AND r:Current) OR r.run_id = $run_id
MATCH (:Fleet {fleet_id: $fleet_a, run_id: r.run_id})<-[:MEMBER_OF]-(a:Account)
MATCH (a)-[:USES_PAYMENT|USES_DEVICE|USES_IP|SIGNED_UP_FROM|HAS_EMAIL_DOMAIN|USES_PROMPT|IN_ASN|EXIT_OF*1..2]->(e)
WITH r, e, count(DISTINCT a) AS accounts_a
MATCH (:Fleet {fleet_id: $fleet_b, run_id: r.run_id})<-[:MEMBER_OF]-(b:Account)
MATCH (b)-[:USES_PAYMENT|USES_DEVICE|USES_IP|SIGNED_UP_FROM|HAS_EMAIL_DOMAIN|USES_PROMPT|IN_ASN|EXIT_OF*1..2]->(e)
WITH e, accounts_a, count(DISTINCT b) AS accounts_b
RETURN labels(e)[0] AS entity_label,
       CASE WHEN e:PaymentMethod THEN e.fingerprint WHEN e:Device THEN e.device_id
            WHEN e:IP THEN e.ip WHEN e:EmailDomain THEN e.domain
            WHEN e:PromptTemplate THEN e.prompt_hash WHEN e:ASN THEN e.asn
            ELSE e.proxy_id END AS entity_id,
       accounts_a, accounts_b
ORDER BY accounts_a + accounts_b DESC, entity_label, entity_id
LIMIT $limit
