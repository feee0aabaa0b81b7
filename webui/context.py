"""Per-request access to what the views share: settings, a database session, blob storage."""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

from flask import current_app, request
from sqlalchemy.orm import Session

from store.blobs import open_blobs
from store.db import session_scope
from verge.settings import Settings


def settings() -> Settings:
    return current_app.config["VERGE_SETTINGS"]


@contextlib.contextmanager
def db() -> Iterator[Session]:
    with session_scope(settings().resolved_database_url) as session:
        yield session


def blobs():
    return open_blobs(settings().resolved_blob_url, 8)


def thumb_dir() -> Path:
    return settings().data_dir / "thumbs"


def wants_json() -> bool:
    """JSON answers for the API and the review page's fetch calls; HTML for people."""
    path = request.path
    return (path.startswith("/api/") or path.startswith("/review/api/") or request.is_json
            or request.accept_mimetypes.best == "application/json")


def int_arg(name: str, default: int | None = None, lo: int | None = None,
            hi: int | None = None) -> int | None:
    """A whole-number query parameter (``default`` when absent or empty; 400 when malformed),
    clamped to ``lo..hi``."""
    from .parsing import whole_number

    raw = request.args.get(name, "").strip()
    if not raw:
        return default
    value = whole_number(raw, name)
    if lo is not None:
        value = max(lo, value)
    if hi is not None:
        value = min(hi, value)
    return value
