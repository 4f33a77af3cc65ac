"""``attribution serve`` and ``attribution keys``: run the API, manage its keys.

Wired into the main command by ``attribution.cli`` through ``register``.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging.config
import os
import sys
from pathlib import Path
from typing import Any

from attribution.api.keys import SCOPES, KeyStore, default_keys_path
from attribution.api.server import TIMEOUT_KEEP_ALIVE, TIMEOUT_REQUEST

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def register(subparsers: Any) -> None:
    """Add ``serve`` and ``keys`` to the ``attribution`` command."""
    p = subparsers.add_parser("serve", help="serve the HTTP query API over the current run")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--store", type=Path, help="embedded store directory "
                   "(default $ATTRIBUTION_HOME/store or ./.attribution/store); "
                   "ignored when NEO4J_URI is set")
    p.add_argument("--keys", type=Path, help="API key file "
                   "(default $ATTRIBUTION_HOME/api_keys.json)")
    p.add_argument("--workers", type=int, default=1,
                   help="server processes (each indexes the current run; default 1)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.add_argument("--timeout-request", type=_seconds, default=TIMEOUT_REQUEST, metavar="S",
                   help="close a connection whose request has not arrived whole within S "
                   f"seconds of its first byte (idle or half-sent; default {TIMEOUT_REQUEST:g})")
    p.add_argument("--timeout-keep-alive", type=_seconds, default=TIMEOUT_KEEP_ALIVE,
                   metavar="S", help="close a connection idle for S seconds after a response "
                   f"(default {TIMEOUT_KEEP_ALIVE:g})")
    p.set_defaults(handler=_serve)

    k = subparsers.add_parser("keys", help="create, list and revoke API keys")
    k.add_argument("--keys", type=Path, help="API key file "
                   "(default $ATTRIBUTION_HOME/api_keys.json)")
    ks = k.add_subparsers(dest="keys_command", required=True)
    c = ks.add_parser("create", help="make a key and print its secret (shown only once)")
    c.add_argument("--name", required=True, help="who or what the key is for")
    c.add_argument("--scope", required=True, choices=SCOPES, help="read, or admin (implies read)")
    c.set_defaults(handler=_keys_create)
    r = ks.add_parser("revoke", help="revoke a key by its id")
    r.add_argument("key_id")
    r.set_defaults(handler=_keys_revoke)
    ls = ks.add_parser("list", help="list keys (never their secrets)")
    ls.add_argument("--json", action="store_true", help="one JSON object per line")
    ls.set_defaults(handler=_keys_list)


def _seconds(text: str) -> float:
    """A positive number of seconds (argparse type)."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError("expected seconds between 0 and 3600")
    return value


def _key_store(args: argparse.Namespace) -> KeyStore:
    return KeyStore(args.keys or default_keys_path())


def _keys_create(args: argparse.Namespace) -> int:
    record, secret = _key_store(args).create(args.name, args.scope)
    print(f"created key {record.key_id} ({record.scope}) for {record.name}", file=sys.stderr)
    print("the secret is shown only now; keep it somewhere safe:", file=sys.stderr)
    print(secret)
    return 0


def _keys_revoke(args: argparse.Namespace) -> int:
    from attribution.errors import UsageError

    if not _key_store(args).revoke(args.key_id):
        raise UsageError(f"no active key {args.key_id}")
    print(f"revoked key {args.key_id}")
    return 0


def _keys_list(args: argparse.Namespace) -> int:
    for key in _key_store(args).list():
        if args.json:
            print(json.dumps(key.public()))
        else:
            state = f"revoked {key.revoked_at}" if key.revoked_at else "active"
            print(f"{key.key_id}  {key.scope:<5}  {key.created_at}  {state:<32}  {key.name}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from attribution.api.app import create_app
    from attribution.api.server import uvicorn_options
    from attribution.store import default_home, open_store

    config = log_config(args.log_level)
    logging.config.dictConfig(config)
    root = args.store or default_home() / "store"
    keys = _key_store(args)
    options = uvicorn_options(timeout_request=args.timeout_request,
                              timeout_keep_alive=args.timeout_keep_alive)
    if not keys.list():
        print(f"attribution: no API keys in {keys.path}; make one with "
              "`attribution keys create --name NAME --scope read`", file=sys.stderr)
    if args.workers > 1:
        # Worker processes build their own app from the environment.
        os.environ["ATTRIBUTION_API_STORE"] = str(root)
        os.environ["ATTRIBUTION_API_KEYS"] = str(keys.path)
        uvicorn.run("attribution.api.app:app_from_env", factory=True, workers=args.workers,
                    host=args.host, port=args.port, log_level=args.log_level,
                    log_config=config, access_log=False, **options)
        return 0
    app = create_app(lambda: open_store(Path(root)), keys=keys)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level,
                log_config=config, access_log=False, **options)
    return 0


def log_config(level: str) -> dict[str, Any]:
    """uvicorn's logging setup plus a root handler at ``level`` for the API's own loggers.

    uvicorn applies it in every worker process too: worker processes start with
    logging unconfigured, so a root handler set up only in the parent left
    ``--workers`` servers without their audit lines.
    """
    from uvicorn.config import LOGGING_CONFIG

    config: dict[str, Any] = copy.deepcopy(LOGGING_CONFIG)
    config["formatters"]["attribution"] = {"format": LOG_FORMAT}
    config["handlers"]["attribution"] = {"class": "logging.StreamHandler",
                                         "formatter": "attribution",
                                         "stream": "ext://sys.stderr"}
    config["root"] = {"level": level.upper(), "handlers": ["attribution"]}
    return config
