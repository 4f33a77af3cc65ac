"""Analyst verdicts: recorded once, applied in every later run.

Analysts know things the graph does not (a card is a company NAT's, an
account is a real person, a fleet is the case they closed last week). A
verdict records that with who, when and why, and every later run applies it
inside the pipeline, so a re-run never silently undoes an analyst's decision.

Storage is one append-only JSON-lines log per store (``Store.verdict_log_path``:
``<store>/verdicts.jsonl`` for the embedded store, ``$ATTRIBUTION_HOME/verdicts.jsonl``
for Neo4j), written by ``attribution verdict`` and ``POST /verdicts`` alike in
one record format (``Verdict``): a line is never rewritten or removed; a
revocation is a line of its own. Appends take an exclusive ``flock`` and are
fsynced, so the CLI and the API can write the same file at once.

Actions and their effect on a run:

- ``hide KIND ENTITY``: the entity's ``uses`` rows are dropped before link
  inference (noise such as a company NAT): it links nobody, shows in no evidence;
- ``pin KIND ENTITY``: every pair of its accounts gets a strong link (common control);
- ``legit ACCOUNT``: the account's sybil score is capped at 0.05; never accused;
- ``confirm FLEET --org ORG``: the fleet is attributed to ORG with confidence >= 0.99;
- ``reject FLEET --org ORG``: ORG is removed from the fleet's candidates;
- ``note``: an API verdict no run acts on (``sybil`` on a fleet or an account,
  ``not_sybil`` on a fleet), kept for the record with its ``label``.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import polars as pl

from attribution.contracts.vocabulary import VERDICT_KINDS

if TYPE_CHECKING:
    from attribution.contracts.results import RunRecord

Action = Literal["confirm", "reject", "legit", "pin", "hide", "note"]
ACTIONS: tuple[str, ...] = ("confirm", "reject", "legit", "pin", "hide", "note")
# What a note may be about (the API's subjects).
NOTE_SUBJECTS: tuple[str, ...] = ("fleet", "account")
# ``uses.kind`` values an entity verdict may name (signup IPs are IPs).
ENTITY_KINDS: tuple[str, ...] = VERDICT_KINDS
CONFIRMED_CONFIDENCE = 0.99
LEGIT_CAP = 0.05
VERDICT_EVIDENCE = "analyst_verdict"
# The API's (subject, verdict) -> the action a run applies; other combinations are notes.
API_ACTIONS = {("fleet", "attribution_confirmed"): "confirm",
               ("fleet", "attribution_rejected"): "reject",
               ("account", "not_sybil"): "legit"}


class VerdictError(ValueError):
    """A verdict that cannot be recorded (bad action, kind, missing field): exit status 2."""


@dataclass(frozen=True)
class Verdict:
    """One analyst decision. ``subject`` is a fleet id, an account id or an entity id."""

    verdict_id: str
    action: str
    subject: str
    kind: str | None   # entity kind for pin/hide, fleet/account for a note, else None
    org_id: str | None  # for confirm/reject (and a note that names one)
    by: str
    at: str             # ISO-8601 UTC
    why: str
    run_id: str | None = None  # the current run when it was recorded (the API's)
    key_id: str | None = None  # the API key that recorded it; None from the command line
    label: str | None = None   # the API's verdict word (sybil, not_sybil, ...)

    def describe(self) -> str:
        """The evidence sentence: who decided what, when, and why."""
        verb = {"confirm": "confirmed", "reject": "rejected", "legit": "marked legitimate",
                "pin": "pinned", "hide": "hidden", "note": f"noted {self.label}"}[self.action]
        return f"{verb} by {self.by} on {self.at[:10]}: {self.why}"


def make_verdict(action: str, subject: str, *, by: str, why: str, kind: str | None = None,
                 org_id: str | None = None, at: dt.datetime | None = None,
                 run_id: str | None = None, key_id: str | None = None,
                 label: str | None = None) -> Verdict:
    """A validated new verdict with a fresh id and the current UTC time."""
    if action not in ACTIONS:
        raise VerdictError(f"unknown verdict action {action!r} (one of {', '.join(ACTIONS)})")
    if not subject or not subject.strip():
        raise VerdictError("a verdict needs a subject id")
    if not by or not by.strip():
        raise VerdictError("a verdict needs --by (who decided)")
    if not why or not why.strip():
        raise VerdictError("a verdict needs --why (the reason)")
    if action in ("pin", "hide"):
        if kind not in ENTITY_KINDS:
            raise VerdictError(f"{action}: kind must be one of {', '.join(ENTITY_KINDS)}, "
                               f"not {kind!r}")
    elif action == "note":
        if kind not in NOTE_SUBJECTS or not label:
            raise VerdictError("a note is about a fleet or an account and has a label")
    else:
        kind = None
    if action in ("confirm", "reject"):
        if not org_id:
            raise VerdictError(f"{action} needs --org ORG_ID")
    elif action != "note":
        org_id = None
    when = (at or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).replace(microsecond=0)
    return Verdict(verdict_id="V" + uuid.uuid4().hex[:12], action=action, subject=subject.strip(),
                   kind=kind, org_id=org_id, by=by.strip(), at=when.isoformat(),
                   why=" ".join(why.split()), run_id=run_id, key_id=key_id,
                   label=label if action == "note" else None)


class VerdictStore:
    """The append-only verdict log; the active set is every verdict not revoked."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    @contextmanager
    def _locked(self) -> Iterator[Any]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "ab+") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield fh
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def _append(self, fh: Any, record: dict[str, Any]) -> None:
        size = fh.seek(0, os.SEEK_END)
        if size:
            fh.seek(size - 1)
            if fh.read(1) != b"\n":  # a line torn by a crash: start afresh, never join it
                fh.write(b"\n")
        fh.write((json.dumps(record, default=str, ensure_ascii=False) + "\n").encode())
        fh.flush()
        os.fsync(fh.fileno())

    def records(self) -> list[dict[str, Any]]:
        """Every line, oldest first (verdicts and revocations; a torn last line is skipped)."""
        if not self.path.is_file():
            return []
        out = []
        with open(self.path, encoding="utf-8") as src:
            for line in src:
                if not line.strip():
                    continue
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    continue  # a line torn by a crash mid-append: never half-applied
        return out

    def add(self, verdict: Verdict) -> Verdict:
        """Append a verdict."""
        with self._locked() as fh:
            self._append(fh, {"record": "verdict", **asdict(verdict)})
        return verdict

    def revoke(self, verdict_id: str, *, by: str, why: str = "") -> None:
        """Append a revocation; the verdict stops applying from the next run."""
        active = {v.verdict_id for v in self.active()}
        if verdict_id not in active:
            raise VerdictError(f"no active verdict {verdict_id}")
        with self._locked() as fh:
            self._append(fh, {"record": "revoke", "verdict_id": verdict_id, "by": by,
                              "at": dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat(),
                              "why": why})

    def all(self) -> list[tuple[Verdict, dict[str, Any] | None]]:
        """Every verdict with its revocation record (None while active)."""
        verdicts: list[Verdict] = []
        revoked: dict[str, dict[str, Any]] = {}
        for rec in self.records():
            if rec.get("record") == "revoke":
                revoked.setdefault(str(rec.get("verdict_id")), rec)
            elif rec.get("record") == "verdict":
                verdicts.append(_from_record(rec))
            else:  # a log the API wrote before the one format
                older = _from_api_record(rec)
                if older is not None:
                    verdicts.append(older)
        return [(v, revoked.get(v.verdict_id)) for v in verdicts]

    def active(self) -> list[Verdict]:
        """Verdicts in force, oldest first (notes included)."""
        return [v for v, r in self.all() if r is None]

    def applicable(self) -> list[Verdict]:
        """The active verdicts a run acts on (every action but ``note``)."""
        return [v for v in self.active() if v.action != "note"]


def _from_record(rec: dict[str, Any]) -> Verdict:
    return Verdict(**{k: rec.get(k) for k in Verdict.__dataclass_fields__})  # type: ignore[arg-type]


def _from_api_record(rec: dict[str, Any]) -> Verdict | None:
    """Verdicts an earlier API version recorded in its own format (subject/verdict/reason
    lines): read, never written any more."""
    action = API_ACTIONS.get((str(rec.get("subject")), str(rec.get("verdict"))))
    if action is None or "verdict_id" not in rec:
        return None
    if action in ("confirm", "reject") and not rec.get("org_id"):
        return None
    return Verdict(verdict_id=str(rec["verdict_id"]), action=action,
                   subject=str(rec.get("subject_id")), kind=None,
                   org_id=rec.get("org_id") if action != "legit" else None,
                   by=str(rec.get("recorded_by_name") or rec.get("recorded_by") or "api"),
                   at=str(rec.get("recorded_at", "")), why=str(rec.get("reason", "")))


# --- applying verdicts inside a run ------------------------------------------------------


def _entities(verdicts: Iterable[Verdict], action: str) -> pl.DataFrame:
    rows = [(v.kind, v.subject, v.verdict_id) for v in verdicts if v.action == action]
    frame = pl.DataFrame(rows, schema={"kind": pl.String, "entity_id": pl.String,
                                       "verdict_id": pl.String}, orient="row")
    # A hidden or pinned IP is the same IP where it was the sign-up address.
    ips = frame.filter(pl.col("kind") == "ip").with_columns(pl.lit("signup_ip").alias("kind"))
    return pl.concat([frame, ips])


def hidden_uses(uses: pl.DataFrame, verdicts: list[Verdict]) -> pl.DataFrame:
    """The ``uses`` rows of hidden entities (account_id, kind, entity_id, verdict_id)."""
    hidden = _entities(verdicts, "hide")
    return uses.join(hidden, on=["kind", "entity_id"]).select(
        "account_id", "kind", "entity_id", "verdict_id")


def drop_hidden(uses: pl.DataFrame, verdicts: list[Verdict]) -> pl.DataFrame:
    """``uses`` without the rows of hidden entities."""
    hidden = _entities(verdicts, "hide")
    return uses.join(hidden.select("kind", "entity_id"), on=["kind", "entity_id"], how="anti")


def pinned_members(uses: pl.DataFrame, index: pl.DataFrame, verdicts: list[Verdict]
                   ) -> pl.DataFrame:
    """Accounts of pinned entities: verdict_id, kind, idx, first_seen, last_seen."""
    pinned = _entities(verdicts, "pin")
    return uses.join(pinned, on=["kind", "entity_id"]).join(index, on="account_id").select(
        "verdict_id", pl.col("kind").replace({"signup_ip": "ip"}), "idx", "first_seen",
        "last_seen").group_by("verdict_id", "idx").agg(
            pl.col("kind").min(), pl.col("first_seen").min(), pl.col("last_seen").max()
        ).select("verdict_id", "kind", "idx", "first_seen", "last_seen").sort("verdict_id", "idx")


def check_subject(verdict: Verdict, record: RunRecord | None) -> None:
    """A fleet or account verdict must name one of the current run (as the API checks)."""
    if verdict.action in ("pin", "hide"):
        return
    if record is None:
        raise VerdictError("no current run to check the subject against; run the job first")
    if verdict.action == "legit":
        if record.assignments.filter(pl.col("account_id") == verdict.subject).height == 0:
            raise VerdictError(f"no account {verdict.subject} in the current run")
    elif record.fleets.filter(pl.col("fleet_id") == verdict.subject).height == 0:
        raise VerdictError(f"no fleet {verdict.subject} in the current run")
