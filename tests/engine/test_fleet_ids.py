"""Stable fleet ids: keep, merge, split, never reuse."""

import polars as pl

from attribution.engine.fleet_ids import assign_fleet_ids


def members(groups: dict[int, list[str]]) -> pl.DataFrame:
    rows = [(a, f) for f, accs in groups.items() for a in accs]
    return pl.DataFrame(rows, schema={"account_id": pl.String, "fleet": pl.Int64}, orient="row")


def previous(groups: dict[str, list[str]]) -> pl.DataFrame:
    rows = [(a, f) for f, accs in groups.items() for a in accs]
    return pl.DataFrame(rows, schema={"account_id": pl.String, "fleet_id": pl.String}, orient="row")


def ids_of(mapping: pl.DataFrame) -> dict[int, str]:
    return dict(zip(mapping["fleet"].to_list(), mapping["fleet_id"].to_list(), strict=True))


def test_first_run_ids_are_deterministic_and_distinct() -> None:
    m = members({0: ["a", "b"], 1: ["c", "d", "e"]})
    first, _ = assign_fleet_ids(m)
    again, _ = assign_fleet_ids(m)
    assert ids_of(first) == ids_of(again)
    assert len(set(ids_of(first).values())) == 2


def test_fleet_keeping_most_members_keeps_its_id() -> None:
    prev = previous({"F1": ["a", "b", "c", "d"]})
    m = members({7: ["a", "b", "c", "x", "y"]})
    mapping, _ = assign_fleet_ids(m, prev, {"F1"})
    assert ids_of(mapping)[7] == "F1"


def test_merge_keeps_largest_ancestor_and_records_the_other() -> None:
    prev = previous({"BIG": ["a", "b", "c", "d"], "SMALL": ["e", "f"]})
    m = members({0: ["a", "b", "c", "d", "e", "f"]})
    mapping, lineage = assign_fleet_ids(m, prev, {"BIG", "SMALL"})
    assert ids_of(mapping)[0] == "BIG"
    assert set(lineage["previous_fleet_id"].to_list()) == {"BIG", "SMALL"}


def test_split_largest_part_keeps_id_and_new_ids_are_never_reused() -> None:
    prev = previous({"F1": ["a", "b", "c", "d", "e", "f"]})
    m = members({0: ["a", "b", "c", "d"], 1: ["e", "f"]})
    retired = {"F1", "OLD"}
    mapping, _ = assign_fleet_ids(m, prev, retired)
    ids = ids_of(mapping)
    assert ids[0] == "F1"
    assert ids[1] not in retired


def test_dissolved_fleet_id_is_not_given_to_an_unrelated_fleet() -> None:
    prev = previous({"F1": ["a", "b", "c"]})
    m = members({0: ["x", "y"]})
    mapping, _ = assign_fleet_ids(m, prev, {"F1"})
    assert ids_of(mapping)[0] != "F1"
