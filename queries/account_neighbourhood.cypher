// name: account_neighbourhood
// description: Two hops around an account: every entity it uses (card, device, IP, e-mail domain,
// description: prompt template) and the other accounts on each, at most $limit of them per entity.
// param: account_id (string) the account
// param: limit (int: 1..10000, default 25) at most this many neighbours listed per entity
// returns: relationship, entity_label, entity_id, accounts_on_entity, neighbours
MATCH (a:Account {account_id: $account_id})-[u:USES_PAYMENT|USES_DEVICE|USES_IP|SIGNED_UP_FROM|HAS_EMAIL_DOMAIN|USES_PROMPT]->(e)
WITH a, u, e,
     CASE WHEN e:PaymentMethod THEN e.fingerprint WHEN e:Device THEN e.device_id
          WHEN e:IP THEN e.ip WHEN e:EmailDomain THEN e.domain
          ELSE e.prompt_hash END AS entity_id
RETURN type(u) AS relationship,
       labels(e)[0] AS entity_label,
       entity_id,
       COUNT {
         MATCH (e)<-[:USES_PAYMENT|USES_DEVICE|USES_IP|SIGNED_UP_FROM|HAS_EMAIL_DOMAIN|USES_PROMPT]-(b:Account)
         RETURN DISTINCT b
       } AS accounts_on_entity,
       COLLECT {
         MATCH (e)<-[:USES_PAYMENT|USES_DEVICE|USES_IP|SIGNED_UP_FROM|HAS_EMAIL_DOMAIN|USES_PROMPT]-(b:Account)
         WHERE b <> a
         WITH DISTINCT b.account_id AS neighbour
         RETURN neighbour ORDER BY neighbour LIMIT $limit
       } AS neighbours
ORDER BY accounts_on_entity DESC, relationship, entity_id
