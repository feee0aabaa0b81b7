"""Admin pages: people (add, change role, issue an API token), model versions (list, one
version's curves and held-out evaluation, activate, roll back) and the export download."""
from __future__ import annotations

from flask import (
    Blueprint, Response, flash, make_response, redirect, render_template, request,
    stream_with_context, url_for,
)
from flask_login import current_user
from sqlalchemy import select
from werkzeug.exceptions import BadRequest, Conflict, NotFound

from store import browse as store_browse
from store import gold as store_gold
from store import sessions as store_sessions
from store import users as store_users
from store.export import FORMATS, iter_export
from store import model_versions
from store.images import find_batch
from store.schema import Batch, ModelVersion

from . import charts
from .auth import admin_required
from .context import db, settings
from .security import hash_password, new_token

bp = Blueprint("admin", __name__, url_prefix="/admin")


@bp.get("/users")
@admin_required
def users():
    with db() as s:
        rows = store_users.list_users(s)
        gold, gold_images = store_gold.users_overview(s), store_gold.count(s)  # hook: gold
    return render_template("users.html", rows=rows, roles=store_users.ROLES, gold=gold,
                           gold_images=gold_images)


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


@bp.post("/users/<int:user_id>/signout")
@admin_required
def sign_out_everywhere(user_id: int):
    """End every session of the user on the server: a stolen cookie stops working now."""
    with db() as s:
        user = store_users.user_by_id(s, user_id)
        if user is None:
            raise NotFound(f"no user {user_id}")
        ended, name = store_sessions.end_all(s, user_id), user.name
    flash(f"Signed {name} out everywhere ({ended} session{'' if ended == 1 else 's'} ended).", "info")
    return redirect(url_for("admin.users"))


@bp.post("/users/<int:user_id>/password")
@admin_required
def reset_password(user_id: int):
    """Set a new password for somebody; their open sessions end on the server."""
    password = request.form.get("password", "")
    if len(password) < 8:
        raise BadRequest("a password is at least 8 characters")
    with db() as s:
        user = store_users.user_by_id(s, user_id)
        if user is None:
            raise NotFound(f"no user {user_id}")
        if store_users.is_disabled(user):
            raise Conflict(f"{user.name} is disabled; enable the account first")
        store_users.set_password_hash(s, user_id, hash_password(password))
        name = user.name
    flash(f"New password set for {name}; they are signed out everywhere.", "info")
    return redirect(url_for("admin.users"))


@bp.post("/users/<int:user_id>/disable")
@admin_required
def disable(user_id: int):
    return _set_disabled(user_id, True)


@bp.post("/users/<int:user_id>/enable")
@admin_required
def enable(user_id: int):
    return _set_disabled(user_id, False)


def _set_disabled(user_id: int, disabled: bool):
    from store.leases import release_all

    if disabled and user_id == current_user.id:
        raise Conflict("you cannot disable your own account (ask another admin)")
    with db() as s:
        user = store_users.user_by_id(s, user_id)
        if user is None:
            raise NotFound(f"no user {user_id}")
        changed = store_users.set_disabled(s, user_id, disabled)
        released = release_all(s, user.name) if disabled else 0
        name = user.name
    if not changed:
        flash(f"{name} was already {'disabled' if disabled else 'enabled'}.", "info")
    elif disabled:
        flash(f"Disabled {name}: signed out, API token revoked, {released} held images back "
              f"in the queue.", "info")
    else:
        flash(f"Enabled {name}: their old password works again (issue a new API token if "
              f"they need one).", "info")
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


# ----------------------------------------------------------------------------- model versions
HEADLINE = (("accuracy", "accuracy"), ("macro_f1", "macro-F1"), ("ece", "ECE"))
SUMMARY_KEYS = (("labels", "labeled images"), ("ties", "reviewer ties left out"),
                ("examples", "training examples"), ("validation_examples", "validation examples"),
                ("epochs_run", "epochs run"), ("best_epoch", "best epoch (kept)"),
                ("trigger", "trigger"), ("source", "training folder"),
                ("augmented_views", "augmented views"))


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def headline(metrics: dict | None) -> list[tuple[str, float]]:
    """A few numbers for the list: held-out accuracy / macro-F1 / ECE when the version was
    judged on held-out labels, else its final training accuracy."""
    metrics = metrics or {}
    held = metrics.get("held_out") or {}
    if held.get("n"):
        return [(f"held-out {label}", held[key]) for key, label in HEADLINE if _number(held.get(key))]
    if _number(metrics.get("train_accuracy")):
        return [("train accuracy", metrics["train_accuracy"])]
    return []


def curve_charts(metrics: dict) -> list[tuple[str, object]]:
    """(title, SVG) for the per-epoch curves: loss, and accuracy / macro-F1 (validation curves
    where the run had a validation split). The dashed line marks the epoch that was kept."""
    curves = [c for c in metrics.get("curves") or [] if isinstance(c, dict) and _number(c.get("epoch"))]
    if not curves:
        return []
    best = metrics.get("best_epoch") if _number(metrics.get("best_epoch")) else None
    best = best or None  # 0: no validation split, nothing was picked
    mark = dict(mark_x=best, mark_label=f"best epoch {best} (kept)" if best else "")

    def series(name, css, get):
        pts = [(c["epoch"], get(c)) for c in curves]
        return (name, css, pts) if any(_number(y) for _, y in pts) else None

    def val(key):
        return lambda c: (c.get("val") or {}).get(key)

    out = []
    loss = [s for s in (series("train loss", "s-train", lambda c: c.get("loss")),
                        series("validation log-loss", "s-val", val("log_loss"))) if s]
    if loss:
        out.append(("Loss", charts.lines(loss, "loss", **mark)))
    quality = [s for s in (series("train accuracy", "s-train", lambda c: c.get("accuracy")),
                           series("validation macro-F1", "s-val", val("macro_f1"))) if s]
    if quality:
        out.append(("Accuracy and macro-F1", charts.lines(quality, "score", ymin=0.0, ymax=1.0, **mark)))
    lrs = {c.get("lr") for c in curves if _number(c.get("lr"))}
    if len(lrs) > 1:  # the learning rate was halved along the way
        out.append(("Learning rate", charts.lines(
            [series("learning rate", "s-lr", lambda c: c.get("lr"))], "lr", ymin=0.0, **mark)))
    return out


def evaluation(metrics: dict) -> dict | None:
    """What the page compares: this version's held-out metrics and, on the same labels, the head
    that was active when it was trained (or, for a run without held-out labels, its best
    validation epoch)."""
    held = metrics.get("held_out") or {}
    if held.get("n"):
        active = metrics.get("active_held_out") or {}
        return {"title": "Held-out evaluation", "candidate": held,
                "active": active if active.get("n") else None,
                "active_version": metrics.get("active_version")}
    validation = metrics.get("validation") or {}
    if validation.get("n"):
        return {"title": "Validation (best epoch)", "candidate": validation, "active": None,
                "active_version": None}
    return None


@bp.get("/models")
@admin_required
def models():
    with db() as s:
        versions = store_browse.model_versions(s)
        rows = [(v, headline(v.metrics)) for v in versions]
        batches = list(s.scalars(select(Batch).order_by(Batch.id.desc()).limit(50)))
        target = model_versions.rollback_target(s)
    return render_template("models.html", rows=rows, batches=batches, rollback_to=target)


@bp.get("/models/<int:version_id>")
@admin_required
def model(version_id: int):
    with db() as s:
        mv = s.get(ModelVersion, version_id)
        if mv is None:
            raise NotFound(f"no model version {version_id}")
        active = model_versions.active_model(s)
        active_now = (active.id, active.kind) if active else None
        target = model_versions.rollback_target(s) if mv.state == "active" else None
    metrics = mv.metrics or {}
    return render_template(
        "model.html", v=mv, metrics=metrics, charts=curve_charts(metrics), ev=evaluation(metrics),
        rollback_to=target,
        headline=headline(metrics), active_now=active_now,
        summary=[(label, metrics[key]) for key, label in SUMMARY_KEYS if metrics.get(key) not in (None, "")],
        recipe=metrics.get("recipe") or {}, decision=metrics.get("decision") or mv.note)


def _rescore() -> str | None:
    """Ask the workers to re-score open review tasks with the head now active; a broker that is
    down is reported (the switch itself is done), never raised."""
    from workers.app import request_rescore

    problem = request_rescore(settings())
    if problem:
        return (f"open review tasks were not re-scored ({problem}); "
                f"run `verge models rescore` once the broker is back")
    return None


@bp.post("/models/<int:version_id>/activate")
@admin_required
def activate(version_id: int):
    from workers.activation import activate as do_activate

    with db() as s:
        mv = s.get(ModelVersion, version_id)
        if mv is None:
            raise NotFound(f"no model version {version_id}")
        already = mv.state == "active"
    if already:
        flash(f"Version {version_id} is already the active head.", "info")
        return redirect(url_for("admin.model", version_id=version_id))
    mv = do_activate(settings(), version_id)
    problem = _rescore()
    flash(f"Version {mv.id} ({mv.kind}) is the active head; workers switch on their next chunk"
          + ("; open review tasks are being re-scored with it." if problem is None else "."), "info")
    if problem:
        flash(problem[0].upper() + problem[1:] + ".", "warn")
    return redirect(url_for("admin.model", version_id=version_id))


@bp.post("/models/rollback")
@admin_required
def rollback():
    from workers.activation import rollback as do_rollback

    try:
        old, new, reopened = do_rollback(settings())
    except ValueError as exc:
        flash(f"Nothing rolled back: {exc}.", "error")
        return redirect(url_for("admin.models"))
    problem = _rescore()
    flash(f"Rolled back from version {old} to version {new}; {reopened} resolved review tasks "
          f"reopened" + ("; open review tasks are being re-scored." if problem is None else "."), "info")
    if problem:
        flash(problem[0].upper() + problem[1:] + ".", "warn")
    return redirect(url_for("admin.model", version_id=new))


# ----------------------------------------------------------------------------- export
@bp.get("/export")
@admin_required
def export():
    """``?format=csv|jsonl[&batch=ID or name]``: the same rows as ``verge export``, streamed."""
    fmt = request.args.get("format", "csv").strip().lower()
    if fmt not in FORMATS:
        raise BadRequest("format must be csv or jsonl")
    ref = request.args.get("batch", "").strip()
    batch_id = None
    if ref:
        with db() as s:
            found = find_batch(s, ref)
            if found is None:
                raise NotFound(f"no batch named or numbered {ref!r}")
            batch_id = found.id

    def generate():
        with db() as s:
            yield from iter_export(s, fmt, batch_id)

    name = f"verge-export{f'-batch-{batch_id}' if batch_id else ''}.{fmt}"
    mimetype = "text/csv" if fmt == "csv" else "application/x-ndjson"
    resp = Response(stream_with_context(generate()), mimetype=mimetype)
    resp.headers["Content-Disposition"] = f'attachment; filename="{name}"'
    resp.headers["Cache-Control"] = "no-store"
    return resp
