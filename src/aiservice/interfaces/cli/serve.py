"""``aiservice serve``: migrate, seed the default tenant, print how to call it, run uvicorn."""

from __future__ import annotations

import gc

import uvicorn

from aiservice.bootstrap import DEFAULT_TENANT, Container, bootstrap
from aiservice.domain.tenancy import Role
from aiservice.infrastructure.observability.logging import configure_logging
from aiservice.interfaces.http.app import create_app
from aiservice.settings import Settings

BANNER_TTL_SECONDS = 12 * 3600


def _banner(container: Container) -> str:
    s = container.settings
    token = container.tokens.issue("admin", DEFAULT_TENANT, [Role.ADMIN.value], BANNER_TTL_SECONDS)
    base = f"http://localhost:{s.port}"
    return (
        "\n"
        f"aiservice is starting on {s.host}:{s.port} (docs: {base}/docs)\n"
        f"Development admin token for tenant '{DEFAULT_TENANT}' (valid 12h; make more with "
        "`aiservice token create --tenant default --role admin`):\n\n"
        f"export TOKEN={token}\n\n"
        "Try it:\n\n"
        f"curl -s {base}/api/v1/ai/models "
        f'-H "Authorization: Bearer {token}" -H "X-Tenant-ID: {DEFAULT_TENANT}"\n'
    )


def run(settings: Settings) -> None:
    configure_logging(settings.log_level, settings.log_format)
    container = bootstrap(settings)
    if settings.auto_migrate:
        container.prepare()
    if container.secret_is_generated:
        # The generated secret marks a development install: hand the operator a working token.
        print(_banner(container), flush=True)
    app = create_app(container)
    # Everything imported so far lives as long as the process: keep it out of every collection, so
    # full collections (which stop the event loop) only walk what requests create.
    gc.freeze()
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        server_header=False,
    )
