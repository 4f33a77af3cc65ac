"""The API's old import path for masking: every rule lives in :mod:`attribution.contracts.masking`.

Kept so that callers (the audit log, jobs, routers) keep importing from here;
nothing is defined in this module.
"""

from __future__ import annotations

from attribution.contracts.masking import (
    EMAIL_RE,
    IPV4_RE,
    IPV6_RE,
    LONG_TOKEN_RE,
    mask,
    mask_entity,
    mask_ip,
    mask_param,
    mask_row,
    mask_value,
    merge_duplicates,
    scrub_text,
    tail,
)

__all__ = ["EMAIL_RE", "IPV4_RE", "IPV6_RE", "LONG_TOKEN_RE", "mask", "mask_entity", "mask_ip",
           "mask_param", "mask_row", "mask_value", "merge_duplicates", "scrub_text", "tail"]
