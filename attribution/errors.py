"""Errors every layer may raise and the command line maps to exit statuses.

They live here, below every other module, so that the stages, the stores and the
surfaces (cli, api) share one vocabulary of failure without importing each other.
"""

from __future__ import annotations


class UsageError(ValueError):
    """Bad usage or configuration: exit status 2, one line on stderr, before any work."""


class Unsupported(RuntimeError):
    """The store cannot do this (e.g. run Cypher without a graph database)."""
