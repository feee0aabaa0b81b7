"""How the judges are doing: score histograms, agreement rates, labels per day."""
from __future__ import annotations

from flask import Blueprint, render_template, request

from store import agreement as store_agreement
from store import browse as store_browse
from store import queries as q

from . import charts
from .context import db, settings

bp = Blueprint("dashboard", __name__)


@bp.get("/dashboard")
def index():
    choice = request.args.get("model", "")
    with db() as s:
        versions = store_browse.model_versions(s)
        active = q.active_model(s)
        if choice == "zs":
            model_id = None
        elif choice.isdigit() and any(v.id == int(choice) for v in versions):
            model_id = int(choice)
        else:
            model_id = active.id if active else None
        d = store_browse.dashboard(s, model_id)
        agreement = store_agreement.summary(s)  # hook: the agreement section (store/agreement.py)
    band = settings().route_band
    return render_template(
        "dashboard.html", d=d, agreement=agreement, versions=versions, model_id=model_id, active=active,
        head_chart=charts.histogram(d["head_hist"], "bar", band) if d["has_head"] else None,
        zs_chart=charts.histogram(d["zs_hist"], "bar-zs", None if d["has_head"] else band),
        days_chart=charts.daily_bars(d["labels_per_day"]))
