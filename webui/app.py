"""The Flask app factory: settings, security, blueprints.

``create_app()`` reads the settings from the environment (``VERGE_*``); tests and embedders pass
``settings`` and may override single settings (lower-case names, e.g. ``review_lease=5``) or
Flask config keys (upper-case, e.g. ``TESTING=True``)::

    gunicorn 'webui:create_app()'
"""
from __future__ import annotations

import dataclasses
import datetime as dt

from flask import Flask, redirect, request, url_for
from flask_wtf.csrf import CSRFProtect

from verge.settings import Settings

from . import (
    adjudicate, admin, api, auth, batches, browse, context, dashboard, dataset_export, errors,
    filters, gold, guidelines, health, images, metrics, parsing, queue, review, similar, webhooks,
)
from .security import load_secret_key, secure_headers
from .spool import SpoolingRequest

csrf = CSRFProtect()


def create_app(settings: Settings | None = None, **overrides) -> Flask:
    settings = settings or Settings.from_env()
    names = {f.name for f in dataclasses.fields(Settings)}
    settings = dataclasses.replace(settings, **{k: v for k, v in overrides.items() if k in names})

    if settings.log_format == "json":  # `verge web` and gunicorn alike (its loggers too)
        from verge.logs import use_json

        use_json("INFO", also=("gunicorn.error", "gunicorn.access"))
    app = Flask(__name__)
    parsing.init_app(app)
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
        # sign-in attempts allowed per window (store/throttle.py): for one name from one
        # address, and from one address for all names together
        LOGIN_WINDOW_S=900, LOGIN_ATTEMPTS_PER_NAME=5, LOGIN_ATTEMPTS_PER_ADDRESS=50,
        VERGE_SETTINGS=settings,
    )
    app.config.update({k: v for k, v in overrides.items() if k not in names})
    if settings.trusted_proxies:  # the client's address and scheme as the proxies saw them
        from werkzeug.middleware.proxy_fix import ProxyFix
        n = settings.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=n)

    context.init_app(app)  # one pooled connection per request (webui/context.py)
    auth.init_app(app)   # first: anonymous requests are turned away before anything else runs
    app.before_request(lambda: parsing.check_request(request))
    csrf.init_app(app)
    errors.init_app(app)
    filters.register(app)
    for module in (auth, review, images, browse, queue, batches, dashboard, admin, api, health,
                   metrics, guidelines, dataset_export, webhooks, adjudicate, gold, similar):
        app.register_blueprint(module.bp)
    csrf.exempt(api.bp)  # bearer tokens, never cookies: nothing for a forged request to ride on
    app.after_request(secure_headers)
    if not app.testing:  # similar images: build the neighbour index now, not on the first ask
        import threading

        from store import neighbours
        threading.Thread(target=neighbours.warm, args=(settings.resolved_database_url,),
                         name="verge-neighbours", daemon=True).start()

    @app.get("/")
    def index():
        return redirect(url_for("review.page"))

    return app
