"""The run directory a user names with ``--out``: checked, locked, staged and switched.

A run may replace only a run directory this engine wrote: ``--out`` is checked
before any work (``check_out``) and anything else (a file, a folder of the
user's, the snapshot, the store or a folder holding either) is refused with a
usage error. The switch is the second half of one ordered commit whose first
half is the store's::

    stage   write every file into .NAME.new-RUN beside NAME
    journal .NAME.switch.json says "RUN staged, store not committed"  (write:staged)
    store   the store makes RUN current                         (write:rows, write:current)
    journal now says "RUN committed"                            (write:committed)
    switch  exchange .NAME.new-RUN and NAME in one rename        (write:switched)
    tidy    remove the replaced directory, then the journal

A run killed anywhere leaves NAME whole: the old run before the exchange, the
new one after. The next run to the same ``--out`` (``OutDir.recover``, under
the directory's lock) finishes a committed switch or undoes one the store never
committed, and removes what killed predecessors left beside NAME, so the
directory always ends up holding the store's run. The names in parentheses are
the kill points of the crash tests (``attribution.job.killpoints.checkpoint``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import json
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from attribution.contracts.results import RunRecord, write_run_files
from attribution.errors import UsageError
from attribution.job.killpoints import checkpoint
from attribution.job.locks import FileLock

# What a run directory holds; anything else in it is the user's and stops a run.
ENGINE_ENTRIES = frozenset({"manifest.json", "assignments.parquet", "fleets.parquet",
                            "evidence.parquet", "diff.json", "rejected"})
_MANIFEST_TMP = ".manifest.json.tmp"  # a staged manifest being rewritten (never switched in)
# Temporary names of earlier engine versions beside NAME: mkdtemp's ``.NAME.xxxxxxxx``
# and the ``.NAME.old`` of a two-rename swap.
_LEGACY = re.compile(r"^\.(?P<name>.+)\.(?:[a-z0-9_]{8}|old)$")

Committed = Callable[[str], bool | None]


def check_out(out: Path, *, protected: dict[str, Path | None]) -> Path:
    """The absolute ``--out`` path, or ``UsageError`` if a run may not write there.

    ``protected`` names paths (the snapshot, the store) that ``--out`` may be
    neither equal to nor an ancestor of (nor inside, for the store).

    >>> check_out(Path("/"), protected={})
    Traceback (most recent call last):
    ...
    attribution.errors.UsageError: --out / is not a run directory of this engine ...
    """
    given = Path(out).expanduser().absolute()
    if given.is_symlink():
        raise UsageError(f"--out {out} is a symbolic link; name the directory itself")
    path = given.resolve()
    for what, where in protected.items():
        if where is None:
            continue
        other = Path(where).expanduser().resolve()
        if path == other or path in other.parents:
            raise UsageError(f"--out {out} is {what} or a folder holding it; "
                             f"choose a directory of its own")
        if what == "the store" and other in path.parents:
            raise UsageError(f"--out {out} is inside the store; choose a directory of its own")
    if path.exists():
        if not path.is_dir():
            raise UsageError(f"--out {out} is an existing file, not a run directory; "
                             "a run writes a directory of its own")
        refusal = _not_ours(path)
        if refusal:
            raise UsageError(f"--out {out} {refusal}; a run replaces only a run directory "
                             "this engine wrote: choose a new or empty directory")
    ancestor = path.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK):
        raise UsageError(f"--out {out} cannot be written: {ancestor} is not a writable directory")
    return path


def _not_ours(path: Path) -> str | None:
    """Why ``path`` (an existing directory) is not a run directory to replace, or None."""
    if not any(path.iterdir()):
        return None
    if not is_run_dir(path):
        return "is not a run directory of this engine (no manifest.json of a run)"
    extra = _foreign(path)
    if extra:
        return f"holds files this engine did not write ({', '.join(extra[:5])})"
    return None


def _foreign(path: Path) -> list[str]:
    """The entries of ``path`` a run directory never holds (the user's, so never removed)."""
    extra = sorted(p.name for p in path.iterdir()
                   if p.name not in ENGINE_ENTRIES and p.name != _MANIFEST_TMP)
    rejected = path / "rejected"
    if rejected.is_symlink() or (rejected.exists() and not rejected.is_dir()):
        extra.append("rejected")
    elif rejected.is_dir():
        extra += sorted(f"rejected/{p.name}" for p in rejected.iterdir()
                        if p.is_symlink() or not (p.is_file() and p.suffix == ".csv"))
    return extra


def is_run_dir(path: Path) -> bool:
    """True where ``path`` holds a manifest written by this engine."""
    try:
        manifest = json.loads((path / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and {"run_id", "engine_version", "input"} <= set(manifest)


def _run_id(path: Path) -> str | None:
    try:
        return str(json.loads((path / "manifest.json").read_text())["run_id"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


class OutDir:
    """One ``--out`` directory: its lock, its leftovers and its switch.

    Use as a context manager: the directory's lock (``.NAME.lock`` beside it, an
    ``flock`` that dies with the process, removed on release) is held from before the run starts
    until its directory is switched, so two runs never write one ``--out``.
    """

    def __init__(self, path: Path, *, store_location: str) -> None:
        self.path = Path(path)
        self.store_location = store_location
        name = self.path.name
        self._lock = FileLock(self.path.with_name(f".{name}.lock"),
                              busy=f"another run is writing {self.path}", transient=True)
        self.journal = self.path.with_name(f".{name}.switch.json")
        self._stage: Path | None = None

    def __enter__(self) -> OutDir:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self._lock.release()

    def staged(self, run_id: str) -> Path:
        return self.path.with_name(f".{self.path.name}.new-{run_id}")

    # ------------------------------------------------------------------ recovery

    def recover(self, committed: Committed) -> list[str]:
        """Finish or undo what a killed run left beside the directory; one note per fix.

        ``committed(run_id)`` says whether the store made that run current (None:
        it cannot tell now, and everything is left for a later run to decide). A
        journal written by a run on another store counts as not committed, so a
        switch whose store commit is not known to have happened is undone.
        """
        done: list[str] = []
        journal = self._read_journal()
        if journal is not None:
            run_id = str(journal["run_id"])
            state = journal.get("state")
            if state != "committed":
                verdict = committed(run_id) if journal.get("store") == self.store_location \
                    else False
                if verdict is None:
                    return [f"left run {run_id} staged: its store cannot tell yet whether it "
                            "committed it"]
                state = "committed" if verdict else "undone"
            if state == "committed":
                self._switch(run_id)
                done.append(f"finished the switch of {self.path.name} to run {run_id}")
            else:
                done.append(f"undid run {run_id}, which its store never committed")
        done += self._sweep()
        self.journal.unlink(missing_ok=True)
        return done

    def _sweep(self) -> list[str]:
        """Remove the engine's own temporary directories beside the run directory."""
        name = self.path.name
        done = []
        for p in sorted(self.path.parent.glob(f".{glob_escape(name)}.*")):
            if not p.is_dir() or p.is_symlink():
                continue
            ours = p.name.startswith(f".{name}.new-") or (
                (m := _LEGACY.match(p.name)) is not None and m.group("name") == name)
            if ours and not _foreign(p):  # half-written: maybe no manifest yet
                shutil.rmtree(p, ignore_errors=True)
                done.append(f"removed {p.name}")
        return done

    def _read_journal(self) -> dict[str, Any] | None:
        try:
            data = json.loads(self.journal.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            self.journal.unlink(missing_ok=True)  # torn write: nothing was committed
            return None
        return data if isinstance(data, dict) and "run_id" in data else None

    def _write_journal(self, run_id: str, state: str) -> None:
        tmp = self.journal.with_name(self.journal.name + ".tmp")
        tmp.write_text(json.dumps({"run_id": run_id, "state": state,
                                   "store": self.store_location}))
        os.replace(tmp, self.journal)

    # ------------------------------------------------------------------ the commit

    def stage(self, record: RunRecord) -> None:
        """Every file of the run into ``.NAME.new-RUN``; then the journal says so."""
        stage = self.staged(record.run_id)
        shutil.rmtree(stage, ignore_errors=True)
        stage.mkdir()
        try:
            write_run_files(record, stage)
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise
        self._stage = stage
        self._write_journal(record.run_id, "staged")
        checkpoint("write:staged")

    def rewrite_manifest(self, record: RunRecord) -> None:
        """The staged manifest again (its timings include the store's write)."""
        assert self._stage is not None
        tmp = self._stage / _MANIFEST_TMP
        tmp.write_text(json.dumps(record.manifest, indent=2, default=str))
        os.replace(tmp, self._stage / "manifest.json")

    def commit(self, run_id: str) -> None:
        """The store has committed ``run_id``: make the directory hold it too."""
        self._write_journal(run_id, "committed")
        checkpoint("write:committed")
        self._switch(run_id)
        self.journal.unlink(missing_ok=True)
        self._stage = None

    def abort(self, committed: Committed) -> None:
        """The run failed after staging: finish the switch if its store committed, else undo."""
        if self._stage is not None:
            self.recover(committed)
            self._stage = None

    def _switch(self, run_id: str) -> None:
        """Put the staged ``run_id`` in place (idempotent: safe to repeat after a kill)."""
        stage = self.staged(run_id)
        (stage / _MANIFEST_TMP).unlink(missing_ok=True)  # killed mid-rewrite: the old one stands
        if _run_id(stage) == run_id:
            if self.path.exists():
                _exchange(stage, self.path)
                checkpoint("write:switched")
            else:
                os.replace(stage, self.path)
        # ``stage`` now holds the replaced run (or nothing): it is ours to remove.
        if stage.exists() and not _foreign(stage):
            shutil.rmtree(stage, ignore_errors=True)


def glob_escape(text: str) -> str:
    """``text`` with glob metacharacters taken literally."""
    return re.sub(r"([*?\[])", r"[\1]", text)


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> None:
    """Swap two directories in one step (Linux ``renameat2(RENAME_EXCHANGE)``).

    Where the kernel or file system lacks it, two renames: a kill between them
    leaves ``b`` missing and ``a`` staged, which ``OutDir.recover`` completes.
    """
    if _renameat2 is not None:
        rc = _renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
        if rc == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
            raise OSError(err, os.strerror(err), str(b))
    aside = b.with_name(f".{b.name}.old")
    os.replace(b, aside)
    os.replace(a, b)
    os.replace(aside, a)


def _load_renameat2() -> Any:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError, TypeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                   ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_renameat2 = _load_renameat2()
