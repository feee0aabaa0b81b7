"""``/healthz``: is the database reachable and migrated? For load balancers and compose."""
from __future__ import annotations

import functools

from flask import Blueprint, jsonify
from sqlalchemy import text

from .context import db, settings

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    import migrations

    try:
        with db() as s:
            s.execute(text("SELECT 1"))
        revision = migrations.current_revision(settings().resolved_database_url)
    except Exception as exc:  # the point of a health check is to say so, not to crash
        return jsonify(ok=False, database=str(exc).splitlines()[0][:200]), 503
    head = _head()
    ok = revision == head
    return jsonify(ok=ok, database="ok", revision=revision, head=head), 200 if ok else 503


@functools.lru_cache(maxsize=1)
def _head() -> str:
    import migrations

    return migrations.head_revision()
