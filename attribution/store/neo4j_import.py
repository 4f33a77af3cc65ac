"""The bulk path: ``neo4j-admin database import full`` files for a first load.

A very large first snapshot loads fastest offline: the importer writes the
store files directly, with no transactions. ``write_import_files`` writes one
CSV per label and per relationship type (header line first, IDs in one ID
space per label, types in the header) and the ``(:GraphState)`` node the Neo4j
store keeps, so an imported database is one the store recognises: a later
``attribution run`` of the same snapshot finds the graph loaded whole under its
stamp, sends nothing, and reads it back like a graph loaded over Bolt (the
store creates its constraints on first use). ``ImportFiles.command`` is the
exact command for the user's server (the database must be stopped or new).

The files hold what the Bolt load writes, property for property: timestamps
as UTC ``datetime``, integer lists as ``long[]``, decimals as text; every
node and relationship stamped ``_snapshot`` (and frame rows ``_row``).
``read_import_files`` parses them back into the graph (tests compare it with
the graph written).
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from attribution.contracts.graph import PropertyGraph
from attribution.errors import UsageError
from attribution.store.neo4j_codec import (
    endpoint_keys,
    schema_blob,
    schema_from_blob,
    stored_frames,
    unpack_activity,
)
from attribution.store.neo4j_cypher import FRAME_LABEL, LINK_LABEL, NODE_KEYS, USE_REL

ARRAY_DELIMITER = ";"
STATE_FILE = "nodes_GraphState.csv"


class BulkImportError(ValueError):
    """The graph holds a value the CSV import cannot carry exactly."""


@dataclass
class ImportFiles:
    """The files written for one graph, and how to hand them to ``neo4j-admin``."""

    folder: Path
    nodes: list[tuple[str, Path]] = field(default_factory=list)
    relationships: list[tuple[str, Path]] = field(default_factory=list)
    multiline: bool = False
    rows: int = 0

    def command(self, database: str = "neo4j", admin: str = "neo4j-admin",
                folder: Path | str | None = None) -> list[str]:
        """``neo4j-admin database import full`` over these files (``folder``: where the
        server sees them, if not where they were written)."""
        where = Path(folder) if folder is not None else self.folder

        def at(path: Path) -> str:
            return str(where / path.name)

        # the database first: --nodes and --relationships take any number of files
        cmd = [admin, "database", "import", "full", database, "--overwrite-destination=true",
               "--id-type=string", f"--array-delimiter={ARRAY_DELIMITER}"]
        if self.multiline:
            cmd.append("--multiline-fields=true")
        cmd += [f"--nodes={label}={at(path)}" for label, path in self.nodes]
        cmd += [f"--relationships={rel}={at(path)}" for rel, path in self.relationships]
        return cmd

    def command_line(self, database: str = "neo4j", admin: str = "neo4j-admin",
                     folder: Path | str | None = None) -> str:
        return shlex.join(self.command(database, admin, folder))


# --------------------------------------------------------------------------- writing


def _csv_type(dtype: pl.DataType, column: str) -> str:
    """The importer's type for a column (empty: string)."""
    if dtype == pl.String or isinstance(dtype, pl.Decimal):
        return ""
    if dtype.is_integer():
        return "long"
    if dtype.is_float():
        return "double"
    if dtype == pl.Boolean:
        return "boolean"
    if isinstance(dtype, pl.Datetime):
        return "datetime"
    if dtype == pl.Date:
        return "date"
    if isinstance(dtype, pl.List) and (dtype.inner.is_integer() or dtype.inner == pl.String):
        return "long[]" if dtype.inner.is_integer() else "string[]"
    raise BulkImportError(f"column {column} of type {dtype} has no neo4j-admin import form")


def _csv_value(frame: pl.DataFrame, column: str) -> pl.Expr:
    """A column as the importer reads it (null stays an empty field: no property)."""
    dtype = frame.schema[column]
    col = pl.col(column)
    if isinstance(dtype, pl.Datetime):
        utc = col.dt.replace_time_zone("UTC") if dtype.time_zone is None \
            else col.dt.convert_time_zone("UTC")
        digits = {"ms": "%.3f", "us": "%.6f", "ns": "%.9f"}[dtype.time_unit or "us"]
        return utc.dt.strftime(f"%Y-%m-%dT%H:%M:%S{digits}Z")
    if isinstance(dtype, pl.Decimal):
        return col.cast(pl.String)
    if isinstance(dtype, pl.List):
        if dtype.inner == pl.String and frame[column].explode().str.contains(
                ARRAY_DELIMITER, literal=True).any():
            raise BulkImportError(f"column {column} holds the array delimiter "
                                  f"{ARRAY_DELIMITER!r}")
        if frame[column].list.len().eq(0).any():
            raise BulkImportError(f"column {column} holds empty lists (the importer reads "
                                  "an empty field as no property)")
        return col.cast(pl.List(pl.String)).list.join(ARRAY_DELIMITER)
    return col


def _props(frame: pl.DataFrame, skip: tuple[str, ...] = ()) -> list[pl.Expr]:
    out = []
    for column in frame.columns:
        if column in skip:
            continue
        kind = _csv_type(frame.schema[column], column)
        out.append(_csv_value(frame, column).alias(f"{column}:{kind}" if kind else column))
    return out


def _write(frame: pl.DataFrame, path: Path) -> None:
    frame.write_csv(path, quote_style="non_numeric" if frame.height else "necessary",
                    null_value="")


def write_import_files(graph: PropertyGraph, digest: str, folder: Path | str) -> ImportFiles:
    """Write ``graph`` (snapshot ``digest``) as neo4j-admin import files into ``folder``."""
    from attribution.store.neo4j import RESERVED, _stamp

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    frames, counts = stored_frames(graph, RESERVED, BulkImportError)  # as the Bolt load does
    stamp = _stamp(graph, digest)
    files = ImportFiles(out)
    text = [frame.select(pl.col(pl.String)) for frame in frames.values()]
    files.multiline = any(t.select(pl.any_horizontal(pl.all().str.contains("\n", literal=True)))
                          .to_series().any() for t in text if t.width and t.height)
    marks = [pl.lit(stamp).alias("_snapshot")]

    def nodes(label: str, frame: pl.DataFrame, name: str) -> None:
        path = out / f"nodes_{name}.csv"
        _write(frame, path)
        files.nodes.append((label, path))
        files.rows += frame.height

    def rels(rel: str, frame: pl.DataFrame, name: str) -> None:
        path = out / f"rels_{name}.csv"
        _write(frame, path)
        files.relationships.append((rel, path))
        files.rows += frame.height

    for name, label in FRAME_LABEL.items():
        frame, key = frames[name], NODE_KEYS[label]
        nodes(label, frame.select(pl.col(key).cast(pl.String).alias(f"{key}:ID({label})"),
                                  *_props(frame, skip=(key,)), *marks,
                                  pl.lit(stamp).alias("_row")), label)
    for label, keys in endpoint_keys(graph).items():
        key = NODE_KEYS[label]
        nodes(label, pl.DataFrame({f"{key}:ID({label})": keys}).with_columns(marks),
              f"{label}_ends")

    uses = graph.uses
    for kind, (rel, label) in USE_REL.items():
        part = uses.filter(pl.col("kind") == kind)
        rels(rel, part.select(pl.col("account_id").alias(":START_ID(Account)"),
                              pl.col("entity_id").alias(f":END_ID({label})"),
                              *_props(part, skip=("account_id", "entity_id", "kind")), *marks),
             f"{rel}")
    ips = graph.ips
    rels("IN_ASN", ips.filter(pl.col("asn").is_not_null()).select(
        pl.col("ip").alias(":START_ID(IP)"), pl.col("asn").cast(pl.String).alias(":END_ID(ASN)"),
        *marks), "IN_ASN")
    rels("EXIT_OF", ips.filter(pl.col("proxy_id").is_not_null()).select(
        pl.col("ip").alias(":START_ID(IP)"), pl.col("proxy_id").alias(":END_ID(Proxy)"),
        *marks), "EXIT_OF")
    links = graph.known_links
    for kind, label in LINK_LABEL.items():
        part = links.filter(pl.col("kind") == kind)
        rels("KNOWN_AS", part.select(pl.col("key").alias(f":START_ID({label})"),
                                     pl.col("org_id").alias(":END_ID(Organization)"),
                                     *_props(part, skip=("org_id",)), *marks),
             f"KNOWN_AS_{kind}")

    state = pl.DataFrame({
        "id:ID(GraphState)": ["graph"], "digest": [digest], "stamp": [stamp],
        "complete:boolean": [True],
        "schema": [json.dumps({name: schema_blob(f) for name, f in frames.items()})],
        "counts": [json.dumps(counts)]})
    path = out / STATE_FILE
    _write(state, path)
    files.nodes.append(("GraphState", path))
    files.rows += 1
    (out / "import.json").write_text(json.dumps({
        "nodes": [[label, p.name] for label, p in files.nodes],
        "relationships": [[rel, p.name] for rel, p in files.relationships],
        "multiline": files.multiline, "rows": files.rows, "digest": digest, "stamp": stamp,
    }, indent=2) + "\n")
    return files


# --------------------------------------------------------------------------- reading back


def _read(path: Path) -> pl.DataFrame:
    return pl.read_csv(path, infer_schema=False)  # "" is "", an empty field null


def _typed(raw: pl.DataFrame, schema: pl.Schema) -> pl.DataFrame:
    """Header names back to columns of ``schema``'s dtypes (what the importer would store)."""
    exprs: list[pl.Expr] = []
    for name, prop, _ in _columns_of(raw):
        if prop not in schema:
            continue
        dtype = schema[prop]
        col = pl.col(name)
        if isinstance(dtype, pl.Datetime):
            parsed = col.str.to_datetime("%Y-%m-%dT%H:%M:%S%.fZ", time_unit=dtype.time_unit,
                                         time_zone="UTC")
            parsed = parsed.dt.convert_time_zone(dtype.time_zone) if dtype.time_zone \
                else parsed.dt.replace_time_zone(None)
            exprs.append(parsed.cast(dtype).alias(prop))
        elif isinstance(dtype, pl.List):
            exprs.append(col.str.split(ARRAY_DELIMITER).cast(dtype).alias(prop))
        elif dtype == pl.Date:
            exprs.append(col.str.to_date("%Y-%m-%d").alias(prop))
        elif dtype == pl.Boolean:
            exprs.append((col == "true").alias(prop))
        else:
            exprs.append(col.cast(dtype).alias(prop))
    return raw.select(exprs)


def _columns_of(raw: pl.DataFrame) -> Iterator[tuple[str, str, str]]:
    for name in raw.columns:
        prop, _, kind = name.partition(":")
        yield name, prop, kind


def read_import_files(folder: Path | str) -> tuple[PropertyGraph, dict[str, Any]]:
    """The graph in import files written by ``write_import_files``, and their graph state."""
    out = Path(folder)
    state = _read(out / STATE_FILE).row(0, named=True)
    schemas = {name: schema_from_blob(blob) for name, blob in json.loads(state["schema"]).items()}
    frames: dict[str, pl.DataFrame] = {}
    for name, label in FRAME_LABEL.items():
        raw = _read(out / f"nodes_{label}.csv").rename({f"{NODE_KEYS[label]}:ID({label})":
                                                        NODE_KEYS[label]})
        frames[name] = _typed(raw, schemas[name]).select(list(schemas[name]))
    parts = []
    for kind, (rel, _label) in USE_REL.items():
        raw = _read(out / f"rels_{rel}.csv")
        start, end = raw.columns[:2]
        raw = raw.rename({start: "account_id", end: "entity_id"}).with_columns(
            pl.lit(kind).alias("kind"))
        parts.append(_typed(raw, schemas["uses"]).select(list(schemas["uses"])))
    frames["uses"] = pl.concat(parts)
    parts = []
    for kind in LINK_LABEL:
        raw = _read(out / f"rels_KNOWN_AS_{kind}.csv")
        raw = raw.rename({raw.columns[1]: "org_id"})
        parts.append(_typed(raw, schemas["known_links"]).select(list(schemas["known_links"])))
    frames["known_links"] = pl.concat(parts)
    frames["accounts"], frames["activity"] = unpack_activity(frames["accounts"])
    return PropertyGraph.from_frames(frames), state


def check_import_dir(out: Path, snapshot: Path) -> Path:
    """The absolute folder for import files, or ``UsageError``: a new or empty directory,
    not the snapshot nor inside it (the files replace nothing of anyone's)."""
    given = Path(out).expanduser().absolute()
    if given.is_symlink():
        raise UsageError(f"--out {out} is a symbolic link; name the directory itself")
    path = given.resolve()
    snap = Path(snapshot).expanduser().resolve()
    if path == snap or snap in path.parents or path in snap.parents:
        raise UsageError(f"--out {out} is the snapshot, inside it or holding it; "
                         "choose a directory of its own")
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise UsageError(f"--out {out} exists and is not an empty directory; import files "
                         "are written only into a new or empty one")
    return path


def write_for_snapshot(snapshot: Path, out: Path, *, database: str = "neo4j",
                       admin: str = "neo4j-admin", server_dir: str | None = None) -> str:
    """Ingest ``snapshot``, write its graph's import files into ``out`` (checked first) and
    return what to tell the user: the files written and the command to run."""
    from attribution.stages.build import build_graph
    from attribution.stages.ingest import read_snapshot

    folder = check_import_dir(out, snapshot)
    snap = read_snapshot(snapshot)
    files = write_import_files(build_graph(snap.tables), snap.digest, folder)
    return (f"wrote {files.rows:,} rows in {len(files.nodes) + len(files.relationships)} files "
            f"to {folder}; with the database stopped, run:\n"
            + files.command_line(database, admin, server_dir))
