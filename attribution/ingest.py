"""Snapshot ingest: read a snapshot directory and split every table into loaded and rejected rows.

The contract (``shared/CONTRACT.md``, and :mod:`attribution.schema` as data) fixes what a
snapshot may hold. This module is the only place that looks at raw files: everything after it
sees typed, validated :class:`polars.DataFrame` objects and never has to ask whether an id is a
float, a timestamp carries a time zone or an IP is spelled in full.

Decisions on what the contract leaves open (tests in ``tests/test_ingest.py`` pin each one):

* **Files.** A table is ``NAME.csv`` or ``NAME.parquet`` (exact, lower-case names); both at once
  is :class:`BadInput`. Other files in the directory are ignored and not part of the digest.
* **Empty files.** A 0-byte file is :class:`BadInput` for every table, required or not: it is
  what a crashed export leaves behind, and loading it as "no rows" would silently drop a whole
  table from an attribution. An empty table is written as a header-only CSV or a Parquet file
  with no rows, or left out.
* **Blank CSV lines** (every field empty) are skipped and not counted as read rows.
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
  the rejected-share limit and stops the run, with a hint about the encoding. (In a file that
  has invalid bytes, a row holding a genuine U+FFFD is rejected too.)
* **Parquet types** are accepted where the meaning is unambiguous: integer ids become text,
  integral float ids (``1001.0``, as pandas writes nullable integers) become ``"1001"`` and
  non-integral ones are rejected rows; integral floats in int columns are integers; strings in
  typed columns are parsed as in CSV; ``Date`` is midnight UTC; ``Datetime`` of any unit is
  converted to UTC (naive means UTC); integers where a timestamp belongs (epoch of unknown unit),
  booleans where a number belongs, nested types and the like are :class:`BadInput` naming the
  file, the column and its type. NaN and infinities are rejected rows, never nulls: a NaN
  ``confidence`` must not become the default 1.0.
* **Timestamps in text**: ISO-8601 with ``T`` or a space, optional fraction, ``Z``/offset
  (``+02:00``, ``+0200``) or none (= UTC), minutes without seconds, or a bare date (midnight UTC).
* **IPs** are stored in Python's ``ipaddress`` compressed form. Plain dotted quads (already
  canonical) are recognised by a vectorised pattern; only the distinct remaining values go
  through :mod:`ipaddress`, never one call per row.
* **Row rules.** Integers are non-negative (every int column is a count or an ASN; an ASN is at
  most 2**32 - 1); ``last_seen >= first_seen``; ``known_links.confidence`` is in [0, 1], null is
  stored as 1.0; ``known_links.entity_id`` is normalised by ``entity_type`` (asn: bare digits
  from ``64500``/``AS64500``; email_domain: lower-case, no ``@``; ip: canonical form).
* **Order of checks.** A row gets one reason, the first that applies: per column in schema
  order (invalid UTF-8, unparsable, missing, not a choice, out of range), then the first/last
  seen order, then references, then duplicate keys. Duplicates are found among rows that pass
  everything else, so the first *loadable* occurrence is kept and later ones rejected.
* **References** are checked against the loaded rows of the referenced table (a vectorised hash
  semi-join). A dangling value whose target row was itself rejected says so
  (``refers to a rejected row of accounts``). When the referenced table is absent: a nullable
  reference (``ips.proxy_id`` without ``proxies``) is kept unchecked, since the id still tells
  which IPs share a proxy; so a consumer must not assume the ``proxies`` row exists when the
  ``proxies`` table is empty. A non-nullable reference to an absent table
  (``account_devices`` without ``devices``) is BadInput when the referencing table has rows.
* **Limit.** ``rejected / read > max_rejected_share`` for any table is BadInput naming the
  table, the most frequent (column, problem) and the first row with it, checked right after the
  table is read so a bad ``accounts`` stops the run before ``exchanges`` is touched.
* **Rejected frames** hold the columns of the file (not added nullable ones) as text, plus
  ``reason`` (``ingest_reason`` if the file itself has a ``reason`` column).

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
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import polars as pl

from attribution.schema import LOAD_ORDER, TABLES, Column, ColumnKind, Table

__all__ = ["BadInput", "Snapshot", "TableCount", "contract_schema", "read_snapshot"]


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
_PROBLEM = f"{_PREFIX}problem"
_COLUMN = f"{_PREFIX}column"
_MAX_ASN = 2**32 - 1
_SAMPLE_ROWS = 2000
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
_V4 = rf"^(?:{_OCTET}\.){{3}}{_OCTET}$"  # exactly what ipaddress accepts and prints for v4
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


def contract_schema(table: str) -> dict[str, pl.DataType]:
    """The normalised dtypes of a contract table's columns, in schema order."""
    return {c.name: DTYPES[c.kind] for c in TABLES[table].columns}


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
    files = _discover(root)
    say("hashing snapshot")
    digest = _digest(files.values())

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
        loaded, bad = _read_table(spec, file, tables, rejected, present=set(files), say=say)
        read = loaded.height + bad.height
        counts[name] = TableCount(read, loaded.height, bad.height)
        tables[name] = loaded
        if bad.height:
            _check_limit(name, bad, read, max_rejected_share, lossy="invalid UTF-8")
            rejected[name] = _public_rejected(bad)
    return Snapshot(path=root, digest=digest, tables=tables, rejected=rejected, counts=counts)


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


def _digest(paths: Iterable[Path]) -> str:
    """sha256 over the table files sorted by name: each as name, NUL, 8-byte length, bytes."""
    h = hashlib.sha256()
    buffer = bytearray(1 << 22)
    view = memoryview(buffer)
    try:
        for p in sorted(paths, key=lambda q: q.name):
            h.update(p.name.encode() + b"\0" + p.stat().st_size.to_bytes(8, "big"))
            with p.open("rb") as f:
                while n := f.readinto(buffer):
                    h.update(view[:n])
    except OSError as exc:
        raise BadInput(f"cannot read snapshot file: {exc}") from exc
    return h.hexdigest()


def _one_line(exc: BaseException, limit: int = 200) -> str:
    """First non-empty line of an exception message, shortened."""
    lines = [s.strip() for s in str(exc).splitlines() if s.strip()]
    text = lines[0] if lines else type(exc).__name__
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
            f"{', '.join(missing)}{_delimiter_hint(list(schema))}"
        )
    frame = frame.rename(rename)
    return _Source(file, fmt, frame, {rename[k]: v for k, v in schema.items()}, lossy)


def _delimiter_hint(names: list[str]) -> str:
    """Say so when a header that lacks columns looks separated by something else."""
    joined = ",".join(names)
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
    value: pl.Expr  # fast, vectorised, over all rows
    present: pl.Expr  # the raw cell holds something (not null, not "")
    problem: str  # reason when present but no value results
    fixer: Fixer | None = None  # general parser for the (text) rows the fast path missed


def _integral(expr: pl.Expr) -> pl.Expr:
    """Float -> Int64 where the value is a finite whole number, else null."""
    ok = expr.is_finite() & (expr == expr.round(0))
    return pl.when(ok).then(expr.cast(pl.Int64, strict=False))


def _plan(col: Column, source: _Source, sample: pl.DataFrame) -> _Plan:
    """Pick the vectorised conversion of one column from its source dtype."""
    name, kind = col.name, col.kind
    target = DTYPES[kind]
    if name not in source.schema:
        return _Plan(col, pl.lit(None, dtype=target), pl.lit(False), "")
    dtype = source.schema[name]
    fam = _family(dtype)
    if fam is None or fam not in _ACCEPTS[kind]:
        raise BadInput(
            f"{source.file.name}: column {name} has type {dtype}, which cannot be read as "
            f"{_EXPECTED[kind]}"
        )
    raw = pl.col(name)
    if fam == "null":
        return _Plan(col, pl.lit(None, dtype=target), pl.lit(False), "")
    if fam in ("text", "binary"):
        raw = raw.cast(pl.String)
        raw = pl.when(raw != "").then(raw)
    present = raw.is_not_null()
    problem = _PARSE_PROBLEM[kind]

    if kind == "str":
        if fam == "float":
            return _Plan(col, _integral(raw).cast(pl.String), present, "not an id: non-integral number")
        value = raw.cast(pl.String)
        if col.choices:
            value = value.str.strip_chars().str.to_lowercase()
        return _Plan(col, value, present, problem)
    if kind == "int":
        if fam == "int":
            return _Plan(col, raw.cast(pl.Int64, strict=False), present, "integer out of range")
        if fam in ("float", "decimal"):
            return _Plan(col, _integral(raw.cast(pl.Float64)), present, problem)
        return _Plan(col, raw.cast(pl.Int64, strict=False), present, problem, _parse_int)
    if kind == "float":
        if fam == "text" or fam == "binary":
            value = raw.cast(pl.Float64, strict=False)
            return _Plan(col, pl.when(value.is_finite()).then(value), present, problem, _parse_float)
        value = raw.cast(pl.Float64)
        return _Plan(col, pl.when(value.is_finite()).then(value), present, problem)
    if kind == "bool":
        if fam == "bool":
            return _Plan(col, raw, present, problem)
        if fam == "int":
            return _Plan(col, pl.when(raw == 1).then(True).when(raw == 0).then(False), present, problem)
        return _Plan(col, _parse_bool(raw), present, problem)
    if kind == "ts":
        if isinstance(dtype, pl.Datetime):
            value = (
                raw.dt.convert_time_zone("UTC")
                if dtype.time_zone
                else raw.dt.replace_time_zone("UTC")
            )
            return _Plan(col, value.dt.cast_time_unit("us"), present, problem)
        if fam == "date":
            value = raw.cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
            return _Plan(col, value, present, problem)
        fmt, aware = _pick_ts_format(sample, name)
        return _Plan(col, _strptime(raw, fmt, aware), present, problem, _parse_ts)
    # ip: dotted quads are canonical as written; anything else goes to ipaddress, once per value
    return _Plan(col, pl.when(raw.str.contains(_V4)).then(raw), present, problem, _canonical_ips)


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
    return value.to_frame("v").select(pl.when(pl.col("v").is_finite()).then("v")).to_series()


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


def _read_table(
    spec: Table,
    file: Path,
    tables: dict[str, pl.DataFrame],
    rejected: dict[str, pl.DataFrame],
    *,
    present: set[str],
    say: Progress,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Read, convert and check one table: (loaded rows, rejected rows with internal columns)."""
    try:
        source = _scan(spec, file, lossy=False)
        frame = _convert(spec, source)
    except _NotUtf8:
        source = _scan(spec, file, lossy=True)
        frame = _convert(spec, source)
    say(f"checking {spec.name}")
    frame = _problems(spec, source, frame)
    frame = _check_references(spec, source, frame, tables, rejected, present)
    frame = _check_keys(spec, frame)
    return _split(spec, source, frame)


class _NotUtf8(Exception):
    """The CSV has invalid UTF-8: read it again, lossily, and reject the rows concerned."""


def _convert(spec: Table, source: _Source) -> pl.DataFrame:
    """Collect the raw columns and their normalised values; fix what the fast path missed."""
    frame = source.frame
    if source.format == "csv":  # blank lines come out as all-null rows
        frame = frame.filter(~pl.all_horizontal(pl.all().is_null()))
    try:
        sample = frame.head(_SAMPLE_ROWS).collect() if source.format == "csv" else None
        if sample is None:
            ts_text = [c.name for c in spec.columns if c.kind == "ts"
                       and _family(source.schema.get(c.name, pl.Null())) == "text"]  # fmt: skip
            sample = frame.select(ts_text).head(_SAMPLE_ROWS).collect() if ts_text else pl.DataFrame()
        plans = [_plan(c, source, sample) for c in spec.columns]
        data = frame.with_columns(
            [p.value.alias(_vname(p.column.name)) for p in plans]
            + [p.present.alias(f"{_PREFIX}present_{p.column.name}") for p in plans if p.fixer]
        ).collect()
    except pl.exceptions.PolarsError as exc:
        if source.format == "csv" and not source.lossy and "utf-8" in str(exc).lower():
            raise _NotUtf8 from exc
        raise BadInput(f"{source.file.name}: cannot read: {_one_line(exc)}") from exc
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
            fixed = p.fixer(raw)
            value = data.get_column(_vname(p.column.name)).clone().scatter(idx, fixed)
            data = data.with_columns(value)
    if spec.name == "known_links":
        data = _normalise_entities(data)
    return data


def _normalise_entities(data: pl.DataFrame) -> pl.DataFrame:
    """known_links.entity_id as the entity appears elsewhere; a problem column for misfits."""
    kind = pl.col(_vname("entity_type"))
    ent = pl.col(_vname("entity_id"))
    text = ent.str.strip_chars()
    asn_digits = text.str.to_lowercase().str.strip_prefix("as").str.strip_chars()
    asn = pl.when(asn_digits.str.contains(r"^[0-9]{1,10}$")).then(asn_digits.cast(pl.Int64))
    asn = pl.when(asn <= _MAX_ASN).then(asn.cast(pl.String))
    domain = text.str.to_lowercase().str.strip_prefix("@").str.strip_suffix(".")
    domain_ok = domain.str.contains(r"^[^@\s]+$")
    is_ip = (kind == "ip") & ent.is_not_null()
    ips = data.get_column(_vname("entity_id")).filter(data.select(is_ip).to_series())
    canon = _canonical_ips(ips) if len(ips) else pl.Series([], dtype=pl.String)
    data = data.with_columns(
        pl.when(kind == "asn").then(asn)
        .when(kind == "email_domain").then(pl.when(domain_ok).then(domain))
        .when(kind == "ip").then(ent.replace_strict(ips, canon, default=None, return_dtype=pl.String))
        .otherwise(ent).alias(f"{_PREFIX}entity"),
    )  # fmt: skip
    new = pl.col(f"{_PREFIX}entity")
    return data.with_columns(
        pl.when(ent.is_not_null() & new.is_null())
        .then(
            pl.when(kind == "asn").then(pl.lit("not an ASN"))
            .when(kind == "ip").then(pl.lit("unparsable IP"))
            .otherwise(pl.lit("not an email domain"))
        )
        .alias(f"{_PREFIX}problem_entity_id"),
        pl.coalesce(new, ent).alias(_vname("entity_id")),
    ).drop(f"{_PREFIX}entity")  # fmt: skip


def _problems(spec: Table, source: _Source, data: pl.DataFrame) -> pl.DataFrame:
    """First problem of every row, in schema order, as (problem, column) or nulls."""
    checks: list[tuple[str, pl.Expr]] = []
    if source.lossy:
        for name, dtype in source.schema.items():
            if isinstance(dtype, pl.String) and name not in spec.column_names:
                checks.append((name, pl.when(pl.col(name).str.contains("\ufffd", literal=True))
                               .then(pl.lit("invalid UTF-8"))))  # fmt: skip
    for col in spec.columns:
        name, value = col.name, pl.col(_vname(col.name))
        if col.name not in source.schema:
            if not col.nullable:  # pragma: no cover - _scan refuses this
                raise AssertionError(name)
            continue
        raw = pl.col(name)
        dtype = source.schema[name]
        fam = _family(dtype)
        if source.lossy and fam == "text":
            checks.append((name, pl.when(raw.str.contains("\ufffd", literal=True))
                           .then(pl.lit("invalid UTF-8"))))  # fmt: skip
        if fam in ("text", "binary"):
            present = raw.is_not_null() & (raw.cast(pl.String) != "")
        else:
            present = raw.is_not_null()
        if fam != "null":
            problem = _parse_problem(col, fam)
            checks.append((name, pl.when(present & value.is_null()).then(pl.lit(problem))))
        if not col.nullable:
            checks.append((name, pl.when(value.is_null()).then(pl.lit("missing value"))))
        if col.choices:
            allowed = pl.Series(col.choices, dtype=pl.String).implode()
            checks.append((name, pl.when(value.is_not_null() & ~value.is_in(allowed))
                           .then(pl.lit(f"not one of {', '.join(col.choices)}"))))  # fmt: skip
        if col.kind == "int":
            checks.append((name, pl.when(value < 0).then(pl.lit("negative value"))))
        low_high = _RANGES.get((spec.name, name))
        if low_high:
            low, high = low_high
            checks.append((name, pl.when((value < low) | (value > high))
                           .then(pl.lit(f"out of range {low:g}..{high:g}"))))  # fmt: skip
        extra = f"{_PREFIX}problem_{name}"
        if extra in data.columns:
            checks.append((name, pl.col(extra)))
    if {"first_seen", "last_seen"} <= set(spec.column_names):
        first, last = pl.col(_vname("first_seen")), pl.col(_vname("last_seen"))
        checks.append(("last_seen", pl.when(last < first).then(pl.lit("last_seen before first_seen"))))
    if not checks:
        return data.with_columns(
            pl.lit(None, pl.String).alias(_PROBLEM), pl.lit(None, pl.String).alias(_COLUMN)
        )
    return data.lazy().with_columns(
        pl.coalesce(e for _, e in checks).alias(_PROBLEM),
        pl.coalesce(pl.when(e.is_not_null()).then(pl.lit(n)) for n, e in checks).alias(_COLUMN),
    ).collect()


def _parse_problem(col: Column, fam: Family | None) -> str:
    """Reason for a cell that holds something the column cannot take."""
    if col.kind == "str" and fam == "float":
        return "not an id: non-integral number"
    if col.kind == "int" and fam == "int":
        return "integer out of range"
    return _PARSE_PROBLEM[col.kind]


def _mark(data: pl.DataFrame, mask: pl.Series, problem: pl.Expr | str, column: str) -> pl.DataFrame:
    """Give rows under ``mask`` (which have no problem yet) a problem."""
    text = pl.lit(problem) if isinstance(problem, str) else problem
    return data.with_columns(
        pl.when(pl.lit(mask)).then(text).otherwise(pl.col(_PROBLEM)).alias(_PROBLEM),
        pl.when(pl.lit(mask)).then(pl.lit(column)).otherwise(pl.col(_COLUMN)).alias(_COLUMN),
    )


def _check_references(
    spec: Table,
    source: _Source,
    data: pl.DataFrame,
    tables: dict[str, pl.DataFrame],
    rejected: dict[str, pl.DataFrame],
    present: set[str],
) -> pl.DataFrame:
    """Reject rows whose reference names no loaded row of the referenced table."""
    for ref in spec.references:
        nullable = spec.column(ref.column).nullable
        if ref.table not in present:
            if nullable or data.height == 0:
                continue
            raise BadInput(
                f"{source.file.name}: column {ref.column} refers to {ref.table}, but the "
                f"snapshot has no {ref.table} table"
            )
        keys = tables[ref.table].get_column(ref.target).implode()
        value = pl.col(_vname(ref.column))
        dangling = data.select(
            pl.col(_PROBLEM).is_null() & value.is_not_null() & ~value.is_in(keys)
        ).to_series()
        if not dangling.any():
            continue
        why: pl.Expr | str = f"not in {ref.table}"
        bad = rejected.get(ref.table)
        if bad is not None and ref.target in bad.columns:
            was_rejected = value.is_in(bad.get_column(ref.target).implode())
            why = pl.when(was_rejected).then(pl.lit(f"refers to a rejected row of {ref.table}"))
            why = why.otherwise(pl.lit(f"not in {ref.table}"))
        data = _mark(data, dangling, why, ref.column)
    return data


def _check_keys(spec: Table, data: pl.DataFrame) -> pl.DataFrame:
    """Reject later rows repeating the key of an earlier loadable row.

    Candidates come from a 64-bit hash of the key (fast on millions of rows); they are then
    confirmed on exact values within the few rows sharing a candidate hash, so a hash
    collision can never reject a row.
    """
    if not spec.key or data.height == 0:
        return data
    values = [pl.col(_vname(k)) for k in spec.key]
    ok = data.get_column(_PROBLEM).is_null()
    hashed = data.select(pl.when(pl.lit(ok)).then(pl.struct(values).hash())).to_series()
    candidate = ok & ~hashed.is_first_distinct()
    if not candidate.any():
        return data
    suspects = hashed.filter(candidate).unique().implode()
    row = f"{_PREFIX}row"
    group = data.with_row_index(row).filter(ok & hashed.is_in(suspects))
    repeats = group.filter(~pl.struct(values).is_first_distinct()).get_column(row)
    if repeats.is_empty():
        return data
    mask = pl.repeat(False, data.height, eager=True).scatter(repeats, True)
    return _mark(data, mask, "duplicate key", ", ".join(spec.key))


def _split(
    spec: Table, source: _Source, data: pl.DataFrame
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Loaded rows (normalised, contract columns then extras) and rejected rows (as text)."""
    extras = [n for n in source.schema if n not in spec.column_names]
    loaded_cols = [pl.col(_vname(c.name)).alias(c.name) for c in spec.columns]
    if spec.name == "known_links":
        loaded_cols[spec.column_names.index("confidence")] = (
            pl.col(_vname("confidence")).fill_null(1.0).alias("confidence")
        )
    loaded_cols += [pl.col(n) for n in extras]
    ok = data.get_column(_PROBLEM).is_null()
    n_bad = data.height - int(ok.sum())
    kept = data if n_bad == 0 else data.filter(ok)
    loaded = kept.select(loaded_cols)
    file_cols = [c for c in spec.column_names if c in source.schema] + extras
    bad = data.filter(~ok) if n_bad else data.clear()
    bad = bad.select(
        [_as_text(n, source.schema[n]).alias(n) for n in file_cols]
        + [pl.col(_PROBLEM), pl.col(_COLUMN)]
    )
    return loaded, bad


def _as_text(name: str, dtype: pl.DataType) -> pl.Expr:
    """A column as text for rejected/NAME.csv; nested values as JSON."""
    if isinstance(dtype, pl.List | pl.Array | pl.Struct):
        prefix = len(json.dumps(name, ensure_ascii=False)) + 2
        encoded = pl.struct(pl.col(name)).struct.json_encode()
        return pl.when(pl.col(name).is_not_null()).then(encoded.str.slice(prefix).str.head(-1))
    if isinstance(dtype, pl.Binary):
        return pl.col(name).bin.encode("hex")
    return pl.col(name).cast(pl.String)


def _reason_name(columns: list[str]) -> str:
    """``reason``, unless the file already has such a column."""
    return "reason" if "reason" not in columns else "ingest_reason"


def _public_rejected(bad: pl.DataFrame) -> pl.DataFrame:
    """Rejected rows as published: the file's columns as text, then the reason."""
    cols = [c for c in bad.columns if c not in (_PROBLEM, _COLUMN)]
    reason = pl.concat_str(pl.col(_PROBLEM), pl.lit(" ("), pl.col(_COLUMN), pl.lit(")"))
    return bad.select([*cols, reason.alias(_reason_name(cols))])


def _check_limit(
    name: str, bad: pl.DataFrame, read: int, limit: float, *, lossy: str
) -> None:
    """Stop when too many rows of a table were rejected; say which column, why, and a row."""
    share = bad.height / read
    if share <= limit:
        return
    top = (
        bad.group_by(_COLUMN, _PROBLEM, maintain_order=True)
        .len()
        .sort("len", descending=True, maintain_order=True)
        .row(0, named=True)
    )
    column, problem = top[_COLUMN], top[_PROBLEM]
    sample = bad.filter((pl.col(_COLUMN) == column) & (pl.col(_PROBLEM) == problem)).row(
        0, named=True
    )
    shown = ", ".join(
        f"{k}={_short(v)}" for k, v in sample.items() if k not in (_PROBLEM, _COLUMN)
    )
    hint = "; is the file UTF-8?" if problem == lossy else ""
    raise BadInput(
        f"table {name}: {_percent(share, limit)}% of rows rejected "
        f"({bad.height} of {read}; limit {_percent(limit, share)}%); "
        f"column {column}: {problem}{hint}; sample row: {_short(shown, 300)}"
    )


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
