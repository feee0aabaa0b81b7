"""Log lines as JSON objects (``VERGE_LOG_FORMAT=json``) for worker, beat and web, formatted by
python-json-logger. Fields given with ``extra=`` (a chunk's ``task_id``, ``batch_id``,
``first_image``, ``last_image``) become keys of the object."""
from __future__ import annotations

import logging
import sys

FIELDS = ("asctime", "levelname", "name", "message", "process")
RENAME = {"asctime": "time", "levelname": "level", "name": "logger"}


def json_formatter() -> logging.Formatter:
    from pythonjsonlogger.json import JsonFormatter

    return JsonFormatter(FIELDS, style="%", rename_fields=RENAME)


def use_json(level: str | int = "INFO", also: tuple[str, ...] = ()) -> None:
    """Send every record (the root logger's, and those of loggers in ``also`` that keep their
    own handlers, e.g. gunicorn's) to standard error as one JSON object per line."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(json_formatter())
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level if isinstance(level, int) else level.upper())
    logging.captureWarnings(True)  # Python's warnings, too, as records rather than raw text
    # Alembic narrates every revision check (the health check makes one) at INFO
    logging.getLogger("alembic").setLevel(logging.WARNING)
    for name in also:
        for h in logging.getLogger(name).handlers:
            h.setFormatter(json_formatter())


def json_logging_for_celery() -> None:
    """Celery leaves a root logger that already has a handler alone (worker_hijack_root_logger is
    off); its task logger gets a handler of its own, which is switched to JSON here."""
    from celery.signals import after_setup_task_logger

    @after_setup_task_logger.connect(weak=False)
    def _task_logger_json(logger=None, **_):
        for h in (logger.handlers if logger else []):
            h.setFormatter(json_formatter())
