"""Masking of network identifiers, shared by evidence sentences and the API."""

from __future__ import annotations

import ipaddress
from functools import lru_cache


@lru_cache(maxsize=65536)
def mask_ip(value: str, *, hidden: str = "…") -> str:
    """The /24 (IPv4) or /48 (IPv6) network of an address; never the address."""
    try:
        ip = ipaddress.ip_address(value.strip())
    except ValueError:
        return hidden + value[-4:] if len(value) > 6 else hidden
    prefix = 24 if ip.version == 4 else 48
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))
