"""The property graph, in columnar form, that every store holds and returns.

Nodes: Account (with behaviour aggregates), PaymentMethod (one node per card
*fingerprint*, so the same card used through per-account payment ids is one
node), Device, IP, Proxy, ASN, EmailDomain, PromptTemplate, Organization.
Account relationships are one long ``uses`` table, one row per
(account, kind, entity) with first/last seen and a count; IP nodes carry their
ASN and proxy. ``known_links`` are resolved to the same (kind, key) space so
attribution can join them to ``uses`` directly.

``activity`` keeps the raw incidences the group-level lockstep method reads: one row
per account, minute and network it acted on (the network is the proxy provider of a
known exit, else the ASN, else the /24). Pairwise evidence needs only aggregates, but
a group acting a few accounts at a time in the same minutes is visible only in these.

Both stores return exactly this structure from ``read_graph``; the algorithm
modules see only it, never a store.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

import polars as pl

from attribution.contracts.vocabulary import LINK_KIND, USE_KINDS, UseKind

__all__ = ["ACTIVITY_SCHEMA", "LINK_KIND", "TS", "USES_SCHEMA", "USE_KINDS", "PropertyGraph", "UseKind"]

TS = pl.Datetime("us", "UTC")

USES_SCHEMA = {
    "account_id": pl.String,
    "kind": pl.String,
    "entity_id": pl.String,
    "first_seen": TS,
    "last_seen": TS,
    "count": pl.Int64,
}

# The raw incidences of the lockstep method (see ``attribution.engine.lockstep``).
ACTIVITY_SCHEMA = {
    "account_id": pl.String,
    "minute": pl.Int32,  # minutes since the Unix epoch
    "network": pl.String,
}


@dataclass
class PropertyGraph:
    """Nodes and relationships of one loaded snapshot, as polars frames."""

    accounts: pl.DataFrame
    uses: pl.DataFrame
    payments: pl.DataFrame
    devices: pl.DataFrame
    ips: pl.DataFrame
    proxies: pl.DataFrame
    organizations: pl.DataFrame
    known_links: pl.DataFrame
    activity: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=ACTIVITY_SCHEMA))

    def frames(self) -> dict[str, pl.DataFrame]:
        """The frames by name, for stores that persist them one by one."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_frames(cls, frames: dict[str, pl.DataFrame]) -> PropertyGraph:
        """A graph from its frames; a graph stored before ``activity`` existed gets an empty one."""
        return cls(**{f.name: frames[f.name] for f in fields(cls) if f.name in frames})

    def canonical(self) -> PropertyGraph:
        """Rows in a fixed order, so stores that lose order give identical graphs."""
        keys = {
            "accounts": ["account_id"],
            "uses": ["account_id", "kind", "entity_id"],
            "payments": ["fingerprint"],
            "devices": ["device_id"],
            "ips": ["ip"],
            "proxies": ["proxy_id"],
            "organizations": ["org_id"],
            "known_links": ["kind", "key", "org_id", "entity_type", "entity_id"],
            "activity": ["account_id", "minute", "network"],
        }
        # A store that keeps order (the embedded one writes the graph as built, in this
        # order) gives frames already sorted: checking costs a pass over the key columns,
        # sorting tens of millions of rows costs their row-encoded keys and a copy.
        return PropertyGraph(**{
            name: frame if _in_order(frame, keys[name]) else frame.sort(keys[name], nulls_last=True)
            for name, frame in self.frames().items()
        })


def _in_order(frame: pl.DataFrame, keys: list[str]) -> bool:
    """Whether the rows are sorted by ``keys`` (ascending, nulls last), each row against the next.

    >>> _in_order(pl.DataFrame({"a": [1, 1, None], "b": ["x", "y", "z"]}), ["a", "b"])
    True
    >>> _in_order(pl.DataFrame({"a": [1, 1], "b": ["y", "x"]}), ["a", "b"])
    False
    """
    if frame.height < 2:
        return True
    late = pl.lit(False)
    tie = pl.lit(True)
    for key in keys:
        this, after = pl.col(key), pl.col(key).shift(-1)
        before_null = this.is_null() & after.is_not_null()
        late = late | (tie & ((this > after).fill_null(False) | before_null))
        tie = tie & this.eq_missing(after)
    # the last row has no next row: its comparisons are against null and never late
    return not frame.select(late.head(frame.height - 1).any()).item()
