"""Conflicts between reviewers (``VERGE_REVIEWS_PER_TASK`` > 1), for admins: the list, and a page
per conflict with the image, both judges' scores and each reviewer's class; the admin's class is
final (store/overlap.py)."""
from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import current_user
from werkzeug.exceptions import BadRequest, NotFound

from store import overlap as store_overlap
from store import review as store_review
from models.classes import CLASSES

from .auth import admin_required
from .context import db

bp = Blueprint("adjudicate", __name__, url_prefix="/adjudicate")


@bp.get("")
@admin_required
def index():
    with db() as s:
        rows = store_overlap.conflicts(s)
    return render_template("conflicts.html", rows=rows)


@bp.get("/<int:task_id>")
@admin_required
def task(task_id: int):
    with db() as s:
        d = store_review.task_details(s, task_id, adjudication=True)
    if d is None:
        raise NotFound(f"no review task {task_id}")
    return render_template("adjudicate.html", d=d, classes=CLASSES)


@bp.post("/<int:task_id>")
@admin_required
def decide(task_id: int):
    cls = request.form.get("class", "")
    if cls not in CLASSES:
        raise BadRequest(f"'class' must be one of {', '.join(CLASSES)}")
    try:
        with db() as s:
            store_overlap.adjudicate(s, task_id, current_user.id, cls)
    except store_overlap.TaskNotFound:
        raise NotFound(f"no review task {task_id}") from None
    except store_overlap.LabelRefused as exc:
        flash(f"{exc}.", "error")
        return redirect(url_for("adjudicate.index"))
    flash(f"Task {task_id} is final: {cls.replace('_', ' ')}.", "info")
    with db() as s:
        nxt = store_overlap.conflicts(s, limit=1)
    if nxt:
        return redirect(url_for("adjudicate.task", task_id=nxt[0]["task_id"]))
    return redirect(url_for("adjudicate.index"))
