"""Masking of personal identifiers in responses, logs and error bodies.

Analysts need to see *that* accounts share a card, a device or an IP range, and
how many do; the API never needs to show the identifier itself. Card
fingerprints, devices and prompt hashes keep their last four characters, IPs
their /24 (IPv4) or /48 (IPv6) network, and email addresses are never shown.

>>> mask_entity("payment", "fp_8c1e2d9a")
'…2d9a'
>>> mask_entity("ip", "203.0.113.77")
'203.0.113.0/24'
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from attribution.masking import mask_ip

EMAIL_RE = re.compile(r"[^\s@,;:<>\"']+@[^\s@,;:<>\"']+")
IPV4_RE = re.compile(r"\b(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\b")
IPV6_RE = re.compile(r"\b(?:[0-9a-fA-F]{0,4}:){2,7}[0-9a-fA-F]{0,4}\b")
LONG_TOKEN_RE = re.compile(r"\b[0-9A-Za-z_\-]{16,}\b")
# Identifier-like parameter names whose values are always masked in logs.
SENSITIVE_KEYS = ("ip", "email", "fingerprint", "card", "device", "payment", "phone", "entity")


def tail(value: str, keep: int = 4) -> str:
    """The last ``keep`` characters after an ellipsis (short values fully hidden)."""
    return "…" + value[-keep:] if len(value) > keep + 2 else "…"


def mask_entity(kind: str, entity_id: str) -> str:
    """How an entity of ``kind`` (a ``uses`` kind) is shown to API clients."""
    if kind in ("ip", "signup_ip"):
        return mask_ip(entity_id)
    if kind == "email_domain":
        # A domain is not an address; local parts never leave the graph.
        return entity_id if "@" not in entity_id else "<email>"
    return tail(entity_id)


def scrub_text(text: str) -> str:
    """Free text with emails, IPs and long opaque tokens masked (error messages)."""
    text = EMAIL_RE.sub("<email>", text)
    text = IPV4_RE.sub(lambda m: mask_ip(m.group(0)), text)
    text = IPV6_RE.sub(lambda m: mask_ip(m.group(0)) if m.group(0).count(":") >= 2 else m.group(0),
                       text)
    return LONG_TOKEN_RE.sub(lambda m: tail(m.group(0)), text)


def mask_param(key: str, value: Any) -> Any:
    """A request parameter as it may appear in the audit log."""
    if isinstance(value, dict):
        return {str(k): mask_param(str(k), v) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_param(key, v) for v in value[:20]]
    if not isinstance(value, str):
        return value
    lowered = key.lower()
    if "email" in lowered or EMAIL_RE.search(value):
        return "<email>"
    if any(word in lowered for word in SENSITIVE_KEYS):
        return mask_ip(value) if _is_ip(value) else tail(value)
    if _is_ip(value):
        return mask_ip(value)
    return value if len(value) <= 80 else value[:77] + "…"


def _is_ip(value: str) -> bool:
    if "." not in value and ":" not in value:  # neither IPv4 nor IPv6: skip the parse
        return False
    try:
        ipaddress.ip_address(value.strip())
    except ValueError:
        return False
    return True
