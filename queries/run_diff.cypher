// name: run_diff
// description: What changed between two runs: fleets created and dissolved (by fleet id, which a
// description: fleet keeps while it keeps most of its members), resized, and attribution changes.
// param: from_run (string) the earlier run
// param: to_run (string?, default null) the later run; null means the current run
// returns: change, fleet_id, size_before, size_after, org_before, org_after, confidence_before, confidence_after
MATCH (r1:Run {run_id: $from_run})
MATCH (r2:Run)
WHERE ($to_run IS NULL AND r2:Current) OR r2.run_id = $to_run
CALL (r1, r2) {
  MATCH (f:Fleet) WHERE f.run_id = r2.run_id
  OPTIONAL MATCH (g:Fleet {fleet_id: f.fleet_id, run_id: r1.run_id})
  WITH f, g WHERE g IS NULL
  RETURN 'created' AS change, f.fleet_id AS fleet_id, null AS size_before, f.size AS size_after,
         null AS org_before, f.org_id AS org_after, null AS confidence_before,
         f.confidence AS confidence_after
  UNION ALL
  MATCH (g:Fleet) WHERE g.run_id = r1.run_id
  OPTIONAL MATCH (f:Fleet {fleet_id: g.fleet_id, run_id: r2.run_id})
  WITH f, g WHERE f IS NULL
  RETURN 'dissolved' AS change, g.fleet_id AS fleet_id, g.size AS size_before,
         null AS size_after, g.org_id AS org_before, null AS org_after,
         g.confidence AS confidence_before, null AS confidence_after
  UNION ALL
  MATCH (g:Fleet) WHERE g.run_id = r1.run_id
  MATCH (f:Fleet {fleet_id: g.fleet_id, run_id: r2.run_id})
  WITH f, g, coalesce(f.org_id, '') <> coalesce(g.org_id, '') AS org_changed
  WHERE org_changed OR f.size <> g.size
  RETURN CASE WHEN org_changed THEN 'attribution_changed' ELSE 'resized' END AS change,
         f.fleet_id AS fleet_id, g.size AS size_before, f.size AS size_after,
         g.org_id AS org_before, f.org_id AS org_after, g.confidence AS confidence_before,
         f.confidence AS confidence_after
}
RETURN change, fleet_id, size_before, size_after, org_before, org_after, confidence_before,
       confidence_after
ORDER BY change, fleet_id
