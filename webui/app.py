"""The Flask app factory: settings, security, blueprints.

``create_app()`` reads the settings from the environment (``VERGE_*``); tests and embedders pass
``settings`` and may override single settings (lower-case names, e.g. ``review_lease=5``) or
Flask config keys (upper-case, e.g. ``TESTING=True``)::

    gunicorn 'webui:create_app()'
"""
from __future__ import annotations

import dataclasses
import datetime as dt

from flask import Flask, redirect, url_for
from flask_wtf.csrf import CSRFProtect

from verge.settings import Settings

from . import (
    admin, api, auth, batches, browse, dashboard, errors, filters, health, images, metrics, queue,
    review,
)
from .security import load_secret_key, secure_headers
from .spool import SpoolingRequest

csrf = CSRFProtect()


def create_app(settings: Settings | None = None, **overrides) -> Flask:
    settings = settings or Settings.from_env()
    names = {f.name for f in dataclasses.fields(Settings)}
    settings = dataclasses.replace(settings, **{k: v for k, v in overrides.items() if k in names})

    app = Flask(__name__)
    app.request_class = SpoolingRequest  # uploads: bounded memory and descriptors (webui/spool.py)
    app.config.update(
        SECRET_KEY=load_secret_key(settings.secret_key, settings.data_dir),
        SESSION_COOKIE_NAME="verge_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.https,
        REMEMBER_COOKIE_HTTPONLY=True,
        REMEMBER_COOKIE_SAMESITE="Lax",
        REMEMBER_COOKIE_SECURE=settings.https,
        PERMANENT_SESSION_LIFETIME=dt.timedelta(hours=12),
        MAX_CONTENT_LENGTH=settings.max_upload_bytes,
        MAX_FORM_PARTS=100_000,            # a folder upload is one part per file
        WTF_CSRF_TIME_LIMIT=None,          # valid for the session: a review page stays open all day
        WTF_CSRF_SSL_STRICT=settings.https,
        LOGIN_FAIL_DELAY_S=0.5,            # every failed login costs the guesser this long
        VERGE_SETTINGS=settings,
    )
    app.config.update({k: v for k, v in overrides.items() if k not in names})
    if settings.https:  # behind a TLS-terminating proxy: trust its scheme and client address
        from werkzeug.middleware.proxy_fix import ProxyFix
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1)

    auth.init_app(app)   # first: anonymous requests are turned away before anything else runs
    csrf.init_app(app)
    errors.init_app(app)
    filters.register(app)
    for module in (auth, review, images, browse, queue, batches, dashboard, admin, api, health,
                   metrics):
        app.register_blueprint(module.bp)
    csrf.exempt(api.bp)  # bearer tokens, never cookies: nothing for a forged request to ride on
    app.after_request(secure_headers)

    @app.get("/")
    def index():
        return redirect(url_for("review.page"))

    return app
