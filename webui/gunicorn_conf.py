"""gunicorn settings for the web UI (``gunicorn -c python:webui.gunicorn_conf 'webui:create_app()'``):
with ``VERGE_LOG_FORMAT=json`` gunicorn's own lines (start-up, errors, the access log) are JSON
objects too, formatted like verge's (verge/logs.py)."""
import os

if os.environ.get("VERGE_LOG_FORMAT", "").strip().lower() == "json":
    from verge.logs import FIELDS, RENAME

    _json = {"()": "pythonjsonlogger.json.JsonFormatter", "fmt": list(FIELDS), "rename_fields": RENAME}
    logconfig_dict = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": _json},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "json",
                                "stream": "ext://sys.stderr"}},
        "root": {"level": "INFO", "handlers": ["stderr"]},
        "loggers": {
            "gunicorn.error": {"level": "INFO", "handlers": ["stderr"], "propagate": False},
            "gunicorn.access": {"level": "INFO", "handlers": ["stderr"], "propagate": False},
        },
    }
