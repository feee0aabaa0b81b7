"""Images by id, straight from where they are stored: no file names or paths ever appear in a URL.

A blob folder is served from disk; object storage (a blob bucket, or an object registered in
place) is read by this server and proxied, so the bucket never needs to be public and the same
login, ETag and cache headers apply. A blob's bytes never change (content-addressed), nor does an
object registered in place (only the version registered, by its ETag, is ever served), so the
ETag never goes stale and browsers may keep them (privately: they sit behind a login)."""
from __future__ import annotations

import hashlib
import io

from flask import Blueprint, Response, current_app, request, send_file
from werkzeug.exceptions import NotFound, ServiceUnavailable

from store.blobs import BlobNotFound, BlobStore, is_in_place, read_image
from store.schema import Image

from .context import blobs, db, settings, thumb_dir
from .thumbs import ensure_thumbnail, sniff_mime, thumb_path

bp = Blueprint("images", __name__)
YEAR = 365 * 24 * 3600


class _Stored:
    """Where one image's bytes are, and the tag that names exactly those bytes."""

    def __init__(self, image_id: int):
        with db() as s:
            image = s.get(Image, image_id)
            if image is None:
                raise NotFound(f"no image {image_id}")
            self.image_id, self.key, self.etag = image_id, image.storage_key, image.etag
            # an object registered in place and not read yet has no hash: its location and ETag
            # name its bytes as surely
            self.tag = image.sha256 or hashlib.sha256(f"{self.key}\0{self.etag}".encode()).hexdigest()
        self.store = blobs()

    def path(self):
        """The file of a blob kept in a folder, else None."""
        if is_in_place(self.key) or not isinstance(self.store, BlobStore):
            return None
        try:
            path = self.store.path_for(self.key)
        except BlobNotFound:
            raise NotFound(f"image {self.image_id} has no stored bytes") from None
        if not path.is_file():
            raise NotFound(f"image {self.image_id} is missing from blob storage")
        return path

    def read(self) -> bytes:
        from store.s3 import ObjectStoreError

        try:
            return read_image(self.store, self.key, self.etag)
        except BlobNotFound as exc:
            raise NotFound(f"image {self.image_id}: {exc}") from None
        except ObjectStoreError as exc:
            raise ServiceUnavailable(f"image {self.image_id}: {exc}") from None


def _cache_forever(resp: Response) -> Response:
    resp.cache_control.private = True
    resp.cache_control.public = False
    resp.cache_control.immutable = True
    resp.cache_control.max_age = YEAR
    return resp


def _not_modified(tag: str) -> Response | None:
    """A browser that has these bytes gets 304 before anything is read from storage."""
    if request.if_none_match.contains(tag):
        resp = Response(status=304)
        resp.set_etag(tag)
        return _cache_forever(resp)
    return None


def send_image(image_id: int):
    stored = _Stored(image_id)
    path = stored.path()
    if path is not None:
        with open(path, "rb") as f:
            mime = sniff_mime(f.read(16))
        resp = send_file(path, mimetype=mime, etag=stored.tag, conditional=True, max_age=YEAR,
                         last_modified=None)
        return _cache_forever(resp)
    cached = _not_modified(stored.tag)
    if cached is not None:
        return cached
    data = stored.read()
    resp = send_file(io.BytesIO(data), mimetype=sniff_mime(data[:16]), etag=stored.tag,
                     conditional=True, max_age=YEAR, last_modified=None)
    return _cache_forever(resp)


@bp.get("/images/<int:image_id>")
def full(image_id: int):
    return send_image(image_id)


@bp.get("/images/<int:image_id>/thumb")
def thumb(image_id: int):
    stored = _Stored(image_id)
    target = thumb_path(thumb_dir(), stored.tag)  # the data dir as a cache of thumbnails
    if not target.exists():
        path = stored.path()
        source = path if path is not None else io.BytesIO(stored.read())
        if not ensure_thumbnail(source, target, settings().max_image_pixels):
            return send_file(current_app.static_folder + "/no-preview.svg", mimetype="image/svg+xml",
                             max_age=300)
    resp = send_file(target, mimetype="image/jpeg", etag=f"{stored.tag}-t", conditional=True,
                     max_age=YEAR, last_modified=None)
    return _cache_forever(resp)
