"""Admins download the training exports from the web: Label Studio tasks (streamed JSON) and the
imagefolder / Hugging Face folders as one zip file. The same code as ``verge export``."""
from __future__ import annotations

import shutil
import tempfile
import zipfile
from pathlib import Path

from flask import Blueprint, Response, request, send_file, stream_with_context, url_for
from werkzeug.exceptions import BadRequest, NotFound

from store.blobs import BlobStore
from store.datasets import DATASET_FORMATS, ExportError, parse_split, write_dataset
from store.images import find_batch
from store.label_studio import iter_tasks_json

from .auth import admin_required
from .context import db, settings

bp = Blueprint("dataset_export", __name__, url_prefix="/admin/export")


def _batch_id() -> int | None:
    ref = request.args.get("batch", "").strip()
    if not ref:
        return None
    with db() as s:
        found = find_batch(s, ref)
        if found is None:
            raise NotFound(f"no batch named or numbered {ref!r}")
        return found.id


def _suffix(batch_id: int | None) -> str:
    return f"-batch-{batch_id}" if batch_id else ""


@bp.get("/label-studio")
@admin_required
def label_studio():
    """Tasks JSON whose images load from this web UI (Label Studio's browser must be signed in
    here, or pass ``?image_url=`` with ``{id}``/``{sha256}`` for another image server)."""
    batch_id = _batch_id()
    template = request.args.get("image_url", "").strip()
    if template:
        try:
            template.format(id=1, sha256="0" * 64)
        except (KeyError, IndexError, ValueError):
            raise BadRequest("image_url may only contain {id} and {sha256} in braces") from None
        to_url = lambda row: template.format(id=row["image_id"], sha256=row["sha256"])  # noqa: E731
    else:
        base = url_for("images.full", image_id=0, _external=True)[:-1]
        to_url = lambda row: f"{base}{row['image_id']}"  # noqa: E731

    def generate():
        with db() as s:
            yield from iter_tasks_json(s, to_url, batch_id)

    resp = Response(stream_with_context(generate()), mimetype="application/json")
    resp.headers["Content-Disposition"] = (
        f'attachment; filename="verge-label-studio{_suffix(batch_id)}.json"')
    resp.headers["Cache-Control"] = "no-store"
    return resp


@bp.get("/dataset")
@admin_required
def dataset():
    """``?format=imagefolder|hf[&split=train=0.8,val=0.2][&batch=B][&embeddings=1]``: a zip of
    the folder ``verge export --format FORMAT DIR`` writes."""
    fmt = request.args.get("format", "").strip().lower()
    if fmt not in DATASET_FORMATS:
        raise BadRequest(f"format must be {' or '.join(DATASET_FORMATS)}")
    try:
        splits = parse_split(request.args.get("split", "").strip())
    except ExportError as exc:
        raise BadRequest(str(exc)) from None
    embeddings = request.args.get("embeddings", "") in ("1", "on", "true")
    batch_id = _batch_id()
    work = Path(tempfile.mkdtemp(prefix="verge-export-"))
    try:
        with db() as s:
            write_dataset(s, BlobStore(settings().resolved_blob_dir), work / fmt, fmt, batch_id, splits,
                          embeddings and fmt == "hf")
        archive = work / "export.zip"
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:  # images are compressed already
            for path in sorted((work / fmt).rglob("*")):
                if path.is_file():
                    zf.write(path, path.relative_to(work / fmt).as_posix())
        fh = open(archive, "rb")
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    resp = send_file(fh, mimetype="application/zip", as_attachment=True,
                     download_name=f"verge-{fmt}{_suffix(batch_id)}.zip")
    resp.headers["Cache-Control"] = "no-store"
    resp.call_on_close(lambda: (fh.close(), shutil.rmtree(work, ignore_errors=True)))
    return resp
