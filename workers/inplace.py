"""Registering images where they live: ``verge submit s3://BUCKET/PREFIX/`` (and the same from
the web UI and the API).

The prefix is listed (1,000 keys a page, on a thread of its own so that listing overlaps the
database), image suffixes kept as for folders, and each object recorded by location and ETag in
large groups, one transaction and one enqueue each. No byte is downloaded here: the worker that
scores an image reads it anyway, hashes what it read and settles its identity then
(``store.identity``). A bucket that is missing, refuses these credentials or cannot be reached
stops the submission before anything is registered.
"""
from __future__ import annotations

import queue
import threading
from typing import Callable, Iterator

from sqlalchemy import select

from store import queries as q
from store.db import session_scope
from store.queries import _chunks, insert_ignore
from store.s3 import Listed, ObjectStoreError, check_bucket, list_objects, parse_s3_url
from store.schema import BatchImage, Image
from verge.settings import Settings

from .submission import IMAGE_SUFFIXES, SubmitResult, check_broker, enqueue, new_batch_name

GROUP = 5000  # objects per registration transaction: a few hundred kB of rows


def is_object_url(path: str) -> bool:
    return str(path).startswith("s3://")


def _is_image_key(key: str) -> bool:
    name = key.rsplit("/", 1)[-1]
    return "." in name and "." + name.rsplit(".", 1)[-1].lower() in IMAGE_SUFFIXES


def register_objects(session, batch_id: int, bucket: str, objects: list[Listed]) -> q.Registered:
    """Record objects in place (location + ETag, no hash yet) and link them to the batch. Objects
    registered before (same location and ETag) are linked again, not duplicated; those only
    ``registered`` so far become queued. Returns them like ``queries.register_images``."""
    now = q.utcnow()
    rows = {(o.url(bucket), o.etag): o for o in objects}
    locations = sorted({loc for loc, _ in rows})

    def known() -> dict:
        found = {}
        for part in _chunks(locations):
            found.update({(loc, etag): (iid, status) for iid, loc, etag, status in session.execute(
                select(Image.id, Image.storage_key, Image.etag, Image.status)
                .where(Image.storage_key.in_(part)))})
        return found

    before = known()
    insert_ignore(session, Image, [
        {"sha256": None, "storage_key": loc, "etag": etag, "source_name": loc[:500],
         "size_bytes": o.size, "status": "queued", "attempts": 0, "created_at": now}
        for (loc, etag), o in rows.items() if (loc, etag) not in before])
    after = known()
    out = q.Registered(batch_id)
    out.image_ids = [after[k][0] for k in rows]
    out.new_ids = [after[k][0] for k in rows if k not in before]
    insert_ignore(session, BatchImage, [
        {"batch_id": batch_id, "image_id": after[k][0], "source_name": k[0][:500], "added_at": now}
        for k in rows])
    waiting = [iid for k, (iid, status) in before.items() if k in rows and status == "registered"]
    if waiting:
        from sqlalchemy import update

        for part in _chunks(waiting):
            session.execute(update(Image).where(Image.id.in_(part), Image.status == "registered")
                            .values(status="queued"))
    out.to_score = out.new_ids + waiting
    return out


def _prefetched(items: Iterator, depth: int = 8) -> Iterator:
    """``items`` produced on a thread of its own (S3 listing is network-bound)."""
    box: queue.Queue = queue.Queue(maxsize=depth)
    done = object()

    def run():
        try:
            for item in items:
                box.put(item)
        except BaseException as exc:  # surfaced in the consumer
            box.put(exc)
        box.put(done)

    threading.Thread(target=run, name="verge-list", daemon=True).start()
    while (item := box.get()) is not done:
        if isinstance(item, BaseException):
            raise item
        yield item


def _pages(bucket: str, prefix: str, result: SubmitResult, pool: int) -> Iterator[list[Listed]]:
    page: list[Listed] = []
    for obj in list_objects(bucket, prefix, pool):
        if obj.key.endswith("/"):  # a "folder" marker some tools create
            continue
        if not _is_image_key(obj.key):
            result.skipped.append((obj.url(bucket), "not an image file name (prefixes take image "
                                                     "suffixes only, as folders do)"))
            continue
        page.append(obj)
        if len(page) == GROUP:
            yield page
            page = []
    if page:
        yield page


def register_prefix(settings: Settings, url: str, batch: str | None = None, source: str = "cli",
                    progress: Callable[[int], None] | None = None) -> SubmitResult:
    """Register every image object under ``url`` (``s3://bucket/prefix``) as one batch and send
    scoring tasks. Raises ObjectStoreError (one line) before writing anything when the bucket
    cannot be read, BrokerUnavailable when the broker is down."""
    bucket, prefix = parse_s3_url(url)
    pool = settings.decode_threads
    check_bucket(bucket, pool)
    check_broker(settings)
    pages = _prefetched(_pages(bucket, prefix, result := SubmitResult(0, ""), pool))
    first = next(pages, None)  # a listing that fails fails here, before a batch exists
    if first is None:
        raise ObjectStoreError(f"no image objects under {url} ({len(result.skipped)} other objects)")
    db_url = settings.resolved_database_url
    name = batch or new_batch_name()
    with session_scope(db_url) as s:
        result.batch_id = q.get_or_create_batch(s, name, source)
    result.batch = name
    for page in _chain(first, pages):
        with session_scope(db_url) as s:
            reg = register_objects(s, result.batch_id, bucket, page)
        result.submitted += len(page)
        result.new += len(reg.new_ids)
        result.duplicates += len(page) - len(reg.new_ids)
        result.enqueued += len(reg.to_score)
        result.chunks += enqueue(settings, reg.to_score, result.batch_id)
        if progress:
            progress(len(page))
    return result


def _chain(first, rest):
    yield first
    yield from rest
