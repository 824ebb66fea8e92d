"""mysimbdp-api: the HTTP API (``create_app``)."""

from mysimbdp.api.app import create_app

__all__ = ["create_app"]
