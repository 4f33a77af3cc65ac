"""API keys: created and revoked by an admin command, stored only as hashes.

A key is ``atk_<key_id>_<secret>``: the id finds the record, the whole key is
checked against ``sha256(salt || key)`` with a per-key random salt. The keys
are 256-bit random strings, not passwords, so a slow hash (scrypt, bcrypt)
would add nothing against guessing and would cost tens of milliseconds on
every request; a salted sha256 keeps a stolen key file useless while keeping
lookups in microseconds.

The file (``$ATTRIBUTION_HOME/api_keys.json`` by default) is rewritten
atomically under an exclusive lock with mode 0600. The server re-reads it when
it changes on disk (looking at most once a second), so ``attribution keys
revoke`` takes effect within a second, without a restart.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import hmac
import json
import os
import secrets
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

Scope = Literal["read", "admin"]
SCOPES: tuple[Scope, ...] = ("read", "admin")
PREFIX = "atk"


@dataclass(frozen=True)
class ApiKey:
    """A key's record as stored (never the secret)."""

    key_id: str
    name: str
    scope: Scope
    salt: str
    hash: str
    created_at: str
    revoked_at: str | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def allows(self, scope: Scope) -> bool:
        """Admin implies read."""
        return self.active and (self.scope == "admin" or scope == "read")

    def public(self) -> dict[str, Any]:
        """What ``keys list`` shows: everything but the salt and hash."""
        return {k: v for k, v in asdict(self).items() if k not in ("salt", "hash")}


def _digest(salt: str, key: str) -> str:
    return hashlib.sha256(bytes.fromhex(salt) + key.encode()).hexdigest()


def default_keys_path() -> Path:
    """``$ATTRIBUTION_HOME/api_keys.json`` (``.attribution/api_keys.json``)."""
    from attribution.store import default_home

    return default_home() / "api_keys.json"


class KeyStore:
    """The key file: create, revoke, list, and verify presented keys."""

    def __init__(self, path: Path, *, recheck_interval: float = 1.0) -> None:
        self.path = Path(path)
        self.recheck_interval = recheck_interval
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._checked = -float("inf")
        self._keys: dict[str, ApiKey] = {}

    # --- reading -----------------------------------------------------------
    def _load(self) -> dict[str, ApiKey]:
        """The keys by id, re-read when the file changed (checked at most once a second)."""
        now = time.monotonic()
        if now - self._checked < self.recheck_interval:
            return self._keys
        self._checked = now
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._stamp, self._keys = None, {}
            return self._keys
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if stamp != self._stamp:
            with self._lock:
                data = json.loads(self.path.read_text() or "{}")
                self._keys = {k["key_id"]: ApiKey(**k) for k in data.get("keys", [])}
                self._stamp = stamp
        return self._keys

    def list(self) -> list[ApiKey]:
        return sorted(self._load().values(), key=lambda k: (k.created_at, k.key_id))

    def verify(self, presented: str) -> ApiKey | None:
        """The active key record matching ``presented``, or None."""
        parts = presented.strip().split("_", 2)
        if len(parts) != 3 or parts[0] != PREFIX:
            return None
        record = self._load().get(parts[1])
        if record is None or not record.active:
            return None
        if not hmac.compare_digest(record.hash, _digest(record.salt, presented.strip())):
            return None
        return record

    # --- writing -----------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, ApiKey]]:
        """Read-modify-write under an exclusive file lock, replaced atomically."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.with_name(self.path.name + ".lock")
        with open(lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            keys: dict[str, ApiKey] = {}
            if self.path.is_file():
                data = json.loads(self.path.read_text() or "{}")
                keys = {k["key_id"]: ApiKey(**k) for k in data.get("keys", [])}
            yield keys
            body = json.dumps({"version": 1, "keys": [asdict(k) for k in keys.values()]},
                              indent=2)
            fd, tmp = tempfile.mkstemp(prefix=".api_keys.", dir=self.path.parent)
            try:
                with os.fdopen(fd, "w") as out:
                    out.write(body)
                os.chmod(tmp, 0o600)
                os.replace(tmp, self.path)
                self._checked = -float("inf")  # this process sees its own change at once
            except BaseException:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
                raise

    def create(self, name: str, scope: Scope) -> tuple[ApiKey, str]:
        """A new key; returns its record and the secret (shown once, never stored)."""
        if scope not in SCOPES:
            raise ValueError(f"scope must be one of {', '.join(SCOPES)}")
        with self._locked() as keys:
            key_id = secrets.token_hex(4)
            while key_id in keys:
                key_id = secrets.token_hex(4)
            secret = f"{PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
            salt = secrets.token_hex(16)
            record = ApiKey(key_id=key_id, name=name, scope=scope, salt=salt,
                            hash=_digest(salt, secret),
                            created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))
            keys[key_id] = record
        return record, secret

    def revoke(self, key_id: str) -> bool:
        """Mark a key revoked (kept for the audit trail); False if unknown or already revoked."""
        with self._locked() as keys:
            record = keys.get(key_id)
            if record is None or not record.active:
                return False
            keys[key_id] = ApiKey(**{**asdict(record),
                                     "revoked_at": dt.datetime.now(dt.UTC).isoformat(
                                         timespec="seconds")})
        return True
