"""Gold, for admins: make an adjudicated task's image gold, clear a flagged reviewer
(store/gold.py). Gold from a folder is ``verge gold add DIR``."""
from __future__ import annotations

from flask import Blueprint, flash, redirect, url_for
from flask_login import current_user
from werkzeug.exceptions import NotFound

from store import gold as store_gold
from store import users as store_users

from .auth import admin_required
from .context import db

bp = Blueprint("gold", __name__, url_prefix="/admin/gold")


@bp.post("/from-task/<int:task_id>")
@admin_required
def from_task(task_id: int):
    with db() as s:
        made = store_gold.mark_adjudicated(s, task_id, current_user.id)
    if made is None:
        flash(f"Task {task_id} is not an adjudicated task; only those can become gold.", "error")
    else:
        flash(f"Image {made[0]} is gold: {made[1].replace('_', ' ')}.", "info")
    return redirect(url_for("adjudicate.task", task_id=task_id))


@bp.post("/clear/<int:user_id>")
@admin_required
def clear(user_id: int):
    with db() as s:
        u = store_users.user_by_id(s, user_id)
        if u is None:
            raise NotFound(f"no user {user_id}")
        done = store_gold.clear(s, user_id, current_user.id)
    flash(f"Cleared {u.name}: their labels count for training again." if done
          else f"{u.name} is not flagged.", "info" if done else "error")
    return redirect(url_for("admin.users"))
