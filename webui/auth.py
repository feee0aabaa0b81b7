"""Who is asking: Flask-Login sessions for people, the login and logout pages, the role checks.

Every route needs a signed-in user unless it is listed in ``PUBLIC`` (the login page, static
files, the health check); the API blueprint checks its bearer tokens itself. The guard runs
before every request, so a new route is protected without anyone remembering to decorate it.
"""
from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from flask import (
    Blueprint, abort, current_app, flash, jsonify, redirect, render_template, request, session,
    url_for,
)
from flask_login import LoginManager, UserMixin, current_user, login_user, logout_user

from store import users as store_users

from .context import db, wants_json
from .ratelimit import LoginThrottle
from .security import TOKEN_PREFIX, session_fingerprint, token_digest, verify_password

bp = Blueprint("auth", __name__)
login_manager = LoginManager()
PUBLIC = {"auth.login", "static", "health.healthz"}
# blueprints that check who is asking themselves: the JSON API (bearer tokens, never cookies)
# and /metrics (loopback or a bearer token: Prometheus cannot sign in)
SELF_GUARDED = {"api", "metrics"}


@dataclass
class WebUser(UserMixin):
    id: int
    name: str
    role: str
    fingerprint: str = ""

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def get_id(self) -> str:
        return f"{self.id}.{self.fingerprint}"

    @classmethod
    def of(cls, row) -> "WebUser":
        return cls(row.id, row.name, row.role, session_fingerprint(row.password_hash))


@login_manager.user_loader
def _load(session_id: str) -> WebUser | None:
    uid, _, fingerprint = session_id.partition(".")
    if not uid.isdigit():
        return None
    with db() as s:
        row = store_users.user_by_id(s, int(uid))
        if row is None:
            return None
        user = WebUser.of(row)
    return user if user.fingerprint == fingerprint else None  # password changed: signed out


@login_manager.unauthorized_handler
def _unauthorized():
    if wants_json():
        return jsonify(error="sign in first"), 401
    return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))


def _require_login():
    if request.endpoint in PUBLIC or request.blueprint in SELF_GUARDED or request.endpoint is None:
        return None  # unknown URLs fall through to 404 / 405
    if not current_user.is_authenticated:
        return login_manager.unauthorized()
    return None


def init_app(app) -> None:
    # per app: by name (a targeted account) and by address (one client spraying names)
    app.extensions["verge_login_throttle"] = (LoginThrottle(free_failures=5),
                                              LoginThrottle(free_failures=20))
    login_manager.init_app(app)
    login_manager.session_protection = "basic"
    app.before_request(_require_login)

    @app.context_processor
    def _user():
        return {"user": current_user}


def bearer_user() -> WebUser | None:
    """The user whose API token the request carries (``Authorization: Bearer vrg_...``)."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token.startswith(TOKEN_PREFIX):
        return None
    with db() as s:
        row = store_users.user_by_token_hash(s, token_digest(token))
        return WebUser.of(row) if row else None


def admin_required(view):
    @functools.wraps(view)
    def wrapped(*args, **kwargs):
        if not current_user.is_authenticated:
            return login_manager.unauthorized()
        if not current_user.is_admin:
            abort(403, "this page is for admins")
        return view(*args, **kwargs)
    return wrapped


def _safe_next(target: str | None) -> str:
    """Only a path on this site: never an open redirect to somebody else's."""
    if not target:
        return url_for("review.page")
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//") \
            or "\\" in target:
        return url_for("review.page")
    return target


@bp.route("/login", methods=["GET", "POST"])
def login():
    if current_user.is_authenticated and request.method == "GET":
        return redirect(_safe_next(request.args.get("next")))
    if request.method == "GET":
        return render_template("login.html", next=request.args.get("next", ""))
    name = request.form.get("name", "").strip()[:100]
    password = request.form.get("password", "")
    by_name, by_address = current_app.extensions["verge_login_throttle"]
    keys_name, keys_addr = f"name:{name.lower()}", f"addr:{request.remote_addr}"
    wait = max(by_name.wait_s(keys_name), by_address.wait_s(keys_addr))
    if wait > 0:
        flash(f"Too many failed sign-ins. Try again in {int(wait) + 1} seconds.", "error")
        resp = current_app.make_response(
            (render_template("login.html", next=request.form.get("next", ""), name=name), 429))
        resp.headers["Retry-After"] = str(int(wait) + 1)
        return resp
    with db() as s:
        row = store_users.user_by_name(s, name)
        ok = verify_password(row.password_hash if row else None, password)
        user = WebUser.of(row) if ok else None
    if user is None:
        by_name.failed(keys_name)
        by_address.failed(keys_addr)
        time.sleep(current_app.config["LOGIN_FAIL_DELAY_S"])
        flash("Wrong name or password.", "error")
        return render_template("login.html", next=request.form.get("next", ""), name=name), 401
    by_name.succeeded(keys_name)
    session.permanent = True  # expires after PERMANENT_SESSION_LIFETIME without a request
    login_user(user)
    return redirect(_safe_next(request.form.get("next")))


@bp.post("/logout")
def logout():
    # The images this reviewer holds go back to the queue now, not when their leases run out
    # (the review page also hands them back itself before it submits this form).
    from store.leases import release_all

    with db() as s:
        release_all(s, current_user.name)
    logout_user()
    flash("Signed out.", "info")
    return redirect(url_for("auth.login"))
