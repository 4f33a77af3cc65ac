"""Analyst verdicts, appended to ``$ATTRIBUTION_HOME/verdicts.jsonl``.

Interim storage: verdicts get their own store (and start to steer later runs)
in a later issue. Until then each verdict is one JSON line with who recorded
it, when and why, appended under a lock and fsynced; lines are never
rewritten or removed.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any


class VerdictLog:
    """An append-only JSON-lines file."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def append(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, default=str, ensure_ascii=False) + "\n"
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as out:
                out.write(line)
                out.flush()
                os.fsync(out.fileno())

    def read(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        with open(self.path, encoding="utf-8") as src:
            return [json.loads(line) for line in src if line.strip()]
