"""The Neo4j store's codec: polars frames to Bolt rows and back, exactly.

Frames are written as parameter lists (temporal columns as epoch pairs, so no
precision is lost), read back page by page into columns of their recorded
dtypes (``schema_blob``: an empty Arrow IPC file kept with the data), so the
graph and a run read back from Neo4j equal what was written, bit for bit.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import io
from typing import Any, LiteralString

import polars as pl
import pyarrow as pa
from neo4j import time as neo4j_time

from attribution.contracts.graph import ACTIVITY_SCHEMA, PropertyGraph
from attribution.store.neo4j_cypher import FRAME_LABEL, LINK_LABEL, NODE_KEYS, USE_REL


def schema_blob(frame: pl.DataFrame) -> str:
    """The frame's exact column names and dtypes, as an empty Arrow IPC file (base64)."""
    buf = io.BytesIO()
    frame.clear().write_ipc(buf)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def schema_from_blob(blob: str) -> pl.Schema:
    return pl.read_ipc(io.BytesIO(base64.b64decode(blob))).schema


def payload(frame: pl.DataFrame, *, drop: tuple[str, ...] = (), keep: tuple[str, ...] = (),
             **top: str) -> pl.DataFrame:
    """Rows as ``{<top>..., props: {...}, ts: {col: [seconds, nanos]}}`` for the write queries.

    ``top`` names columns lifted out of ``props`` (renamed); ``keep`` of those
    also stay in ``props``; ``drop`` are left out. Decimals go as text.
    """
    lifted = set(top.values()) - set(keep)
    columns = [c for c in frame.columns if c not in lifted and c not in drop]
    times = [c for c in columns if isinstance(frame.schema[c], pl.Datetime)]
    plain = [c for c in columns if c not in times]
    exprs = [pl.col(source).alias(name) for name, source in top.items()]
    exprs.append(pl.struct([_plain(c, frame.schema[c]) for c in plain]).alias("props")
                 if plain else pl.lit(None).alias("props"))
    exprs.append(pl.struct([_epoch_pair(c, frame.schema[c]) for c in times]).alias("ts")
                 if times else pl.lit(None).alias("ts"))
    return frame.select(exprs)


class ColumnBatches:
    """A frame cut into batches of column lists for the graph load statements.

    ``lift`` maps a parameter name to a column sent as its own list (a key or a
    relationship end); lifted columns are not properties unless in ``keep``;
    ``drop`` columns are not sent. Every other column travels under ``$cols``
    (values in ``$vals``) or, if a timestamp, ``$times`` (``$secs`` / ``$nanos``:
    floor epoch seconds and nanoseconds). ``fixed`` columns, in the order given,
    travel under ``$fvals`` (timestamps ``$fsecs`` / ``$fnanos``) for the statements
    that name them in a literal map. Only whole columns are converted
    (``Series.to_list``): the client builds no per-row map, and Bolt packs plain
    lists of scalars.
    """

    def __init__(self, frame: pl.DataFrame, *, lift: dict[str, str] | None = None,
                 keep: tuple[str, ...] = (), drop: tuple[str, ...] = (),
                 fixed: tuple[str, ...] = ()) -> None:
        lift = lift or {}
        lifted = set(lift.values()) - set(keep)
        columns = [c for c in frame.columns
                   if c not in lifted and c not in drop and c not in fixed]
        self.times = [c for c in columns if isinstance(frame.schema[c], pl.Datetime)]
        self.cols = [c for c in columns if c not in self.times]
        self.fixed_times = [c for c in fixed if isinstance(frame.schema[c], pl.Datetime)]
        self.fixed_cols = [c for c in fixed if c not in self.fixed_times]
        self.lift = list(lift)
        exprs = [pl.col(source).alias(f"l:{name}") for name, source in lift.items()]
        exprs += [_plain(c, frame.schema[c]).alias(f"c:{c}")
                  for c in (*self.cols, *self.fixed_cols)]
        for c in (*self.times, *self.fixed_times):
            seconds, nanos = _epoch_parts(c, frame.schema[c])
            exprs += [seconds.alias(f"s:{c}"), nanos.alias(f"n:{c}")]
        self.frame = frame.select(exprs) if exprs else frame.clear()
        self.height = frame.height

    def batch(self, start: int, size: int) -> dict[str, Any]:
        """Parameters for rows ``start`` to ``start + size`` (``n`` is their number)."""
        part = self.frame.slice(start, size)
        params: dict[str, Any] = {name: part[f"l:{name}"].to_list() for name in self.lift}
        params.update(
            n=part.height, cols=self.cols, times=self.times,
            vals=[part[f"c:{c}"].to_list() for c in self.cols],
            secs=[part[f"s:{c}"].to_list() for c in self.times],
            nanos=[part[f"n:{c}"].to_list() for c in self.times])
        if self.fixed_cols or self.fixed_times:
            params.update(
                fvals=[part[f"c:{c}"].to_list() for c in self.fixed_cols],
                fsecs=[part[f"s:{c}"].to_list() for c in self.fixed_times],
                fnanos=[part[f"n:{c}"].to_list() for c in self.fixed_times])
        return params


def _plain(column: str, dtype: pl.DataType) -> pl.Expr:
    return pl.col(column).cast(pl.String) if isinstance(dtype, pl.Decimal) else pl.col(column)


_PER_SECOND = {"ns": 10**9, "us": 10**6, "ms": 10**3}


def _epoch_pair(column: str, dtype: pl.DataType) -> pl.Expr:
    """A timestamp as [floor epoch seconds, nanoseconds] (naive ones read as UTC)."""
    assert isinstance(dtype, pl.Datetime)
    per = _PER_SECOND[dtype.time_unit or "us"]
    epoch = pl.col(column).dt.epoch(dtype.time_unit or "us")
    seconds = epoch // per
    nanos = (epoch - seconds * per) * (10**9 // per)
    return pl.when(epoch.is_null()).then(None).otherwise(
        pl.concat_list([seconds, nanos])).alias(column)


def _epoch_parts(column: str, dtype: pl.DataType) -> tuple[pl.Expr, pl.Expr]:
    """A timestamp as floor epoch seconds and nanoseconds, two integer columns."""
    assert isinstance(dtype, pl.Datetime)
    per = _PER_SECOND[dtype.time_unit or "us"]
    epoch = pl.col(column).dt.epoch(dtype.time_unit or "us")
    seconds = epoch // per
    return seconds, (epoch - seconds * per) * (10**9 // per)


def with_seq(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.with_columns(pl.int_range(pl.len(), dtype=pl.Int64).alias("seq"))


def endpoint_keys(graph: PropertyGraph) -> dict[LiteralString, list[Any]]:
    """Keys of nodes that end a relationship but are not a row of their frame."""
    wanted: dict[LiteralString, list[pl.Series]] = {label: [] for label in NODE_KEYS}
    uses = graph.uses
    for kind, (_, label) in USE_REL.items():
        wanted[label].append(uses.filter(pl.col("kind") == kind)["entity_id"])
    wanted["Account"].append(uses["account_id"])
    links = graph.known_links
    for kind, label in LINK_LABEL.items():
        wanted[label].append(links.filter(pl.col("kind") == kind)["key"])
    wanted["Organization"].append(links["org_id"])
    wanted["ASN"].append(graph.ips["asn"].drop_nulls().cast(pl.String))
    wanted["Proxy"].append(graph.ips["proxy_id"])
    rows = {label: graph.frames()[name][NODE_KEYS[label]]
            for name, label in FRAME_LABEL.items()}
    out: dict[LiteralString, list[Any]] = {}
    for label, parts in wanted.items():
        if not parts:
            continue
        keys = pl.concat([p.cast(pl.String).rename("k") for p in parts]).drop_nulls().unique()
        if label in rows:
            keys = keys.filter(~keys.is_in(rows[label].cast(pl.String).implode()))
        if keys.len():
            out[label] = keys.sort().to_list()
    return out


def _native(value: Any) -> Any:
    """Driver temporal values as Python ones (polars builds columns from these)."""
    if isinstance(value, neo4j_time.DateTime | neo4j_time.Date | neo4j_time.Time):
        return value.to_native()
    if isinstance(value, neo4j_time.Duration):
        months, days, seconds, nanos = value
        return dt.timedelta(days=days + 30 * months, seconds=seconds, microseconds=nanos // 1000)
    return value


class Columns:
    """Pages of columns (see ``COLUMNS``) gathered into a frame of exact dtypes.

    ``fixed`` columns are not properties: the caller passes their values with
    each page (the account and kind of a relationship, say). Each page becomes a
    frame as it arrives: Python objects cost several times their Arrow size (a
    million accounts' columns and uses are tens of millions of values), so only
    one page of them is alive at a time.
    """

    def __init__(self, schema: pl.Schema, fixed: tuple[str, ...] = ()) -> None:
        self.schema = schema
        self.fixed = fixed
        self.cols = [c for c, t in schema.items()
                     if c not in fixed and not isinstance(t, pl.Datetime)]
        self.times = [c for c, t in schema.items()
                      if c not in fixed and isinstance(t, pl.Datetime)]
        self.data: dict[str, list[Any]] = {c: [] for c in schema}
        self.seconds: dict[str, list[Any]] = {c: [] for c in self.times}
        self.nanos: dict[str, list[Any]] = {c: [] for c in self.times}
        self.chunks: list[pl.DataFrame] = []

    def params(self, prefix: str = "") -> dict[str, list[str]]:
        return {f"{prefix}cols": self.cols, f"{prefix}times": self.times}

    def extend(self, page: dict[str, Any], prefix: str = "",
               fixed: tuple[list[Any], ...] = ()) -> None:
        for name, values in zip(self.cols, page[f"{prefix}values"], strict=True):
            self.data[name].extend(values)
        for name, values in zip(self.times, page[f"{prefix}seconds"], strict=True):
            self.seconds[name].extend(values)
        for name, values in zip(self.times, page[f"{prefix}nanos"], strict=True):
            self.nanos[name].extend(values)
        for name, values in zip(self.fixed, fixed, strict=True):
            self.data[name].extend(values)
        self.chunks.append(self._built())

    def frame(self) -> pl.DataFrame:
        if not self.chunks:
            return self._built()
        return pl.concat(self.chunks, rechunk=True)

    def _built(self) -> pl.DataFrame:
        """The rows gathered since the last page as a frame; the lists start again."""
        columns = [
            _datetimes(name, self.seconds[name], self.nanos[name], dtype)
            if isinstance(dtype, pl.Datetime) else _series(name, self.data[name], dtype)
            for name, dtype in self.schema.items()
        ]
        for lists in (self.data, self.seconds, self.nanos):
            for name in lists:
                lists[name] = []
        return pl.DataFrame(columns)


def _series(name: str, values: list[Any], dtype: pl.DataType) -> pl.Series:
    if dtype.is_nested() and not isinstance(dtype, pl.Struct):
        # pyarrow builds list columns from Python lists far faster than polars does
        arrow_type = pl.Series(name, [], dtype=dtype).to_arrow().type
        series = pl.from_arrow(pa.array(values, type=arrow_type))
        assert isinstance(series, pl.Series)
        return series.cast(dtype).rename(name)
    if dtype.is_temporal():
        values = [_native(v) for v in values]
    elif isinstance(dtype, pl.Decimal):
        values = [None if v is None else decimal.Decimal(v) for v in values]
    return pl.Series(name, values, dtype=dtype)


def _datetimes(name: str, seconds: list[Any], nanos: list[Any], dtype: pl.Datetime
               ) -> pl.Series:
    """Floor epoch seconds and nanoseconds as a Datetime column of ``dtype``, vectorized."""
    unit = dtype.time_unit or "us"
    per = _PER_SECOND[unit]
    epoch = (pl.Series(seconds, dtype=pl.Int64) * per
             + pl.Series(nanos, dtype=pl.Int64) // (10**9 // per))
    out = pl.from_epoch(epoch, time_unit=unit)
    if dtype.time_zone is not None:
        out = out.dt.replace_time_zone("UTC").dt.convert_time_zone(dtype.time_zone)
    return out.cast(dtype).rename(name)


# An account's activity (the lockstep method's raw incidences) rides on its Account
# node as one text property, ``activity``: a JSON object of two parallel lists,
# ``{"m": [minute, ...], "n": [network, ...]}`` (minutes ascending). One row per
# account keeps the load at the batch rate (a relationship per account-minute would
# be tens of millions of rows), and one text value is what the server stores
# cheapest: list properties cost per element (Bolt decoding, then the conversion to
# a stored array): on the 200k world (seed 11, ~25 incidences an account) the two
# lists cost an Account row about 12 us more server CPU than the same data as one
# string, about a sixth of the row (see DEFAULT_BATCH_SIZE in neo4j.py). JSON
# keeps any network name exact; an analyst reads it with ``apoc.convert.fromJsonMap``
# or client side. The embedded store keeps the table as is. Graphs loaded before
# kept the two lists ``activity_minutes`` / ``activity_networks``; they still read.
ACTIVITY = "activity"
ACTIVITY_JSON = pl.Struct({"m": pl.List(pl.Int32), "n": pl.List(pl.String)})
OLD_MINUTES, OLD_NETWORKS = "activity_minutes", "activity_networks"


def pack_activity(accounts: pl.DataFrame, activity: pl.DataFrame) -> pl.DataFrame:
    """The accounts frame with each account's activity as one JSON text column (none:
    null), its incidences sorted by minute and network."""
    lists = (activity.sort("account_id", "minute", "network")
             .group_by("account_id", maintain_order=True)
             .agg(pl.col("minute").cast(pl.Int32).alias("m"), pl.col("network").alias("n"))
             .select("account_id", pl.struct("m", "n").struct.json_encode().alias(ACTIVITY)))
    return accounts.join(lists, on="account_id", how="left", maintain_order="left")


def unpack_activity(accounts: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(accounts, activity) back from a frame that ``pack_activity`` made (or the two
    lists of graphs loaded before it); a graph loaded before activity was kept has none."""
    if ACTIVITY in accounts.columns:
        lists = accounts.select(
            "account_id", pl.col(ACTIVITY).str.json_decode(ACTIVITY_JSON).alias("a")
        ).filter(pl.col("a").is_not_null()).unnest("a")
        packed: tuple[str, ...] = (ACTIVITY,)
        minutes, networks = "m", "n"
    elif OLD_MINUTES in accounts.columns:
        lists = accounts.select("account_id", OLD_MINUTES, OLD_NETWORKS).filter(
            pl.col(OLD_MINUTES).is_not_null())
        packed = minutes, networks = OLD_MINUTES, OLD_NETWORKS
    else:
        return accounts, pl.DataFrame(schema=ACTIVITY_SCHEMA)
    activity = (lists.explode(minutes, networks)
                .select("account_id", pl.col(minutes).alias("minute"),
                        pl.col(networks).alias("network"))
                .drop_nulls("minute")
                .cast(ACTIVITY_SCHEMA))  # type: ignore[arg-type]
    return accounts.drop(packed), activity


def stored_frames(graph: PropertyGraph, reserved: tuple[str, ...],
                  error: type[Exception]) -> tuple[dict[str, pl.DataFrame], dict[str, int]]:
    """The graph's frames as Neo4j holds them (activity packed onto the accounts) and each
    frame's row count as given; a column named like one of the store's own (``reserved``)
    raises ``error``. The Bolt load and the bulk import files both start here."""
    frames = graph.frames()
    counts = {name: frame.height for name, frame in frames.items()}
    clash = [c for c in (ACTIVITY, OLD_MINUTES, OLD_NETWORKS) if c in frames["accounts"].columns]
    if clash:
        raise error(f"frame accounts has column(s) {', '.join(clash)}, which hold its "
                    "activity in the store")
    frames["accounts"] = pack_activity(frames["accounts"], frames.pop("activity"))
    for name, frame in frames.items():
        clash = [c for c in frame.columns if c in reserved]
        if clash:
            raise error(f"frame {name} has reserved column(s) {', '.join(clash)}")
    return frames, counts
