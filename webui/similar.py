"""Similar images on the review page: the task image's nearest neighbours by stored embedding
(store/neighbours.py), and labeling several of them in one action (store/bulk.py).

The page may only bulk-label images it was shown: the neighbours answer carries a token signed
with the app's secret key naming the reviewer and the image ids it listed, and a bulk label for
any image outside it is refused (HTTP 400)."""
from __future__ import annotations

from flask import current_app, jsonify, request, url_for, Blueprint
from flask_login import current_user
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from sqlalchemy import select
from werkzeug.exceptions import BadRequest, NotFound

from store import bulk as store_bulk
from store import neighbours
from models.classes import CLASSES
from store.schema import Image, Prediction, ReviewTask

from .context import db, int_arg, settings
from .payloads import body

bp = Blueprint("similar", __name__, url_prefix="/review/api")
DEFAULT_K = 24
MAX_K = 60


def _signer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt="verge-similar")


@bp.get("/similar")
def similar():
    """``?task_id=N&k=24``: the task image's k nearest images with their scores."""
    raw = request.args.get("task_id", "")
    if not raw.isdigit():
        raise BadRequest("'task_id' must be a whole number")
    k = int_arg("k", DEFAULT_K, 1, MAX_K)
    url = settings().resolved_database_url
    with db() as s:
        image_id = s.scalar(select(ReviewTask.image_id).where(ReviewTask.id == int(raw)))
        if image_id is None:
            raise NotFound(f"no review task {raw}")
        found = neighbours.similar(url, s, image_id, k)
        ids = [i for i, _ in found]
        rows = {im.id: (im, pred) for im, pred in s.execute(
            select(Image, Prediction).outerjoin(Prediction, Prediction.id == Image.latest_prediction_id)
            .where(Image.id.in_(ids)))} if ids else {}
    images = []
    for iid, sim in found:
        if iid not in rows:
            continue
        im, pred = rows[iid]
        images.append({
            "image_id": iid, "similarity": round(sim, 4), "source_name": im.source_name,
            "thumb_url": url_for("images.thumb", image_id=iid),
            "head_p_road": pred.p_road if pred else None,
            "zs_p_road": pred.zs_p_road if pred else None,
            "predicted_class": pred.predicted_class if pred else None,
        })
    token = _signer().dumps({"u": current_user.id, "i": [im["image_id"] for im in images]})
    return jsonify(task_id=int(raw), image_id=image_id, images=images, token=token)


@bp.post("/bulk")
def bulk_label():
    """``{"token": ..., "image_ids": [...], "class": "road"}``: label the chosen images at once."""
    data = body()
    cls = data.get("class")
    if cls not in CLASSES:
        raise BadRequest(f"'class' must be one of {', '.join(CLASSES)}")
    ids = data.get("image_ids")
    if (not isinstance(ids, list) or not ids or len(ids) > store_bulk.MAX_IMAGES
            or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids)):
        raise BadRequest(f"'image_ids' must be a list of 1 to {store_bulk.MAX_IMAGES} image ids")
    token = data.get("token")
    if not isinstance(token, str) or not token:
        raise BadRequest("'token' is required: the one that came with the similar images")
    try:
        shown = _signer().loads(token, max_age=settings().review_lease * 2)
    except SignatureExpired:
        raise BadRequest("the similar images are out of date: load them again") from None
    except BadSignature:
        raise BadRequest("'token' is not one this server gave out") from None
    if shown.get("u") != current_user.id:
        raise BadRequest("'token' was given to another reviewer")
    unseen = sorted(set(ids) - set(shown.get("i", [])))
    if unseen:
        raise BadRequest(f"image {unseen[0]} was not shown to you with these similar images; "
                         "nothing was labeled")
    with db() as s:
        out = store_bulk.label(s, ids, current_user.id, current_user.name, cls,
                               settings().reviews_per_task)
    return jsonify(labeled=out.labeled, skipped=out.skipped, **{"class": cls}), 201


@bp.post("/bulk/undo")
def bulk_undo():
    """``{"label_ids": [...]}``: take one bulk action's labels back."""
    ids = body().get("label_ids")
    if (not isinstance(ids, list) or not ids
            or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids)):
        raise BadRequest("'label_ids' must be a list of label ids")
    with db() as s:
        n = store_bulk.undo(s, current_user.id, ids)
    if n == 0:
        raise NotFound("none of these are bulk labels of yours")
    return jsonify(undone=n)
