"""The review page and the JSON calls behind it: claim the next task, label, skip, undo, renew
and release leases. The API (``webui/api.py``) runs the same functions with ``source="api"``.

The lease rule for a late label is ``store.review``'s: the label is kept; it closes the task
unless another reviewer holds a live claim on it (then it is an extra label).
"""
from __future__ import annotations

import datetime as dt
import json

from flask import Blueprint, jsonify, render_template
from flask_login import current_user
from sqlalchemy import select
from werkzeug.exceptions import BadRequest, NotFound

from models.classes import CLASSES
from store import corrections, leases, pausepoints
from store import gold as store_gold
from store import overlap as store_overlap
from store import review as store_review
from store.model_versions import active_model
from store.schema import ReviewTask

from . import guidelines
from .context import db, settings
from .payloads import body, id_list, int_field, label_fields, label_payload, task_payload

bp = Blueprint("review", __name__)
KEYS = [("1", "field", "Field"), ("2", "road", "Road"), ("3", "road_and_field", "Road & field")]


# --------------------------------------------------------------------------- shared with the API
def claim(user, exclude=(), api: bool = False) -> dict:
    cfg = settings()
    with db() as s:  # one transaction: the gold hook, else the queue's next task, and its details
        # hook: now and then a gold image instead, unannounced (store/gold.py)
        task_id = store_gold.claim(s, user.id, user.name, cfg.review_lease, cfg.gold_fraction,
                                   exclude)
        if task_id is None:
            task_id = store_review.claim_next(s, user.id, user.name, cfg.review_lease, exclude,
                                              overlap=cfg.reviews_per_task > 1)
        details = store_review.task_details(s, task_id) if task_id is not None else None
    return {"task": task_payload(details, api=api), "lease_s": cfg.review_lease}


def label(user, data: dict, source: str):
    task_id, cls, ms = label_fields(data)
    try:
        with db() as s:  # one transaction: what kind of task it is, and the label
            gold_owner = store_gold.gold_task_owner(s, task_id)
            if gold_owner is not None:
                return gold_label(s, user, gold_owner, task_id, cls, ms, source)
            if settings().reviews_per_task > 1:
                return overlap_label(s, user, task_id, cls, ms, source)
            try:
                outcome = store_review.post_label(s, task_id, user.id, user.name, cls, source, ms,
                                                  admin=user.is_admin)
            except store_review.TaskNotFound:
                raise NotFound(f"no review task {task_id}") from None
            except store_review.NotClaimed as exc:
                return jsonify(error=str(exc)), 409
            payload = label_payload(outcome.label, outcome)
    except store_overlap.TaskNotFound:
        raise NotFound(f"no review task {task_id}") from None
    except store_overlap.LabelRefused as exc:  # raised out of the transaction: nothing is kept
        return jsonify(error=str(exc)), 409
    if outcome.created:
        from workers.webhooks import label_posted

        label_posted(settings(), outcome.label.image_id, user.id, outcome.label.cls, outcome.label.id)
    if outcome.conflict:
        return jsonify(error=f"you already labeled task {task_id} as {payload['class']}; "
                             f"undo that label first", label=payload), 409
    return jsonify(label=payload), 201 if outcome.created else 200


def gold_label(s, user, owner_id: int, task_id: int, cls: str, ms: int | None, source: str):
    """A gold task takes one answer, from the reviewer it was handed to; the answer counts
    towards their accuracy on gold (store/gold.py). To anybody else it is a task they were
    never given, refused in the same words whatever the task."""
    if owner_id != user.id:
        return jsonify(error=f"task {task_id} was not handed to you"), 409
    cfg = settings()
    outcome = store_review.post_label(s, task_id, user.id, user.name, cls, source, ms)
    payload = label_payload(outcome.label, outcome)
    if outcome.created:
        store_gold.record_answer(s, user.id, cfg.gold_min_accuracy, cfg.gold_min_items)
    if outcome.conflict:
        return jsonify(error=f"you already labeled task {task_id} as {payload['class']}; "
                             f"undo that label first", label=payload), 409
    return jsonify(label=payload), 201 if outcome.created else 200


def overlap_label(s, user, task_id: int, cls: str, ms: int | None, source: str):
    """Several reviewers per task: store/overlap.py's rules (blind, N distinct, conflicts).
    TaskNotFound and LabelRefused propagate, so that the caller's transaction rolls back."""
    outcome = store_overlap.post_label(s, task_id, user.id, user.name, cls, source,
                                       settings().reviews_per_task, ms,
                                       need_claim=not user.is_admin)
    payload = label_payload(outcome.label, outcome)
    if outcome.conflict:
        return jsonify(error=f"you already labeled task {task_id} as {payload['class']}; "
                             f"undo that label first", label=payload), 409
    return jsonify(label=payload), 201 if outcome.created else 200


def skip(user, task_id: int):
    with db() as s:
        if not store_review.skip(s, task_id, user.id, user.name):
            raise NotFound(f"no review task {task_id}")
    return jsonify(skipped=task_id)


# --------------------------------------------------------------------------- the page
def random_weights(encoder_key: str | None) -> bool:
    """An encoder key says its weights are random (``models.encoder.EncoderSpec.key``:
    ``NAME/random-seedN``; ``NAME:none`` as some callers spell it)."""
    key = (encoder_key or "").lower()
    return "random-seed" in key or key.endswith((":none", "/none"))


def scoring_encoder() -> tuple[str, bool]:
    """(encoder, random?) of what scores images now: the active head's encoder, else the
    configured one (zero-shot only)."""
    with db() as s:
        active = active_model(s)
        if active is not None:
            return active.encoder, random_weights(active.encoder)
    cfg = settings()
    return f"{cfg.encoder}/{cfg.pretrained}", cfg.pretrained.strip().lower() == "none"


@bp.get("/review")
def page():
    with db() as s:
        waiting = leases.waiting_count(s)
    encoder, is_random = scoring_encoder()
    return render_template("review.html", keys=KEYS, classes=CLASSES, waiting=waiting,
                           lease_s=settings().review_lease, encoder=encoder,
                           random_encoder=is_random, guidelines=guidelines.rendered())


@bp.get("/review/api/waiting")
def api_waiting():
    with db() as s:
        return jsonify(waiting=leases.waiting_count(s))


@bp.post("/review/api/claim")
def api_claim():
    out = claim(current_user, id_list(body(), "exclude"))
    with db() as s:
        out["waiting"] = leases.waiting_count(s)  # the page's counter stays current
    return jsonify(out)


@bp.post("/review/api/label")
def api_label():
    return label(current_user, body(), "review")


@bp.post("/review/api/skip")
def api_skip():
    return skip(current_user, int_field(body(), "task_id"))


@bp.post("/review/api/undo")
def api_undo():
    data = body()
    skipped = int_field(data, "skip_task_id", required=False)
    if skipped is not None:
        return _undo_skip(skipped)
    with db() as s:
        done = store_review.undo(s, current_user.id, current_user.name, settings().review_lease,
                                 int_field(data, "label_id", required=False))
        if done is None:
            raise NotFound("no label of yours to undo")
        if not done.reopened and settings().reviews_per_task > 1:  # hook: store/overlap.py
            done.reopened = store_overlap.after_undo(s, done.task_id, current_user.name,
                                                     settings().review_lease)
        details = store_review.task_details(s, done.task_id) if done.reopened else None
    return jsonify(undone={"label_id": done.label_id, "task_id": done.task_id,
                           "image_id": done.image_id, "class": done.cls},
                   task=task_payload(details))


def _undo_skip(task_id: int):
    """Take back a skip: the task comes back to this reviewer when nobody else has it."""
    with db() as s:
        back = corrections.unskip(s, task_id, current_user.id, current_user.name,
                                  settings().review_lease)
        if back is None:
            raise NotFound(f"you did not skip task {task_id}")
        details = store_review.task_details(s, task_id) if back else None
    return jsonify(unskipped=task_id, task=task_payload(details))


@bp.post("/review/api/renew")
def api_renew():
    ids = id_list(body(), "task_ids")
    with db() as s:
        held = store_review.renew(s, current_user.name, ids, settings().review_lease)
        ends = dict(s.execute(select(ReviewTask.id, ReviewTask.lease_expires_at)
                              .where(ReviewTask.id.in_(held))).all()) if held else {}
        waiting = leases.waiting_count(s)
    return jsonify(held=held, lease_s=settings().review_lease, waiting=waiting,
                   leases={str(i): store_review.iso_utc(e) for i, e in ends.items()})


def _lease_stamps(data: dict) -> dict[int, dt.datetime] | None:
    """``leases``: {task id: the lease's end as the page last saw it} (a JSON object, or its
    text in a form field); None when absent."""
    raw = data.get("leases")
    if raw is None or raw == "":
        return None
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            raise BadRequest("'leases' must be a JSON object of task id -> time") from None
    if not isinstance(raw, dict) or len(raw) > 8:
        raise BadRequest("'leases' must be a JSON object of at most 8 task id -> time")
    out = {}
    for key, value in raw.items():
        try:
            when = dt.datetime.fromisoformat(value)
            out[int(key)] = when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)
        except (TypeError, ValueError):
            raise BadRequest(f"'leases' has a bad entry for {key!r}: a task id and an ISO time") from None
    return out


@bp.post("/review/api/release")
def api_release():
    """``task_ids``, and optionally ``leases`` (the review page's pagehide beacon sends them): a
    release then ends only the leases the page last saw, never one a reloaded page took since."""
    data = body()
    ids = id_list(data, "task_ids")
    if not ids:
        raise BadRequest("'task_ids' is required")
    stamps = _lease_stamps(data)
    pausepoints.reach("review.release")  # a test holds a late release here (a reload's beacon)
    with db() as s:
        n = store_review.release(s, current_user.name, ids, stamps)
    pausepoints.reach("review.released")
    return jsonify(released=n)
