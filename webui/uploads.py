"""Uploaded files -> ``workers.submission.submit_items``: the one way images get in, so the web
upload and the API dedup and report bad files exactly as ``verge submit`` does.

A file's name is only ever stored (and shown, escaped): the bytes go to content-addressed blob
storage under their hash, so a name like ``../../etc/passwd.jpg`` is just a name. Limits: a
request over ``VERGE_MAX_UPLOAD_BYTES`` (Flask's ``MAX_CONTENT_LENGTH``) or any file over
``VERGE_MAX_FILE_BYTES`` is refused with 413 before anything is stored."""
from __future__ import annotations

import os
from pathlib import PurePosixPath

from werkzeug.datastructures import FileStorage
from werkzeug.exceptions import BadRequest, HTTPException

from verge.settings import Settings
from workers.submission import IMAGE_SUFFIXES, SubmitResult, submit_items

from .errors import _human

MAX_BATCH_NAME = 200
NAMED = 3  # oversized files named in the refusal


class FileTooLarge(HTTPException):
    code = 413


def batch_name(raw: str | None) -> str | None:
    if raw is not None and not isinstance(raw, str):
        raise BadRequest("'batch' must be a string")
    name = " ".join((raw or "").split())
    if len(name) > MAX_BATCH_NAME:
        raise BadRequest(f"a batch name has at most {MAX_BATCH_NAME} characters")
    return name or None


def _size(fs: FileStorage) -> int:
    """Bytes in an uploaded part, without reading it (werkzeug spools parts to seekable files)."""
    stream = fs.stream
    try:
        here = stream.tell()
        stream.seek(0, os.SEEK_END)
        size = stream.tell()
        stream.seek(here)
        return size
    except (AttributeError, OSError, ValueError):  # not seekable: submit_items checks the bytes
        return -1


def _short(name: str, n: int = 80) -> str:
    return name if len(name) <= n else name[: n - 1] + "…"


def submit_uploads(settings: Settings, files: list[FileStorage], batch: str | None,
                   source: str) -> SubmitResult:
    """Files picked one by one are all submitted (bad ones are recorded as failed with a reason,
    as with named files on the command line); files that came from a picked folder (their name
    has a folder part) follow the folder rule: image suffixes only, hidden entries skipped."""
    items, skipped, too_large = [], [], []
    for fs in files:
        if not fs or not fs.filename:
            continue
        name = fs.filename.replace("\\", "/")
        path = PurePosixPath(name)
        if any(part.startswith(".") and part not in (".", "..") for part in path.parts):
            skipped.append((name, "hidden file"))
            continue
        if len(path.parts) > 1 and path.suffix.lower() not in IMAGE_SUFFIXES:
            skipped.append((name, "not an image file name (folders take image suffixes only)"))
            continue
        size = _size(fs)
        if size > settings.max_file_bytes:
            too_large.append((name, size))
            continue
        items.append((name, fs.read))
    if too_large:
        listed = ", ".join(f"{_short(n)} ({_human(size)})" for n, size in too_large[:NAMED])
        more = f" and {len(too_large) - NAMED} more" if len(too_large) > NAMED else ""
        raise FileTooLarge(
            f"{'a file is' if len(too_large) == 1 else f'{len(too_large)} files are'} larger than the "
            f"per-file limit of {_human(settings.max_file_bytes)} (VERGE_MAX_FILE_BYTES): "
            f"{listed}{more}; nothing was submitted — leave {'it' if len(too_large) == 1 else 'them'} "
            f"out or raise the limit")
    if not items and not skipped:
        raise BadRequest("no files were uploaded: choose one or more images")
    return submit_items(settings, items, batch, source=source, skipped=skipped)
