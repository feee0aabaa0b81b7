"""How the judges are doing: score histograms, agreement rates, labels per day."""
from __future__ import annotations

import re

from flask import Blueprint, render_template, request
from sqlalchemy import func, select

from store import agreement as store_agreement
from store import browse as store_browse
from store.model_versions import active_model
from store.schema import Prediction

from . import charts
from .context import db, settings

bp = Blueprint("dashboard", __name__)


@bp.get("/dashboard")
def index():
    choice = request.args.get("model", "")
    with db() as s:
        versions = store_browse.model_versions(s)
        active = active_model(s)
        if choice == "zs":
            model_id = None
        elif re.fullmatch(r"[0-9]{1,10}", choice) and any(v.id == int(choice) for v in versions):
            model_id = int(choice)
        else:
            model_id = active.id if active else None
        d = store_browse.dashboard(s, model_id)
        fallback = None
        if model_id is not None and d["predictions"] == 0:
            fallback = previous_with_predictions(s, versions, model_id)
        agreement = store_agreement.summary(s)  # hook: the agreement section (store/agreement.py)
    band = settings().route_band
    return render_template(
        "dashboard.html", d=d, agreement=agreement, versions=versions, model_id=model_id,
        active=active, fallback=fallback, shown=next((v for v in versions if v.id == model_id), None),
        head_chart=charts.histogram(d["head_hist"], "bar", band) if d["has_head"] else None,
        zs_chart=charts.histogram(d["zs_hist"], "bar-zs", None if d["has_head"] else band),
        days_chart=charts.daily_bars(d["labels_per_day"]))


def previous_with_predictions(session, versions, model_id: int) -> tuple | None:
    """A freshly promoted head has scored nothing yet: (version or None for zero-shot, count)
    of the most recently activated other version that has predictions to show."""
    counts = dict(session.execute(select(Prediction.model_version_id, func.count())
                                  .group_by(Prediction.model_version_id)).all())
    others = sorted((v for v in versions if v.id != model_id and counts.get(v.id)),
                    key=lambda v: (v.activated_at is not None, v.activated_at or v.created_at, v.id),
                    reverse=True)
    if others:
        return others[0], counts[others[0].id]
    if counts.get(None):
        return None, counts[None]
    return None
