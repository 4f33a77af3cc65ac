"""The engine's one vocabulary: entity kinds, evidence families and the rule that
families agree.

Every module that needs to know what a kind of entity is called, which family
of link evidence it belongs to, how Neo4j labels it, how a sentence names it or
how it is masked reads it here, so that adding a kind or moving one to another
family is one row.

>>> ENTITIES["prompt"].family, ENTITIES["prompt"].label, ENTITIES["prompt"].noun
('prompt', 'PromptTemplate', 'prompt template')
>>> [k.kind for k in USE_KINDS_OF_FAMILY["network"]]
['ip', 'signup_ip']
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, LiteralString, cast

import polars as pl

# How an identifier of a kind may leave the engine (see attribution.contracts.masking): in full, its
# last characters, its network, a domain unless it is an address, never, or as free text
# with addresses masked.
MaskRule = Literal["shown", "tail", "network", "domain", "never", "text"]


@dataclass(frozen=True)
class EntityKind:
    """One kind of entity an account can hold or a known link can name."""

    kind: str                       # the engine's name (uses.kind, known-link key kind)
    label: LiteralString            # Neo4j label of its node
    key: LiteralString              # the node's key property
    noun: str                       # how a sentence names one ("card fingerprint")
    mask: MaskRule                  # how its identifier is shown outside the engine
    family: str | None = None       # evidence family of links through it (None: not used)
    relationship: LiteralString | None = None  # Account -[REL]-> node, for a used kind
    shared_evidence: str | None = None  # evidence kind of "N accounts share ..." rows


ENTITY_KINDS: tuple[EntityKind, ...] = (
    EntityKind("payment", "PaymentMethod", "fingerprint", "card fingerprint", "tail",
               family="payment", relationship="USES_PAYMENT", shared_evidence="shared_payment"),
    EntityKind("device", "Device", "device_id", "device", "tail",
               family="device", relationship="USES_DEVICE", shared_evidence="shared_device"),
    EntityKind("ip", "IP", "ip", "IP", "network",
               family="network", relationship="USES_IP", shared_evidence="shared_ip"),
    EntityKind("signup_ip", "IP", "ip", "sign-up IP", "network",
               family="network", relationship="SIGNED_UP_FROM"),
    EntityKind("email_domain", "EmailDomain", "domain", "email domain", "domain",
               family="email", relationship="HAS_EMAIL_DOMAIN",
               shared_evidence="shared_email_domain"),
    EntityKind("prompt", "PromptTemplate", "prompt_hash", "prompt template", "tail",
               family="prompt", relationship="USES_PROMPT", shared_evidence="prompt_template"),
    EntityKind("account", "Account", "account_id", "account", "shown"),
    EntityKind("asn", "ASN", "asn", "network AS", "shown"),
    EntityKind("proxy", "Proxy", "proxy_id", "proxy", "shown"),
    EntityKind("organization", "Organization", "org_id", "organization", "shown"),
)
ENTITIES: dict[str, EntityKind] = {k.kind: k for k in ENTITY_KINDS}

# The kinds an account *uses* (rows of the graph's ``uses`` frame), in frame order.
UseKind = Literal["payment", "device", "ip", "signup_ip", "email_domain", "prompt"]
USE_KINDS = cast(tuple[UseKind, ...],
                 tuple(k.kind for k in ENTITY_KINDS if k.relationship is not None))
# Kinds an analyst may pin or hide (a sign-up IP is an IP).
VERDICT_KINDS: tuple[str, ...] = ("payment", "device", "ip", "email_domain", "prompt")
# known_links.entity_type -> the entity kind it names.
LINK_KIND: dict[str, str] = {
    "account": "account",
    "payment_method": "payment",
    "fingerprint": "payment",
    "device": "device",
    "ip": "ip",
    "asn": "asn",
    "email_domain": "email_domain",
    "prompt_hash": "prompt",
}

# ---------------------------------------------------------------- evidence families

# Families of link evidence, kept apart so that correlated evidence counts once.
# ``lockstep`` is group-level: two members of one lockstep block (engine.lockstep).
FAMILIES = ("payment", "device", "network", "email", "prompt", "timing", "creation", "profile",
            "lockstep")
# A card or a device shared by few accounts links them on its own.
STRONG_FAMILIES = ("payment", "device")
# Families whose big entities may still link when their users are anomalous together
# (not networks: rented proxy exits are shared by several operators at once).
COHERENCE_FAMILIES = ("prompt", "email")
# Families that tie an account to what it holds (a card, a device, a domain, a
# template), as opposed to when it acts (timing, sign-up, profile). Networks are
# left out: an operation's shared IPs are mostly rented exits.
IDENTITY_FAMILIES = ("payment", "device", "email", "prompt")
# Profile (time zone, hours, capability mix) moves with timing and with geography:
# it adds weight but never counts as an agreeing family.
AGREEING_FAMILIES = tuple(f for f in FAMILIES if f != "profile")

# uses.kind -> evidence family
KIND_FAMILY: dict[str, str] = {k.kind: k.family for k in ENTITY_KINDS if k.family is not None}
USE_KINDS_OF_FAMILY: dict[str, list[EntityKind]] = {
    f: [k for k in ENTITY_KINDS if k.family == f] for f in FAMILIES}
STRENGTH_COLUMNS = [f"s_{f}" for f in FAMILIES]


def families_agreeing(threshold: float) -> pl.Expr:
    """How many families of a pair (``s_<family>`` columns) reach ``threshold``: the one
    rule by which a link, an attachment or a pinned pair counts agreeing evidence."""
    return pl.sum_horizontal([(pl.col(f"s_{f}") >= threshold).cast(pl.Int32)
                              for f in AGREEING_FAMILIES])


def total_weight() -> pl.Expr:
    """The summed strength of every family of a pair."""
    return pl.sum_horizontal(STRENGTH_COLUMNS)
