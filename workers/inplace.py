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
from typing import Callable, Iterable, Iterator

from sqlalchemy import select, text, update

from store.clock import database_time
from store.db import session_scope
from store.images import Registered, get_or_create_batch
from store.s3 import Listed, ObjectStoreError, check_bucket, list_objects, parse_s3_url
from store.schema import BatchImage, Image, utcnow
from store.sql import chunks, dialect_insert
from verge.settings import Settings

from .app import check_broker, publish
from .submission import IMAGE_SUFFIXES, SubmitResult, new_batch_name

GROUP = 5000  # objects per registration transaction: a few hundred kB of rows


def is_object_url(path: str) -> bool:
    return str(path).startswith("s3://")


def _is_image_key(key: str) -> bool:
    name = key.rsplit("/", 1)[-1]
    return "." in name and "." + name.rsplit(".", 1)[-1].lower() in IMAGE_SUFFIXES


# Postgres: rows as arrays through unnest -- a multi-row VALUES list of 5,000 rows costs the
# driver more to parse than the database to insert
_PG_IMAGES = text(
    "INSERT INTO image (sha256, storage_key, etag, source_name, size_bytes, status, attempts, "
    "created_at, queued_at) "
    "SELECT NULL, k, e, n, sz, 'queued', 0, :now, :stamped FROM unnest(CAST(:keys AS varchar[]), "
    "CAST(:etags AS varchar[]), CAST(:names AS varchar[]), CAST(:sizes AS integer[])) AS t(k, e, n, sz) "
    "ON CONFLICT DO NOTHING RETURNING id, storage_key, etag")
_PG_LINKS = text(
    "INSERT INTO batch_image (batch_id, image_id, source_name, added_at) "
    "SELECT :batch, i, n, :now FROM unnest(CAST(:ids AS integer[]), CAST(:names AS varchar[])) AS t(i, n) "
    "ON CONFLICT DO NOTHING")


def register_objects(session, batch_id: int, bucket: str, objects: list[Listed]) -> Registered:
    """Record objects in place (location + ETag, no hash yet), queued, and link them to the batch.
    Objects registered before (same location and ETag) are linked again, not duplicated; those
    only ``registered`` so far become queued. Returns them like ``store.images.register_images``.

    INSERT ... ON CONFLICT DO NOTHING RETURNING id, which SQLAlchemy sends as multi-row
    statements: the ids of new rows come back without a second look-up (the common case)."""
    now = utcnow()
    stamped = database_time(session)  # queued_at: on the clock the sweeper compares with
    rows = {(o.url(bucket), o.etag): o for o in objects}
    ids: dict[tuple, int] = {}
    values = [{"sha256": None, "storage_key": loc, "etag": etag, "source_name": loc[:500],
               "size_bytes": o.size, "status": "queued", "attempts": 0, "created_at": now,
               "queued_at": stamped} for (loc, etag), o in rows.items()]
    postgres = session.get_bind().dialect.name == "postgresql"
    if values and postgres:  # one statement, four array parameters: nothing for the driver to parse
        ids.update({(loc, etag): iid for iid, loc, etag in session.execute(_PG_IMAGES, {
            "keys": [v["storage_key"] for v in values], "etags": [v["etag"] for v in values],
            "names": [v["source_name"] for v in values], "sizes": [v["size_bytes"] for v in values],
            "now": now, "stamped": stamped})})
    elif values:  # one cached statement; SQLAlchemy sends the rows as multi-row INSERTs
        stmt = (dialect_insert(session)(Image).on_conflict_do_nothing()
                .returning(Image.id, Image.storage_key, Image.etag))
        ids.update({(loc, etag): iid for iid, loc, etag in session.connection().execute(stmt, values)})
    out = Registered(batch_id)
    out.new_ids = list(ids.values())
    known = [k for k in rows if k not in ids]
    waiting = []
    for part in chunks(sorted({loc for loc, _ in known})):
        for iid, loc, etag, status in session.execute(
                select(Image.id, Image.storage_key, Image.etag, Image.status)
                .where(Image.storage_key.in_(part))):
            if (loc, etag) in rows and (loc, etag) not in ids:
                ids[(loc, etag)] = iid
                if status == "registered":
                    waiting.append(iid)
    out.image_ids = [ids[k] for k in rows]
    links = [{"batch_id": batch_id, "image_id": ids[k], "source_name": k[0][:500], "added_at": now}
             for k in rows]
    if links and postgres:
        session.execute(_PG_LINKS, {"batch": batch_id, "ids": [r["image_id"] for r in links],
                                    "names": [r["source_name"] for r in links], "now": now})
    elif links:
        session.connection().execute(
            dialect_insert(session)(BatchImage).on_conflict_do_nothing()
            .returning(BatchImage.image_id), links)  # RETURNING: batched like the images
    for part in chunks(waiting):
        session.execute(update(Image).where(Image.id.in_(part), Image.status == "registered")
                        .values(status="queued", queued_at=stamped))
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
    cannot be read or holds no image under the prefix, BrokerUnavailable when the broker is down."""
    bucket, prefix = parse_s3_url(url)
    pool = settings.decode_threads
    check_bucket(bucket, pool)
    check_broker(settings)
    result = SubmitResult(0, "")
    pages = _prefetched(_pages(bucket, prefix, result, pool))
    first = next(pages, None)  # a listing that fails fails here, before a batch exists
    if first is None:
        raise ObjectStoreError(f"no image objects under {url} ({len(result.skipped)} other objects)")
    return register_pages(settings, bucket, _chain(first, pages), batch, source, progress, result)


def register_pages(settings: Settings, bucket: str, pages: Iterable[list[Listed]], batch: str | None,
                   source: str = "cli", progress: Callable[[int], None] | None = None,
                   result: SubmitResult | None = None) -> SubmitResult:
    """Register pages of listed objects of ``bucket`` as one batch: a transaction and the
    batch's scoring tasks per page."""
    db_url = settings.resolved_database_url
    result = result or SubmitResult(0, "")
    result.batch = batch or new_batch_name()
    with session_scope(db_url) as s:
        result.batch_id = get_or_create_batch(s, result.batch, source)
    for page in pages:
        with session_scope(db_url) as s:
            reg = register_objects(s, result.batch_id, bucket, page)
        result.submitted += len(page)
        result.new += len(reg.new_ids)
        result.duplicates += len(page) - len(reg.new_ids)
        result.enqueued += len(reg.to_score)
        # queued_at was stamped with the rows: the tasks alone are sent
        result.chunks += publish(settings, reg.to_score, result.batch_id)
        if progress:
            progress(len(page))
    return result


def _chain(first, rest):
    yield first
    yield from rest
