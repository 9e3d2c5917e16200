"""Every route of a municipal register as the app declares it, for the tests of the access table.

The app is built as ``contracts.export`` builds it (no server, no database: the
engine connects lazily), with the health routes ``serve`` adds, so the list is
exactly what a running register answers.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from fastapi.routing import iter_route_contexts

from services.network import REPO_ROOT


def register_routes(tenant: str = "131016") -> list[tuple[str, str]]:
    """(method, path template) of every route, HEAD left out (it is checked as GET)."""
    from services.common.runtime import add_health
    from services.common.settings import ServiceSettings
    from services.common.tokens import generate_key_pair
    from services.municipal_rrs.app import build_app

    class OnlyArguments(ServiceSettings):
        @classmethod
        def settings_customise_sources(cls, settings_cls, init_settings, **_other_sources):
            return (init_settings,)

    with tempfile.TemporaryDirectory(prefix="jukinet-routes-") as tmp:
        keys = Path(tmp) / "public"
        settings = OnlyArguments(service="municipal_rrs", tenant=tenant, database_url="postgresql+psycopg://x:x@127.0.0.1:1/x", keys_dir=keys,
                                 private_key=generate_key_pair(Path(tmp) / "private", keys, f"rrs-{tenant}"), topology=REPO_ROOT / "deploy" / "topology.yaml")
        app = build_app(settings)
        add_health(app, settings)
    routes = []
    for context in iter_route_contexts(app.routes):
        for method in sorted((context.methods or set()) - {"HEAD"}):
            routes.append((method, context.path))
    return routes
