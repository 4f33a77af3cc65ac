"""Named kill points: where the crash tests kill a job, exactly as an operator's ``kill -9``.

``ATTRIBUTION_KILL_AT=name`` makes the process SIGKILL itself when it reaches
``checkpoint(name)``; unset, a checkpoint costs one environment lookup.
"""

from __future__ import annotations

import os

KILL_AT = "ATTRIBUTION_KILL_AT"


def checkpoint(name: str) -> None:
    """A named point of a job: ``ATTRIBUTION_KILL_AT=name`` kills the process here with
    SIGKILL, exactly as an operator's ``kill -9`` would (the crash tests' fault injection).

    The batch job passes one at the start of every stage (the stage's name) and at
    ``locked`` and ``written``; the stores mark the steps of their writes
    (``load:...``, ``write:...``), each named after what is done when it is reached.
    """
    if os.environ.get(KILL_AT) == name:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)
