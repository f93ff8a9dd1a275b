"""`vae-serve`: serve a model repository over HTTP with uvicorn.

Flags override `VAE_*` environment variables. They are handed to the server through the
environment, so every uvicorn worker process builds the same settings.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import logging.config
import os
import signal
import sys
import tempfile
from collections.abc import Sequence
from typing import Any

import uvicorn
from pydantic import ValidationError

from service.api.app import create_app
from service.asgi import ASGIApp
from service.dataplane.reload import RELOAD_DIR_VARIABLE, reload_dir_from_environment
from service.models.repository import ModelRepository, RepositoryError
from service.observability.logs import logging_config
from service.observability.metrics import workers_share_metrics
from service.settings import ApiKeyError, ServiceSettings

FLAGS = {
    "model_repository": "folder of <name>/<version>/ bundles (VAE_MODEL_REPOSITORY)",
    "host": "address to bind (VAE_HOST); default 127.0.0.1",
    "port": "TCP port (VAE_PORT); default 8000",
    "workers": "worker processes (VAE_WORKERS); default 1",
    "default_model": "model of the top-level routes (VAE_DEFAULT_MODEL)",
    "providers": "onnxruntime providers, e.g. cuda,cpu (VAE_PROVIDERS)",
    "log_level": "critical, error, warning, info or debug (VAE_LOG_LEVEL)",
    "log_format": "json (one object a line) or text (VAE_LOG_FORMAT)",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vae-serve",
        description="Serve VAE model bundles over HTTP. Every VAE_* setting also works as an "
        "environment variable; flags win.",
    )
    for name, help_text in FLAGS.items():
        parser.add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            type=int if name in ("port", "workers") else str,
            default=None,
            help=help_text,
        )
    return parser


def app_from_environment() -> ASGIApp:
    """uvicorn's factory in each worker: settings come from the environment set by main()."""
    return create_app(
        ServiceSettings(),
        reload_dir=reload_dir_from_environment(),
        freeze_after_load=True,
        serve_grpc=True,
    )


def _exit_after_drain(signum: int, frame: object) -> None:
    raise SystemExit(0)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for name in FLAGS:
        value = getattr(args, name)
        if value is not None:
            os.environ[f"VAE_{name.upper()}"] = str(value)
    try:
        settings = ServiceSettings()
        keys = settings.api_key_list()
    except ValidationError as error:
        print(f"vae-serve: error: bad setting:\n{error}", file=sys.stderr)
        return 2
    except ApiKeyError as error:
        print(f"vae-serve: error: {error}", file=sys.stderr)
        return 2
    log_config = logging_config(settings)
    logging.config.dictConfig(log_config)
    log = logging.getLogger("vae_service")
    refusal = settings.authentication_refusal(keys)
    if refusal is not None:
        print(f"vae-serve: error: {refusal}", file=sys.stderr)
        return 2
    if keys:
        # How many, never which: keys stay out of every log.
        log.info("API keys: %d configured; open paths: %s", len(keys), settings.auth_open_paths)
    elif settings.binds_loopback_only():
        log.warning(
            "no API keys configured (VAE_API_KEYS): every route is open on %s", settings.host
        )
    else:
        log.warning(
            "VAE_ALLOW_UNAUTHENTICATED=true and no API keys: EVERY ROUTE, /admin/reload "
            "included, IS OPEN to anyone who reaches %s:%d",
            settings.host,
            settings.port,
        )
    if settings.cors_origins():
        log.info("CORS allowed origins: %s", ", ".join(settings.cors_origins()))
    try:
        # Load once here so a repository with nothing servable fails before the server starts,
        # with the reasons, instead of as a lifespan error inside each worker.
        ModelRepository.load(settings)
    except RepositoryError as error:
        print(f"vae-serve: error: {error}", file=sys.stderr)
        return 2
    # uvicorn drains on SIGTERM, then restores the handler it found and raises the signal again.
    # Finding this one, the process ends with 0: a supervisor learns the drain completed.
    signal.signal(signal.SIGTERM, _exit_after_drain)
    # POST /admin/reload reaches one worker; the others learn of it through this private
    # folder (service.dataplane.reload.WorkerSignals), which lives and dies with this server.
    # Metrics
    # are shared the same way (service.observability.metrics).
    with (
        tempfile.TemporaryDirectory(prefix="vae-serve-reload-") as reload_dir,
        workers_share_metrics(settings.worker_count() if settings.metrics else 1),
    ):
        os.environ[RELOAD_DIR_VARIABLE] = reload_dir
        _run_server(settings, log_config)
    return 0


def http_protocol() -> type[asyncio.Protocol] | str:
    """uvicorn's httptools protocol under the connection limits (service.server.http_limits),
    sending
    headers with the body; or "auto" without httptools (uvicorn then falls back to h11, its own
    two writes, and only h11's bound on a request head)."""
    try:
        from service.server.http_limits import LimitedHttpToolsProtocol
    except ImportError:
        return "auto"
    return LimitedHttpToolsProtocol


def _run_server(settings: ServiceSettings, log_config: dict[str, Any]) -> None:
    uvicorn.run(
        "service.server.cli:app_from_environment",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.worker_count(),
        # Applied again by uvicorn in each worker process, which starts with bare logging.
        log_config=log_config,
        log_level=settings.log_level,
        # uvicorn's access log line costs a measurable share of a small request; it is on
        # only when the log level asks for info. In JSON the service writes its own request
        # lines instead (service.observability.observe), with the request id, model and stage
        # timings.
        access_log=settings.log_format == "text" and settings.log_level in ("info", "debug"),
        # uvloop and httptools when installed (the serve extra installs both); with httptools,
        # each answer's headers leave in one write with its body (service.server.one_write)
        loop="auto",
        http=http_protocol(),
        timeout_keep_alive=settings.keep_alive_timeout_s,
        h11_max_incomplete_event_size=settings.max_header_bytes,
        timeout_graceful_shutdown=settings.shutdown_drain_s,
    )


if __name__ == "__main__":
    raise SystemExit(main())
