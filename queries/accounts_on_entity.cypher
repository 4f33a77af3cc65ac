// name: accounts_on_entity
// description: Every account that uses one IP, card fingerprint, device, e-mail domain or prompt
// description: template, with its fleet and score in the current run.
// param: kind (string: ip|payment|device|email_domain|prompt) what the entity is
// param: entity_id (string) the IP text, card fingerprint, device id, domain or prompt hash
// param: limit (int: 1..10000000, default 500) at most this many accounts
// returns: account_id, relationship, first_seen, last_seen, count, fleet_id, sybil_score, org_id
CALL () {
  MATCH (e:IP {ip: $entity_id}) WHERE $kind = 'ip' RETURN e
  UNION
  MATCH (e:PaymentMethod {fingerprint: $entity_id}) WHERE $kind = 'payment' RETURN e
  UNION
  MATCH (e:Device {device_id: $entity_id}) WHERE $kind = 'device' RETURN e
  UNION
  MATCH (e:EmailDomain {domain: $entity_id}) WHERE $kind = 'email_domain' RETURN e
  UNION
  MATCH (e:PromptTemplate {prompt_hash: $entity_id}) WHERE $kind = 'prompt' RETURN e
}
MATCH (a:Account)-[u:USES_PAYMENT|USES_DEVICE|USES_IP|SIGNED_UP_FROM|HAS_EMAIL_DOMAIN|USES_PROMPT]->(e)
OPTIONAL MATCH (a)-[s:SCORED]->(:Run:Current)
RETURN a.account_id AS account_id, type(u) AS relationship, u.first_seen AS first_seen,
       u.last_seen AS last_seen, u.count AS count, s.fleet_id AS fleet_id,
       s.sybil_score AS sybil_score, s.org_id AS org_id
ORDER BY account_id, relationship
LIMIT $limit
