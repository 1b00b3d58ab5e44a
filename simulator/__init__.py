"""A faithful WooCommerce store simulator: REST API v3 over HTTP and webhooks
delivered the way ``WC_Webhook`` delivers them.

Modules (one job each): ``phpjson`` (PHP json_encode bytes), ``models``
(records), ``representations`` (REST v3 JSON), ``topics`` (topic -> hooks),
``state`` (the store and its hooks), ``queue`` (pending deliveries),
``delivery`` (the HTTP side of webhooks), ``rest`` (Starlette app), ``server``
(uvicorn thread + worker), ``traffic`` (seeded shop traffic), ``cli``.
"""

from .phpjson import php_json_encode
from .state import ManualClock, SimulatedStore

__all__ = ["ManualClock", "SimulatedStore", "SimulatorServer", "create_app", "generate", "php_json_encode"]


def __getattr__(name: str):  # lazy: uvicorn/starlette only when the server is wanted
    if name == "SimulatorServer":
        from .server import SimulatorServer

        return SimulatorServer
    if name == "create_app":
        from .rest import create_app

        return create_app
    if name == "generate":
        from .traffic import generate

        return generate
    raise AttributeError(name)
