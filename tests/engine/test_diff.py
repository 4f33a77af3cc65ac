"""``run_diff``: what changed between two runs, fleet by fleet and account by account."""

from __future__ import annotations

from typing import Any

import polars as pl

from attribution.contracts.results import RunRecord
from attribution.engine.diff import run_diff


def record(run_id: str, members: dict[str, list[str]], orgs: dict[str, tuple[str, float]]
           ) -> RunRecord:
    """A run whose fleets hold ``members`` and are attributed as ``orgs`` says."""
    rows: list[dict[str, Any]] = [
        {"account_id": a, "fleet_id": f, "sybil_score": 0.9,
         "org_id": orgs.get(f, (None, 0.0))[0], "confidence": orgs.get(f, (None, None))[1]}
        for f, accounts in members.items() for a in accounts]
    rows.append({"account_id": "loner", "fleet_id": None, "sybil_score": 0.1, "org_id": None,
                 "confidence": None})
    fleets = pl.DataFrame([
        {"fleet_id": f, "size": len(a), "sybil_score": 0.9, "org_id": orgs.get(f, (None,))[0],
         "confidence": orgs.get(f, (None, None))[1]} for f, a in members.items()])
    return RunRecord(manifest={"run_id": run_id}, assignments=pl.DataFrame(rows),
                     fleets=fleets, evidence=pl.DataFrame()).conformed()


BASE = record("run-a", {
    "F1": ["a1", "a2", "a3", "a4"],          # grows
    "F2": ["b1", "b2", "b3", "b4"],          # splits into F2 and F5
    "F3": ["c1", "c2"], "F4": ["d1", "d2"],  # merge into F3
    "F6": ["e1", "e2"],                      # dissolves (not "lost": it is gone)
    "F8": ["h1", "h2"],                      # stays, loses its attribution
}, {"F1": ("org-x", 0.9), "F2": ("org-y", 0.8), "F6": ("org-z", 0.7), "F8": ("org-z", 0.7)})
HEAD = record("run-b", {
    "F1": ["a1", "a2", "a3", "a4", "a5"],
    "F2": ["b1", "b2"], "F5": ["b3", "b4"],
    "F3": ["c1", "c2", "d1", "d2"],
    "F7": ["g1", "g2", "g3"],                # created
    "F8": ["h1", "h2"],
}, {"F1": ("org-x", 0.6), "F2": ("org-w", 0.8), "F3": ("org-v", 0.95)})


def test_fleet_changes_are_counted_and_listed() -> None:
    diff = run_diff(BASE, HEAD, threshold=0.1, limit=100)
    c = diff["counts"]
    assert (diff["base"], diff["head"]) == ("run-a", "run-b")
    assert [r["fleet_id"] for r in diff["created"]] == ["F7", "F5"]  # largest first
    assert {r["fleet_id"] for r in diff["dissolved"]} == {"F4", "F6"}
    assert [r["fleet_id"] for r in diff["grown"]] == ["F3", "F1"]
    assert [r["fleet_id"] for r in diff["shrunk"]] == ["F2"]
    assert diff["merged"] == [{"fleet_id": "F3", "merged_from": ["F4"]}]
    assert diff["split"] == [{"previous_fleet_id": "F2", "into": ["F2", "F5"]}]
    assert (c["created"], c["dissolved"], c["merged"], c["split"]) == (2, 2, 1, 1)


def test_attribution_changes_and_confidence_moves() -> None:
    diff = run_diff(BASE, HEAD, threshold=0.1, limit=100)
    assert [r["fleet_id"] for r in diff["attribution_gained"]] == ["F3"]
    assert [r["fleet_id"] for r in diff["attribution_lost"]] == ["F8"]
    assert [(r["fleet_id"], r["org_before"], r["org_after"])
            for r in diff["attribution_changed"]] == [("F2", "org-y", "org-w")]
    moved = diff["confidence_moved"]
    assert [r["fleet_id"] for r in moved] == ["F1"]  # 0.9 -> 0.6 under the same org
    assert run_diff(BASE, HEAD, threshold=0.5, limit=100)["counts"]["confidence_moved"] == 0
    c = diff["counts"]
    # Joined a fleet they were not in: a5, F7's three, b3 and b4 (F2 -> F5), d1, d2 (F4 -> F3).
    assert c["accounts_joined_fleet"] == 8
    assert c["accounts_left_fleet"] == 2    # e1, e2
    # e1, e2 (org-z -> gone), a5 (new, org-x), b1, b2 (org-y -> org-w), b3, b4 (org-y ->
    # none), c1, c2, d1, d2 (none -> org-v), h1, h2 (org-z -> none).
    assert c["accounts_changed_org"] == 2 + 1 + 2 + 2 + 4 + 2


def test_limit_cuts_lists_not_counts() -> None:
    diff = run_diff(BASE, HEAD, threshold=0.1, limit=1)
    assert len(diff["created"]) == 1 and diff["counts"]["created"] == 2


def test_a_run_against_itself_changes_nothing() -> None:
    diff = run_diff(BASE, BASE, threshold=0.1, limit=100)
    assert all(v == 0 for k, v in diff["counts"].items() if k != "unchanged")
    assert diff["counts"]["unchanged"] == BASE.fleets.height
