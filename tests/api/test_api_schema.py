"""Schemathesis over the whole OpenAPI schema: no server errors, no schema violations.

Every operation is called with generated valid and invalid arguments (an
admin key, so every route is reachable) against the hand-made world; bounded
to a few examples per operation so the module runs in well under a minute.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis  # a dev dependency: CI must run this, never skip it
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from attribution.api import create_app
from attribution.store.embedded import EmbeddedStore
from tests.support.api_world import SECRETS_IN_WORLD, Keys, fill_store, make_keys

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance, response_headers_conformance, negative_data_rejection]

HOME = Path(tempfile.mkdtemp(prefix="attribution-schemathesis-"))
fill_store(EmbeddedStore(HOME / "store"))
KEYS: Keys = make_keys(HOME / "api_keys.json")
APP = create_app(lambda: EmbeddedStore(HOME / "store"), keys=KEYS.store, home=HOME)
CONFIG = SchemathesisConfig.from_dict({
    "generation": {"mode": "all", "max-examples": 30, "with-security-parameters": False},
    "seed": 7,
})
schema = schemathesis.openapi.from_asgi("/openapi.json", APP, config=CONFIG)


@pytest.fixture(scope="module", autouse=True)
def _cleanup() -> Iterator[None]:
    yield
    shutil.rmtree(HOME, ignore_errors=True)


@schema.parametrize()
@settings(max_examples=30, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_every_operation(case: Any) -> None:
    response = case.call_and_validate(
        headers={"Authorization": f"Bearer {KEYS.admin}"}, checks=CHECKS)
    if response.status_code >= 400:
        content_type = response.headers.get("content-type")
        if isinstance(content_type, list):
            content_type = content_type[0]
        assert content_type == "application/problem+json"
        for secret in SECRETS_IN_WORLD:
            assert secret not in response.text
