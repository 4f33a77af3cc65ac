"""Helpers of the test suite (worlds, fakes, the real Neo4j server plugin); no tests here."""
