"""Getting images in: files or uploads -> blob storage -> image rows -> scoring tasks.

One path for the CLI, the web upload and the JSON API (objects registered where they live:
``workers.inplace``; sending the tasks: ``workers.app``). Bytes are stored content-addressed and
registered in groups (one transaction each); resubmitting a file links the existing image to the
new batch instead of scoring it again. The broker is checked before anything is written, so a
submission to a broker that is down fails with one line and leaves no half-registered batch.
"""
from __future__ import annotations

import datetime as dt
import functools
import os
import secrets
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

from store.images import get_or_create_batch, register_images
from store.blobs import open_blobs
from store.db import session_scope
from verge.settings import Settings

from .app import check_broker, enqueue

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff", ".heic",
                  ".heif", ".avif", ".jfif", ".ppm", ".pgm", ".pbm"}
GROUP = 256  # files per registration transaction: bounded memory however large the submission
STORE_THREADS = max(4, min(8, os.cpu_count() or 1))  # readers/hashers of submitted files (IO-bound)


@dataclass
class SubmitResult:
    batch_id: int
    batch: str
    submitted: int = 0        # files accepted into the batch
    new: int = 0              # images verge had not seen before
    duplicates: int = 0       # files whose bytes were already known (linked, not re-scored)
    enqueued: int = 0         # images sent to the workers
    chunks: int = 0
    skipped: list = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"batch": self.batch, "batch_id": self.batch_id, "submitted": self.submitted,
                "new": self.new, "duplicates": self.duplicates, "enqueued": self.enqueued,
                "chunks": self.chunks,
                "skipped": [{"path": str(p), "reason": r} for p, r in self.skipped]}


def _is_path_list(path: Path) -> bool:
    """A .txt/.lst file whose every non-blank line names an existing file or folder."""
    if path.suffix.lower() not in (".txt", ".lst", ".list"):
        return False
    try:
        lines = [ln.strip() for ln in path.read_text("utf-8").splitlines() if ln.strip()]
    except (OSError, UnicodeDecodeError):
        return False
    base = path.parent
    return bool(lines) and all((base / ln).exists() for ln in lines)


FOLDER_RULE = "not an image file name (named files are always submitted; folders take image suffixes only)"


def iter_files(paths: Sequence[str | Path], path_lists: Sequence[str | Path] = (),
               skipped: list | None = None) -> Iterator[str]:
    """Expand the command line lazily: files as given, folders recursively (image suffixes only,
    hidden entries skipped, names sorted per folder), and text files of paths (one per line,
    relative to the list's folder). What is not submitted goes to ``skipped`` as (path, reason).

    Folders are read with ``os.scandir``: an entry's type and inode come from the directory
    listing itself, so a plain file costs no stat call and the first files reach registration
    while the rest of the tree is still unread. A file reached twice (named twice, a hard link,
    a folder given inside another) is yielded once: de-duplicated on (st_dev, st_ino)."""
    skipped = [] if skipped is None else skipped
    seen: set[int] = set()

    def first_time(dev: int, ino: int) -> bool:
        key = (dev << 64) | ino  # one int per file: half the memory of a tuple
        if key in seen:
            return False
        seen.add(key)
        return True

    def walk(folder: str, dev: int) -> Iterator[str]:
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            skipped.append((folder, f"could not list the folder: {exc.strerror or exc}"))
            return
        subdirs = []
        for e in entries:
            if e.name.startswith("."):
                continue
            try:
                if e.is_dir():
                    subdirs.append(e)
                    continue
                if not e.is_file():
                    continue
                if os.path.splitext(e.name)[1].lower() not in IMAGE_SUFFIXES:
                    skipped.append((e.path, FOLDER_RULE))
                    continue
                if e.is_symlink():
                    st = e.stat()
                    fresh = first_time(st.st_dev, st.st_ino)
                else:  # the listing's d_ino; same device as the folder it is in
                    fresh = first_time(dev, e.inode())
            except OSError as exc:
                skipped.append((e.path, f"could not read: {exc.strerror or exc}"))
                continue
            if fresh:
                yield e.path
        del entries
        for d in subdirs:
            try:
                st = d.stat()  # a mount point or a symlinked folder has its own device
            except OSError as exc:
                skipped.append((d.path, f"could not read: {exc.strerror or exc}"))
                continue
            if first_time(st.st_dev, st.st_ino):  # a folder reached twice (or a link loop) once
                yield from walk(d.path, st.st_dev)

    def add(p: Path, explicit: bool) -> Iterator[str]:
        try:
            st = p.stat()
        except OSError:
            skipped.append((p, "no such file or folder"))
            return
        if os.path.isdir(p):
            if first_time(st.st_dev, st.st_ino):
                yield from walk(str(p), st.st_dev)
            return
        if explicit and _is_path_list(p):
            yield from read_list(p)
            return
        if first_time(st.st_dev, st.st_ino):
            yield str(p)

    def read_list(lst: Path) -> Iterator[str]:
        with open(lst, encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    yield from add(lst.parent / line.strip(), explicit=True)

    for lst in path_lists:
        lst = Path(lst)
        if not lst.is_file():
            skipped.append((lst, "path list not found"))
            continue
        yield from read_list(lst)
    for p in paths:
        yield from add(Path(p), explicit=True)


def new_batch_name() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("batch-%Y%m%d-%H%M%S-") + secrets.token_hex(2)


def submit_items(settings: Settings, items: Iterable[tuple[str, Callable[[], bytes]]], batch: str | None,
                 source: str = "cli", progress: Callable[[int], None] | None = None,
                 skipped: Sequence = ()) -> SubmitResult:
    """Submit (name, read-bytes) pairs as one batch. Unreadable or oversized files are reported
    in ``skipped`` and the rest go on.

    Files are read, hashed and stored by a few threads (hashlib and file IO release the GIL) one
    group ahead of the group being registered and enqueued, so workers get their first chunk
    after one group and a large submission keeps pace with a GPU worker."""
    check_broker(settings)
    blobs = open_blobs(settings.resolved_blob_url, STORE_THREADS)
    blobs.check()  # object storage that refuses us stops here, before a batch is recorded
    url = settings.resolved_database_url
    name = batch or new_batch_name()
    with session_scope(url) as s:
        batch_id = get_or_create_batch(s, name, source)
    # the same list: a streaming caller keeps adding what it skips while files are submitted
    result = SubmitResult(batch_id, name, skipped=skipped if isinstance(skipped, list) else list(skipped))

    def store(item):
        item_name, read = item
        try:
            data = read()
        except OSError as exc:
            return item_name, None, f"could not read: {exc.strerror or exc}"
        if len(data) > settings.max_file_bytes:
            return item_name, None, f"{len(data)} bytes exceeds VERGE_MAX_FILE_BYTES={settings.max_file_bytes}"
        return item_name, (blobs.put(data), len(data)), None

    def register(stored):
        files = []
        for item_name, blob, problem in stored:
            if problem:
                result.skipped.append((item_name, problem))
            else:
                files.append((item_name, *blob))
        with session_scope(url) as s:
            reg = register_images(s, batch_id, files, queue=True)
        result.submitted += len(files)
        result.new += len(reg.new_ids)
        result.duplicates += len(files) - len(reg.new_ids)
        result.enqueued += len(reg.to_score)
        result.chunks += enqueue(settings, reg.to_score, batch_id)
        if progress:
            progress(len(stored))

    # whole chunks per group (a group's images are enqueued together)
    group_size = max(GROUP, settings.chunk_size)
    with ThreadPoolExecutor(STORE_THREADS, thread_name_prefix="verge-submit") as pool:
        ahead = None
        for group in _groups(items, group_size):
            futures = [pool.submit(store, item) for item in group]
            if ahead is not None:
                register([f.result() for f in ahead])
            ahead = futures
        if ahead is not None:
            register([f.result() for f in ahead])
    return result


def submit_paths(settings: Settings, paths: Sequence[str | Path], batch: str | None = None,
                 path_lists: Sequence[str | Path] = (), source: str = "cli",
                 progress_factory=None) -> SubmitResult:
    """Submit what ``iter_files`` finds, streaming: registration starts with the first group of
    files, not after the whole tree was listed (the progress bar has no total)."""
    skipped: list = []
    bar = progress_factory(None) if progress_factory else None  # no total: the tree is read as it goes
    try:
        return submit_items(settings, ((p, functools.partial(_read, p))
                                       for p in iter_files(paths, path_lists, skipped)),
                            batch, source, progress=bar.update if bar is not None else None,
                            skipped=skipped)
    finally:
        if bar is not None:
            bar.close()


def _read(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


def _groups(items: Iterable, n: int) -> Iterator[list]:
    group = []
    for item in items:
        group.append(item)
        if len(group) == n:
            yield group
            group = []
    if group:
        yield group
