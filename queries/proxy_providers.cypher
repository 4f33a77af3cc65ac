// name: proxy_providers
// description: Proxy providers ranked by how many fleets of the current run use their exit IPs
// description: (for sign-up or requests), counting only fleets at or above a sybil score.
// param: min_sybil (float: 0..1, default 0.5) only fleets with at least this sybil score
// param: limit (int: 1..10000000, default 20) at most this many providers
// returns: provider, kinds, fleets, accounts, exit_ips
MATCH (r:Run:Current)
MATCH (f:Fleet)
WHERE f.run_id = r.run_id AND f.sybil_score >= $min_sybil
MATCH (f)<-[:MEMBER_OF]-(a:Account)-[:USES_IP|SIGNED_UP_FROM]->(ip:IP)-[:EXIT_OF]->(p:Proxy)
WITH p.provider AS provider, collect(DISTINCT p.kind) AS kinds, count(DISTINCT f) AS fleets,
     count(DISTINCT a) AS accounts, count(DISTINCT ip) AS exit_ips
RETURN provider, kinds, fleets, accounts, exit_ips
ORDER BY fleets DESC, accounts DESC, provider
LIMIT $limit
