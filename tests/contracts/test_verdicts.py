"""Analyst verdicts: validation, the one log and its record format, and how a run applies
hidden and pinned entities (the end-to-end effects are in tests/job/test_batch.py)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import polars as pl
import pytest

from attribution.contracts.results import RunRecord
from attribution.contracts.verdicts import (
    VerdictError,
    VerdictStore,
    check_subject,
    drop_hidden,
    hidden_uses,
    make_verdict,
    pinned_members,
)

T0 = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)
USES = pl.DataFrame({
    "account_id": ["a", "b", "c", "c", "d"],
    "kind": ["ip", "ip", "signup_ip", "payment", "payment"],
    "entity_id": ["10.0.0.1", "10.0.0.1", "10.0.0.1", "fp-1", "fp-1"],
    "first_seen": [T0, T0 + dt.timedelta(days=1), T0, T0, T0 + dt.timedelta(days=2)],
    "last_seen": [T0 + dt.timedelta(days=3)] * 5,
    "count": [1] * 5,
})


def test_validation_says_what_is_missing() -> None:
    with pytest.raises(VerdictError, match="kind must be one of"):
        make_verdict("hide", "x", by="a", why="w", kind="planet")
    with pytest.raises(VerdictError, match="--org"):
        make_verdict("confirm", "F1", by="a", why="w")
    with pytest.raises(VerdictError, match="--why"):
        make_verdict("legit", "a", by="a", why=" ")
    with pytest.raises(VerdictError, match="fleet or an account"):
        make_verdict("note", "F1", by="a", why="w", kind="ip", label="sybil")
    v = make_verdict("legit", " a ", by="ann ", why="called  them", org_id="ignored")
    assert (v.subject, v.by, v.why, v.org_id, v.kind) == ("a", "ann", "called them", None, None)
    assert v.at.endswith("+00:00")


def test_one_log_one_format_and_revocation(tmp_path: Path) -> None:
    log = VerdictStore(tmp_path / "verdicts.jsonl")
    hide = log.add(make_verdict("hide", "10.0.0.1", by="a", why="office NAT", kind="ip"))
    note = log.add(make_verdict("note", "F1", by="api-key", why="seen", kind="fleet",
                                label="sybil", run_id="run-1", key_id="k1"))
    lines = [json.loads(x) for x in (tmp_path / "verdicts.jsonl").read_text().splitlines()]
    assert all(r["record"] == "verdict" for r in lines)
    assert lines[1]["run_id"] == "run-1" and lines[1]["key_id"] == "k1"
    assert [v.verdict_id for v in log.active()] == [hide.verdict_id, note.verdict_id]
    assert [v.verdict_id for v in log.applicable()] == [hide.verdict_id]  # notes never act
    log.revoke(hide.verdict_id, by="b", why="wrong NAT")
    assert [v.verdict_id for v in log.applicable()] == []
    with pytest.raises(VerdictError, match="no active verdict"):
        log.revoke(hide.verdict_id, by="b")


def test_a_torn_line_and_an_older_api_line_are_read_safely(tmp_path: Path) -> None:
    path = tmp_path / "verdicts.jsonl"
    older = {"verdict_id": "0" * 32, "subject": "account", "subject_id": "a", "verdict":
             "not_sybil", "reason": "phone check", "recorded_by_name": "ann",
             "recorded_at": "2026-03-01T00:00:00+00:00"}
    path.write_text(json.dumps(older) + "\n" + '{"record": "verdict", "verdict_id": "V1", "ac')
    log = VerdictStore(path)
    [v] = log.active()
    assert (v.action, v.subject, v.by, v.why) == ("legit", "a", "ann", "phone check")
    log.add(make_verdict("legit", "b", by="c", why="d"))  # starts a new line after the torn one
    assert [v.subject for v in log.active()] == ["a", "b"]


def test_hidden_entities_leave_the_graph_ips_also_as_signup_ips() -> None:
    hide = make_verdict("hide", "10.0.0.1", by="a", why="NAT", kind="ip")
    assert sorted(hidden_uses(USES, [hide])["account_id"].to_list()) == ["a", "b", "c"]
    kept = drop_hidden(USES, [hide])
    assert kept.select("kind", "entity_id").rows() == [("payment", "fp-1")] * 2


def test_pinned_entities_name_their_accounts_once_with_their_span() -> None:
    pin = make_verdict("pin", "10.0.0.1", by="a", why="one person", kind="ip")
    index = pl.DataFrame({"account_id": ["a", "b", "c", "d"], "idx": [0, 1, 2, 3]})
    members = pinned_members(USES, index, [pin])
    assert members["idx"].to_list() == [0, 1, 2]
    assert set(members["kind"]) == {"ip"}  # the sign-up use of c counts as the IP
    assert members.filter(pl.col("idx") == 1)["first_seen"][0] == T0 + dt.timedelta(days=1)


def test_a_fleet_or_account_verdict_must_name_one_of_the_current_run() -> None:
    record = RunRecord(manifest={"run_id": "r"},
                       assignments=pl.DataFrame({"account_id": ["a"], "fleet_id": ["F1"]}),
                       fleets=pl.DataFrame({"fleet_id": ["F1"]}), evidence=pl.DataFrame())
    check_subject(make_verdict("confirm", "F1", by="a", why="w", org_id="o"), record)
    check_subject(make_verdict("legit", "a", by="a", why="w"), record)
    with pytest.raises(VerdictError, match="no fleet F9"):
        check_subject(make_verdict("reject", "F9", by="a", why="w", org_id="o"), record)
    with pytest.raises(VerdictError, match="no current run"):
        check_subject(make_verdict("legit", "a", by="a", why="w"), None)
    check_subject(make_verdict("hide", "x", by="a", why="w", kind="device"), None)
