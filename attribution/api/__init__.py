"""The HTTP query API over the current attribution run (FastAPI).

``create_app(store_factory, keys=KeyStore(path))`` builds the app;
``attribution serve`` runs it with uvicorn and ``attribution keys`` manages
the API keys.
"""

from attribution.api.app import create_app
from attribution.api.keys import KeyStore

__all__ = ["KeyStore", "create_app"]
