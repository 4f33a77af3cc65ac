"""Named, read-only Cypher queries: one ``.cypher`` file each, loaded by name.

Every file under ``queries/`` starts with ``//`` header lines that a test and
``run_named`` rely on (the same file pastes straight into Neo4j Browser)::

    // name: fleet_members
    // description: Accounts of one fleet, most inauthentic first.
    // param: fleet_id (string) the fleet
    // param: run_id (string?, default null) a run; null means the current run
    // param: kind (string: ip|payment|device) which kind of entity
    // param: limit (int: 1..10000, default 100) at most this many rows
    // returns: account_id, sybil_score

A parameter's type is ``string``, ``int``, ``float``, ``bool`` or
``list<string>``; ``?`` allows null; ``: a|b`` lists the allowed values of a
string, ``: lo..hi`` the range of a number (both ends included); a ``default``
(JSON) makes it optional. Every number of the library (``queries/``) declares
its range, so a ``limit`` of -1 or 10**40 is refused here rather than by the
database. Whatever the header says, an int fits in 64 bits, a float is
finite, and a string or list is at most ``MAX_TEXT`` long. ``run_named``
checks the parameters against the header and runs the query in a read
transaction: queries are vetted text, never composed from input, so what is
run is what was reviewed.

>>> q = parse_query("// name: n\\n// description: d\\n// param: x (int, default 1) x\\n"
...                 "// returns: x\\nRETURN $x AS x")
>>> q.bind({})
{'x': 1}
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from neo4j import Driver, ManagedTransaction, Session

# Shipped as package data (``attribution/queries``) or, in a checkout, at the repo root.
_CANDIDATES = (
    Path(__file__).resolve().parents[1] / "queries",
    Path(__file__).resolve().parents[2] / "queries",
)
_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "int": (int,),
    "float": (float, int),
    "bool": (bool,),
    "list<string>": (list,),
}
_PARAM = re.compile(
    r"^(?P<name>[A-Za-z_]\w*) \((?P<type>[a-z<>]+)(?P<nullable>\?)?"
    r"(?:: (?P<choices>[^,)]+))?(?:, default (?P<default>[^)]*))?\)\s*(?P<doc>.*)$"
)
_RANGE = re.compile(r"^(-?\d+(?:\.\d+)?)\.\.(-?\d+(?:\.\d+)?)$")
_NO_DEFAULT = object()
INT64 = (-(2**63), 2**63 - 1)  # what Neo4j stores; a larger int fails in the driver
MAX_TEXT = 1000  # characters of a string, items of a list


class QueryError(ValueError):
    """A query file is malformed, unknown, or called with bad parameters.

    ``param`` names the offending parameter when there is one, so that the API
    can say where the error is without repeating the value.
    """

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class Param:
    """One declared parameter of a named query."""

    name: str
    type: str
    nullable: bool = False
    default: Any = _NO_DEFAULT
    choices: tuple[str, ...] = ()
    doc: str = ""
    bounds: tuple[float, float] | None = None  # a number's declared range, ends included

    @property
    def required(self) -> bool:
        return self.default is _NO_DEFAULT

    def check(self, value: Any) -> None:
        """Raise ``QueryError`` unless ``value`` fits this parameter."""
        name = self.name
        if value is None:
            if not self.nullable:
                raise QueryError(f"parameter {name} may not be null", param=name)
            return
        ok = isinstance(value, _TYPES[self.type]) and not (
            self.type in ("int", "float") and isinstance(value, bool)
        )
        if ok and self.type == "list<string>":
            ok = all(isinstance(v, str) for v in value)
        if not ok:
            raise QueryError(f"parameter {name} must be {self.type}, got {value!r}", param=name)
        if self.type == "int" and not INT64[0] <= value <= INT64[1]:
            raise QueryError(f"parameter {name} must fit in 64 bits", param=name)
        if self.type == "float" and not _finite(value):
            raise QueryError(f"parameter {name} must be a finite number", param=name)
        if self.bounds is not None and not self.bounds[0] <= value <= self.bounds[1]:
            lo, hi = (_number(b) for b in self.bounds)
            raise QueryError(f"parameter {name} must be between {lo} and {hi}", param=name)
        if isinstance(value, str | list) and len(value) > MAX_TEXT:
            raise QueryError(f"parameter {name} is longer than {MAX_TEXT}", param=name)
        if self.type == "list<string>" and any(len(v) > MAX_TEXT for v in value):
            raise QueryError(f"parameter {name} has an item longer than {MAX_TEXT}", param=name)
        if self.choices and value not in self.choices:
            raise QueryError(f"parameter {name} must be one of {'|'.join(self.choices)}",
                             param=name)


def _finite(value: float) -> bool:
    """True for a float Neo4j can hold (an int too large for a float is not)."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _number(bound: float) -> str:
    """A range end as written in headers and messages (``1``, not ``1.0``)."""
    return str(int(bound)) if float(bound).is_integer() else str(bound)


@dataclass(frozen=True)
class NamedQuery:
    """A parsed query file: header metadata and the Cypher text."""

    name: str
    description: str
    params: tuple[Param, ...]
    returns: tuple[str, ...]
    text: str
    path: Path | None = field(default=None, compare=False)

    def bind(self, params: dict[str, Any] | None) -> dict[str, Any]:
        """The parameters to send: checked, with defaults filled in."""
        given = dict(params or {})
        declared = {p.name: p for p in self.params}
        unknown = sorted(set(given) - set(declared))
        if unknown:
            raise QueryError(f"query {self.name} has no parameter {', '.join(unknown)}",
                             param=unknown[0])
        out: dict[str, Any] = {}
        for p in self.params:
            if p.name in given:
                value = given[p.name]
            elif p.required:
                raise QueryError(f"query {self.name} needs parameter {p.name}", param=p.name)
            else:
                value = p.default
            p.check(value)
            out[p.name] = value
        return out


def parse_query(text: str, path: Path | None = None) -> NamedQuery:
    """Parse a query file's ``//`` header; raise ``QueryError`` if it is incomplete."""
    meta: dict[str, str] = {}
    params: list[Param] = []
    where = str(path) if path else "query"
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped:
            continue
        if not stripped.startswith("//"):
            break
        key, _, value = stripped[2:].strip().partition(":")
        key, value = key.strip(), value.strip()
        if key == "param":
            m = _PARAM.match(value)
            if m is None or m["type"] not in _TYPES:
                raise QueryError(f"{where}: bad param line {value!r}")
            default: Any = _NO_DEFAULT
            if m["default"] is not None:
                try:
                    default = json.loads(m["default"])
                except json.JSONDecodeError as exc:
                    raise QueryError(f"{where}: bad default in {value!r}") from exc
            choices: tuple[str, ...] = ()
            bounds: tuple[float, float] | None = None
            if m["choices"] and m["type"] in ("int", "float"):
                bounds = _bounds(m["choices"].strip(), m["type"], f"{where}: {value!r}")
            elif m["choices"]:
                choices = tuple(c.strip() for c in m["choices"].split("|"))
            params.append(Param(m["name"], m["type"], bool(m["nullable"]), default, choices,
                                m["doc"], bounds))
        elif key in ("name", "description", "returns"):
            meta[key] = (meta[key] + " " + value) if key in meta else value
    missing = [k for k in ("name", "description", "returns") if k not in meta]
    if missing:
        raise QueryError(f"{where}: header lacks {', '.join(missing)}")
    query = NamedQuery(
        name=meta["name"],
        description=meta["description"],
        params=tuple(params),
        returns=tuple(r.strip() for r in meta["returns"].split(",") if r.strip()),
        text=text,
        path=path,
    )
    for p in query.params:
        if not p.required:
            p.check(p.default)
        if f"${p.name}" not in text:
            raise QueryError(f"{where}: parameter {p.name} is declared but never used")
    return query


def _bounds(text: str, type_: str, where: str) -> tuple[float, float]:
    """``lo..hi`` of a number parameter (whole numbers for an int)."""
    m = _RANGE.match(text)
    if m is None:
        raise QueryError(f"{where}: bad range (expected lo..hi)")
    cast = int if type_ == "int" else float
    try:
        lo, hi = cast(m[1]), cast(m[2])
    except ValueError as exc:
        raise QueryError(f"{where}: bad range (an int's ends are whole numbers)") from exc
    if lo > hi:
        raise QueryError(f"{where}: bad range (lo is above hi)")
    return lo, hi


def queries_dir() -> Path:
    """The folder the named queries are read from."""
    for candidate in _CANDIDATES:
        if candidate.is_dir() and any(candidate.glob("*.cypher")):
            return candidate
    raise QueryError("no queries folder found (looked in " +
                     ", ".join(str(c) for c in _CANDIDATES) + ")")


@cache
def load_queries(folder: Path | None = None) -> dict[str, NamedQuery]:
    """Every named query by name; file stem and header name must agree, and every number
    parameter declares its range (the API runs these for any key holder)."""
    folder = folder or queries_dir()
    out: dict[str, NamedQuery] = {}
    for path in sorted(folder.glob("*.cypher")):
        query = parse_query(path.read_text(encoding="utf-8"), path)
        if query.name != path.stem:
            raise QueryError(f"{path}: header name {query.name!r} differs from the file name")
        for p in query.params:
            if p.type in ("int", "float") and p.bounds is None:
                raise QueryError(f"{path}: parameter {p.name} declares no range (int: lo..hi)")
        out[query.name] = query
    return out


def get_query(name: str) -> NamedQuery:
    """One named query; ``QueryError`` if there is none by that name."""
    queries = load_queries()
    if name not in queries:
        raise QueryError(f"no query named {name!r} (known: {', '.join(sorted(queries))})")
    return queries[name]


def _read(tx: ManagedTransaction, text: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    return [record.data() for record in tx.run(text, params)]


def run_named(
    target: Driver | Session,
    name: str,
    params: dict[str, Any] | None = None,
    *,
    database: str | None = None,
) -> list[dict[str, Any]]:
    """Run a named query read-only and return its rows as dicts.

    ``target`` is a driver (a session is opened on ``database``) or an open
    session. Parameters are checked against the query's header first.

    >>> run_named(driver, "fleet_overview", {"limit": 10})  # doctest: +SKIP
    """
    query = get_query(name)
    bound = query.bind(params)
    if isinstance(target, Session):
        return target.execute_read(_read, query.text, bound)
    with target.session(database=database) as session:
        return session.execute_read(_read, query.text, bound)
