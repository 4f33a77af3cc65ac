"""Run parameters as pure data, recorded in every run's manifest.

Nothing here reads the environment except ``Neo4jSettings.from_env``: a run
is reproducible from its manifest's ``params`` alone.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

from attribution.errors import UsageError


def _family_table(**values: float) -> dict[str, float]:
    return dict(values)


@dataclass(frozen=True)
class LinkParams:
    """Link inference: how much each evidence family can weigh and how fast it decays."""

    # Strength of an entity shared by two accounts, per family (its cap).
    cap: dict[str, float] = field(default_factory=lambda: _family_table(
        payment=4.0, device=4.0, network=2.0, email=1.5, prompt=2.5,
        timing=3.0, creation=2.0, profile=1.0, lockstep=1.0,
    ))
    # Share count at which an entity is worth about a fifth of a two-account one.
    hub_size: dict[str, float] = field(default_factory=lambda: _family_table(
        payment=1000.0, device=300.0, network=30.0, email=50.0, prompt=100.0,
        timing=1.0, creation=1.0, profile=1.0, lockstep=1.0,
    ))
    min_block_strength: float = 0.2   # blocks weaker than this form no pairs
    max_block: int = 20000            # no pairs from blocks larger than this
    window: int = 12                  # neighbours per account inside a big block
    no_overlap_factor: float = 0.4    # shared IP or device used at different times
    same_family_bonus: float = 0.25   # extra entities of one family: a small bonus only
    strong_threshold: float = 2.0     # a strong identifier alone makes an edge
    family_threshold: float = 0.4     # a family "agrees" from this strength
    min_families: int = 2             # weak evidence needs this many families
    min_weight: float = 1.8           # and this total strength
    # Timing: MinHash bands over active minutes, and the burst window.
    lsh_rows: int = 2
    min_minutes: int = 2
    null_pairs: int = 400_000         # random pairs that define "chance" for timing
    null_seed: int = 7
    timing_from: float = 2.5          # -log10 chance at which timing starts to count
    timing_span: float = 2.5          # ... and how much more reaches its cap
    burst_minutes: int = 30
    burst_min_size: int = 3
    # Sign-up surges: a network's sign-ups over days against its share of all sign-ups in
    # the other days (a cohort registered in small batches through one rented service).
    surge_days: int = 7
    surge_base_min: int = 30          # sign-ups away from the window a network's share needs
    cohort_used_min: float = 0.98     # a used account joins a sign-up cohort only this sure
    #                                   (share of the cap; unused ones at ``attach_min``)
    coherence_min_users: int = 20     # entities this big may link by who uses them
    coherence_from: float = 0.25      # anomaly lift from which a crowd's entity starts to count
    coherence_full: float = 0.5       # anomaly lift (share of the way to 1) at full strength
    coherence_share: float = 0.6      # of the family's cap, at full lift
    attach_min: float = 0.9           # a burst at this share of its cap may attach a loner
    attach_max_minutes: int = 2       # ... if the loner has no more active minutes than this


@dataclass(frozen=True)
class FleetParams:
    """Community detection."""

    seed: int = 42
    louvain_min_size: int = 8         # smaller components are fleets as they are
    top_k_edges: int = 12             # per account, before Louvain, for speed
    merge_ratio: float = 0.2          # re-merge communities linked at this share of expectation
    closed_share: float = 0.1         # ... unless one link joins them and the smaller sends
    #                                   less than this share of its weight out
    attach_links: int = 3             # a burst's members in one fleet that attach its loners
    attach_share: float = 0.7         # ... and their share of the burst's members in fleets
    attach_belief: float = 0.5        # a loner attaches when it is this likely the fleet's
    # Fragments of one operation: two fleets merge when an identity entity (card, device,
    # email domain, template) is used mostly inside fleets, and by this share of each.
    fragment_specific: float = 0.5    # lift of its users' in-fleet share over the population's
    fragment_touch: float = 0.25      # share of each of the two fleets that uses it
    fragment_conceal_gap: float = 0.5  # ... and whose rented-traffic shares differ at most this
    # The fleets of one sign-up surge (see fleets.merge_surges): a fleet belongs to the
    # episode whose strong members are this share of the members it does not leave in
    # doubt, and at least ``surge_least`` of all but its unused members in doubt (a
    # quarter, as the fragment merge asks of shared operator evidence); where they are
    # fewer than that of all (three members of 28 say little of whose the rest are), it
    # joins only a group it is near in time. Fleets merge where a test of homogeneity of
    # their members' traits against the group's gives at least this p-value, or where no
    # trait's mix differs by more than this total variation distance.
    surge_share: float = 0.5
    surge_least: float = 0.25
    surge_alpha: float = 1e-3
    surge_gap: float = 0.2


@dataclass(frozen=True)
class AttributionParams:
    """Naming organizations."""

    abstain_below: float = 0.5        # no org_id under this confidence
    accuse_min_sybil: float = 0.5     # only fleets this likely inauthentic are attributed
    prior_logit: float = 1.0          # log-odds of "no known org" before any evidence
    sharpness: float = 1.5            # scale of all evidence log-odds (set by calibration)
    identity_tie: float = 1.0         # link strength (card, device, domain, template) that
    #                                   carries a fleet's organization to a member


@dataclass(frozen=True)
class LockstepParams:
    """The group-level lockstep detector (``attribution.engine.lockstep``)."""

    # Time scales of a cell, in minutes: operators fire waves with minutes of jitter.
    scales: tuple[int, ...] = (5, 15)
    # Proxy traffic is also tested per device time zone of its customers (an operator's
    # leaked zone is a quiet corner of a busy service).
    zones: bool = True
    # A cell is hot with this many distinct accounts at least (a wave of one or two is
    # a coincidence) ...
    min_occupancy: int = 3
    # ... and when its occupancy is this surprising against the network's own mean
    # occupancy at that hour (-log10 of the Poisson tail: 1 in 100).
    cell_surprise: float = 2.0
    # The network's mean at that hour is re-estimated this many times without the hot
    # cells found so far: a campaign that is most of a rented service's traffic must not
    # set the baseline it is judged against (sigma clipping, in Poisson terms).
    baseline_rounds: int = 2
    # Seeds: accounts with at least this many hot buckets on a network, making at
    # least this share of their buckets there.
    seed_hits: int = 2
    seed_share: float = 0.5
    # A member's hits must be this surprising against its own day-shifted timeline
    # (-log10; 1 in 100, after paying for the scales tried) ...
    member_surprise: float = 2.0
    # ... and at least this much likelier at the block's own rate than at that timeline's
    # (log10 of the likelihood ratio, after the same toll for the scales tried: 0, the
    # block explains them better than chance).
    member_support: float = 0.0
    # A session, for counting a member's chances to meet a wave: the buckets of one
    # hour are one trial (a long session is not many independent chances).
    session_minutes: int = 60
    # Rounds of re-deriving a block from its members and re-testing every account.
    rounds: int = 2
    # Passes of the whole search, the members found before taken out each time.
    passes: int = 3
    # A block has at least this many members and its hits are at least this
    # surprising against the sum of its members' null expectations (1 in 10^6).
    min_block: int = 5
    block_surprise: float = 6.0


@dataclass(frozen=True)
class RunParams:
    """Everything a run depends on besides its input."""

    link: LinkParams = field(default_factory=LinkParams)
    lockstep: LockstepParams = field(default_factory=LockstepParams)
    fleet: FleetParams = field(default_factory=FleetParams)
    attribution: AttributionParams = field(default_factory=AttributionParams)
    max_rejected_share: float = 0.01

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# The URI schemes of the neo4j driver (Bolt; +s and +ssc add TLS).
BOLT_SCHEMES = ("bolt", "bolt+s", "bolt+ssc", "neo4j", "neo4j+s", "neo4j+ssc")


@dataclass(frozen=True)
class Neo4jSettings:
    """Connection settings, taken only from the environment."""

    uri: str
    user: str
    password: str
    database: str

    @classmethod
    def from_env(cls) -> Neo4jSettings | None:
        """The settings of ``NEO4J_*``, None without ``NEO4J_URI``; a URI the driver
        cannot speak Bolt to (``http://...``) is a ``UsageError``."""
        uri = os.environ.get("NEO4J_URI")
        if not uri:
            return None
        scheme = uri.split("://", 1)[0].lower() if "://" in uri else ""
        if scheme not in BOLT_SCHEMES:
            raise UsageError(f"NEO4J_URI must be a Bolt address such as bolt://host:7687 "
                             f"({', '.join(BOLT_SCHEMES)}), not "
                             f"{scheme + '://...' if scheme else repr(uri)}")
        return cls(
            uri=uri,
            user=os.environ.get("NEO4J_USER", "neo4j"),
            password=os.environ.get("NEO4J_PASSWORD", ""),
            database=os.environ.get("NEO4J_DATABASE", "neo4j"),
        )
