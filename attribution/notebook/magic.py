"""The ``%%cypher`` cell magic: ad-hoc read-only Cypher, parameters from notebook variables."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import polars as pl

from attribution.notebook.connection import NotebookError
from attribution.notebook.frames import cypher

if TYPE_CHECKING:
    pass

# Shipped as package data (``attribution/notebooks``, mapped from the repo's

# --------------------------------------------------------------------------- %%cypher magic

_TOKENS = re.compile(
    r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|`[^`]*`|//[^\n]*|/\*.*?\*/"
    r"|\$(?P<name>[A-Za-z_][A-Za-z0-9_]*)|\$`(?P<quoted>[^`]+)`",
    re.S,
)


def cell_parameters(text: str) -> list[str]:
    """``$name`` parameters of Cypher text, outside strings and comments, in order."""
    found: list[str] = []
    for m in _TOKENS.finditer(text):
        name = m.group("name") or m.group("quoted")
        if name and name not in found:
            found.append(name)
    return found


def run_cell(line: str, cell: str, namespace: Mapping[str, Any]) -> pl.DataFrame:
    """The ``%%cypher [result_var]`` magic: ``$name`` parameters come from ``namespace``."""
    args = line.split()
    if len(args) > 1 or (args and not args[0].isidentifier()):
        raise NotebookError("usage: %%cypher [result_var]  (then the Cypher on the next lines)")
    params: dict[str, Any] = {}
    for name in cell_parameters(cell):
        if name not in namespace:
            raise NotebookError(f"%%cypher: ${name} has no value: define {name} in the notebook "
                                "first")
        params[name] = namespace[name]
    frame = cypher(cell, params)
    if args and isinstance(namespace, dict):
        namespace[args[0]] = frame
    return frame


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext attribution.notebook``: registers the ``%%cypher`` cell magic."""
    def cypher_magic(line: str, cell: str) -> pl.DataFrame:
        return run_cell(line, cell, ipython.user_ns)

    cypher_magic.__doc__ = run_cell.__doc__
    ipython.register_magic_function(cypher_magic, magic_kind="cell", magic_name="cypher")
