"""Strict parsing of what clients send: whole numbers and ids, JSON bodies, URL converters.

One rule everywhere (paths, query strings, forms, JSON): a whole number is ASCII digits (a
JSON integer or a string of them), optionally signed where negatives make sense, and fits the
database's integer columns: 32 bits, as ``Integer`` is on Postgres (SQLite would take 64, but
an id beyond 2**31 - 1 makes Postgres fail the whole statement). ``2.9``, ``"2.9"``, ``1e400``,
``Infinity``, ``"٢"`` and ``99999999999999999999`` are refused with a 400 that says which field and why -- never taken as
another number, never passed to the database to overflow there. A JSON number with no fraction
(``2.0``) is the integer it equals, as JSON Schema counts it, within the range floats hold
exactly (2**53).
"""
from __future__ import annotations

import json
import re

from flask.json.provider import DefaultJSONProvider
from werkzeug.exceptions import BadRequest
from werkzeug.routing import IntegerConverter, ValidationError

MAX_INT = 2**31 - 1          # Postgres' integer (the schema's ids and counts)
MAX_JSON_DEPTH = 32          # verge's bodies are two levels deep
MAX_JSON_BYTES = 1_000_000   # a label post is ~100 bytes
_WHOLE = re.compile(r"[+-]?[0-9]{1,10}")


def whole_number(raw, name: str, lo: int = 0, hi: int = MAX_INT) -> int:
    """``raw`` (a JSON int or a string) as an int in ``lo..hi``, else BadRequest naming ``name``."""
    value = None
    if isinstance(raw, int) and not isinstance(raw, bool):
        value = raw
    elif isinstance(raw, float) and raw.is_integer() and abs(raw) <= 2**53:
        value = int(raw)
    elif isinstance(raw, str) and _WHOLE.fullmatch(raw.strip()):
        value = int(raw.strip())
    if value is None or not lo <= value <= hi:
        bounds = f"from {lo} to {hi}" if hi != MAX_INT else f"of at least {lo}"
        raise BadRequest(f"'{name}' must be a whole number {bounds} in ASCII digits")
    return value


class StrictIntConverter(IntegerConverter):
    """``<int:...>`` in every route: ASCII digits within the database's integers (Werkzeug's own
    converter takes any Unicode digit and any size). Anything else matches no route: 404."""
    regex = r"[0-9]{1,10}"

    def to_python(self, value: str) -> int:
        number = int(value)
        if number > MAX_INT:
            raise ValidationError()
        return number


def _too_deep(value, limit: int) -> bool:
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            if depth > limit:
                return True
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return False


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


class BoundedJSONProvider(DefaultJSONProvider):
    """Request bodies: standard JSON only (no NaN/Infinity), nested at most MAX_JSON_DEPTH
    levels. Flask turns the ValueError into a 400."""

    def loads(self, s, **kwargs):
        kwargs.setdefault("parse_constant", _no_constant)
        try:
            data = json.loads(s, **kwargs)
        except RecursionError:
            raise ValueError(f"nested deeper than {MAX_JSON_DEPTH} levels") from None
        if _too_deep(data, MAX_JSON_DEPTH):
            raise ValueError(f"nested deeper than {MAX_JSON_DEPTH} levels")
        return data


def check_request(request) -> None:
    """Before each request: a JSON body may be at most MAX_JSON_BYTES (else 413), and no text
    field may hold a NUL character (Postgres cannot store one; no name needs it)."""
    if request.mimetype == "application/json" or request.mimetype.endswith("+json"):
        request.max_content_length = MAX_JSON_BYTES
    fields = [request.path, *request.args.values()]
    if request.mimetype in ("application/x-www-form-urlencoded", "multipart/form-data"):
        fields += request.form.values()
        fields += [f.filename or "" for key in request.files for f in request.files.getlist(key)]
    if any("\0" in value for value in fields):
        raise BadRequest("text in the request must not contain NUL characters")


def init_app(app) -> None:
    app.url_map.converters["int"] = StrictIntConverter  # before any blueprint adds its rules
    app.json = BoundedJSONProvider(app)
