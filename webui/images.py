"""Images by id, straight from blob storage: no file names or paths ever appear in a URL.
Blobs are content-addressed, so a URL's bytes never change: the ETag is the hash and browsers
may keep them (privately: they sit behind a login)."""
from __future__ import annotations

from flask import Blueprint, current_app, send_file
from werkzeug.exceptions import NotFound

from store.blobs import BlobNotFound
from store.schema import Image

from .context import blobs, db, settings, thumb_dir
from .thumbs import ensure_thumbnail, sniff_mime, thumb_path

bp = Blueprint("images", __name__)
YEAR = 365 * 24 * 3600


def _blob_path(image_id: int):
    with db() as s:
        image = s.get(Image, image_id)
        key = image.storage_key if image else None
    if key is None:
        raise NotFound(f"no image {image_id}")
    try:
        path = blobs().path_for(key)
    except BlobNotFound:
        raise NotFound(f"image {image_id} has no stored bytes") from None
    if not path.is_file():
        raise NotFound(f"image {image_id} is missing from blob storage")
    return key, path


def send_image(image_id: int):
    key, path = _blob_path(image_id)
    with open(path, "rb") as f:
        mime = sniff_mime(f.read(16))
    resp = send_file(path, mimetype=mime, etag=key, conditional=True, max_age=YEAR,
                     last_modified=None)
    resp.cache_control.private = True
    resp.cache_control.public = False
    resp.cache_control.immutable = True
    return resp


@bp.get("/images/<int:image_id>")
def full(image_id: int):
    return send_image(image_id)


@bp.get("/images/<int:image_id>/thumb")
def thumb(image_id: int):
    key, path = _blob_path(image_id)
    target = thumb_path(thumb_dir(), key)
    if not ensure_thumbnail(path, target, settings().max_image_pixels):
        resp = send_file(current_app.static_folder + "/no-preview.svg", mimetype="image/svg+xml",
                         max_age=300)
        return resp
    resp = send_file(target, mimetype="image/jpeg", etag=f"{key}-t", conditional=True,
                     max_age=YEAR, last_modified=None)
    resp.cache_control.private = True
    resp.cache_control.public = False
    resp.cache_control.immutable = True
    return resp
