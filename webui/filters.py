"""Template filters: times, percentages, probabilities, in the page's one style."""
from __future__ import annotations

import datetime as dt

from store.review import split_reasons
from store.schema import utcnow


def _utc(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value


def when(value: dt.datetime | None) -> str:
    return "—" if value is None else _utc(value).strftime("%Y-%m-%d %H:%M UTC")


def ago(value: dt.datetime | None) -> str:
    if value is None:
        return "—"
    s = int((utcnow() - _utc(value)).total_seconds())
    if s < 0:
        return f"in {_span(-s)}"
    return "just now" if s < 10 else f"{_span(s)} ago"


def _span(s: int) -> str:
    for unit, n in (("d", 86400), ("h", 3600), ("min", 60)):
        if s >= n:
            return f"{s // n} {unit}"
    return f"{s} s"


def pct(num: int | None, den: int | None) -> str:
    return "—" if not den else f"{100.0 * (num or 0) / den:.1f}%"


def prob(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def class_name(cls: str | None) -> str:
    return {"field": "Field", "road": "Road", "road_and_field": "Road & field"}.get(cls or "", cls or "—")


def register(app) -> None:
    from .charts import meter, progress

    for f in (when, ago, pct, prob, class_name, split_reasons):
        app.add_template_filter(f)
    app.add_template_global(meter)
    app.add_template_global(progress)
