"""Credentials where they do not belong: query strings and the audit log.

A key in a URL ends up in proxy logs, browser history and our own audit log,
so the API refuses it (``deps``) and the audit log never writes it (``audit``).
A parameter is treated as a credential by its name (``api_key``, ``token``,
``password``, ...) or by its value (anything shaped like one of our keys).

>>> is_credential_name("access_token"), is_credential_name("X-API-Key")
(True, True)
>>> is_credential_name("min_size")
False
>>> looks_like_key("atk_1a2b3c4d_Zm9vYmFyYmF6cXV4cXV1eA")
True
"""

from __future__ import annotations

import re
from typing import Any

from attribution.api.keys import PREFIX

REDACTED = "<redacted>"
# Parameter names, lower-cased with everything but letters and digits removed.
_EXACT = frozenset({"key", "keys", "pass", "pwd", "jwt", "sig", "signature", "session",
                    "sessionid", "sid", "bearer", "cookie", "code"})
_PARTS = ("apikey", "token", "secret", "passw", "passphrase", "credential", "auth",
          "privatekey", "accesskey", "signingkey")
_KEY = re.compile(rf"{PREFIX}_[0-9a-f]{{8}}_[A-Za-z0-9_-]{{8,}}")


def _normal(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def is_credential_name(name: str) -> bool:
    """True for a parameter name that says it carries a key, token, password or secret."""
    n = _normal(name)
    return n in _EXACT or n.endswith("key") or any(part in n for part in _PARTS)


def looks_like_key(value: Any) -> bool:
    """True when ``value`` contains something shaped like an API key of ours."""
    return isinstance(value, str) and _KEY.search(value) is not None


def is_credential(name: str, value: Any) -> bool:
    """A parameter that must neither be accepted in a URL nor logged."""
    return is_credential_name(name) or looks_like_key(value)
