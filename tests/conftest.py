# The real Neo4j of the session, and the hand world served by the API (the ``world`` fixture).
pytest_plugins = ["tests.support.neo4j_server", "tests.support.api_client"]
