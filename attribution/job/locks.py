"""Exclusive, non-blocking file locks that die with their process.

A job holds its store's lock, a run holds its ``--out`` directory's lock. Both
are ``flock`` locks: the kernel drops them when the process dies, even by
``kill -9``, so a crash never leaves a stale lock behind. A lock file may be
removed on release (``transient``): a taker then checks that the file it locked
is still the one at the path, so two processes never hold two different files.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import time
from pathlib import Path
from types import TracebackType
from typing import IO


class Locked(RuntimeError):
    """Another process holds the lock; the message names it."""


class JobLocked(Locked):
    """Another job holds a store's lock (``attribution reattribute`` exits 75)."""


class FileLock:
    """An exclusive ``flock`` on ``path``, taken at once or refused with ``error``.

    The holder's pid and start time are written into the file so that the
    refusal can name it.
    """

    def __init__(self, path: Path, *, busy: str, error: type[Locked] = Locked,
                 transient: bool = False) -> None:
        self.path = Path(path)
        self.busy = busy
        self.error = error
        self.transient = transient
        self._fh: IO[str] | None = None

    def acquire(self) -> FileLock:
        """Take the lock or raise ``self.error`` at once (never waits)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fh = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 (held until release)
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                holder = _read_holder(fh)
                fh.close()
                if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise self.error(f"{self.busy}{holder}; try again when it ends") from None
                raise
            if not self.transient or _same_file(fh, self.path):
                break
            fh.close()  # the holder removed it as we opened it: lock the new one
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps({"pid": os.getpid(), "since": time.strftime(
            "%Y-%m-%dT%H:%M:%SZ", time.gmtime())}) + "\n")
        fh.flush()
        self._fh = fh
        return self

    def release(self) -> None:
        if self._fh is not None:
            if self.transient:
                self.path.unlink(missing_ok=True)  # still held: no one else has it now
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None

    def __enter__(self) -> FileLock:
        return self.acquire()

    def __exit__(self, typ: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


def _same_file(fh: IO[str], path: Path) -> bool:
    try:
        mine, now = os.fstat(fh.fileno()), os.stat(path)
        return (mine.st_dev, mine.st_ino) == (now.st_dev, now.st_ino)
    except FileNotFoundError:
        return False


def _read_holder(fh: IO[str]) -> str:
    """`` (pid N since T)`` from the lock file, for the refusal message."""
    try:
        fh.seek(0)
        info = json.loads(fh.read() or "{}")
        return f" (pid {info['pid']} since {info['since']})"
    except (ValueError, KeyError, OSError):
        return ""
