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
    Blueprint, abort, current_app, flash, g, jsonify, redirect, render_template, request, session,
    url_for,
)
from flask_login import LoginManager, UserMixin, current_user, login_user, logout_user

from store import sessions as store_sessions
from store import throttle
from store import users as store_users

from .context import db, wants_json
from .security import TOKEN_PREFIX, token_digest, verify_password

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
    sid: str = ""  # the server-side session this browser is signed in under (store/sessions.py)

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def get_id(self) -> str:
        return f"{self.id}.{self.sid}"

    @classmethod
    def of(cls, row, sid: str = "") -> "WebUser":
        return cls(row.id, row.name, row.role, sid)


@login_manager.user_loader
def _load(session_id: str) -> WebUser | None:
    """The cookie names a server-side session: it counts only while that session lives."""
    uid, _, sid = session_id.partition(".")
    if not sid:
        return None
    idle_s = current_app.permanent_session_lifetime.total_seconds()
    with db() as s:
        row = store_sessions.user_for(s, sid, idle_s)
        user = WebUser.of(row, sid) if row is not None else None
    return user if user is not None and str(user.id) == uid else None


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


def _throttle_keys(name: str) -> tuple[str, str]:
    addr = request.remote_addr or ""
    return throttle.key("name", name.lower(), addr), throttle.key("addr", addr)


def _attempt_allowed(name: str) -> float:
    """Count this sign-in attempt (committed before any password is compared) for the name at
    this address and for the address; seconds to wait when either is over its allowance, else 0.
    Keyed by name *and* address, so a stranger guessing a name elsewhere never locks its owner
    out; the address-wide count stops one client from spraying many names."""
    cfg = current_app.config
    name_key, addr_key = _throttle_keys(name)
    with db() as s:
        by_name = throttle.count_attempt(s, name_key, cfg["LOGIN_WINDOW_S"])
        by_addr = throttle.count_attempt(s, addr_key, cfg["LOGIN_WINDOW_S"])
    over = [wait for (n, wait), allowed in ((by_name, cfg["LOGIN_ATTEMPTS_PER_NAME"]),
                                            (by_addr, cfg["LOGIN_ATTEMPTS_PER_ADDRESS"]))
            if n > allowed]
    return max(1.0, *over) if over else 0.0


def _signed_in(row, name: str) -> None:
    """Start a new server-side session in a fresh cookie: nothing planted in the anonymous
    session (a CSRF token, flashes) survives into the signed-in one."""
    name_key, addr_key = _throttle_keys(name)
    with db() as s:
        throttle.forget(s, name_key)
        throttle.give_back(s, addr_key)
        sid = store_sessions.start(s, row.id)
        store_sessions.prune(s, current_app.permanent_session_lifetime.total_seconds())
    session.clear()
    g.pop("csrf_token", None)  # Flask-WTF caches the request's token here
    session.permanent = True  # expires after PERMANENT_SESSION_LIFETIME without a request
    login_user(WebUser.of(row, sid))


@bp.route("/login", methods=["GET", "POST"])
def login():
    if current_user.is_authenticated and request.method == "GET":
        return redirect(_safe_next(request.args.get("next")))
    if request.method == "GET":
        return render_template("login.html", next=request.args.get("next", ""))
    name = request.form.get("name", "").strip()[:100]
    password = request.form.get("password", "")
    wait = _attempt_allowed(name)
    if wait > 0:
        flash(f"Too many failed sign-ins. Try again in {int(wait) + 1} seconds.", "error")
        resp = current_app.make_response(
            (render_template("login.html", next=request.form.get("next", ""), name=name), 429))
        resp.headers["Retry-After"] = str(int(wait) + 1)
        return resp
    with db() as s:
        row = store_users.user_by_name(s, name)
        ok = verify_password(row.password_hash if row else None, password)
    if not ok:
        time.sleep(current_app.config["LOGIN_FAIL_DELAY_S"])
        flash("Wrong name or password.", "error")
        return render_template("login.html", next=request.form.get("next", ""), name=name), 401
    _signed_in(row, name)
    return redirect(_safe_next(request.form.get("next")))


@bp.post("/logout")
def logout():
    # The images this reviewer holds go back to the queue now, not when their leases run out
    # (the review page also hands them back itself before it submits this form).
    from store.leases import release_all

    if current_user.is_authenticated:
        with db() as s:
            release_all(s, current_user.name)
            store_sessions.end(s, current_user.sid)  # the cookie is worthless from here on
    logout_user()
    session.clear()
    flash("Signed out.", "info")
    return redirect(url_for("auth.login"))
