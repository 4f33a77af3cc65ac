"""In-memory indexes over the current run, so lookups never touch the store.

A ``RunView`` is built once per run id from the run's ``RunRecord`` and the
stored graph: every frame is sorted by its lookup key and a dict maps each key
to its row range, so a fleet, an account or a page of members is a slice, not
a scan. What every fleet and account lookup shows of a fleet (its summary,
its shared entities counted per kind) is turned into Python objects once,
here, not per request. Views are immutable; a new run gives a new view that
replaces the old one in a single assignment, so nothing they hold outlives
their run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import polars as pl

from attribution.contracts.graph import PropertyGraph
from attribution.contracts.results import RunRecord
from attribution.engine.diff import no_nan

Slices = dict[str, tuple[int, int]]


def _slices(frame: pl.DataFrame, key: str) -> Slices:
    """``key value -> (offset, length)`` for a frame sorted by ``key``."""
    if frame.height == 0:
        return {}
    runs = (
        frame.select(pl.col(key)).with_row_index("_i")
        .filter(pl.col(key).is_not_null())
        .group_by(key, maintain_order=True)
        .agg(pl.col("_i").min().alias("start"), pl.len().alias("n"))
    )
    return {k: (int(s), int(n)) for k, s, n in runs.iter_rows()}


def _positions(frame: pl.DataFrame, key: str) -> dict[str, int]:
    return {k: i for i, k in enumerate(frame[key].to_list())}


def _kinds(infra: pl.DataFrame) -> dict[str, dict[str, int]]:
    """Per fleet, its shared entities counted per kind (kinds in the order of ``infra``)."""
    out: dict[str, dict[str, int]] = {}
    for fleet_id, kind in zip(infra["fleet_id"].to_list(), infra["kind"].to_list(),
                              strict=True):
        counts = out.setdefault(fleet_id, {})
        counts[kind] = counts.get(kind, 0) + 1
    return out


@dataclass(frozen=True)
class RunView:
    """One run's results and the graph facts the API shows beside them."""

    run_id: str
    manifest: dict[str, Any]
    fleets: pl.DataFrame           # sorted by fleet_id
    fleet_pos: dict[str, int]
    fleet_dicts: tuple[dict[str, Any], ...]   # rows of ``fleets``; fleet_row copies
    assignments: pl.DataFrame      # sorted by fleet_id (nulls last), account_id
    account_pos: dict[str, int]
    members: Slices                # fleet_id -> rows of ``assignments``
    evidence: pl.DataFrame         # sorted by fleet_id, weight desc
    evidence_at: Slices
    uses: pl.DataFrame             # per account (rows of uses_at): entities + sharing counts
    uses_at: Slices
    infra: pl.DataFrame            # per fleet (rows of infra_at): entities >= 2 members use
    infra_at: Slices
    infra_kinds: dict[str, dict[str, int]]    # fleet_id -> {kind: shared entities}
    profiles: pl.DataFrame         # account_id, created_at, country, plan, exchanges
    profile_pos: dict[str, int]
    orgs: pl.DataFrame             # one row per organization with its aggregates
    org_pos: dict[str, int]
    org_fleets: Slices             # org_id -> rows of ``org_fleet_rows``
    org_fleet_rows: pl.DataFrame   # fleets sorted by org_id, confidence desc

    @property
    def accounts(self) -> int:
        return self.assignments.height

    def fleet_row(self, fleet_id: str) -> dict[str, Any] | None:
        """The fleet's row of ``fleets`` as a dict (the caller's own copy)."""
        i = self.fleet_pos.get(fleet_id)
        return None if i is None else dict(self.fleet_dicts[i])

    def shared_kinds(self, fleet_id: str) -> dict[str, int]:
        """How many entities of each kind two or more of the fleet's accounts share."""
        return dict(self.infra_kinds.get(fleet_id, {}))

    def account_row(self, account_id: str) -> dict[str, Any] | None:
        i = self.account_pos.get(account_id)
        return None if i is None else self.assignments.row(i, named=True)

    def org_row(self, org_id: str) -> dict[str, Any] | None:
        i = self.org_pos.get(org_id)
        return None if i is None else self.orgs.row(i, named=True)

    def profile(self, account_id: str) -> dict[str, Any] | None:
        i = self.profile_pos.get(account_id)
        return None if i is None else self.profiles.row(i, named=True)

    @staticmethod
    def rows(frame: pl.DataFrame, at: Slices, key: str) -> pl.DataFrame:
        """The rows of ``key`` (a slice: no query runs)."""
        start, n = at.get(key, (0, 0))
        return frame.slice(start, n)

    @staticmethod
    def count(at: Slices, key: str) -> int:
        return at.get(key, (0, 0))[1]


def build_view(record: RunRecord, graph: PropertyGraph | None) -> RunView:
    """Index a run (and the graph it was computed on) for the API."""
    rec = record.conformed()
    fleets = no_nan(rec.fleets).sort("fleet_id")
    assignments = no_nan(rec.assignments).sort(["fleet_id", "account_id"], nulls_last=True)
    evidence = no_nan(rec.evidence).sort(["fleet_id", "weight"], descending=[False, True],
                                          nulls_last=True)
    uses, infra, profiles = _graph_frames(graph, assignments)
    orgs, org_fleet_rows = _organizations(graph, fleets, assignments)
    names = orgs.select("org_id", pl.col("name").alias("org_name"))
    fleets = fleets.join(names, on="org_id", how="left").sort("fleet_id")
    org_fleet_rows = org_fleet_rows.join(names, on="org_id", how="left").sort(
        ["org_id", "confidence", "fleet_id"], descending=[False, True, False], nulls_last=True)
    uses_at, infra_at = _slices(uses, "account_id"), _slices(infra, "fleet_id")
    evidence_at = _slices(evidence, "fleet_id")
    # Lookups only slice these frames and turn rows into dicts: key columns
    # the slices already encode are dropped, so no query runs per request.
    return RunView(
        run_id=rec.run_id,
        manifest=rec.manifest,
        fleets=fleets,
        fleet_pos=_positions(fleets, "fleet_id"),
        fleet_dicts=tuple(fleets.to_dicts()),
        assignments=assignments,
        account_pos=_positions(assignments, "account_id"),
        members=_slices(assignments, "fleet_id"),
        evidence=evidence.drop("fleet_id"),
        evidence_at=evidence_at,
        uses=uses.drop("account_id"),
        uses_at=uses_at,
        infra=infra.drop("fleet_id"),
        infra_at=infra_at,
        infra_kinds=_kinds(infra),
        profiles=profiles,
        profile_pos=_positions(profiles, "account_id"),
        orgs=orgs,
        org_pos=_positions(orgs, "org_id"),
        org_fleets=_slices(org_fleet_rows, "org_id"),
        org_fleet_rows=org_fleet_rows,
    )


def _graph_frames(graph: PropertyGraph | None, assignments: pl.DataFrame
                  ) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Entity use per account (with sharing counts) and shared infrastructure per fleet."""
    ts = pl.Datetime("us", "UTC")
    if graph is None:
        uses = pl.DataFrame(schema={"account_id": pl.String, "kind": pl.String,
                                    "entity_id": pl.String, "first_seen": ts, "last_seen": ts,
                                    "count": pl.Int64, "shared_with": pl.Int64,
                                    "shared_in_fleet": pl.Int64})
        infra = pl.DataFrame(schema={"fleet_id": pl.String, "kind": pl.String,
                                     "entity_id": pl.String, "accounts_in_fleet": pl.Int64,
                                     "accounts_total": pl.Int64, "first_seen": ts,
                                     "last_seen": ts})
        profiles = pl.DataFrame(schema={"account_id": pl.String})
        return uses, infra, profiles
    raw = graph.uses.select("account_id", "kind", "entity_id", pl.col("first_seen").cast(ts),
                            pl.col("last_seen").cast(ts), pl.col("count").cast(pl.Int64))
    degree = raw.group_by("kind", "entity_id").agg(pl.col("account_id").n_unique()
                                                   .alias("accounts"))
    member_of = assignments.select("account_id", "fleet_id").filter(
        pl.col("fleet_id").is_not_null())
    fleet_uses = raw.join(member_of, on="account_id")
    infra = (
        fleet_uses.group_by("fleet_id", "kind", "entity_id")
        .agg(pl.col("account_id").n_unique().alias("in_fleet"),
             pl.col("first_seen").min(), pl.col("last_seen").max())
        .filter(pl.col("in_fleet") >= 2)
        .join(degree, on=["kind", "entity_id"])
        .select("fleet_id", "kind", "entity_id", "in_fleet", "accounts", "first_seen",
                "last_seen")
        .sort(["fleet_id", "in_fleet", "kind", "entity_id"],
              descending=[False, True, False, False])
    )
    uses = (
        raw.join(degree, on=["kind", "entity_id"])
        .join(member_of, on="account_id", how="left")
        .join(infra.select("fleet_id", "kind", "entity_id", "in_fleet"),
              on=["fleet_id", "kind", "entity_id"], how="left")
        .sort(["account_id", "accounts", "kind", "entity_id"],
              descending=[False, True, False, False])
        .select("account_id", "kind", "entity_id", "first_seen", "last_seen", "count",
                (pl.col("accounts").cast(pl.Int64) - 1).clip(0).alias("shared_with"),
                (pl.col("in_fleet").fill_null(1).cast(pl.Int64) - 1).clip(0)
                .alias("shared_in_fleet"))
    )
    infra = infra.select("fleet_id", "kind", "entity_id",
                         pl.col("in_fleet").cast(pl.Int64).alias("accounts_in_fleet"),
                         pl.col("accounts").cast(pl.Int64).alias("accounts_total"),
                         "first_seen", "last_seen")
    acc = graph.accounts
    wanted = [c for c in ("account_id", "created_at", "country", "plan", "exchanges")
              if c in acc.columns]
    profiles = acc.select(wanted).sort("account_id")
    return uses, infra, profiles


def _organizations(graph: PropertyGraph | None, fleets: pl.DataFrame,
                   assignments: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Per organization: attributed fleets, accounts, exchanges and confidence spread."""
    attributed = fleets.filter(pl.col("org_id").is_not_null())
    per_fleet = attributed.group_by("org_id").agg(
        pl.len().cast(pl.Int64).alias("fleets"),
        pl.col("size").sum().cast(pl.Int64).alias("fleet_accounts"),
        pl.col("exchanges").sum().cast(pl.Int64).alias("exchanges"),
        pl.col("confidence").min().alias("confidence_min"),
        pl.col("confidence").median().alias("confidence_median"),
        pl.col("confidence").max().alias("confidence_max"),
    )
    per_account = assignments.filter(pl.col("org_id").is_not_null()).group_by("org_id").agg(
        pl.len().cast(pl.Int64).alias("accounts"))
    if graph is not None and graph.organizations.height:
        cols = [c for c in ("org_id", "name", "country", "kind") if c in graph.organizations.columns]
        known = graph.organizations.select(cols).unique("org_id", keep="first")
    else:
        known = pl.DataFrame(schema={"org_id": pl.String})
    for col in ("name", "country", "kind"):
        if col not in known.columns:
            known = known.with_columns(pl.lit(None, pl.String).alias(col))
    known = known.with_columns(pl.col("org_id", "name", "country", "kind").cast(pl.String))
    ids = pl.concat([known.select("org_id"), per_fleet.select("org_id"),
                     per_account.select("org_id")]).unique()
    orgs = (
        ids.join(known, on="org_id", how="left")
        .join(per_fleet, on="org_id", how="left")
        .join(per_account, on="org_id", how="left")
        .with_columns(pl.col("fleets", "fleet_accounts", "exchanges", "accounts").fill_null(0))
        .sort("org_id")
    )
    org_fleet_rows = attributed.sort(["org_id", "confidence", "fleet_id"],
                                     descending=[False, True, False])
    return no_nan(orgs), org_fleet_rows
