"""Admins see webhook deliveries: how many are pending, delivered and failed, and every failure
with the receiver's last answer (the deliveries themselves are made by workers/webhooks.py)."""
from __future__ import annotations

from flask import Blueprint, render_template

from workers.webhooks import delivery_counts, failed_deliveries

from .auth import admin_required
from .context import db, settings

bp = Blueprint("webhooks", __name__, url_prefix="/admin")


@bp.get("/webhooks")
@admin_required
def page():
    with db() as s:
        counts = delivery_counts(s)
        failed = [{"id": d.delivery_id, "event": d.event, "url": d.url, "attempts": d.attempts,
                   "status": d.last_status, "error": d.last_error, "at": d.updated_at}
                  for d in failed_deliveries(s)]
    return render_template("webhooks.html", counts=counts, failed=failed,
                           urls=settings().webhook_urls, signed=bool(settings().webhook_secret))
