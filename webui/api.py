"""The JSON API, ``/api/v1``: the review page's rules for programs. Each request carries a
per-user token (``Authorization: Bearer vrg_...``; ``verge users token NAME`` or the admin users
page issues one). Cookies are never accepted here, which is why these routes need no CSRF token.
"""
from __future__ import annotations

from flask import Blueprint, g, jsonify, request
from werkzeug.exceptions import Forbidden, NotFound

from store import agreement as store_agreement
from store import browse as store_browse
from store import users as store_users
from store.review import iso_utc
from workers.errors import BrokerUnavailable

from . import review
from .auth import bearer_user
from .context import db, int_arg, settings
from .errors import error_response
from .images import send_image
from .payloads import body, id_list, label_payload
from .uploads import batch_name, submit_uploads

bp = Blueprint("api", __name__, url_prefix="/api/v1")


@bp.before_request
def _token():
    user = bearer_user()
    if user is None:
        resp, code = error_response(401, "send a valid API token: 'Authorization: Bearer vrg_...'")
        resp.headers["WWW-Authenticate"] = 'Bearer realm="verge"'
        return resp, code
    g.api_user = user
    return None


def _admin():
    if not g.api_user.is_admin:
        raise Forbidden("submitting batches needs an admin's token")


@bp.post("/batches")
def submit_batch():
    """multipart/form-data: one or more ``files`` parts, optional ``batch`` name."""
    _admin()
    name = batch_name(request.form.get("batch"))
    try:
        result = submit_uploads(settings(), request.files.getlist("files"), name, source="api")
    except BrokerUnavailable as exc:
        return error_response(503, f"{exc}; nothing was submitted")
    return jsonify(result.as_dict()), 201


@bp.post("/registrations")
def register_batch():
    """JSON ``{"url": "s3://bucket/prefix/", "batch": "optional name"}``: register the image
    objects under the prefix in place (nothing is copied), as ``verge submit s3://...``."""
    from .inplace import register

    _admin()
    data = body()
    result = register(data.get("url"), batch_name(data.get("batch")), source="api")
    return jsonify(result.as_dict()), 201


@bp.get("/batches/<ref>")
def batch_status(ref: str):
    """``?failures_offset=N&failures_limit=M`` (at most 1000, default 100) pages the failures."""
    with db() as s:
        st = store_browse.batch_status(s, ref, int_arg("failures_offset", 0, lo=0),
                                       int_arg("failures_limit", store_browse.FAILURES_PAGE, lo=1, hi=1000))
    if st is None:
        raise NotFound(f"no batch named or numbered {ref!r}")
    st["created_at"] = iso_utc(st["created_at"])  # SQLite hands back naive UTC
    return jsonify(st)


@bp.post("/tasks/next")
def next_task():
    """Claim the next task (highest priority first) under a lease; ``{"task": null}`` when the
    queue is empty. Optional body ``{"exclude": [task ids you already hold]}``."""
    data = body() if request.get_data() else {}
    return jsonify(review.claim(g.api_user, id_list(data, "exclude"), api=True))


@bp.post("/tasks/<int:task_id>/skip")
def skip_task(task_id: int):
    return review.skip(g.api_user, task_id)


@bp.post("/labels")
def post_label():
    """``{"task_id": 12, "class": "road", "time_on_item_ms": 2300}``."""
    return review.label(g.api_user, body(), "api")


@bp.get("/labels")
def list_labels():
    """Reviewers' labels oldest first; page with ``after`` (the last ``label_id`` seen).
    Filters: ``batch`` (id), ``user`` (name), ``limit`` (1..1000)."""
    limit = int_arg("limit", 100, 1, 1000)
    user_id = None
    with db() as s:
        if request.args.get("user"):
            u = store_users.user_by_name(s, request.args["user"])
            if u is None:
                raise NotFound(f"no user {request.args['user']!r}")
            user_id = u.id
        rows = store_browse.list_labels(s, after=int_arg("after"), limit=limit,
                                        batch_id=int_arg("batch"), user_id=user_id)
        labels = [{**label_payload(lab), "user": name} for lab, name in rows]
    return jsonify(labels=labels, next_after=labels[-1]["label_id"] if len(labels) == limit else None)


@bp.get("/agreement")
def agreement():
    """Agreement between reviewers: Cohen's kappa per pair, Fleiss' overall, confusion per
    class, and per reviewer pace and agreement with the final label (store/agreement.py)."""
    with db() as s:
        return jsonify(store_agreement.summary(s))


@bp.get("/images/<int:image_id>")
def image(image_id: int):
    return send_image(image_id)


@bp.get("/openapi.json")
def openapi():
    """This API's OpenAPI 3.1 document (webui/openapi.py)."""
    from .openapi import document

    return jsonify(document())
