"""A real Neo4j for development and tests, without a Neo4j installation.

Neo4j 5.26 (LTS, the last line that runs on Java 17) runs in-process from the
``org.neo4j.test:neo4j-harness`` Maven artifact: ``neo4j-dev/`` in the source
tree is a tiny Java launcher (``dev.attribution.Launcher``) built with Maven.
This module builds it when needed, starts it detached (own process group, Bolt
only, fixed port, fixed data directory so data survives restarts), waits until
it answers, and stops it again.

State lives next to the data directory (by default ``$ATTRIBUTION_HOME/neo4j-dev``,
i.e. ``./.attribution/neo4j-dev``)::

    data/          the store (survives stop/start)
    neo4j.log      the launcher's stdout and stderr, appended per start
    neo4j.pid      the JVM's pid (also its process group)
    neo4j.json     port, URI, data directory of the running server
    logs/          Neo4j's own debug.log and friends
    harness/       the harness' scratch folder

Command line (also ``attribution neo4j-dev ...``)::

    python -m attribution.dev.neo4j_harness start [--port 7697] [--data DIR] [--heap 1g] [--password P]
    python -m attribution.dev.neo4j_harness status|stop [--data DIR]
    python -m attribution.dev.neo4j_harness build

Needs ``java`` (17 or 21) and, to build once, ``mvn``; the first build
downloads about 150 MB into ``~/.m2``.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import itertools
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

NEO4J_VERSION = "5.26.30"
DEFAULT_PORT = 7697
DEFAULT_HEAP = "1g"
DEFAULT_TIMEOUT = 180.0
STOP_TIMEOUT = 60.0
HOST = "127.0.0.1"
USER = "neo4j"
DATABASE = "neo4j"

JAR_NAME = "neo4j-dev.jar"
LOG_NAME = "neo4j.log"
PID_NAME = "neo4j.pid"
INFO_NAME = "neo4j.json"
READY_PREFIX = "READY "
MAIN_CLASS = "dev.attribution.Launcher"

# Neo4j's own launch flags that matter in-process, plus sane failure behaviour.
JVM_FLAGS: tuple[str, ...] = (
    "--add-opens=java.base/java.nio=ALL-UNNAMED",
    "--add-opens=java.base/java.io=ALL-UNNAMED",
    "--add-opens=java.base/sun.nio.ch=ALL-UNNAMED",
    "-Dlog4j2.disable.jmx=true",
    "-Dio.netty.tryReflectionSetAccessible=true",
    "-Djdk.nio.maxCachedBufferSize=1024",
    "-XX:-OmitStackTraceInFastThrow",
    "-XX:+ExitOnOutOfMemoryError",
    # JVM warnings (e.g. about the class-data archive) to stderr, never stdout
    "-Xlog:disable",
    "-Xlog:all=warning:stderr",
)

_HEAP_RE = re.compile(r"^[1-9][0-9]*[kKmMgG]?$")
_JAVA_VERSION_RE = re.compile(r'version "(\d+)(?:\.(\d+))?')
_JAVA_HINT = "install a JDK 17 or 21, e.g. `apt-get install openjdk-17-jdk-headless`"
_MVN_HINT = "install Maven 3.6.3+, e.g. `apt-get install maven`"


class Neo4jDevError(RuntimeError):
    """The dev server could not be built, started or stopped.

    ``message`` is one line; ``details`` (often a log tail) may follow it in ``str()``.
    """

    def __init__(self, message: str, details: str = "") -> None:
        self.message = " ".join(message.split())
        self.details = details.rstrip()
        super().__init__(self.message)

    def __str__(self) -> str:
        if self.details:
            return f"{self.message}\n{self.details}"
        return self.message


class ToolMissing(Neo4jDevError):
    """``java`` or ``mvn`` is missing or unusable (the message says how to get it)."""


@dataclass
class DevServer:
    """A running dev server (as started, or found running)."""

    uri: str
    port: int
    pid: int
    data_dir: Path
    log_path: Path
    password: str | None = None
    user: str = USER
    database: str = DATABASE
    already_running: bool = False
    startup_seconds: float | None = None

    @property
    def state_dir(self) -> Path:
        return self.data_dir.parent

    def env(self) -> dict[str, str]:
        """The environment variables ``attribution`` reads to use this server."""
        env = {"NEO4J_URI": self.uri, "NEO4J_USER": self.user, "NEO4J_DATABASE": self.database}
        if self.password is not None:
            env["NEO4J_PASSWORD"] = self.password
        return env

    def export_lines(self) -> list[str]:
        lines = [f"export {k}={shlex.quote(v)}" for k, v in self.env().items()]
        if self.password is None and self.already_running:
            lines.append("# NEO4J_PASSWORD: the one given when it was started (if any)")
        return lines

    def stop(self, timeout: float = STOP_TIMEOUT) -> bool:
        return stop(data_dir=self.data_dir, timeout=timeout)


@dataclass
class ServerStatus:
    running: bool
    data_dir: Path
    log_path: Path
    pid: int | None = None
    port: int | None = None
    uri: str | None = None
    answering: bool = False
    info: dict[str, object] = field(default_factory=dict)

    def describe(self) -> str:
        if not self.running:
            return f"neo4j-dev: not running (data {self.data_dir})"
        state = "answering" if self.answering else "NOT answering on its port"
        return (f"neo4j-dev: running, pid {self.pid}, {self.uri} ({state}); data {self.data_dir};"
                f" log {self.log_path}")


# ---------------------------------------------------------------- locations


def default_state_dir() -> Path:
    """``$ATTRIBUTION_HOME/neo4j-dev`` (``./.attribution/neo4j-dev`` by default)."""
    return Path(os.environ.get("ATTRIBUTION_HOME", ".attribution")) / "neo4j-dev"


def default_data_dir() -> Path:
    return default_state_dir() / "data"


def find_project_dir(project_root: Path | str | None = None) -> Path:
    """The ``neo4j-dev`` Maven project: under ``project_root``, else next to this package
    or above the current directory."""
    if project_root is not None:
        candidates = [Path(project_root)]
    else:
        here = Path(__file__).resolve().parents[2]
        cwd = Path.cwd().resolve()
        candidates = [here, cwd, *cwd.parents]
    for root in candidates:
        nd = root / "neo4j-dev"
        if (nd / "pom.xml").is_file():
            return nd.resolve()
    where = project_root if project_root is not None else "this checkout or the current directory"
    raise Neo4jDevError(f"neo4j-dev/pom.xml not found under {where}: run from the attribution "
                        "source tree")


def _resolve_data_dir(data_dir: Path | str | None) -> Path:
    return Path(data_dir if data_dir is not None else default_data_dir()).expanduser().resolve()


# ---------------------------------------------------------------- tools


def find_java() -> str:
    """Path of ``java`` ($JAVA_HOME/bin/java first); one-line error if missing or too old."""
    java_home = os.environ.get("JAVA_HOME")
    java = None
    if java_home and (Path(java_home) / "bin" / "java").is_file():
        java = str(Path(java_home) / "bin" / "java")
    java = java or shutil.which("java")
    if not java:
        raise ToolMissing(f"java not found on PATH (nor in $JAVA_HOME): {_JAVA_HINT}")
    major = _java_major(_java_version_text(java))
    if major is not None and major < 17:
        raise ToolMissing(f"{java} is Java {major}; Neo4j 5.26 needs Java 17 or 21: {_JAVA_HINT}")
    return java


def find_mvn() -> str:
    mvn = shutil.which("mvn")
    if not mvn:
        raise ToolMissing(f"mvn (Maven) not found on PATH, needed once to build neo4j-dev/: "
                          f"{_MVN_HINT}")
    return mvn


_java_versions: dict[str, str] = {}


def _java_version_text(java: str) -> str:
    if java not in _java_versions:
        try:
            out = subprocess.run([java, "-version"], capture_output=True, text=True,
                                 timeout=60, check=False)
        except OSError as exc:
            raise ToolMissing(f"cannot run {java}: {exc}: {_JAVA_HINT}") from exc
        _java_versions[java] = (out.stderr or out.stdout).strip()
    return _java_versions[java]


def _java_major(text: str) -> int | None:
    m = _JAVA_VERSION_RE.search(text)
    if not m:
        return None
    major = int(m.group(1))
    return int(m.group(2) or 0) if major == 1 else major


# ---------------------------------------------------------------- build


def _build_inputs(nd: Path) -> list[Path]:
    return [nd / "pom.xml", *sorted(p for p in (nd / "src").rglob("*") if p.is_file())]


def _is_built(nd: Path) -> bool:
    target = nd / "target"
    stamp = target / ".build-stamp"
    jar = target / JAR_NAME
    lib = target / "lib"
    if not (stamp.is_file() and jar.is_file() and lib.is_dir()):
        return False
    if not any(lib.glob("neo4j-harness-*.jar")):
        return False
    built = stamp.stat().st_mtime
    return all(p.stat().st_mtime <= built for p in _build_inputs(nd))


@contextlib.contextmanager
def _build_lock(nd: Path) -> Iterator[None]:
    target = nd / "target"
    target.mkdir(exist_ok=True)
    with open(target / ".build.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def build(project_root: Path | str | None = None, *, force: bool = False,
          cds: bool | None = None) -> Path:
    """Build ``neo4j-dev`` if missing or older than its pom/sources; returns the jar.

    Runs ``mvn -q -B package -DskipTests`` (fast no-op check when up to date). Then,
    unless ``cds`` is false or ``ATTRIBUTION_NEO4J_CDS=0``, records a class-data-sharing
    archive from one smoke-test run (halves the server's start time; skipped if that fails).
    """
    nd = find_project_dir(project_root)
    java = find_java()
    jar = nd / "target" / JAR_NAME
    if cds is None:
        cds = _cds_enabled()
    if force or not _is_built(nd):
        mvn = find_mvn()
        with _build_lock(nd):
            if force or not _is_built(nd):
                _maven_package(nd, mvn)
    if cds and _cds_archive(nd, java) is None and not _cds_failed(nd, java):
        with _build_lock(nd):
            if _cds_archive(nd, java) is None and not _cds_failed(nd, java):
                _train_cds(nd, java)
    return jar


def _maven_package(nd: Path, mvn: str) -> None:
    # Nothing is deleted up front: a server may be running from target/ right now.
    target = nd / "target"
    for name in (".build-stamp", "neo4j-dev.jsa.key", "neo4j-dev.jsa.failed"):
        (target / name).unlink(missing_ok=True)
    log = target / "build.log"
    cmd = [mvn, "-q", "-B", "package", "-DskipTests"]
    with open(log, "w") as out:
        try:
            rc = subprocess.run(cmd, cwd=nd, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, check=False).returncode
        except OSError as exc:
            raise Neo4jDevError(f"cannot run {mvn}: {exc}") from exc
    if rc != 0 or not (target / JAR_NAME).is_file():
        raise Neo4jDevError(f"Maven build of {nd} failed (exit {rc}); see {log}",
                            _tail(log, 0, 40))
    _prune_lib(target)
    (target / ".build-stamp").write_text(f"neo4j-harness {NEO4J_VERSION}\n")


def _prune_lib(target: Path) -> None:
    """Drop jars in target/lib that the jar's manifest Class-Path no longer names."""
    with zipfile.ZipFile(target / JAR_NAME) as jar:
        manifest = jar.read("META-INF/MANIFEST.MF").decode()
    # manifest lines wrap at 72 bytes with a leading space on continuation lines
    unfolded = manifest.replace("\r\n", "\n").replace("\n ", "")
    entries: set[str] = set()
    for line in unfolded.splitlines():
        if line.startswith("Class-Path:"):
            entries.update(Path(e).name for e in line.split(":", 1)[1].split())
    if not entries:
        return
    for jar_path in (target / "lib").glob("*.jar"):
        if jar_path.name not in entries:
            jar_path.unlink()


def _cds_enabled() -> bool:
    return os.environ.get("ATTRIBUTION_NEO4J_CDS", "1") != "0"


def _cds_key(nd: Path, java: str) -> str:
    jar = nd / "target" / JAR_NAME
    st = jar.stat()
    version = " ".join(_java_version_text(java).split())
    return f"{os.path.realpath(java)}|{version}|{st.st_mtime_ns}|{st.st_size}"


def _cds_archive(nd: Path, java: str) -> Path | None:
    """The class-data archive, if it was made with this java and this jar."""
    jsa = nd / "target" / "neo4j-dev.jsa"
    key = nd / "target" / "neo4j-dev.jsa.key"
    try:
        if jsa.is_file() and key.read_text() == _cds_key(nd, java):
            return jsa
    except OSError:
        pass
    return None


def _cds_failed(nd: Path, java: str) -> bool:
    marker = nd / "target" / "neo4j-dev.jsa.failed"
    try:
        return marker.read_text().splitlines()[0] == _cds_key(nd, java)
    except (OSError, IndexError):
        return False


def _train_cds(nd: Path, java: str) -> Path | None:
    target = nd / "target"
    tmp = target / f"neo4j-dev.jsa.{os.getpid()}.tmp"
    log = target / "cds-training.log"
    key = _cds_key(nd, java)
    with tempfile.TemporaryDirectory(prefix="neo4j-dev-cds-") as work:
        cmd = [java, "-Xmx512m", *JVM_FLAGS, f"-XX:ArchiveClassesAtExit={tmp}",
               "-jar", str(target / JAR_NAME), "--port", "0", "--data", f"{work}/data",
               "--password", "cds-training", "--pagecache", "32m", "--smoke-test"]
        with open(log, "w") as out:
            try:
                rc = subprocess.run(cmd, cwd=work, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, timeout=600,
                                    check=False).returncode
            except (OSError, subprocess.TimeoutExpired) as exc:
                rc = -1
                out.write(f"\n{exc}\n")
    ok = rc == 0 and tmp.is_file() and "SMOKE OK" in log.read_text(errors="replace")
    if not ok:
        tmp.unlink(missing_ok=True)
        (target / "neo4j-dev.jsa.failed").write_text(f"{key}\nexit {rc}; see {log}\n")
        return None
    jsa = target / "neo4j-dev.jsa"
    os.replace(tmp, jsa)
    (target / "neo4j-dev.jsa.key").write_text(key)
    return jsa


# ---------------------------------------------------------------- processes

# Servers this Python process started: reaped here so they never linger as zombies.
_children: dict[int, subprocess.Popen[bytes]] = {}


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
            errors="replace")
    except OSError:
        pass
    try:
        out = subprocess.run(["ps", "-o", "command=", "-p", str(pid)], capture_output=True,
                             text=True, timeout=10, check=False)
        return out.stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def _alive(pid: int) -> bool:
    child = _children.get(pid)
    if child is not None:
        return child.poll() is None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is dead for our purposes
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _is_ours(pid: int, data_dir: Path) -> bool:
    """Is ``pid`` a live launcher serving ``data_dir`` (guards against reused pids)?"""
    if not _alive(pid):
        return False
    cmd = _cmdline(pid)
    if not cmd:  # cannot tell: trust the pid file
        return True
    return (JAR_NAME in cmd or MAIN_CLASS in cmd) and str(data_dir) in cmd


def _find_by_cmdline(data_dir: Path) -> tuple[int, int | None] | None:
    """A launcher serving ``data_dir`` whose pid file is missing: (pid, port)."""
    proc = Path("/proc")
    if not proc.is_dir():
        return None
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if not any(a.endswith(JAR_NAME) or a == MAIN_CLASS for a in argv):
            continue
        opts = dict(itertools.pairwise(argv))
        if opts.get("--data") != str(data_dir) or "--smoke-test" in argv:
            continue
        pid = int(entry.name)
        if not _alive(pid):
            continue
        port = opts.get("--port", "")
        return pid, int(port) if port.isdigit() else None
    return None


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _read_info(path: Path) -> dict[str, object]:
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def port_answers(port: int, host: str = HOST, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _tail(path: Path, offset: int = 0, lines: int = 40) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            text = fh.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _paths(data_dir: Path) -> tuple[Path, Path, Path]:
    state = data_dir.parent
    return state / LOG_NAME, state / PID_NAME, state / INFO_NAME


# ---------------------------------------------------------------- start / stop / status


def status(*, data_dir: Path | str | None = None) -> ServerStatus:
    """Is a dev server running for ``data_dir`` (default ``$ATTRIBUTION_HOME/neo4j-dev/data``)?"""
    data = _resolve_data_dir(data_dir)
    log, pid_file, info_file = _paths(data)
    pid = _read_pid(pid_file)
    info: dict[str, object] = {}
    port: int | None = None
    if pid is not None and _is_ours(pid, data):
        info = _read_info(info_file)
        p = info.get("port")
        port = p if isinstance(p, int) else None
    else:
        found = _find_by_cmdline(data)
        if found is None:
            return ServerStatus(running=False, data_dir=data, log_path=log)
        pid, port = found
    uri = f"bolt://{HOST}:{port}" if port is not None else None
    answering = port is not None and port_answers(port)
    return ServerStatus(running=True, data_dir=data, log_path=log, pid=pid, port=port, uri=uri,
                        answering=answering, info=info)


def start(*, port: int = DEFAULT_PORT, data_dir: Path | str | None = None,
          heap: str = DEFAULT_HEAP, password: str | None = None,
          timeout: float = DEFAULT_TIMEOUT, pagecache: str | None = None,
          project_root: Path | str | None = None, watch_pid: int | None = None,
          jvm_args: Sequence[str] = ()) -> DevServer:
    """Build if needed, start the server detached, wait until Bolt answers.

    If a server for ``data_dir`` is already running on ``port`` it is returned as is
    (``already_running=True``). ``watch_pid``: the server shuts itself down when that
    process exits (used by the test fixture so a killed test run leaves nothing behind).
    """
    if not _HEAP_RE.match(heap):
        raise Neo4jDevError(f"bad heap size {heap!r}: use e.g. 512m or 1g")
    if not 1 <= port <= 65535:
        raise Neo4jDevError(f"bad port {port}")
    data = _resolve_data_dir(data_dir)
    log, pid_file, info_file = _paths(data)

    current = status(data_dir=data)
    if current.running:
        if current.port == port:
            return DevServer(uri=current.uri or f"bolt://{HOST}:{port}", port=port,
                             pid=current.pid or 0, data_dir=data, log_path=log,
                             password=password, already_running=True)
        raise Neo4jDevError(f"a dev server for {data} is already running on port {current.port}"
                            f" (pid {current.pid}); stop it first")
    if port_answers(port):
        raise Neo4jDevError(f"port {port} on {HOST} is already in use by another process "
                            "(another neo4j-dev? `attribution neo4j-dev status --data ...`); "
                            "choose another --port")

    java = find_java()
    jar = build(project_root)
    nd = jar.parent.parent
    jsa = _cds_archive(nd, java) if _cds_enabled() else None

    data.mkdir(parents=True, exist_ok=True)
    cmd = [java, f"-Xmx{heap}", *JVM_FLAGS]
    if jsa is not None:
        cmd.append(f"-XX:SharedArchiveFile={jsa}")
    cmd += [*jvm_args, "-jar", str(jar), "--port", str(port), "--data", str(data)]
    if pagecache:
        cmd += ["--pagecache", pagecache]
    if watch_pid:
        cmd += ["--watch-pid", str(watch_pid)]
    env = dict(os.environ)
    env.pop("NEO4J_DEV_PASSWORD", None)
    if password:
        env["NEO4J_DEV_PASSWORD"] = password  # not on the command line: ps shows that

    with open(log, "ab") as out:
        out.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} neo4j-dev start: port {port},"
                  f" heap {heap}, data {data}, auth {'on' if password else 'off'}"
                  f"{', cds' if jsa else ''}\n".encode())
        out.flush()
        offset = out.tell()
        t0 = time.monotonic()
        try:
            proc = subprocess.Popen(cmd, cwd=data.parent, env=env, stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True, close_fds=True)
        except OSError as exc:
            raise Neo4jDevError(f"cannot run {java}: {exc}") from exc
    _children[proc.pid] = proc
    pid_file.write_text(f"{proc.pid}\n")
    info_file.write_text(json.dumps({
        "pid": proc.pid, "port": port, "uri": f"bolt://{HOST}:{port}", "data_dir": str(data),
        "log": str(log), "heap": heap, "auth": bool(password), "user": USER,
        "started_at": time.time(), "neo4j": NEO4J_VERSION,
    }, indent=2) + "\n")

    deadline = t0 + timeout
    uri = None
    while time.monotonic() < deadline:
        uri = _ready_uri(log, offset)
        if uri is not None:
            break
        if proc.poll() is not None:
            _forget(proc.pid, pid_file, info_file)
            raise Neo4jDevError(f"neo4j-dev exited with status {proc.returncode} before it was "
                                f"ready; see {log}", _tail(log, offset))
        time.sleep(0.1)
    if uri is None:
        _terminate(proc.pid, timeout=10.0)
        _forget(proc.pid, pid_file, info_file)
        raise Neo4jDevError(f"neo4j-dev not ready after {timeout:.0f}s (killed); see {log}",
                            _tail(log, offset))
    # READY is printed once Bolt is bound; make sure it accepts connections
    while not port_answers(port) and time.monotonic() < deadline:
        time.sleep(0.1)
    return DevServer(uri=uri, port=port, pid=proc.pid, data_dir=data, log_path=log,
                     password=password, startup_seconds=time.monotonic() - t0)


def _ready_uri(log: Path, offset: int) -> str | None:
    try:
        with open(log, "rb") as fh:
            fh.seek(offset)
            text = fh.read().decode(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(READY_PREFIX):
            return line[len(READY_PREFIX):].strip()
    return None


def _forget(pid: int, pid_file: Path, info_file: Path) -> None:
    child = _children.pop(pid, None)
    if child is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=5)
    if _read_pid(pid_file) == pid:
        pid_file.unlink(missing_ok=True)
        info_file.unlink(missing_ok=True)


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.1)
    return not _alive(pid)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)  # started with start_new_session: pgid == pid
    except ProcessLookupError:
        pass
    except PermissionError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _terminate(pid: int, timeout: float) -> bool:
    """SIGTERM (clean shutdown), then SIGKILL after ``timeout``; True if it stopped cleanly."""
    _signal_group(pid, signal.SIGTERM)
    if _wait_gone(pid, timeout):
        return True
    _signal_group(pid, signal.SIGKILL)
    _wait_gone(pid, 10.0)
    return False


def stop(*, data_dir: Path | str | None = None, port: int | None = None,
         timeout: float = STOP_TIMEOUT, kill: bool = False) -> bool:
    """Stop the server for ``data_dir``; False if none was running.

    SIGTERM lets Neo4j shut down cleanly (checkpoint); after ``timeout`` seconds it is
    killed. ``kill=True`` sends SIGKILL at once, like a crash (the next start runs
    recovery). ``port``, if given, must match.
    """
    data = _resolve_data_dir(data_dir)
    _, pid_file, info_file = _paths(data)
    current = status(data_dir=data)
    if not current.running or current.pid is None:
        pid_file.unlink(missing_ok=True)
        info_file.unlink(missing_ok=True)
        return False
    if port is not None and current.port is not None and port != current.port:
        raise Neo4jDevError(f"the dev server for {data} listens on port {current.port}, not "
                            f"{port}; nothing stopped")
    if kill:
        _signal_group(current.pid, signal.SIGKILL)
        _wait_gone(current.pid, 10.0)
    else:
        _terminate(current.pid, timeout)
    _forget(current.pid, pid_file, info_file)
    return True


# ---------------------------------------------------------------- command line


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["start", "stop", "status", "build"],
                        help="start (build if needed) / stop / status of the dev server, "
                        "or just build it")
    parser.add_argument("--port", type=int, default=None,
                        help=f"Bolt port on {HOST} (start: default {DEFAULT_PORT}; "
                        "stop/status: checked if given)")
    parser.add_argument("--data", type=Path, default=None,
                        help="data directory; log, pid and Neo4j logs go next to it "
                        "(default $ATTRIBUTION_HOME/neo4j-dev/data)")
    parser.add_argument("--heap", default=DEFAULT_HEAP,
                        help=f"JVM heap, e.g. 512m, 2g (default {DEFAULT_HEAP})")
    parser.add_argument("--password", default=None,
                        help="enable auth with this password for user neo4j "
                        "(default: auth disabled)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                        help=f"seconds to wait for readiness (default {DEFAULT_TIMEOUT:.0f})")
    parser.set_defaults(handler=handle)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``neo4j-dev start|stop|status|build`` to the ``attribution`` command."""
    parser = subparsers.add_parser(
        "neo4j-dev", help="run a local Neo4j 5.26 for development and tests",
        description="A local Neo4j 5.26 (in-process harness, Bolt only) for development "
        "and tests. Needs java (17/21) and, to build once, mvn.")
    _add_arguments(parser)


def handle(args: argparse.Namespace) -> int:
    """Exit status: 0 ok, 1 failure (one line on stderr); status: 0 running, 3 not running."""
    try:
        return _handle(args)
    except Neo4jDevError as exc:
        print(f"neo4j-dev: {exc.message}", file=sys.stderr)
        return 1


def _handle(args: argparse.Namespace) -> int:
    if args.action == "build":
        t0 = time.monotonic()
        jar = build()
        print(f"neo4j-dev: built {jar} ({time.monotonic() - t0:.1f}s)")
        return 0
    if args.action == "start":
        server = start(port=args.port or DEFAULT_PORT, data_dir=args.data, heap=args.heap,
                       password=args.password, timeout=args.timeout)
        # stdout stays shell-evaluable: eval "$(python -m attribution.dev.neo4j_harness start)"
        if server.already_running:
            print(f"# neo4j-dev: already running, pid {server.pid}, {server.uri}; "
                  f"data {server.data_dir}")
        else:
            print(f"# neo4j-dev: Neo4j {NEO4J_VERSION} ready at {server.uri} in "
                  f"{server.startup_seconds or 0:.1f}s, pid {server.pid}; data {server.data_dir};"
                  f" log {server.log_path}")
        print("# to use it:")
        for line in server.export_lines():
            print(line)
        return 0
    if args.action == "stop":
        if stop(data_dir=args.data, port=args.port):
            print(f"neo4j-dev: stopped (data {_resolve_data_dir(args.data)})")
        else:
            print(f"neo4j-dev: not running (data {_resolve_data_dir(args.data)})")
        return 0
    st = status(data_dir=args.data)
    print(st.describe())
    if st.running and args.port is not None and st.port != args.port:
        print(f"neo4j-dev: note: it listens on port {st.port}, not {args.port}")
    return 0 if st.running else 3


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m attribution.dev.neo4j_harness",
                                     description=__doc__.split("\n\n")[0] if __doc__ else None)
    _add_arguments(parser)
    args = parser.parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
