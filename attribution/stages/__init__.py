"""The stages that turn a snapshot into a graph: ingest (validation), behaviour aggregates, graph building."""
