// name: fleet_members
// description: Accounts of one fleet, most inauthentic first, in the current run or a given one.
// param: fleet_id (string) the fleet
// param: run_id (string?, default null) a run; null means the current run
// param: limit (int: 1..10000000, default 1000) at most this many accounts
// returns: account_id, sybil_score, org_id, confidence, created_at, email_domain, country, plan, org_claim, exchanges
MATCH (r:Run)
WHERE ($run_id IS NULL AND r:Current) OR r.run_id = $run_id
MATCH (f:Fleet {fleet_id: $fleet_id, run_id: r.run_id})
MATCH (a:Account)-[:MEMBER_OF]->(f)
MATCH (a)-[s:SCORED]->(r)
RETURN a.account_id AS account_id, s.sybil_score AS sybil_score, s.org_id AS org_id,
       s.confidence AS confidence, a.created_at AS created_at, a.email_domain AS email_domain,
       a.country AS country, a.plan AS plan, a.org_claim AS org_claim, a.exchanges AS exchanges
ORDER BY sybil_score DESC, account_id
LIMIT $limit
