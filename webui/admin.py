"""Admin pages: people (add, change role, issue an API token) and model versions."""
from __future__ import annotations

from flask import Blueprint, flash, make_response, redirect, render_template, request, url_for
from flask_login import current_user
from werkzeug.exceptions import BadRequest, NotFound

from store import browse as store_browse
from store import users as store_users

from .auth import admin_required
from .context import db
from .security import hash_password, new_token

bp = Blueprint("admin", __name__, url_prefix="/admin")


@bp.get("/users")
@admin_required
def users():
    with db() as s:
        rows = store_users.list_users(s)
    return render_template("users.html", rows=rows, roles=store_users.ROLES)


@bp.post("/users")
@admin_required
def add_user():
    name = request.form.get("name", "").strip()
    role = request.form.get("role", "reviewer")
    password = request.form.get("password", "")
    if not name or len(name) > 100 or any(c.isspace() for c in name):
        flash("A name is 1 to 100 characters without spaces.", "error")
        return redirect(url_for("admin.users"))
    try:
        hashed = hash_password(password)
        with db() as s:
            store_users.create_user(s, name, hashed, role)
    except (ValueError, store_users.UserExists) as exc:
        flash(f"{exc}.", "error")
        return redirect(url_for("admin.users"))
    flash(f"Added {name} ({role}).", "info")
    return redirect(url_for("admin.users"))


@bp.post("/users/<int:user_id>/role")
@admin_required
def set_role(user_id: int):
    role = request.form.get("role", "")
    if role not in store_users.ROLES:
        raise BadRequest(f"role must be one of {', '.join(store_users.ROLES)}")
    if user_id == current_user.id:
        flash("You cannot change your own role (ask another admin).", "error")
        return redirect(url_for("admin.users"))
    with db() as s:
        if store_users.user_by_id(s, user_id) is None:
            raise NotFound(f"no user {user_id}")
        store_users.set_role(s, user_id, role)
    flash("Role changed.", "info")
    return redirect(url_for("admin.users"))


@bp.post("/users/<int:user_id>/token")
@admin_required
def issue_token(user_id: int):
    token, digest = new_token()
    with db() as s:
        user = store_users.user_by_id(s, user_id)
        if user is None:
            raise NotFound(f"no user {user_id}")
        store_users.set_token_hash(s, user_id, digest)
        name = user.name
    # Shown once, on this response only; never stored or flashed (flashes live in the cookie).
    with db() as s:
        rows = store_users.list_users(s)
    resp = make_response(render_template("users.html", rows=rows, roles=store_users.ROLES,
                                         new_token={"name": name, "token": token}))
    resp.headers["Cache-Control"] = "no-store"
    return resp


@bp.get("/models")
@admin_required
def models():
    with db() as s:
        versions = store_browse.model_versions(s)
    return render_template("models.html", versions=versions)
