"""The snapshot tables of the data contract, as data.

Ingest validates against these definitions and the fixture generator writes
them, so the contract lives in exactly one place (``shared/CONTRACT.md`` is the
prose form). Column kinds are logical: ``str`` (ids and text), ``int``,
``float``, ``bool``, ``ts`` (UTC timestamp), ``ip`` (v4 or v6 text). A column
holding entities says which (``entity``, a kind of :mod:`attribution.contracts.masking`):
that decides how its values are shown in messages, and makes a text column an
identifier, at most ``MAX_ID_LENGTH`` characters long.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

ColumnKind = Literal["str", "int", "float", "bool", "ts", "ip"]

# The longest identifier (in characters) a key or id column may hold; longer ones are
# rejected rows. Both stores must accept the same input: Neo4j refuses to index a property
# value over its index key limit (8,167 bytes in 5.x; a 10 kB account_id ended a run on
# Neo4j with "Property value is too large to index" while the embedded store took it).
# 256 characters are at most 1 kB of UTF-8, far under that limit even for a composite key,
# and hold every real identifier: a UUID is 36, a SHA-256 hex digest 64, an e-mail address
# at most 254 (RFC 5321), an IPv6 text 45.
MAX_ID_LENGTH = 256


@dataclass(frozen=True)
class Column:
    """One contract column; ``nullable`` is the contract's ``?``.

    ``entity``: the kind of entity its values are (``account``, ``email``, ``ip``, ...), or
    ``entity_from``: the column of the same row that names it (``known_links.entity_id``).
    """

    name: str
    kind: ColumnKind
    nullable: bool = False
    choices: tuple[str, ...] = ()
    entity: str | None = None
    entity_from: str | None = None

    @property
    def identifier(self) -> bool:
        """Text naming an entity: its length is limited to ``MAX_ID_LENGTH``."""
        return (self.entity is not None or self.entity_from is not None) and self.kind in (
            "str", "ip")


@dataclass(frozen=True)
class Reference:
    """A foreign key: ``column`` must name a row of ``table.target``."""

    column: str
    table: str
    target: str


@dataclass(frozen=True)
class Table:
    """One snapshot table: its columns, key and references."""

    name: str
    columns: tuple[Column, ...]
    key: tuple[str, ...] = ()
    references: tuple[Reference, ...] = ()
    required: bool = False
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)


CAPABILITIES = ("coding", "agentic", "reasoning", "chat", "writing", "other")
ENTITY_TYPES = (
    "account",
    "payment_method",
    "fingerprint",
    "device",
    "ip",
    "asn",
    "email_domain",
    "prompt_hash",
)

TABLES: dict[str, Table] = {
    t.name: t
    for t in (
        Table(
            "accounts",
            (
                Column("account_id", "str", entity="account"),
                Column("created_at", "ts"),
                Column("email", "str", entity="email"),
                Column("country", "str", nullable=True),
                Column("plan", "str", nullable=True, choices=("free", "pro", "team", "api")),
                Column("org_claim", "str", nullable=True),
                Column("signup_ip", "ip", nullable=True, entity="ip"),
            ),
            key=("account_id",),
            required=True,
        ),
        Table(
            "payment_methods",
            (
                Column("payment_method_id", "str", entity="payment_method"),
                Column("fingerprint", "str", entity="payment"),
                Column("kind", "str", choices=("card", "wallet", "bank")),
                Column("bin", "str", nullable=True),
                Column("issuer_country", "str", nullable=True),
            ),
            key=("payment_method_id",),
        ),
        Table(
            "account_payments",
            (
                Column("account_id", "str", entity="account"),
                Column("payment_method_id", "str", entity="payment_method"),
                Column("first_seen", "ts"),
                Column("last_seen", "ts"),
            ),
            key=("account_id", "payment_method_id"),
            references=(
                Reference("account_id", "accounts", "account_id"),
                Reference("payment_method_id", "payment_methods", "payment_method_id"),
            ),
        ),
        Table(
            "devices",
            (
                Column("device_id", "str", entity="device"),
                Column("user_agent", "str", nullable=True),
                Column("platform", "str", nullable=True),
                Column("timezone", "str", nullable=True),
                Column("language", "str", nullable=True),
            ),
            key=("device_id",),
        ),
        Table(
            "account_devices",
            (
                Column("account_id", "str", entity="account"),
                Column("device_id", "str", entity="device"),
                Column("first_seen", "ts"),
                Column("last_seen", "ts"),
                Column("sessions", "int"),
            ),
            key=("account_id", "device_id"),
            references=(
                Reference("account_id", "accounts", "account_id"),
                Reference("device_id", "devices", "device_id"),
            ),
        ),
        Table(
            "proxies",
            (
                Column("proxy_id", "str", entity="proxy"),
                Column("provider", "str"),
                Column(
                    "kind", "str", choices=("residential", "datacenter", "vpn", "mobile", "tor")
                ),
            ),
            key=("proxy_id",),
        ),
        Table(
            "ips",
            (
                Column("ip", "ip", entity="ip"),
                Column("asn", "int", nullable=True, entity="asn"),
                Column("as_org", "str", nullable=True),
                Column("country", "str", nullable=True),
                Column("hosting", "bool", nullable=True),
                Column("proxy_id", "str", nullable=True, entity="proxy"),
            ),
            key=("ip",),
            references=(Reference("proxy_id", "proxies", "proxy_id"),),
        ),
        Table(
            "account_ips",
            (
                Column("account_id", "str", entity="account"),
                Column("ip", "ip", entity="ip"),
                Column("first_seen", "ts"),
                Column("last_seen", "ts"),
                Column("requests", "int"),
            ),
            key=("account_id", "ip"),
            references=(Reference("account_id", "accounts", "account_id"),),
        ),
        Table(
            "exchanges",
            (
                Column("account_id", "str", entity="account"),
                Column("ts", "ts"),
                Column("ip", "ip", nullable=True, entity="ip"),
                Column("device_id", "str", nullable=True, entity="device"),
                Column("model", "str", nullable=True),
                Column("input_tokens", "int"),
                Column("output_tokens", "int"),
                Column("capability", "str", nullable=True),
                Column("prompt_hash", "str", nullable=True, entity="prompt"),
            ),
            references=(Reference("account_id", "accounts", "account_id"),),
        ),
        Table(
            "organizations",
            (
                Column("org_id", "str", entity="organization"),
                Column("name", "str"),
                Column("country", "str", nullable=True),
                Column("kind", "str", nullable=True),
            ),
            key=("org_id",),
        ),
        Table(
            "known_links",
            (
                Column("entity_type", "str", choices=ENTITY_TYPES),
                Column("entity_id", "str", entity_from="entity_type"),
                Column("org_id", "str", entity="organization"),
                Column("source", "str"),
                Column("confidence", "float", nullable=True),
                Column("observed_at", "ts", nullable=True),
            ),
            key=("entity_type", "entity_id", "org_id"),
            references=(Reference("org_id", "organizations", "org_id"),),
        ),
    )
}

# Tables in dependency order: a table's references point only to earlier ones.
LOAD_ORDER = (
    "accounts",
    "payment_methods",
    "account_payments",
    "devices",
    "account_devices",
    "proxies",
    "ips",
    "account_ips",
    "exchanges",
    "organizations",
    "known_links",
)
