"""Liveness and readiness probes (no key needed: they reveal nothing about results)."""

from __future__ import annotations

from fastapi import APIRouter

from attribution import __version__
from attribution.api.deps import ServiceDep
from attribution.api.models import Health, Readiness
from attribution.api.problems import responses

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health, summary="Liveness")
async def health() -> Health:
    """200 whenever the process is up, even if the store is not."""
    return Health(version=__version__)


@router.get("/ready", response_model=Readiness, summary="Readiness", responses=responses(503))
def ready(service: ServiceDep) -> Readiness:
    """200 when the store answers and has a current run; 503 otherwise."""
    run_id = service.ready()
    store = service.store
    return Readiness(store=store.name if store is not None else "unknown", run_id=run_id)
