"""How `vae-serve` logs: JSON lines (VAE_LOG_FORMAT=json, the default) or plain text.

JSON: every record, the service's and uvicorn's alike, is one JSON object on one line of stdout
(python-json-logger, written with orjson), with the id of the request it was logged for; and
each request gets one line of its own in place of uvicorn's access log, made and written in
batches by service.observability.request_lines. Text: plain lines and uvicorn's own access log,
as a person at a terminal reads them.

The same configuration is applied in `vae-serve`'s process and, by uvicorn, in each worker.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.orjson import OrjsonFormatter
from uvicorn.config import LOGGING_CONFIG

from service.observability.request_context import current_request_id
from service.observability.request_lines import ACCESS_LOGGER
from service.settings import ServiceSettings

# Request lines are written by service.observability.request_lines, not through this logger;
# its level still decides whether they are written (VAE_LOG_LEVEL above info: none).
access_log = logging.getLogger(ACCESS_LOGGER)

# Today's text format of the service's own lines (uvicorn keeps its own).
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def json_formatter() -> logging.Formatter:
    """One JSON object per record: level, logger, pid, message, the record's extra fields
    (a request line's, a request id), a traceback when there is one, and the time (UTC)."""
    return OrjsonFormatter(
        "%(levelname)s %(name)s %(process)d %(message)s",
        rename_fields={"levelname": "level", "name": "logger", "process": "pid"},
        # uvicorn adds a coloured copy of some messages for terminals; a log collector wants
        # the message once.
        reserved_attrs=[*RESERVED_ATTRS, "color_message", "taskName"],
        timestamp="time",
    )


class RequestIdFilter(logging.Filter):
    """Gives every record logged while a request is answered that request's id, so a client's
    X-Request-ID finds the warnings and errors of its request too."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            request_id = current_request_id()
            if request_id is not None:
                record.request_id = request_id
        return True


def logging_config(settings: ServiceSettings) -> dict[str, Any]:
    """A `logging.config.dictConfig` for `vae-serve` and its workers (uvicorn's log_config)."""
    level = settings.log_level.upper()
    if settings.log_format == "text":
        # uvicorn's own configuration, plus the service's lines in every worker (a spawned
        # worker starts with a bare root logger).
        config = copy.deepcopy(LOGGING_CONFIG)
        config["formatters"]["plain"] = {"format": TEXT_FORMAT}
        config["handlers"]["plain"] = {
            "class": "logging.StreamHandler",
            "formatter": "plain",
            "stream": "ext://sys.stderr",
        }
        config["root"] = {"handlers": ["plain"], "level": level}
        return config
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": "service.observability.logs.json_formatter"}},
        "filters": {"request_id": {"()": "service.observability.logs.RequestIdFilter"}},
        "handlers": {
            "stdout": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "filters": ["request_id"],
                "stream": "ext://sys.stdout",
            }
        },
        "root": {"handlers": ["stdout"], "level": level},
        "loggers": {
            # uvicorn's loggers write through the root handler, as JSON like the rest.
            "uvicorn": {"handlers": [], "propagate": True, "level": level},
            "uvicorn.access": {"handlers": [], "propagate": True, "level": level},
        },
    }
