"""``aiservice serve``: migrate, seed the default tenant, print how to call it, run uvicorn."""

from __future__ import annotations

import gc
import multiprocessing
from typing import TYPE_CHECKING, Any

import uvicorn

from aiservice.infrastructure.observability.logging import configure_logging
from aiservice.infrastructure.workers.supervisor import metrics_folder, run_workers
from aiservice.settings import ConfigurationError, Settings

if TYPE_CHECKING:
    from fastapi import FastAPI

    from aiservice.bootstrap import Container

WORKER_APP = "aiservice.interfaces.cli.serve:worker_app"

BANNER_TTL_SECONDS = 12 * 3600


def _banner(container: Container) -> str:
    from aiservice.bootstrap import DEFAULT_TENANT
    from aiservice.domain.tenancy import Role

    s = container.settings
    token = container.tokens.issue("admin", DEFAULT_TENANT, [Role.ADMIN.value], BANNER_TTL_SECONDS)
    base = f"{_scheme(s)}://localhost:{s.port}"
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


def _scheme(settings: Settings) -> str:
    return "https" if settings.tls_cert_file else "http"


def server_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's options: HTTPS when TLS_CERT_FILE and TLS_KEY_FILE are set (both or neither)."""
    cert, key = settings.tls_cert_file, settings.tls_key_file
    if (cert is None) != (key is None):
        raise ConfigurationError("TLS needs both TLS_CERT_FILE and TLS_KEY_FILE, or neither.")
    for name, path in (("TLS_CERT_FILE", cert), ("TLS_KEY_FILE", key)):
        if path is not None and not path.is_file():
            raise ConfigurationError(f"{name} names {path}, which is not a readable file.")
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_config": None,
        "access_log": False,
        "server_header": False,
    }
    if cert is not None and key is not None:
        options |= {"ssl_certfile": str(cert), "ssl_keyfile": str(key)}
    return options


def run(settings: Settings) -> None:
    options = server_options(settings)  # a TLS mistake stops the start before anything is done
    configure_logging(settings.log_level, settings.log_format)
    count = settings.worker_count
    if count == 1:
        from aiservice.interfaces.http.app import create_app

        container = _prepared(settings)
        app = create_app(container)
        _freeze_what_lives_forever()
        uvicorn.run(app, **options)
        return
    # Migrations, the default tenant and the signing secret are made once, before any worker starts,
    # by a process that then exits: the supervisor stays small and the workers never race for them.
    preparation = multiprocessing.get_context("spawn").Process(target=_prepare_only, args=(settings,))
    preparation.start()
    preparation.join()
    if preparation.exitcode != 0:
        raise SystemExit(preparation.exitcode or 1)
    metrics_dir = metrics_folder(settings.workers_dir, settings.prometheus_multiproc_dir)
    try:
        run_workers(
            WORKER_APP, count, settings.workers_dir, metrics_dir, options, settings.graceful_shutdown_seconds
        )
    except BlockingIOError:
        raise ConfigurationError(
            f"another `aiservice serve` is running with DATA_DIR {settings.data_dir.resolve()}; "
            "stop it, or give this one a DATA_DIR of its own."
        ) from None


def worker_app() -> FastAPI:
    """One of WORKERS server processes (uvicorn calls this in each): it takes a free slot, and slot 0
    also runs the host's background work (ADR 19)."""
    from aiservice.bootstrap import bootstrap
    from aiservice.infrastructure.lifeline import die_with_supervisor
    from aiservice.infrastructure.observability.metrics import forget_dead_processes
    from aiservice.infrastructure.workers.slots import WorkerSlot
    from aiservice.interfaces.http.app import create_app

    die_with_supervisor()
    settings = Settings()
    configure_logging(settings.log_level, settings.log_format)
    slot = WorkerSlot.claim(settings.workers_dir, settings.worker_count)
    if settings.prometheus_multiproc_dir is not None:
        forget_dead_processes(settings.prometheus_multiproc_dir)  # a crashed predecessor's live gauges
    app = create_app(bootstrap(settings, slot=slot))
    _freeze_what_lives_forever()
    return app


def _freeze_what_lives_forever() -> None:
    """Everything imported so far lives as long as the process: keep it out of every collection, so
    full collections (which stop the event loop) only walk what requests create."""
    gc.freeze()


def _prepared(settings: Settings) -> Container:
    """The service built, migrated and seeded; the development banner printed when it applies."""
    from aiservice.bootstrap import bootstrap

    container = bootstrap(settings)
    if settings.auto_migrate:
        container.prepare()
    if container.secret_is_generated:
        # The generated secret marks a development install: hand the operator a working token.
        print(_banner(container), flush=True)
    return container


def _prepare_only(settings: Settings) -> None:
    configure_logging(settings.log_level, settings.log_format)
    _prepared(settings).close()
