"""The one vocabulary: entity kinds, evidence families and the agreeing rule."""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl

from attribution.contracts import vocabulary as v
from attribution.store.neo4j import LINK_LABEL, USE_REL

ROOT = Path(__file__).resolve().parents[2]


def test_every_used_kind_has_a_family_a_relationship_and_a_label() -> None:
    used = [k for k in v.ENTITY_KINDS if k.relationship is not None]
    assert tuple(k.kind for k in used) == v.USE_KINDS
    assert all(k.family in v.FAMILIES for k in used)
    assert set(v.VERDICT_KINDS) <= set(v.USE_KINDS)
    assert set(v.LINK_KIND.values()) <= set(v.ENTITIES)
    # The Neo4j store's relationships and labels are the vocabulary's, not its own.
    assert {k.kind: (k.relationship, k.label) for k in used} == USE_REL
    assert set(LINK_LABEL) == set(v.LINK_KIND.values())


def test_the_query_library_names_only_labels_of_the_vocabulary() -> None:
    result_labels = {"Run", "Current", "Fleet", "Evidence", "Graph"}
    known = {k.label for k in v.ENTITY_KINDS} | result_labels
    for path in (ROOT / "queries").glob("*.cypher"):
        text = "\n".join(line for line in path.read_text().splitlines()
                         if not line.lstrip().startswith("//"))
        labels = set(re.findall(r"\(\w*:(\w+)", text))
        assert labels <= known, (path.name, labels - known)


def test_families_agree_above_the_threshold_and_profile_never_counts() -> None:
    row = {f"s_{f}": 0.0 for f in v.FAMILIES}
    row.update(s_payment=0.6, s_timing=0.5, s_network=0.2, s_profile=0.9)
    frame = pl.DataFrame([row])
    out = frame.select(v.families_agreeing(0.5).alias("n"), v.total_weight().alias("w"))
    assert out["n"][0] == 2  # payment and timing; not network (0.2), never profile
    assert abs(out["w"][0] - 2.2) < 1e-12
