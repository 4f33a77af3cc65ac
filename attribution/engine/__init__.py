"""The engine: features, link inference, fleets, scoring, attribution, fleet ids,
verdicts applied, the run record and its diff."""
