"""Uploaded files -> ``workers.submission.submit_items``: the one way images get in, so the web
upload and the API dedup, size-check and report bad files exactly as ``verge submit`` does."""
from __future__ import annotations

from pathlib import PurePosixPath

from werkzeug.datastructures import FileStorage
from werkzeug.exceptions import BadRequest

from verge.settings import Settings
from workers.submission import IMAGE_SUFFIXES, SubmitResult, submit_items

MAX_BATCH_NAME = 200


def batch_name(raw: str | None) -> str | None:
    name = " ".join((raw or "").split())
    if len(name) > MAX_BATCH_NAME:
        raise BadRequest(f"a batch name has at most {MAX_BATCH_NAME} characters")
    return name or None


def submit_uploads(settings: Settings, files: list[FileStorage], batch: str | None,
                   source: str) -> SubmitResult:
    """Files picked one by one are all submitted (bad ones are recorded as failed with a reason,
    as with named files on the command line); files that came from a picked folder (their name
    has a folder part) follow the folder rule: image suffixes only, hidden entries skipped."""
    items, skipped = [], []
    for fs in files:
        if not fs or not fs.filename:
            continue
        name = fs.filename.replace("\\", "/")
        path = PurePosixPath(name)
        if any(part.startswith(".") for part in path.parts):
            skipped.append((name, "hidden file"))
            continue
        if len(path.parts) > 1 and path.suffix.lower() not in IMAGE_SUFFIXES:
            skipped.append((name, "not an image file name (folders take image suffixes only)"))
            continue
        items.append((name, fs.read))
    if not items and not skipped:
        raise BadRequest("no files were uploaded: choose one or more images")
    return submit_items(settings, items, batch, source=source, skipped=skipped)
