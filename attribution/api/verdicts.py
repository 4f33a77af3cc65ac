"""The API's handle on a verdict log (kept for ``Service.verdicts``).

Verdicts have their own store now, ``attribution.verdicts``: one append-only
log per store that both ``attribution verdict`` and ``POST /verdicts`` write
and every later run applies. This class is a thin alias over it.
"""

from __future__ import annotations

from typing import Any

from attribution.verdicts import VerdictStore


class VerdictLog(VerdictStore):
    """An append-only JSON-lines file (``attribution.verdicts.VerdictStore``)."""

    def append(self, record: dict[str, Any]) -> None:
        self.append_raw(record)

    def read(self) -> list[dict[str, Any]]:
        return self.records()
