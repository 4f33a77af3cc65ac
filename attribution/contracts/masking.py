"""One masking rule per kind of entity, for every value that leaves the engine.

Analysts need to see *that* accounts share a card, a device or a network, and
how many do; they never need the identifier itself, and evidence is shown to
people outside the team. Every place that shows a value (evidence sentences,
API responses, named-query rows, notebooks, the audit log, ingest's error
messages) masks it here, by the *kind* of entity it is, never by the name of
the column it happens to sit in:

============================  ==============================================
kind                          shown as
============================  ==============================================
account, fleet, organization  in full: the engine's own handles. An account
run, proxy                    id is what an analyst acts on (the key of
                              ``/accounts/{id}``, of verdicts, of a ban); it
                              is the provider's opaque id, not the person's
                              e-mail, card or address. Proxy ids name a
                              reseller's exit pool, not a person.
asn                           in full: a network, not a person
email_domain                  in full, unless it holds an ``@`` (then it is
                              a person's address: ``<email>``)
payment, payment_method,      the last 4 characters (``…9f2c``): enough to
device, prompt                tell two apart in a table, too little to look
                              one up
ip                            its /24 (IPv4) or /48 (IPv6) network
email                         never (``<email>``)
text                          free text with e-mail addresses and IPs masked
public                        in full: vocabulary (labels, relationship
                              types, countries, plans, sources, providers),
                              names of organizations, numbers and times
============================  ==============================================

>>> mask("payment", "fp_8c1e2d9a")
'…2d9a'
>>> mask("ip", "203.0.113.77")
'203.0.113.0/24'
>>> mask("email_domain", "alpha-labs.test")
'alpha-labs.test'
"""

from __future__ import annotations

import ipaddress
import json
import re
import sys
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Literal, cast, get_args

from attribution.contracts.vocabulary import ENTITY_KINDS, MaskRule

if TYPE_CHECKING:  # the driver costs 0.3 s to import, and a run on the embedded store never needs it
    from neo4j.graph import Node, Path, Relationship

Kind = Literal["account", "fleet", "organization", "run", "proxy", "asn", "email_domain",
               "payment", "payment_method", "device", "prompt", "ip", "email", "text",
               "public"]
HIDDEN = "…"
KEEP = 4            # characters of a card, device or prompt hash that are shown
EMAIL_SHOWN = "<email>"
# The rule of each kind: an entity kind's is its row of ``attribution.contracts.vocabulary``; the
# engine's own handles, e-mail addresses and free text are kinds of this module only.
RULES: dict[str, MaskRule] = {
    **{k.kind: k.mask for k in ENTITY_KINDS},
    "fleet": "shown", "run": "shown", "public": "shown",
    "payment_method": "tail", "email": "never", "text": "text",
}
SHOWN: frozenset[str] = frozenset(k for k, rule in RULES.items() if rule == "shown")
# Other names the code base gives a kind: the ``uses`` kind of a sign-up IP and the
# ``known_links`` entity types.
ALIASES: dict[str, Kind] = {"signup_ip": "ip", "fingerprint": "payment", "prompt_hash": "prompt"}

_KINDS: frozenset[str] = frozenset(get_args(Kind))

EMAIL_RE = re.compile(r"[^\s@,;:<>()\[\]\"']+@[^\s@,;:<>()\[\]\"']+")
# Addresses in free text, with a /prefix when they are written as a network already.
IPV4_RE = re.compile(r"\b\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}\b(?:/\d{1,3}\b)?")
IPV6_RE = re.compile(r"(?<![0-9A-Za-z:])(?:[0-9a-fA-F]{0,4}:){2,7}[0-9a-fA-F]{0,4}"
                     r"(?![0-9A-Za-z:])(?:/\d{1,3}\b)?")
LONG_TOKEN_RE = re.compile(r"\b[0-9A-Za-z_\-]{16,}\b")


def kind_of(name: str) -> Kind | None:
    """The kind a name (a kind, a ``uses`` kind, an entity type) stands for, or None."""
    if name in _KINDS:
        return cast(Kind, name)
    return ALIASES.get(name)


def tail(value: str, keep: int = KEEP) -> str:
    """The last ``keep`` characters after an ellipsis (values this short are fully hidden)."""
    return HIDDEN + value[-keep:] if len(value) > keep + 2 else HIDDEN


@lru_cache(maxsize=65536)
def mask_ip(value: str, *, hidden: str = HIDDEN) -> str:
    """The /24 (IPv4) or /48 (IPv6) network of an address; never the address."""
    try:
        ip = ipaddress.ip_address(value.strip())
    except ValueError:
        return hidden + value[-KEEP:] if len(value) > KEEP + 2 else hidden
    prefix = 24 if ip.version == 4 else 48
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


def mask(kind: str, value: str) -> str:
    """``value``, an entity of ``kind``, as it may be shown (see the module's table).

    An unknown kind is hidden like a card: a new kind must be added here to be shown.
    """
    rule = RULES.get(kind_of(kind) or "", "tail")
    if rule == "shown":
        return value
    if rule == "network":
        return mask_ip(value)
    if rule == "never":
        return EMAIL_SHOWN
    if rule == "domain":
        return value if "@" not in value else EMAIL_SHOWN
    if rule == "text":
        return scrub_text(value, tokens=False)
    return tail(value)


# ``mask`` under the name the API's routers use.
mask_entity = mask


def mask_value(kind: str, value: Any) -> Any:
    """``mask`` for any value: None stays None, lists element-wise, numbers and times as they
    are unless the kind is never shown in full (an IP or a card is hidden whatever its type)."""
    if value is None:
        return None
    if isinstance(value, list | tuple):
        return [mask_value(kind, v) for v in value]
    if isinstance(value, str):
        return mask(kind, value)
    k = kind_of(kind)
    if k in SHOWN or k in ("text", "email_domain") or isinstance(value, bool | float):
        return value
    return mask(kind, str(value))


def scrub_text(text: str, *, tokens: bool = True) -> str:
    """Free text with e-mail addresses and IPs masked; with ``tokens``, long opaque tokens too
    (error messages, where an identifier of any kind may be quoted)."""
    text = EMAIL_RE.sub(EMAIL_SHOWN, text)
    text = IPV4_RE.sub(_network_in_text, text)
    text = IPV6_RE.sub(_network_in_text, text)
    return LONG_TOKEN_RE.sub(lambda m: tail(m.group(0)), text) if tokens else text


def _network_in_text(match: re.Match[str]) -> str:
    """An address found in text as its network; a network as wide as that stays as it is
    (text already masked is not masked twice); what is no address stays (a time, 09:30:00)."""
    found = match.group(0)
    address, _, prefix = found.partition("/")
    if not _is_ip(address):
        return found
    if prefix:
        try:
            network = ipaddress.ip_network(found, strict=False)
        except ValueError:
            return mask_ip(address) + found[len(address):]
        if network.prefixlen <= (24 if network.version == 4 else 48):
            return str(network)
    return mask_ip(address)


# --------------------------------------------------------------------------- graph values

# Label -> (kind of its key, key property), in the order a node's labels are looked at.
LABELS: dict[str, tuple[Kind, str]] = {
    **{k.label: (cast(Kind, k.kind), k.key) for k in ENTITY_KINDS if k.kind != "signup_ip"},
    "Fleet": ("fleet", "fleet_id"),
    "Run": ("run", "run_id"),
}
# The properties a node or relationship shows, with their kinds: an allowlist, so that
# internal ones (minute_sig, _snapshot, _row, email_local, ...) and any added later never
# leave. Kept to what tells a node apart: a path of four hops stays a few hundred bytes.
NODE_FIELDS: dict[str, dict[str, Kind]] = {
    "Account": {"account_id": "account"},
    "PaymentMethod": {"fingerprint": "payment", "kind": "public"},
    "Device": {"device_id": "device", "platform": "public"},
    "IP": {"ip": "ip", "asn": "asn", "hosting": "public"},
    "Proxy": {"proxy_id": "proxy", "provider": "public", "kind": "public"},
    "ASN": {"asn": "asn", "as_org": "public"},
    "EmailDomain": {"domain": "email_domain"},
    "PromptTemplate": {"prompt_hash": "prompt"},
    "Organization": {"org_id": "organization", "name": "public"},
    "Fleet": {"fleet_id": "fleet", "run_id": "run", "size": "public", "sybil_score": "public",
              "org_id": "organization"},
    "Run": {"run_id": "run"},
    "Evidence": {"fleet_id": "fleet", "org_id": "organization", "kind": "public",
                 "detail": "text", "weight": "public"},
}
REL_FIELDS: dict[str, dict[str, Kind]] = {
    "KNOWN_AS": {"source": "public", "confidence": "public"},
    "SCORED": {"fleet_id": "fleet", "sybil_score": "public", "org_id": "organization"},
    "ATTRIBUTED_TO": {"confidence": "public"},
}


def label_kind(label: str) -> Kind | None:
    """The kind of a node label's key (``IP`` -> ``ip``), None for labels without one."""
    found = LABELS.get(label)
    return found[0] if found else None


def mask_labelled(text: str) -> str:
    """``"Label key"`` (as ``org_fleets`` lists entities) with the key masked by the label."""
    label, _, key = text.partition(" ")
    return f"{label} {mask(label_kind(label) or 'unknown', key)}" if key else text


def _label(node: Node) -> str:
    return next((lb for lb in LABELS if lb in node.labels),
                next((lb for lb in NODE_FIELDS if lb in node.labels), min(node.labels, default="")))


def mask_node(node: Node) -> dict[str, Any]:
    """A node as a small dict: its label and the allowed properties, masked by kind."""
    label = _label(node)
    out: dict[str, Any] = {"label": label}
    for name, kind in NODE_FIELDS.get(label, {}).items():
        if name in node:
            out[name] = mask_value(kind, node[name])
    return out


def mask_relationship(rel: Relationship) -> dict[str, Any]:
    """A relationship as a small dict: its type and the allowed properties, masked by kind."""
    out: dict[str, Any] = {"type": rel.type}
    for name, kind in REL_FIELDS.get(rel.type, {}).items():
        if name in rel:
            out[name] = mask_value(kind, rel[name])
    return out


def mask_path(path: Path) -> dict[str, Any]:
    """A path as its masked nodes and relationships (``start``/``end`` index the nodes)."""
    nodes = list(path.nodes)
    index = {n.element_id: i for i, n in enumerate(nodes)}
    rels = []
    for rel in path.relationships:
        start = rel.start_node.element_id if rel.start_node is not None else None
        end = rel.end_node.element_id if rel.end_node is not None else None
        rels.append({**mask_relationship(rel), "start": index.get(start or ""),
                     "end": index.get(end or "")})
    return {"nodes": [mask_node(n) for n in nodes], "relationships": rels}


def mask_graph(value: Any, kind: str | None = None) -> Any:
    """A driver value with nodes, relationships and paths masked by label; other values by
    ``kind`` (None: not an identifier), inside lists and maps too."""
    # Only the driver makes nodes, relationships and paths: none exist before it is imported.
    graph = sys.modules.get("neo4j.graph")
    if graph is not None:
        if isinstance(value, graph.Node):
            return mask_node(value)
        if isinstance(value, graph.Relationship):
            return mask_relationship(value)
        if isinstance(value, graph.Path):
            return mask_path(value)
    if isinstance(value, list | tuple):
        return [mask_graph(v, kind) for v in value]
    if isinstance(value, dict):
        return {str(k): mask_graph(v, kind) for k, v in value.items()}
    if kind is None:
        return value
    return mask_value(kind, value)


# --------------------------------------------------------------------------- query rows

# The columns of the named queries (``queries/*.cypher`` and the notebooks' own), by kind;
# a test checks that every column of every query is here. A column in ``LABELLED_BY``
# takes its kind from the node label in another column of the same row; ``labelled``
# columns hold "Label key" strings; ``graph`` columns hold nodes, relationships or paths.
# A column missing here is unknown text: e-mails, IPs and long opaque tokens in it are
# masked.
LABELLED_BY: dict[str, str] = {"entity_id": "entity_label", "source_id": "source_label",
                               "target_id": "target_label"}
LABELLED = "labelled"
GRAPH = "graph"
_BY_KIND: dict[str, tuple[str, ...]] = {
    "public": (
        "accounts", "accounts_a", "accounts_b", "accounts_on_entity", "accounts_touching",
        "active_days", "affiliated_name", "affiliation_confidence", "attributed_fleets",
        "capabilities", "capability", "change", "confidence", "confidence_after",
        "confidence_before", "count", "country", "created_at", "current", "entity_label",
        "exchanges", "exit_ips", "finished_at", "first_exchange", "first_seen",
        "fleet_accounts", "fleet_confidence", "fleet_org_name", "fleet_size",
        "fleet_sybil_score", "fleets", "hops", "kind", "kinds", "known_entities",
        "last_exchange", "last_seen", "link_confidence", "mean_confidence", "name",
        "observed_at", "org_name", "plan", "provider", "relationship", "relationships",
        "runner_up_confidence", "runner_up_name", "size", "size_after", "size_before",
        "source", "source_label", "started_at", "sybil_fleets", "sybil_score",
        "target_label", "top_capabilities", "via", "weight",
    ),
    "account": ("account_id", "members", "neighbours"),
    "fleet": ("fleet_id",),
    "organization": ("affiliated_org_id", "attributed_org_id", "fleet_org_id", "known_as",
                     "org_after", "org_before", "org_id", "runner_up_org_id"),
    "run": ("previous_run_id", "run_id"),
    "email_domain": ("email_domain",),
    "text": ("detail", "org_claim"),
    LABELLED: ("entities",),
    GRAPH: ("path",),
}
COLUMN_KINDS: dict[str, str] = {c: kind for kind, cols in _BY_KIND.items() for c in cols}


def column_kind(column: str) -> str:
    """The declared kind of a query column (``unknown`` when it is not declared)."""
    return COLUMN_KINDS.get(column, "unknown")


def mask_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """One result row with every value masked by its kind: graph values by their labels,
    ``entity_id`` by its row's ``entity_label``, other columns by ``COLUMN_KINDS``."""
    out: dict[str, Any] = {}
    for column, value in row.items():
        kind = column_kind(column)
        if column in LABELLED_BY:
            label = row.get(LABELLED_BY[column])
            kind = (label_kind(label) if isinstance(label, str) else None) or "unknown"
        if kind == LABELLED:
            out[column] = [mask_labelled(v) if isinstance(v, str) else mask_graph(v)
                           for v in value] if isinstance(value, list) else value
        elif kind in ("unknown", GRAPH):
            out[column] = _unknown(value)
        else:
            out[column] = mask_graph(value, kind)
    return out


def _unknown(value: Any) -> Any:
    """An undeclared column: graph values by label, text scrubbed of anything identifying."""
    if isinstance(value, str):
        return scrub_text(value)
    if isinstance(value, list | tuple):
        return [_unknown(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _unknown(v) for k, v in value.items()}
    return mask_graph(value)


MERGED = "merged_rows"


def merge_duplicates(rows: Iterable[Mapping[str, Any]]) -> tuple[list[dict[str, Any]], bool]:
    """Rows that masking made identical (two IPs of one /24) as one row with a count.

    Returns the rows in first-seen order and whether any were merged; when some were, every
    row gets ``merged_rows`` (how many result rows it stands for), so identical rows are
    never presented as distinct ones.
    """
    seen: dict[str, dict[str, Any]] = {}
    counts: dict[str, int] = {}
    for row in rows:
        key = json.dumps(row, sort_keys=True, default=str)
        if key not in seen:
            seen[key] = dict(row)
        counts[key] = counts.get(key, 0) + 1
    merged = any(n > 1 for n in counts.values())
    if merged:
        for key, row in seen.items():
            row[MERGED] = counts[key]
    return list(seen.values()), merged


# --------------------------------------------------------------------------- the audit log

# Request parameters of the API by kind; values of other parameters that look like an
# e-mail or an IP are masked all the same, and names holding a sensitive word are tailed.
PARAM_KINDS: dict[str, str] = {
    "account_id": "account", "fleet_id": "fleet", "fleet_a": "fleet", "fleet_b": "fleet",
    "org_id": "organization", "run_id": "run", "from_run": "run", "to_run": "run",
    "entity_id": "unknown", "kind": "public", "name": "public",
}
SENSITIVE_WORDS = frozenset({"ip", "email", "fingerprint", "card", "device", "payment",
                             "phone", "entity", "prompt", "hash", "address"})


def mask_param(key: str, value: Any) -> Any:
    """A request parameter as it may appear in the audit log."""
    if isinstance(value, dict):
        kind = value.get("kind")
        return {str(k): (mask_value(str(kind), v) if k == "entity_id" and isinstance(kind, str)
                         and kind_of(kind) else mask_param(str(k), v))
                for k, v in value.items()}
    if isinstance(value, list):
        return [mask_param(key, v) for v in value[:20]]
    if not isinstance(value, str):
        return value
    lowered = key.lower()
    if "email" in lowered or EMAIL_RE.search(value):
        return EMAIL_SHOWN
    if _is_ip(value):
        return mask_ip(value)
    kind = PARAM_KINDS.get(lowered)
    words = set(re.split(r"[^a-z0-9]+", lowered))
    if (kind is None or kind == "unknown") and words & SENSITIVE_WORDS:
        return tail(value)
    return value if len(value) <= 80 else value[:77] + HIDDEN


def _is_ip(value: str) -> bool:
    if "." not in value and ":" not in value:  # neither IPv4 nor IPv6: skip the parse
        return False
    try:
        ipaddress.ip_address(value.strip())
    except ValueError:
        return False
    return True
