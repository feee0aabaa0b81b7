"""Errors people can cause get one clear sentence: JSON for the API and the review page's calls,
a small page for browsers. Nothing shows a traceback."""
from __future__ import annotations

from flask import current_app, jsonify, render_template
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from .context import settings, wants_json

TITLES = {400: "Bad request", 401: "Sign in first", 403: "Not allowed", 404: "Not found",
          405: "Method not allowed", 409: "Conflict", 413: "Upload too large",
          429: "Too many attempts", 500: "Something broke", 503: "Unavailable"}


def error_response(code: int, message: str):
    if wants_json():
        return jsonify(error=message), code
    return render_template("error.html", code=code, title=TITLES.get(code, "Error"),
                           message=message), code


def _too_large(_exc):
    limit = settings().max_upload_bytes
    return error_response(413, f"the upload is larger than the limit of {_human(limit)} "
                               f"(VERGE_MAX_UPLOAD_BYTES); send fewer or smaller files at a time")


def _csrf(exc: CSRFError):
    return error_response(400, f"the form's security token is missing or stale ({exc.description}); "
                               f"reload the page and try again")


def _http(exc: HTTPException):
    if isinstance(exc, RequestEntityTooLarge):
        return _too_large(exc)
    message = exc.description or TITLES.get(exc.code or 500, "error")
    resp, code = error_response(exc.code or 500, message)
    resp = current_app.make_response((resp, code))
    for name, value in exc.get_headers():  # e.g. a 405's Allow, a 401's WWW-Authenticate
        if name.lower() != "content-type":
            resp.headers[name] = value
    return resp


def _unexpected(exc: Exception):
    import logging

    logging.getLogger("verge.web").exception("unhandled error")
    return error_response(500, "an unexpected error occurred; it has been logged")


def init_app(app) -> None:
    app.register_error_handler(CSRFError, _csrf)
    app.register_error_handler(RequestEntityTooLarge, _too_large)
    app.register_error_handler(HTTPException, _http)
    if not app.testing:
        app.register_error_handler(Exception, _unexpected)


def _human(n: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)
