"""Response and request models: the API's public shapes, with OpenAPI examples."""

from __future__ import annotations

import datetime as dt
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T")
EntityKind = Literal["payment", "device", "ip", "signup_ip", "email_domain", "prompt"]
FLEET_EXAMPLE: dict[str, Any] = {
    "fleet_id": "F3a9c0e1b7d", "size": 412, "sybil_score": 0.97, "org_id": "org-042",
    "org_name": "Example Labs", "confidence": 0.88, "runner_up_org_id": "org-007",
    "runner_up_confidence": 0.05, "first_seen": "2026-01-03T08:00:00Z",
    "last_seen": "2026-02-14T23:10:00Z", "exchanges": 1250331,
    "top_capabilities": "coding 61%, agentic 22%, reasoning 9%",
    "affiliated_org_id": None, "affiliation_confidence": None,
}
EVIDENCE_EXAMPLE: dict[str, Any] = {"kind": "shared_payment", "org_id": None,
                    "detail": "37 accounts share card fingerprint …9f2c", "weight": 0.31}


class Page(BaseModel, Generic[T]):
    """One page of a list: ``items`` from ``offset``, ``total`` matching in all."""

    items: list[T]
    total: int = Field(ge=0, description="rows matching the filters, over all pages")
    limit: int = Field(ge=1, le=500)
    offset: int = Field(ge=0)
    next_offset: int | None = Field(None, description="offset of the next page; null at the end")


class FleetSummary(BaseModel):
    """A fleet as listed: size, how inauthentic, and whom it is attributed to."""

    model_config = ConfigDict(json_schema_extra={"examples": [FLEET_EXAMPLE]})

    fleet_id: str
    size: int
    sybil_score: float = Field(ge=0, le=1, description="probability the fleet is inauthentic")
    org_id: str | None = Field(None, description="most likely controlling organization")
    org_name: str | None = None
    confidence: float | None = Field(None, ge=0, le=1,
                                     description="calibrated probability that org_id is right")
    runner_up_org_id: str | None = None
    runner_up_confidence: float | None = None
    first_seen: dt.datetime | None = None
    last_seen: dt.datetime | None = None
    exchanges: int | None = None
    top_capabilities: str | None = None
    affiliated_org_id: str | None = None
    affiliation_confidence: float | None = None


class Evidence(BaseModel):
    """One piece of evidence; identifiers in ``detail`` are already masked."""

    model_config = ConfigDict(json_schema_extra={"examples": [EVIDENCE_EXAMPLE]})

    kind: str
    org_id: str | None = None
    detail: str
    weight: float | None = Field(None, description="its share of the score")


class SharedEntity(BaseModel):
    """An identifier used by two or more of a fleet's accounts (masked)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "kind": "device", "entity": "…7b1d", "accounts_in_fleet": 37, "accounts_total": 37,
        "first_seen": "2026-01-03T08:00:00Z", "last_seen": "2026-02-14T23:10:00Z"}]})

    kind: EntityKind
    entity: str = Field(description="masked: last 4 characters, or the /24 of an IP")
    accounts_in_fleet: int
    accounts_total: int = Field(description="accounts using it in the whole graph")
    first_seen: dt.datetime | None = None
    last_seen: dt.datetime | None = None


class FleetDetail(FleetSummary):
    """A fleet with its evidence and a summary of its shared infrastructure."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        **FLEET_EXAMPLE, "evidence": [EVIDENCE_EXAMPLE],
        "shared_infrastructure": {"device": 3, "payment": 1, "ip": 12},
        "run_id": "run-20260301T020000-1a2b3c4d"}]})

    evidence: list[Evidence]
    shared_infrastructure: dict[str, int] = Field(
        description="count of shared entities per kind (see /infrastructure)")
    run_id: str


class Member(BaseModel):
    """One account of a fleet."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "account_id": "acct-000123", "sybil_score": 0.95, "org_id": "org-042",
        "confidence": 0.88}]})

    account_id: str
    sybil_score: float
    org_id: str | None = None
    confidence: float | None = None


class Attribution(BaseModel):
    """Whom an account is attributed to and how sure the engine is."""

    org_id: str
    org_name: str | None = None
    confidence: float | None = None


class AccountEntity(BaseModel):
    """An identifier the account uses and how many others share it."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "kind": "payment", "entity": "…9f2c", "first_seen": "2026-01-03T08:00:00Z",
        "last_seen": "2026-02-10T11:00:00Z", "count": 3, "shared_with": 36,
        "shared_in_fleet": 36}]})

    kind: EntityKind
    entity: str = Field(description="masked identifier")
    first_seen: dt.datetime | None = None
    last_seen: dt.datetime | None = None
    count: int | None = Field(None, description="uses, sessions or requests")
    shared_with: int = Field(description="other accounts using it")
    shared_in_fleet: int = Field(description="other accounts of the same fleet using it")


class AccountProfile(BaseModel):
    """Non-identifying facts about an account."""

    created_at: dt.datetime | None = None
    country: str | None = None
    plan: str | None = None
    exchanges: int | None = None


class AccountDetail(BaseModel):
    """One account: its fleet, score, attribution, evidence and the entities it uses."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "account_id": "acct-000123", "run_id": "run-20260301T020000-1a2b3c4d",
        "sybil_score": 0.95, "fleet": FLEET_EXAMPLE,
        "attribution": {"org_id": "org-042", "org_name": "Example Labs", "confidence": 0.88},
        "evidence": [EVIDENCE_EXAMPLE],
        "profile": {"created_at": "2026-01-03T08:01:00Z", "country": "SG", "plan": "pro",
                    "exchanges": 3120},
        "entities": [{"kind": "payment", "entity": "…9f2c", "count": 3, "shared_with": 36,
                      "shared_in_fleet": 36}],
        "entities_total": 1}]})

    account_id: str
    run_id: str
    sybil_score: float
    fleet: FleetSummary | None = None
    attribution: Attribution | None = None
    evidence: list[Evidence]
    profile: AccountProfile | None = None
    entities: list[AccountEntity]
    entities_total: int


class Organization(BaseModel):
    """An organization and what the current run attributes to it."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "org_id": "org-042", "name": "Example Labs", "country": "SG", "kind": "ai_lab",
        "fleets": 3, "accounts": 980, "fleet_accounts": 1012, "exchanges": 2912000,
        "confidence_min": 0.71, "confidence_median": 0.86, "confidence_max": 0.93}]})

    org_id: str
    name: str | None = None
    country: str | None = None
    kind: str | None = None
    fleets: int = Field(description="fleets attributed to it")
    accounts: int = Field(description="accounts attributed to it")
    fleet_accounts: int = Field(description="members of its fleets")
    exchanges: int
    confidence_min: float | None = None
    confidence_median: float | None = None
    confidence_max: float | None = None


class OrganizationDetail(Organization):
    """An organization with its attributed fleets (most confident first)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "org_id": "org-042", "name": "Example Labs", "country": "SG", "kind": "ai_lab",
        "fleets": 1, "accounts": 412, "fleet_accounts": 412, "exchanges": 1250331,
        "confidence_min": 0.88, "confidence_median": 0.88, "confidence_max": 0.88,
        "run_id": "run-20260301T020000-1a2b3c4d",
        "fleets_page": {"items": [FLEET_EXAMPLE], "total": 1, "limit": 50, "offset": 0,
                        "next_offset": None}}]})

    fleets_page: Page[FleetSummary]
    run_id: str


class RunSummary(BaseModel):
    """A stored run, from its manifest."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "run_id": "run-20260301T020000-1a2b3c4d", "started_at": "2026-03-01T02:00:00+00:00",
        "finished_at": "2026-03-01T02:09:10+00:00", "engine_version": "0.1.0",
        "previous_run_id": None, "current": True, "input_digest": "1a2b3c4d...",
        "counts": {"accounts": 200000, "fleets": 812, "attributed_fleets": 95}}]})

    run_id: str
    started_at: str | None = None
    finished_at: str | None = None
    engine_version: str | None = None
    previous_run_id: str | None = None
    current: bool
    input_digest: str | None = None
    counts: dict[str, Any] = Field(default_factory=dict)


class RunDetail(RunSummary):
    """A run's manifest (parameters and timings included; lineage left out)."""

    params: dict[str, Any] = Field(default_factory=dict)
    timings: dict[str, Any] = Field(default_factory=dict)


class FleetChange(BaseModel):
    """A fleet present in one or both runs, with its size in each."""

    fleet_id: str
    size_before: int | None = None
    size_after: int | None = None


class AttributionChange(BaseModel):
    """A fleet whose attribution or confidence differs between the runs."""

    fleet_id: str
    org_before: str | None = None
    org_after: str | None = None
    confidence_before: float | None = None
    confidence_after: float | None = None


class DiffCounts(BaseModel):
    """How many of each change there are (the lists below may be cut at ``limit``)."""

    created: int
    dissolved: int
    grown: int
    shrunk: int
    unchanged: int
    attribution_gained: int
    attribution_lost: int
    attribution_changed: int
    confidence_moved: int
    accounts_joined_fleet: int
    accounts_left_fleet: int
    accounts_changed_org: int


class RunDiff(BaseModel):
    """What changed from ``base`` to ``head``, fleet by fleet (matched by fleet_id)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "base": "run-20260201T020000-9f8e7d6c", "head": "run-20260301T020000-1a2b3c4d",
        "threshold": 0.1, "limit": 100,
        "counts": {"created": 4, "dissolved": 1, "grown": 7, "shrunk": 2, "unchanged": 790,
                   "attribution_gained": 3, "attribution_lost": 0, "attribution_changed": 1,
                   "confidence_moved": 5, "accounts_joined_fleet": 310,
                   "accounts_left_fleet": 12, "accounts_changed_org": 40},
        "created": [{"fleet_id": "F0b1c2d3e4f", "size_before": None, "size_after": 55}],
        "dissolved": [], "grown": [], "shrunk": [],
        "attribution_gained": [], "attribution_lost": [], "attribution_changed": [],
        "confidence_moved": [{"fleet_id": "F3a9c0e1b7d", "org_before": "org-042",
                              "org_after": "org-042", "confidence_before": 0.7,
                              "confidence_after": 0.88}]}]})

    base: str
    head: str
    threshold: float
    limit: int
    counts: DiffCounts
    created: list[FleetChange]
    dissolved: list[FleetChange]
    grown: list[FleetChange]
    shrunk: list[FleetChange]
    attribution_gained: list[AttributionChange]
    attribution_lost: list[AttributionChange]
    attribution_changed: list[AttributionChange]
    confidence_moved: list[AttributionChange]


class RunRequest(BaseModel):
    """Start a re-attribution run over a snapshot directory on the server."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "snapshot": "/data/snapshots/2026-03-01", "keep_fleet_ids": True,
        "max_rejected_share": 0.01}]})

    snapshot: str = Field(min_length=1, max_length=1024,
                          description="snapshot directory, as seen by the server")
    keep_fleet_ids: bool = Field(True, description="use the current run as the previous run")
    max_rejected_share: float = Field(0.01, ge=0, le=1)


class JobInfo(BaseModel):
    """A re-attribution run started over the API."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "job_id": "0f6f3c8e2f1a4b9c8d7e6f5a4b3c2d1e", "status": "running",
        "requested_by": "k:1a2b3c4d", "created_at": "2026-03-01T02:00:00Z",
        "started_at": "2026-03-01T02:00:00Z", "finished_at": None, "run_id": None,
        "error": None, "keep_fleet_ids": True}]})

    job_id: str
    status: Literal["queued", "running", "succeeded", "failed"]
    requested_by: str
    created_at: dt.datetime
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    run_id: str | None = None
    error: str | None = None
    keep_fleet_ids: bool


VerdictKind = Literal["sybil", "not_sybil", "attribution_confirmed", "attribution_rejected"]


class VerdictIn(BaseModel):
    """An analyst's verdict on a fleet or an account of the current run."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "subject": "fleet", "subject_id": "F3a9c0e1b7d", "verdict": "attribution_confirmed",
        "org_id": "org-042", "reason": "Matches case T&S-1182: same corporate card range."}]})

    subject: Literal["fleet", "account"]
    subject_id: str = Field(min_length=1, max_length=200)
    verdict: VerdictKind
    org_id: str | None = Field(None, max_length=200)
    reason: str = Field(min_length=1, max_length=4000, description="why (kept for the record)")


class Verdict(VerdictIn):
    """A recorded verdict: who, when, and against which run."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "verdict_id": "7c1d0e2f3a4b5c6d7e8f9a0b1c2d3e4f", "subject": "fleet",
        "subject_id": "F3a9c0e1b7d", "verdict": "attribution_confirmed", "org_id": "org-042",
        "reason": "Matches case T&S-1182.", "run_id": "run-20260301T020000-1a2b3c4d",
        "recorded_by": "1a2b3c4d", "recorded_by_name": "alice",
        "recorded_at": "2026-03-02T09:15:00Z"}]})

    verdict_id: str
    run_id: str
    recorded_by: str
    recorded_by_name: str
    recorded_at: dt.datetime


class QueryParam(BaseModel):
    """A parameter a named query takes."""

    name: str
    type: str
    description: str | None = None
    required: bool = True


class NamedQuery(BaseModel):
    """A query of the ``queries/*.cypher`` library."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "name": "fleet_shared_cards", "description": "Cards shared inside a fleet",
        "params": [{"name": "fleet_id", "type": "string", "required": True}],
        "runnable": False}]})

    name: str
    description: str | None = None
    params: list[QueryParam]
    runnable: bool = Field(description="false unless the API runs on the Neo4j store")


class QueryRun(BaseModel):
    """Arguments of a named query."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
        "params": {"fleet_id": "F3a9c0e1b7d"}, "limit": 100}]})

    params: dict[str, Any] = Field(default_factory=dict)
    limit: int = Field(100, ge=1, le=500)


class QueryResult(BaseModel):
    """Rows of a named query (identifiers masked like everywhere else)."""

    name: str
    columns: list[str]
    rows: list[dict[str, Any]]
    truncated: bool


class Health(BaseModel):
    """Liveness: the process is up."""

    status: Literal["ok"] = "ok"
    version: str


class Readiness(BaseModel):
    """Readiness: the store answers and holds a current run."""

    status: Literal["ready"] = "ready"
    store: str
    run_id: str
