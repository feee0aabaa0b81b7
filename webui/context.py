"""Per-request access to what the views share: settings, a database session, blob storage."""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

from flask import current_app, g, has_app_context, request
from sqlalchemy.orm import Session

from store.blobs import open_blobs
from store.db import get_engine, session_scope, transaction
from verge.settings import Settings


def settings() -> Settings:
    return current_app.config["VERGE_SETTINGS"]


@contextlib.contextmanager
def db() -> Iterator[Session]:
    """A session whose work commits as one transaction (store.db.session_scope's rules).

    On Postgres the transactions of one request share one pooled connection, checked out at the
    first ``db()`` and handed back when the request ends: a request that checks its API token,
    claims and reads the task runs three transactions, and each checkout costs a round trip
    (the pool's liveness ping) before any of them. A ``db()`` opened inside another takes a
    connection of its own, so each still commits on its own, exactly as before."""
    url = settings().resolved_database_url
    if url.startswith("sqlite") or not has_app_context() or g.get("_verge_db_busy"):
        with session_scope(url) as session:
            yield session
        return
    conn = g.get("_verge_db_conn")
    if conn is None or conn.closed:
        conn = g._verge_db_conn = get_engine(url).connect()
    g._verge_db_busy = True
    try:
        with transaction(Session(bind=conn, expire_on_commit=False)) as session:
            yield session
    finally:
        g._verge_db_busy = False


def release_connection(_exc=None) -> None:
    """End of the request: the connection ``db()`` held goes back to the pool."""
    conn = g.pop("_verge_db_conn", None)
    if conn is not None:
        conn.close()


def init_app(app) -> None:
    app.teardown_appcontext(release_connection)


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
