"""What the engine reads, holds and writes: the snapshot schema, the graph, run records,
the vocabulary of entity kinds, parameters, verdict records and masking."""
