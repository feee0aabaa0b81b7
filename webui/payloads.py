"""The JSON shapes the review page and the API share, and the checks on what clients send."""
from __future__ import annotations

from flask import request, url_for
from werkzeug.exceptions import BadRequest

from store.review import iso_utc
from models.classes import CLASSES

from .parsing import MAX_INT, MAX_JSON_DEPTH, whole_number

MAX_TIME_ON_ITEM_MS = 24 * 3600 * 1000


def task_payload(details: dict | None, api: bool = False) -> dict | None:
    """``store.review.task_details`` plus the URLs a client needs."""
    if details is None:
        return None
    iid = details["image_id"]
    image_url = (url_for("api.image", image_id=iid) if api else url_for("images.full", image_id=iid))
    return {**{k: v for k, v in details.items() if k != "sha256"},
            "image_url": image_url, "thumb_url": url_for("images.thumb", image_id=iid),
            "item_url": url_for("browse.item", image_id=iid)}


def body() -> dict:
    """The request's JSON object, or its form fields (navigator.sendBeacon posts forms)."""
    if request.is_json:
        data = request.get_json(silent=True)
        if not isinstance(data, dict):
            raise BadRequest(f"the body must be a JSON object (standard JSON, nested at most "
                             f"{MAX_JSON_DEPTH} levels)")
        return data
    return request.form.to_dict()


MAX_IDS = 100  # a list of task ids longer than this is a mistake (only the first 8 are used)


def int_field(data: dict, name: str, required: bool = True, lo: int = 0,
              hi: int = MAX_INT) -> int | None:
    raw = data.get(name)
    if raw is None or raw == "":
        if required:
            raise BadRequest(f"'{name}' is required")
        return None
    return whole_number(raw, name, lo, hi)


def id_list(data: dict, name: str) -> list[int]:
    """A list of ids: a JSON array, or a comma-separated string (a form field); absent or null
    is empty."""
    raw = data.get(name)
    if raw is None:
        return []
    if isinstance(raw, str):
        raw = [p for p in raw.split(",") if p.strip()]
    if not isinstance(raw, list) or len(raw) > MAX_IDS:
        raise BadRequest(f"'{name}' must be a list of at most {MAX_IDS} task ids")
    return [whole_number(x, f"{name}[]") for x in raw][:8]


def label_fields(data: dict) -> tuple[int, str, int | None]:
    """(task_id, class, time_on_item_ms) from a label post; class accepts ``class`` or ``cls``."""
    task_id = int_field(data, "task_id")
    cls = data.get("class", data.get("cls"))
    if cls not in CLASSES:
        raise BadRequest(f"'class' must be one of {', '.join(CLASSES)}")
    ms = int_field(data, "time_on_item_ms", required=False, lo=-MAX_INT)
    if ms is not None:
        ms = min(max(ms, 0), MAX_TIME_ON_ITEM_MS)
    return task_id, cls, ms


def label_payload(label, outcome=None) -> dict:
    out = {"label_id": label.id, "task_id": label.task_id, "image_id": label.image_id,
           "class": label.cls, "source": label.source, "time_on_item_ms": label.time_on_item_ms,
           "admin_override": bool(label.admin_override), "created_at": iso_utc(label.created_at)}
    if outcome is not None:
        out.update(closed=outcome.closed, duplicate=not outcome.created)
    return out
