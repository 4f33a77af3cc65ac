// name: fleet_overview
// description: Fleets of the current run, most likely inauthentic first, with the organization each is attributed to (if any).
// param: min_sybil (float: 0..1, default 0.0) only fleets with at least this sybil score
// param: limit (int: 1..10000000, default 50) at most this many fleets
// returns: fleet_id, size, sybil_score, org_id, org_name, confidence, runner_up_org_id, exchanges, top_capabilities, first_seen, last_seen, run_id
MATCH (r:Run:Current)
MATCH (f:Fleet)
WHERE f.run_id = r.run_id AND f.sybil_score >= $min_sybil
OPTIONAL MATCH (f)-[:ATTRIBUTED_TO]->(o:Organization)
RETURN f.fleet_id AS fleet_id, f.size AS size, f.sybil_score AS sybil_score,
       f.org_id AS org_id, o.name AS org_name, f.confidence AS confidence,
       f.runner_up_org_id AS runner_up_org_id, f.exchanges AS exchanges,
       f.top_capabilities AS top_capabilities, f.first_seen AS first_seen,
       f.last_seen AS last_seen, r.run_id AS run_id
ORDER BY sybil_score DESC, size DESC, fleet_id
LIMIT $limit
