"""The API's routers, one module per part of the API; ``mysimbdp.api.app`` includes them."""
