"""Snapshot ingest: read a snapshot directory and split every table into loaded and rejected rows.

The contract (``shared/CONTRACT.md``, and :mod:`attribution.contracts.schema` as data) fixes what a
snapshot may hold. This module is the only place that looks at raw files: everything after it
sees typed, validated :class:`polars.DataFrame` objects and never has to ask whether an id is a
float, a timestamp carries a time zone or an IP is spelled in full.

Decisions on what the contract leaves open (tests in ``tests/stages/test_ingest.py`` pin each one):

* **Files.** A table is ``NAME.csv`` or ``NAME.parquet`` (exact, lower-case names); both at once
  is :class:`BadInput`. Other files in the directory are ignored and not part of the digest.
* **Empty files.** A 0-byte file is :class:`BadInput` for every table, required or not: it is
  what a crashed export leaves behind, and loading it as "no rows" would silently drop a whole
  table from an attribution. An empty table is written as a header-only CSV or a Parquet file
  with no rows, or left out.
* **Unreadable files** (a ragged CSV row, a corrupt Parquet footer, bytes that are not UTF-8 in
  a Parquet string) are BadInput with polars' first line: a CSV row with too many fields cannot
  be told apart from a shifted one. **Blank CSV lines** (every field empty) are skipped and not
  counted as read rows.
* **Column names** are matched after stripping whitespace and a BOM, case-insensitively, so
  ``Account_ID `` is ``account_id``; two file columns naming one contract column is BadInput.
  A missing non-nullable column is BadInput; a missing nullable one is added as all-null.
  When required columns are missing and the header looks ``;``/tab/``|``-separated the message
  says so.
* **Text.** Ids and free text are kept verbatim (no trimming: ``" a1"`` is not ``"a1"``); an
  empty string is null. Values of typed columns (int, float, bool, timestamp, IP, and columns
  with ``choices``) are trimmed before parsing; ``choices`` are compared case-insensitively and
  stored lower-case.
* **Non-UTF-8 CSV.** Rows are rejected, not the file: a CSV that is not valid UTF-8 is re-read
  with invalid bytes replaced by U+FFFD and every row holding U+FFFD in any column is rejected
  with ``invalid UTF-8 (column)``. A file that is not UTF-8 at all (Latin-1, UTF-16) then trips
  the rejected-share limit and stops the run, with a hint about the encoding; a header that is
  not UTF-8 (or UTF-16, NUL bytes) loses its column names and says so. (In a file that has
  invalid bytes, a row holding a genuine U+FFFD is rejected too.)
* **Parquet types** are accepted where the meaning is unambiguous: integer ids become text,
  integral float ids (``1001.0``, as pandas writes nullable integers) become ``"1001"`` and
  non-integral ones are rejected rows; integral floats in int columns are integers; strings in
  typed columns are parsed as in CSV; Binary is UTF-8 text (Parquet written without the
  string annotation); ``Date`` is midnight UTC; ``Datetime`` of any unit is
  converted to UTC (naive means UTC); integers where a timestamp belongs (epoch of unknown unit),
  booleans where a number belongs, nested types and the like are :class:`BadInput` naming the
  file, the column and its type. NaN and infinities are rejected rows, never nulls: a NaN
  ``confidence`` must not become the default 1.0.
* **Timestamps in text**: ISO-8601 with ``T`` or a space, optional fraction, ``Z``/offset
  (``+02:00``, ``+0200``) or none (= UTC), minutes without seconds, or a bare date (midnight UTC).
* **IPs** are stored in Python's ``ipaddress`` compressed form. Texts already in that form
  (dotted quads; eight-group IPv6 without a zero group) are recognised by a vectorised pattern;
  only the distinct remaining values go through :mod:`ipaddress`, never one call per row.
* **Row rules.** Integers are non-negative (every int column is a count or an ASN; an ASN is at
  most 2**32 - 1); ``last_seen >= first_seen``; ``known_links.confidence`` is in [0, 1], null is
  stored as 1.0; ``known_links.entity_id`` is normalised by ``entity_type`` (asn: bare digits
  from ``64500``/``AS64500``; email_domain: lower-case, no ``@``; ip: canonical form).
* **Identifiers** (text columns naming an entity: ``account_id``, ``email``, ``fingerprint``,
  ``device_id``, ``prompt_hash``, ``org_id``, ``known_links.entity_id``, ...; see
  :attr:`attribution.contracts.schema.Column.identifier`) are at most
  :data:`~attribution.contracts.schema.MAX_ID_LENGTH` characters (after normalisation); a longer one
  is a rejected row (``longer than 256 characters (account_id)``), so both stores accept the
  same input (Neo4j cannot index a property value of about 8 kB or more).
* **Order of checks.** A row gets one reason, the first that applies: per column in schema
  order (invalid UTF-8, unparsable, missing, too long, not a choice, out of range), then the first/last
  seen order, then references, then duplicate keys. Duplicates are found among rows that pass
  everything else, so the first *loadable* occurrence is kept and later ones rejected.
* **References** are checked against the loaded rows of the referenced table, by one
  vectorised anti-join per reference. A dangling value whose target row was itself rejected
  says so
  (``refers to a rejected row of accounts``). When the referenced table is absent: a nullable
  reference (``ips.proxy_id`` without ``proxies``) is kept unchecked, since the id still tells
  which IPs share a proxy; so a consumer must not assume the ``proxies`` row exists when the
  ``proxies`` table is empty. A non-nullable reference to an absent table
  (``account_devices`` without ``devices``) is BadInput when the referencing table has rows.
* **Limit.** ``rejected / read > max_rejected_share`` for any table is BadInput naming the
  table, the most frequent (column, problem) and the first row with it, checked right after the
  table is read so a bad ``accounts`` stops the run before ``exchanges`` is touched. The row's
  values are masked by the kind of entity each column holds (:mod:`attribution.contracts.masking`: an
  e-mail never shows, an IP as its /24, a card or device as its last 4 characters, free text
  with e-mails and IPs masked), and so is the first line of a reader's error.
* **Coded text.** The text columns of ``exchanges`` (``CODED_TABLES``) are loaded as polars
  Categoricals, the same values coded: that table is most of a snapshot's rows, and its ids
  spelled out in every row were most of a 1M-account run's memory. Every other table's text
  is String. Rejected rows are text as everywhere.
* **Extra columns** are kept after the contract columns, with their Parquet type (text from
  CSV). **Rejected frames** hold the columns of the file (not added nullable ones) as text
  (timestamps ISO-8601, nested values JSON, bytes hex), then ``reason`` = ``problem (column)``
  (named ``ingest_reason`` if the file itself has a ``reason`` column).

Example:
    >>> snap = read_snapshot(Path("worlds/small"))  # doctest: +SKIP
    >>> snap.counts["accounts"]  # doctest: +SKIP
    TableCount(read=120, loaded=120, rejected=0)
"""

from __future__ import annotations

import csv
import hashlib
import ipaddress
import json
import math
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import polars as pl

from attribution.contracts.masking import kind_of, mask, scrub_text
from attribution.contracts.schema import LOAD_ORDER, MAX_ID_LENGTH, TABLES, Column, ColumnKind, Table

__all__ = ["CODED_TABLES", "DTYPES", "BadInput", "Snapshot", "TableCount", "contract_schema", "read_snapshot"]


class BadInput(Exception):
    """Input the engine refuses: the CLI prints str(exc) as one line and exits 2."""


@dataclass(frozen=True)
class TableCount:
    """Rows of one table: ``read == loaded + rejected``."""

    read: int
    loaded: int
    rejected: int


@dataclass
class Snapshot:
    """A validated snapshot.

    ``tables`` has every contract table (absent optional ones as empty frames with the contract
    dtypes); ``rejected`` only the tables that had rejections; ``counts`` every contract table.
    """

    path: Path
    digest: str
    tables: dict[str, pl.DataFrame]
    rejected: dict[str, pl.DataFrame] = field(default_factory=dict)
    counts: dict[str, TableCount] = field(default_factory=dict)


DTYPES: dict[ColumnKind, pl.DataType] = {
    "str": pl.String(),
    "int": pl.Int64(),
    "float": pl.Float64(),
    "bool": pl.Boolean(),
    "ts": pl.Datetime("us", "UTC"),
    "ip": pl.String(),
}

Format = Literal["csv", "parquet"]
Family = Literal["text", "int", "float", "bool", "datetime", "date", "decimal", "binary", "null"]

_PREFIX = "__ingest_"
_CODE = f"{_PREFIX}code"  # per row: number of its (column, problem), null when loadable
_MAX_ASN = 2**32 - 1
_SAMPLE_ROWS = 2000
# IP texts already in ipaddress' compressed form, recognised without Python: dotted quads, and
# eight-group IPv6 with no zero group (nothing to compress), lower-case, no leading zeros.
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
_HEXTET = r"[1-9a-f][0-9a-f]{0,3}"
_CANONICAL_IP = rf"^(?:(?:{_OCTET}\.){{3}}{_OCTET}|(?:{_HEXTET}:){{7}}{_HEXTET})$"
_BOOLS = {"true": True, "t": True, "yes": True, "y": True, "1": True,
          "false": False, "f": False, "no": False, "n": False, "0": False}  # fmt: skip
_RANGES: dict[tuple[str, str], tuple[float, float]] = {
    ("ips", "asn"): (0, _MAX_ASN),
    ("known_links", "confidence"): (0.0, 1.0),
}

# Timestamp formats polars parses on its fast path, tried in this order on a sample of the
# column; rows the chosen one misses go through the general (slow) formats, on that subset only.
_FAST_TS: tuple[tuple[str, bool], ...] = (  # (format, carries an offset)
    ("%Y-%m-%dT%H:%M:%SZ", False),
    ("%Y-%m-%dT%H:%M:%S", False),
    ("%Y-%m-%d %H:%M:%S", False),
    ("%Y-%m-%dT%H:%M:%S+00:00", False),
    ("%Y-%m-%d", False),
    ("%Y-%m-%dT%H:%M:%S%.f%#z", True),
    ("%Y-%m-%dT%H:%M:%S%.f", False),
)
_GENERAL_TS: tuple[tuple[str, bool], ...] = (
    ("%Y-%m-%dT%H:%M:%S%.f%#z", True),
    ("%Y-%m-%dT%H:%M:%S%.f", False),
    ("%Y-%m-%dT%H:%M%#z", True),
    ("%Y-%m-%dT%H:%M", False),
    ("%Y-%m-%d", False),
)

_PARSE_PROBLEM: dict[ColumnKind, str] = {
    "str": "not text",
    "int": "not an integer",
    "float": "not a finite number",
    "bool": "not a boolean",
    "ts": "unparsable timestamp",
    "ip": "unparsable IP",
}
_ACCEPTS: dict[ColumnKind, frozenset[str]] = {
    "str": frozenset({"text", "int", "float", "bool", "decimal", "binary", "null"}),
    "int": frozenset({"text", "int", "float", "decimal", "binary", "null"}),
    "float": frozenset({"text", "int", "float", "decimal", "binary", "null"}),
    "bool": frozenset({"text", "int", "bool", "binary", "null"}),
    "ts": frozenset({"text", "datetime", "date", "binary", "null"}),
    "ip": frozenset({"text", "binary", "null"}),
}
_EXPECTED: dict[ColumnKind, str] = {
    "str": "text",
    "int": "an integer",
    "float": "a number",
    "bool": "a boolean",
    "ts": "a timestamp (Parquet Datetime or ISO-8601 text)",
    "ip": "IP text",
}

Progress = Callable[[str], None]
Fixer = Callable[[pl.Series], pl.Series]


# Tables whose text columns are loaded as Categoricals (one 32-bit code per row, see
# :mod:`attribution.stages.codes`): the exchanges are most of a snapshot's rows, and their
# ids spelled out in every row were most of a 1M-account run's memory at its peak.
CODED_TABLES = frozenset({"exchanges"})


def contract_schema(table: str) -> dict[str, pl.DataType]:
    """The normalised dtypes of a contract table's columns, in schema order."""
    return {c.name: _dtype(table, c) for c in TABLES[table].columns}


def _dtype(table: str, col: Column) -> pl.DataType:
    """A loaded column's dtype: its kind's, text coded in ``CODED_TABLES``."""
    dtype = DTYPES[col.kind]
    return pl.Categorical() if table in CODED_TABLES and dtype == pl.String() else dtype


def read_snapshot(
    path: Path,
    *,
    max_rejected_share: float = 0.01,
    progress: Progress | None = None,
) -> Snapshot:
    """Read and validate the snapshot directory ``path``.

    Raises :class:`BadInput` (one line) for anything the engine refuses: a missing required
    table or column, an unreadable file, a table whose rejected share exceeds
    ``max_rejected_share``. See the module docstring for every rule.

    Example:
        >>> snap = read_snapshot(Path("worlds/small"), max_rejected_share=0.05)  # doctest: +SKIP
        >>> snap.tables["exchanges"].schema["ts"]  # doctest: +SKIP
        Datetime(time_unit='us', time_zone='UTC')
    """
    if not (0.0 <= max_rejected_share <= 1.0) or math.isnan(max_rejected_share):
        raise BadInput(f"max rejected share must be between 0 and 1, got {max_rejected_share}")
    root = Path(path)
    if not root.is_dir():
        raise BadInput(f"snapshot {root} is not a directory")
    say = progress or (lambda _message: None)
    try:
        return _read(root, max_rejected_share, say)
    except OSError as exc:  # permissions, a file vanishing mid-read, ...
        raise BadInput(f"cannot read snapshot {root}: {_one_line(exc)}") from exc


def _read(root: Path, max_rejected_share: float, say: Progress) -> Snapshot:
    """read_snapshot without the argument checks.

    The digest is computed in a thread while the tables are read: hashing is I/O and C code
    that releases the GIL, so on a cold cache it overlaps with polars instead of adding to it.
    """
    files = _discover(root)
    stop = threading.Event()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest-digest") as pool:
        digest = pool.submit(_digest, list(files.values()), stop)
        try:
            tables, rejected, counts = _read_tables(files, max_rejected_share, say)
        except BaseException:
            stop.set()  # no need to finish hashing a snapshot that is refused
            raise
        return Snapshot(root, digest.result(), tables, rejected, counts)


def _read_tables(
    files: dict[str, Path], max_rejected_share: float, say: Progress
) -> tuple[dict[str, pl.DataFrame], dict[str, pl.DataFrame], dict[str, TableCount]]:
    """Every contract table in load order, each checked against the ones before it."""
    tables: dict[str, pl.DataFrame] = {}
    rejected: dict[str, pl.DataFrame] = {}
    counts: dict[str, TableCount] = {}
    for name in LOAD_ORDER:
        spec = TABLES[name]
        file = files.get(name)
        if file is None:
            tables[name] = pl.DataFrame(schema=contract_schema(name))
            counts[name] = TableCount(0, 0, 0)
            continue
        say(f"reading {name}")
        loaded, bad, reasons = _read_table(
            spec, file, tables, rejected, present=set(files), say=say
        )
        read = loaded.height + bad.height
        counts[name] = TableCount(read, loaded.height, bad.height)
        tables[name] = loaded
        if bad.height:
            _check_limit(name, bad, read, max_rejected_share, reasons)
            rejected[name] = _public_rejected(bad, reasons)
    return tables, rejected, counts


# --- files -----------------------------------------------------------------------------------


def _discover(root: Path) -> dict[str, Path]:
    """Map table name -> its file; refuse ambiguity and a missing required table."""
    files: dict[str, Path] = {}
    for name in LOAD_ORDER:
        found = [root / f"{name}.{ext}" for ext in ("csv", "parquet")]
        found = [p for p in found if p.exists()]
        if len(found) == 2:
            raise BadInput(f"table {name}: both {name}.csv and {name}.parquet exist; keep one")
        if found:
            if not found[0].is_file():
                raise BadInput(f"{found[0].name} is not a regular file")
            files[name] = found[0]
        elif TABLES[name].required:
            near = sorted(p.name for p in root.iterdir() if p.name.lower().startswith(name))
            hint = f" (found {', '.join(near)}; expected exactly that name)" if near else ""
            raise BadInput(f"missing required table {name}: no {name}.csv or {name}.parquet{hint}")
    return files


def _digest(paths: Iterable[Path], stop: threading.Event | None = None) -> str:
    """sha256 over the table files sorted by name: each as name, NUL, 8-byte length, bytes."""
    h = hashlib.sha256()
    buffer = bytearray(1 << 22)
    view = memoryview(buffer)
    try:
        for p in sorted(paths, key=lambda q: q.name):
            h.update(p.name.encode() + b"\0" + p.stat().st_size.to_bytes(8, "big"))
            with p.open("rb") as f:
                while (n := f.readinto(buffer)) and not (stop and stop.is_set()):
                    h.update(view[:n])
    except OSError as exc:
        raise BadInput(f"cannot read snapshot file: {exc}") from exc
    return h.hexdigest()


def _one_line(exc: BaseException, limit: int = 200) -> str:
    """First non-empty line of an exception message, shortened; a reader's message may quote
    a row, so e-mails and IPs in it are masked."""
    lines = [s.strip() for s in str(exc).splitlines() if s.strip()]
    text = scrub_text(lines[0], tokens=False) if lines else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass
class _Source:
    """A scanned table file: its lazy frame with contract names and what the file held."""

    file: Path
    format: Format
    frame: pl.LazyFrame
    schema: dict[str, pl.DataType]  # file columns (renamed) -> dtype
    lossy: bool


def _csv_header(file: Path) -> list[str]:
    """The header fields, parsed by Python: only for names, hints and duplicates."""
    with file.open("rb") as f:
        first = f.readline(1 << 20)
    text = first.decode("utf-8", errors="replace").lstrip("\ufeff").rstrip("\r\n")
    if not text.strip():
        return []
    return next(csv.reader([text]), [])


def _scan(spec: Table, file: Path, *, lossy: bool) -> _Source:
    """Open ``file`` lazily, rename columns to contract names and check required columns."""
    if file.stat().st_size == 0:
        raise BadInput(
            f"{file.name} is empty (0 bytes); write a header row (CSV) or an empty Parquet "
            "file for an empty table"
            + ("" if spec.required else ", or leave the file out")
        )
    fmt: Format = "csv" if file.suffix == ".csv" else "parquet"
    header: list[str] = []
    try:
        if fmt == "csv":
            header = _csv_header(file)
            if not header:
                raise BadInput(f"{file.name} has no header row")
            frame = pl.scan_csv(
                file,
                infer_schema=False,
                encoding="utf8-lossy" if lossy else "utf8",
                truncate_ragged_lines=False,
            )
        else:
            frame = pl.scan_parquet(file)
        schema = dict(frame.collect_schema())
    except pl.exceptions.PolarsError as exc:
        if fmt == "csv" and not lossy and "utf-8" in str(exc).lower():
            raise _NotUtf8 from exc
        raise BadInput(f"{file.name}: not a readable {fmt.upper()} file: {_one_line(exc)}") from exc

    wanted = {c.lower(): c for c in spec.column_names}
    rename: dict[str, str] = {}
    for raw in schema:
        clean = raw.strip().lstrip("\ufeff").strip()
        new = wanted.get(clean.lower(), clean)
        if new.startswith(_PREFIX):
            raise BadInput(f"{file.name}: column name {raw!r} is reserved")
        if new in rename.values():
            raise BadInput(f"{file.name}: column {new} appears more than once")
        rename[raw] = new
    dup = {h.strip().lower() for h in header if header.count(h) > 1}
    if dup:
        raise BadInput(f"{file.name}: column {sorted(dup)[0]} appears more than once")
    missing = [c.name for c in spec.columns if not c.nullable and c.name not in rename.values()]
    if missing:
        raise BadInput(
            f"{file.name}: missing required column{'s' if len(missing) > 1 else ''} "
            f"{', '.join(missing)}{_header_hint(list(schema))}"
        )
    frame = frame.rename(rename)
    return _Source(file, fmt, frame, {rename[k]: v for k, v in schema.items()}, lossy)


def _header_hint(names: list[str]) -> str:
    """Say why a header may lack columns: another separator, or not UTF-8."""
    joined = ",".join(names)
    if "\x00" in joined:
        return " (the file looks UTF-16; snapshot CSV files are UTF-8)"
    if "\ufffd" in joined:
        return " (the header is not valid UTF-8)"
    for sep, label in ((";", "semicolon"), ("\t", "tab"), ("|", "pipe")):
        if joined.count(sep) >= 2:
            return f" (the header looks {label}-separated; snapshot CSV files are comma-separated)"
    return ""


# --- coercion -------------------------------------------------------------------------------


def _family(dtype: pl.DataType) -> Family | None:
    """Group a source dtype by how it can become a contract kind."""
    if isinstance(dtype, pl.Null):
        return "null"
    if isinstance(dtype, pl.String | pl.Categorical | pl.Enum):
        return "text"
    if isinstance(dtype, pl.Boolean):
        return "bool"
    if dtype.is_integer():
        return "int"
    if dtype.is_float():
        return "float"
    if isinstance(dtype, pl.Decimal):
        return "decimal"
    if isinstance(dtype, pl.Datetime):
        return "datetime"
    if isinstance(dtype, pl.Date):
        return "date"
    if isinstance(dtype, pl.Binary):
        return "binary"
    return None


@dataclass
class _Plan:
    """How one contract column becomes its normalised value."""

    column: Column
    value: pl.Expr  # fast and vectorised, over all rows
    present: pl.Expr  # the raw cell holds something (not null, not "")
    fixer: Fixer | None = None  # general parser for the (text) rows the fast path missed


def _integral(expr: pl.Expr) -> pl.Expr:
    """Float -> Int64 where the value is a finite whole number, else null."""
    ok = expr.is_finite() & (expr == expr.round(0))
    return pl.when(ok).then(expr.cast(pl.Int64, strict=False))


def _finite(expr: pl.Expr) -> pl.Expr:
    """NaN and infinities become null (then: a rejected row, never a default)."""
    return pl.when(expr.is_finite()).then(expr)


def _plan(col: Column, source: _Source, sample: pl.DataFrame) -> _Plan:
    """Pick the vectorised conversion of one column from its source dtype."""
    name, kind = col.name, col.kind
    nothing = pl.lit(None, dtype=DTYPES[kind])
    if name not in source.schema:
        return _Plan(col, nothing, pl.lit(False))
    dtype = source.schema[name]
    fam = _family(dtype)
    if fam is None or fam not in _ACCEPTS[kind]:
        raise BadInput(
            f"{source.file.name}: column {name} has type {dtype}, which cannot be read as "
            f"{_EXPECTED[kind]}"
        )
    if fam == "null":
        return _Plan(col, nothing, pl.lit(False))
    raw = pl.col(name)
    if fam in ("text", "binary"):
        raw = pl.when(raw.cast(pl.String) != "").then(raw.cast(pl.String))
    present = raw.is_not_null()
    text = fam in ("text", "binary")

    if kind == "str":
        if fam == "float":
            return _Plan(col, _integral(raw).cast(pl.String), present)
        value = raw.cast(pl.String)
        if col.choices:
            value = value.str.strip_chars().str.to_lowercase()
        return _Plan(col, value, present)
    if kind == "int":
        if fam in ("float", "decimal"):
            return _Plan(col, _integral(raw.cast(pl.Float64)), present)
        return _Plan(col, raw.cast(pl.Int64, strict=False), present, _parse_int if text else None)
    if kind == "float":
        value = _finite(raw.cast(pl.Float64, strict=False))
        return _Plan(col, value, present, _parse_float if text else None)
    if kind == "bool":
        if fam == "int":
            return _Plan(col, pl.when(raw == 1).then(True).when(raw == 0).then(False), present)
        return _Plan(col, raw if fam == "bool" else _parse_bool(raw), present)
    if kind == "ts":
        if isinstance(dtype, pl.Datetime):
            dt = raw.dt
            utc = dt.convert_time_zone("UTC") if dtype.time_zone else dt.replace_time_zone("UTC")
            return _Plan(col, utc.dt.cast_time_unit("us"), present)
        if fam == "date":
            return _Plan(col, raw.cast(pl.Datetime("us")).dt.replace_time_zone("UTC"), present)
        fmt, aware = _pick_ts_format(sample, name)
        return _Plan(col, _strptime(raw, fmt, aware), present, _parse_ts)
    # ip: most texts are canonical as written; the rest go to ipaddress, once per distinct value
    return _Plan(col, pl.when(raw.str.contains(_CANONICAL_IP)).then(raw), present, _canonical_ips)


def _strptime(expr: pl.Expr, fmt: str, aware: bool) -> pl.Expr:
    """Parse text with one format to Datetime(us, UTC); naive formats mean UTC."""
    if aware:
        return expr.str.to_datetime(fmt, time_unit="us", time_zone="UTC", strict=False)
    parsed = expr.str.to_datetime(fmt, time_unit="us", strict=False)
    return parsed.dt.replace_time_zone("UTC")


def _pick_ts_format(sample: pl.DataFrame, name: str) -> tuple[str, bool]:
    """The fastest format that parses most of the sample (like polars' own inference)."""
    values = sample.get_column(name).cast(pl.String).drop_nulls() if name in sample else None
    if values is None or values.is_empty():
        return _FAST_TS[0]
    frame = values.to_frame("v")
    hits = frame.select(
        _strptime(pl.col("v"), fmt, aware).is_not_null().sum().alias(str(i))
        for i, (fmt, aware) in enumerate(_FAST_TS)
    ).row(0)
    best = max(range(len(_FAST_TS)), key=lambda i: (hits[i], -i))
    return _FAST_TS[best]


def _parse_ts(values: pl.Series) -> pl.Series:
    """General ISO-8601 parsing, for the rows the fast format missed."""
    text = values.str.strip_chars().str.replace(r"^(\d{4}-\d{2}-\d{2})[ tT]", "${1}T")
    frame = text.to_frame("v")
    return frame.select(
        pl.coalesce(_strptime(pl.col("v"), fmt, aware) for fmt, aware in _GENERAL_TS)
    ).to_series()


def _parse_int(values: pl.Series) -> pl.Series:
    """Integers written with spaces or as whole decimals ("12.0")."""
    text = values.str.strip_chars()
    frame = text.to_frame("v")
    as_float = pl.col("v").cast(pl.Float64, strict=False)
    return frame.select(
        pl.coalesce(pl.col("v").cast(pl.Int64, strict=False), _integral(as_float))
    ).to_series()


def _parse_float(values: pl.Series) -> pl.Series:
    """Numbers written with spaces around them."""
    value = values.str.strip_chars().cast(pl.Float64, strict=False)
    return value.to_frame("v").select(_finite(pl.col("v"))).to_series()


def _parse_bool(expr: pl.Expr) -> pl.Expr:
    """true/false, t/f, yes/no, y/n, 1/0, in any case."""
    text = expr.str.strip_chars().str.to_lowercase()
    return text.replace_strict(list(_BOOLS), list(_BOOLS.values()), default=None,
                               return_dtype=pl.Boolean)  # fmt: skip


def _canonical_ip(text: str) -> str | None:
    """The compressed form of one IP text, or None."""
    try:
        return ipaddress.ip_address(text.strip()).compressed
    except ValueError:
        return None


def _canonical_ips(values: pl.Series) -> pl.Series:
    """Canonical IPs for a column: :mod:`ipaddress` runs once per distinct value."""
    distinct = values.unique().drop_nulls()
    canon = pl.Series([_canonical_ip(v) for v in distinct.to_list()], dtype=pl.String)
    return values.replace_strict(distinct, canon, default=None, return_dtype=pl.String)


# --- one table ------------------------------------------------------------------------------


def _vname(name: str) -> str:
    return f"{_PREFIX}v_{name}"


class _Reasons:
    """The distinct (column, problem) pairs of one table, numbered; a row carries a number.

    A small integer per row instead of two text columns keeps a 30M-row check cheap.
    """

    def __init__(self) -> None:
        self.pairs: list[tuple[str, str]] = []

    def code(self, column: str, problem: str) -> int:
        if (column, problem) not in self.pairs:
            self.pairs.append((column, problem))
        return self.pairs.index((column, problem))

    def text(self) -> tuple[list[int], list[str]]:
        """Codes and their ``problem (column)`` reasons."""
        return list(range(len(self.pairs))), [f"{p} ({c})" for c, p in self.pairs]


def _read_table(
    spec: Table,
    file: Path,
    tables: dict[str, pl.DataFrame],
    rejected: dict[str, pl.DataFrame],
    *,
    present: set[str],
    say: Progress,
) -> tuple[pl.DataFrame, pl.DataFrame, _Reasons]:
    """Read, convert and check one table: loaded rows, rejected rows (with codes), reasons.

    A large Parquet table without a key is checked in parts of ``_PART_ROWS`` rows, each
    part's raw and converted columns dropped once its rows are split: every check is per
    row or against earlier tables, so the parts give the rows the whole table would, in
    order, while only one part's text is in memory beside the coded rows loaded so far.
    """
    try:
        source = _scan(spec, file, lossy=False)
        parts = _parts(spec, source)
        data = _convert(spec, source, parts[0])
    except _NotUtf8:  # CSV: one part
        source = _scan(spec, file, lossy=True)
        parts = _parts(spec, source)
        data = _convert(spec, source, parts[0])
    say(f"checking {spec.name}")
    reasons = _Reasons()
    loaded: list[pl.DataFrame] = []
    bad: list[pl.DataFrame] = []
    for i, part in enumerate(parts):
        if i:
            data = _convert(spec, source, part)
        data = _problems(spec, source, data, reasons)
        data = _check_references(spec, source, data, tables, rejected, present, reasons)
        data = _check_keys(spec, data, reasons)
        good, no = _split(spec, source, data)
        del data
        loaded.append(good)
        bad.append(no)
    if len(parts) == 1:
        return loaded[0], bad[0], reasons
    return pl.concat(loaded, rechunk=False), pl.concat(bad, rechunk=False), reasons


# Rows per part of a large table (see ``_read_table``): about 1 GB of raw and converted
# exchange text, against about 7 GB for 50M rows at once.
_PART_ROWS = 8_000_000


def _parts(spec: Table, source: _Source) -> list[tuple[int, int] | None]:
    """(offset, rows) of each part of a table, or [None]: the whole table at once.

    Only Parquet (whose row groups a slice reads directly) without a key (duplicates are
    found across the whole table) is taken in parts."""
    if source.format != "parquet" or spec.key:
        return [None]
    rows = source.frame.select(pl.len()).collect().item()
    if rows <= _PART_ROWS:
        return [None]
    return [(start, _PART_ROWS) for start in range(0, rows, _PART_ROWS)]


class _NotUtf8(Exception):
    """The CSV has invalid UTF-8: read it again, lossily, and reject the rows concerned."""


def _convert(spec: Table, source: _Source, part: tuple[int, int] | None = None) -> pl.DataFrame:
    """Collect the raw columns and their normalised values (of rows ``part``, or all); fix
    what the fast path missed. Formats are picked on the first rows of the file, whatever
    the part."""
    frame = source.frame
    try:
        if source.format == "csv":
            sample = frame.head(_SAMPLE_ROWS).collect()
            frame = frame.filter(~pl.all_horizontal(pl.all().is_null()))  # blank lines
        else:
            text_ts = [
                c.name
                for c in spec.columns
                if c.kind == "ts" and _family(source.schema.get(c.name, pl.Null())) == "text"
            ]
            sample = frame.select(text_ts).head(_SAMPLE_ROWS).collect()
        if part is not None:
            frame = frame.slice(*part)
        plans = [_plan(c, source, sample) for c in spec.columns]
        data = frame.with_columns(
            [p.value.alias(_vname(p.column.name)) for p in plans]
            + [p.present.alias(f"{_PREFIX}present_{p.column.name}") for p in plans if p.fixer]
        ).collect()
    except pl.exceptions.PolarsError as exc:
        if source.format == "csv" and not source.lossy and "utf-8" in str(exc).lower():
            raise _NotUtf8 from exc
        binary = [n for n, t in source.schema.items() if isinstance(t, pl.Binary)]
        where = f" (Binary columns: {', '.join(binary)})" if binary and "utf" in str(exc) else ""
        raise BadInput(f"{source.file.name}: cannot read: {_one_line(exc)}{where}") from exc
    except OSError as exc:
        raise BadInput(f"{source.file.name}: cannot read: {_one_line(exc)}") from exc

    for p in plans:
        if p.fixer is None:
            continue
        flag = f"{_PREFIX}present_{p.column.name}"
        missed = data.get_column(flag) & data.get_column(_vname(p.column.name)).is_null()
        data = data.drop(flag)
        if missed.any():
            idx = missed.arg_true()
            raw = data.get_column(p.column.name).gather(idx).cast(pl.String)
            value = data.get_column(_vname(p.column.name)).clone().scatter(idx, p.fixer(raw))
            data = _replace(data, value)
    if spec.name == "known_links":
        data = _normalise_entities(data)
    return data


_ENTITY_PROBLEMS = ("not an ASN", "unparsable IP", "not an email domain")


def _normalise_entities(data: pl.DataFrame) -> pl.DataFrame:
    """known_links.entity_id as the entity appears elsewhere; a problem column for misfits."""
    kind = pl.col(_vname("entity_type"))
    ent = pl.col(_vname("entity_id"))
    text = ent.str.strip_chars()
    asn_digits = text.str.to_lowercase().str.strip_prefix("as").str.strip_chars()
    asn = pl.when(asn_digits.str.contains(r"^[0-9]{1,10}$")).then(asn_digits.cast(pl.Int64))
    asn = pl.when(asn <= _MAX_ASN).then(asn.cast(pl.String))
    domain = text.str.to_lowercase().str.strip_prefix("@").str.strip_suffix(".")
    domain = pl.when(domain.str.contains(r"^[^@\s]+$")).then(domain)
    ips = data.get_column(_vname("entity_id")).filter(
        data.select((kind == "ip") & ent.is_not_null()).to_series()
    )
    canon = _canonical_ips(ips) if len(ips) else pl.Series([], dtype=pl.String)
    ip = ent.replace_strict(ips, canon, default=None, return_dtype=pl.String)
    new = (
        pl.when(kind == "asn").then(asn)
        .when(kind == "email_domain").then(domain)
        .when(kind == "ip").then(ip)
        .otherwise(ent)
    )  # fmt: skip
    problem = (
        pl.when(kind == "asn").then(pl.lit(_ENTITY_PROBLEMS[0]))
        .when(kind == "ip").then(pl.lit(_ENTITY_PROBLEMS[1]))
        .otherwise(pl.lit(_ENTITY_PROBLEMS[2]))
    )  # fmt: skip
    return data.with_columns(
        pl.when(ent.is_not_null() & new.is_null())
        .then(problem)
        .alias(f"{_PREFIX}problem_entity_id"),
        pl.coalesce(new, ent).alias(_vname("entity_id")),
    )


def _problems(spec: Table, source: _Source, data: pl.DataFrame, reasons: _Reasons) -> pl.DataFrame:
    """Code of the first problem of every row (null: none), checks in schema order."""
    checks: list[tuple[str, str, pl.Expr]] = []  # (column, problem, row has it)
    if source.lossy:
        for name, dtype in source.schema.items():
            if isinstance(dtype, pl.String) and name not in spec.column_names:
                bad_text = pl.col(name).str.contains("\ufffd", literal=True)
                checks.append((name, "invalid UTF-8", bad_text))
    for col in spec.columns:
        if col.name not in source.schema:
            continue  # an absent nullable column: all null, nothing to check
        name, value, raw = col.name, pl.col(_vname(col.name)), pl.col(col.name)
        fam = _family(source.schema[name])
        if source.lossy and fam == "text":
            checks.append((name, "invalid UTF-8", raw.str.contains("\ufffd", literal=True)))
        if fam in ("text", "binary"):
            present = raw.is_not_null() & (raw.cast(pl.String) != "")
        else:
            present = raw.is_not_null()
        if fam != "null":
            checks.append((name, _parse_problem(col, fam), present & value.is_null()))
        if not col.nullable:
            checks.append((name, "missing value", value.is_null()))
        if col.identifier:
            too_long = value.str.len_chars() > MAX_ID_LENGTH
            checks.append((name, f"longer than {MAX_ID_LENGTH} characters", too_long))
        if col.choices:
            allowed = pl.Series(col.choices, dtype=pl.String).implode()
            checks.append((name, f"not one of {', '.join(col.choices)}", ~value.is_in(allowed)))
        if col.kind == "int":
            checks.append((name, "negative value", value < 0))
        low_high = _RANGES.get((spec.name, name))
        if low_high:
            low, high = low_high
            checks.append((name, f"out of range {low:g}..{high:g}", (value < low) | (value > high)))
        extra = f"{_PREFIX}problem_{name}"
        if extra in data.columns:
            checks.extend((name, p, pl.col(extra) == p) for p in _ENTITY_PROBLEMS)
    if {"first_seen", "last_seen"} <= set(spec.column_names):
        first, last = pl.col(_vname("first_seen")), pl.col(_vname("last_seen"))
        checks.append(("last_seen", "last_seen before first_seen", last < first))
    code = pl.coalesce(
        pl.when(cond).then(pl.lit(reasons.code(c, p), pl.UInt32)) for c, p, cond in checks
    )
    return data.lazy().with_columns(code.alias(_CODE)).collect()


def _parse_problem(col: Column, fam: Family | None) -> str:
    """Reason for a cell that holds something the column cannot take."""
    if col.kind == "str" and fam == "float":
        return "not an id: non-integral number"
    if col.kind == "int" and fam == "int":
        return "integer out of range"
    return _PARSE_PROBLEM[col.kind]


def _replace(data: pl.DataFrame, column: pl.Series) -> pl.DataFrame:
    """Swap in a column without the full rechunk an eager ``with_columns`` can trigger."""
    data = data.clone()  # shallow: columns are shared, not copied
    return data.replace_column(data.get_column_index(column.name), column)


def _mark(data: pl.DataFrame, rows: pl.Series, code: int) -> pl.DataFrame:
    """Give the rows at indices ``rows`` (which have no problem yet) problem ``code``."""
    if rows.is_empty():
        return data
    return _replace(data, data.get_column(_CODE).clone().scatter(rows, code))


def _check_references(
    spec: Table,
    source: _Source,
    data: pl.DataFrame,
    tables: dict[str, pl.DataFrame],
    rejected: dict[str, pl.DataFrame],
    present: set[str],
    reasons: _Reasons,
) -> pl.DataFrame:
    """Reject rows whose reference names no loaded row of the referenced table.

    An anti-join of the column against the referenced keys, over all rows at once; only the
    dangling rows (few, normally) come back to be marked.
    """
    row, key = f"{_PREFIX}row", f"{_PREFIX}key"
    for ref in spec.references:
        if ref.table not in present:
            if spec.column(ref.column).nullable or data.height == 0:
                continue
            raise BadInput(
                f"{source.file.name}: column {ref.column} refers to {ref.table}, but the "
                f"snapshot has no {ref.table} table"
            )
        targets = tables[ref.table].lazy().select(pl.col(ref.target).alias(key))
        dangling = (
            data.lazy()
            .select(
                pl.int_range(pl.len(), dtype=pl.UInt32).alias(row),
                pl.col(_vname(ref.column)).alias(key),
            )
            .join(targets, on=key, how="anti")
            .filter(pl.col(key).is_not_null())
            .collect()
        )
        if dangling.is_empty():
            continue
        rows = dangling.get_column(row)
        dangling = dangling.filter(data.get_column(_CODE).gather(rows).is_null())
        bad = rejected.get(ref.table)
        was_rejected = pl.lit(False)
        if bad is not None and ref.target in bad.columns:
            was_rejected = pl.col(key).is_in(bad.get_column(ref.target).implode())
        split = dangling.with_columns(was_rejected.alias("was"))
        unknown = reasons.code(ref.column, f"not in {ref.table}")
        cascade = reasons.code(ref.column, f"refers to a rejected row of {ref.table}")
        data = _mark(data, split.filter(~pl.col("was")).get_column(row), unknown)
        data = _mark(data, split.filter(pl.col("was")).get_column(row), cascade)
    return data


def _check_keys(spec: Table, data: pl.DataFrame, reasons: _Reasons) -> pl.DataFrame:
    """Reject later rows repeating the key of an earlier loadable row.

    Candidates come from a 64-bit hash of the key (fast on millions of rows); they are then
    confirmed on exact values within the few rows sharing a candidate hash, so a hash
    collision can never reject a row.
    """
    if not spec.key or data.height == 0:
        return data
    values = [pl.col(_vname(k)) for k in spec.key]
    ok = pl.col(_CODE).is_null()
    hashed = pl.when(ok).then(pl.struct(values).hash())
    suspects = (
        data.lazy()
        .filter(ok & ~hashed.is_first_distinct())
        .select(hashed.unique().implode())
        .collect()
        .item()
    )
    if suspects.is_empty():
        return data
    row = f"{_PREFIX}row"
    group = data.lazy().with_row_index(row).filter(ok & hashed.is_in(suspects.implode()))
    repeats = group.filter(~pl.struct(values).is_first_distinct()).select(row).collect()
    return _mark(data, repeats.get_column(row), reasons.code(", ".join(spec.key), "duplicate key"))


def _split(spec: Table, source: _Source, data: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Loaded rows (normalised, contract columns then extras) and rejected rows (as text)."""
    extras = [n for n in source.schema if n not in spec.column_names]
    loaded_cols = [pl.col(_vname(c.name)).cast(_dtype(spec.name, c)).alias(c.name)
                   for c in spec.columns]
    if spec.name == "known_links":
        at = spec.column_names.index("confidence")
        loaded_cols[at] = pl.col(_vname("confidence")).fill_null(1.0).alias("confidence")
    loaded_cols += [pl.col(n) for n in extras]
    # Lazy on purpose: eager select/filter over a frame whose columns are chunked
    # differently rechunk every column first (seconds on 30M rows).
    frame, code = data.lazy(), pl.col(_CODE)
    all_good = data.get_column(_CODE).null_count() == data.height
    good = frame if all_good else frame.filter(code.is_null())
    file_cols = [c for c in spec.column_names if c in source.schema] + extras
    bad = frame.filter(code.is_not_null()).select(
        [_as_text(n, source.schema[n]).alias(n) for n in file_cols] + [code]
    )
    loaded, rejected = pl.collect_all([good.select(loaded_cols), bad])
    return loaded, rejected


def _as_text(name: str, dtype: pl.DataType) -> pl.Expr:
    """A column as text for rejected/NAME.csv; nested values as JSON."""
    if isinstance(dtype, pl.List | pl.Array | pl.Struct):
        prefix = len(json.dumps(name, ensure_ascii=False)) + 2
        encoded = pl.struct(pl.col(name)).struct.json_encode()
        return pl.when(pl.col(name).is_not_null()).then(encoded.str.slice(prefix).str.head(-1))
    if isinstance(dtype, pl.Binary):
        return pl.col(name).bin.encode("hex")
    if isinstance(dtype, pl.Datetime):  # ISO-8601, as a CSV would have it
        fmt = "%Y-%m-%dT%H:%M:%S%.f" + ("%:z" if dtype.time_zone else "")
        return pl.col(name).dt.to_string(fmt)
    return pl.col(name).cast(pl.String)


def _reason_name(columns: list[str]) -> str:
    """``reason``, unless the file already has such a column."""
    return "reason" if "reason" not in columns else "ingest_reason"


def _public_rejected(bad: pl.DataFrame, reasons: _Reasons) -> pl.DataFrame:
    """Rejected rows as published: the file's columns as text, then the reason."""
    cols = [c for c in bad.columns if c != _CODE]
    codes, texts = reasons.text()
    reason = pl.col(_CODE).replace_strict(codes, texts, return_dtype=pl.String)
    return bad.select([*cols, reason.alias(_reason_name(cols))])


def _check_limit(name: str, bad: pl.DataFrame, read: int, limit: float, reasons: _Reasons) -> None:
    """Stop when too many rows of a table were rejected; say which column, why, and a row."""
    share = bad.height / read
    if share <= limit:
        return
    counts = bad.group_by(_CODE, maintain_order=True).len(name=f"{_PREFIX}n")
    top = counts.sort(f"{_PREFIX}n", descending=True, maintain_order=True).get_column(_CODE)[0]
    column, problem = reasons.pairs[top]
    sample = _masked_row(TABLES[name], bad.filter(pl.col(_CODE) == top).row(0, named=True))
    shown = ", ".join(f"{k}={_short(v)}" for k, v in sample.items() if k != _CODE)
    hint = "; is the file UTF-8?" if problem == "invalid UTF-8" else ""
    raise BadInput(
        f"table {name}: {_percent(share, limit)}% of rows rejected "
        f"({bad.height} of {read}; limit {_percent(limit, share)}%); "
        f"column {column}: {problem}{hint}; sample row: {_short(shown, 300)}"
    )


def _masked_row(spec: Table, row: dict[str, object]) -> dict[str, object]:
    """A rejected row as a message may show it: each value masked by the entity its column
    holds (``known_links.entity_id`` by the row's ``entity_type``), other text scrubbed of
    e-mails and IPs (extra columns too: nothing says what they hold)."""
    kinds = {c.name: c.entity for c in spec.columns}
    for c in spec.columns:
        if c.entity_from is not None:
            named = row.get(c.entity_from)
            kinds[c.name] = kind_of(str(named).strip().lower()) if named is not None else None
            kinds[c.name] = kinds[c.name] or "unknown"  # an unknown type hides the value
    out: dict[str, object] = {}
    for key, value in row.items():
        kind = kinds.get(key)
        if not isinstance(value, str) or key == _CODE:
            out[key] = value
        elif kind is not None:
            out[key] = mask(kind, value)
        else:
            out[key] = scrub_text(value, tokens=False)
    return out


def _percent(x: float, other: float) -> str:
    """``x`` as a percentage with enough decimals to differ visibly from ``other``."""
    for digits in range(1, 5):
        if round(x * 100, digits) != round(other * 100, digits):
            return f"{x * 100:.{digits}f}"
    return f"{x * 100:.4f}"


def _short(value: object, limit: int = 40) -> str:
    """One-line, shortened rendering of a cell for a message."""
    text = "null" if value is None else str(value)
    text = text.encode("unicode_escape").decode("ascii") if not text.isprintable() else text
    return text if len(text) <= limit else text[: limit - 3] + "..."
