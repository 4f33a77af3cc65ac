"""Development tooling: the in-process Neo4j of the tests and notebooks."""
