pytest_plugins = ["tests.neo4j_server"]
