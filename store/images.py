"""Images and the batches they arrive in: register files already in blob storage, find a batch,
count a batch's images by status, list its failures, and the bookkeeping of a worker's delivery
(an attempt, a failure). Every function takes the caller's session: the caller owns the
transaction, so a chunk's writes land together or not at all.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Sequence

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from .clock import sql_now
from .pausepoints import reach
from .schema import Batch, BatchImage, Image, Prediction, ReviewTask, utcnow
from .sql import chunks, id_in, insert_ignore, insert_new


@dataclass
class Registered:
    batch_id: int
    image_ids: list = field(default_factory=list)     # every image of the files given, in order
    new_ids: list = field(default_factory=list)       # images this call created
    to_score: list = field(default_factory=list)      # images to enqueue now (new or registered)


def get_or_create_batch(session: Session, name: str, source: str) -> int:
    insert_ignore(session, Batch, [{"name": name, "source": source, "created_at": utcnow()}])
    return session.scalar(select(Batch.id).where(Batch.name == name))


def register_images(session: Session, batch_id: int | None, files: Sequence[tuple[str, str, int]],
                    queue: bool = True) -> Registered:
    """Record images already put in blob storage. ``files`` holds (source_name, sha256, size).

    Existing hashes are linked, not duplicated. With ``queue``, new images and those only
    registered so far (e.g. by a training folder) become ``queued`` and are returned in
    ``to_score``; images already queued, scored or failed are left as they are.
    """
    now = utcnow()
    first_name: dict[str, tuple[str, int]] = {}
    for name, sha, size in files:
        first_name.setdefault(sha, (name, size))
    shas = list(first_name)
    before = ids_by_sha(session, shas)
    reach("register.before_insert")
    status = "queued" if queue else "registered"
    # Only the rows this call wrote are new: a concurrent registration of the same file may have
    # inserted it since ``before`` was read, and then it is that registration's to enqueue.
    created = {sha for _, sha in insert_new(session, Image, [
        {"sha256": sha, "storage_key": sha, "source_name": name[:500], "size_bytes": size,
         "status": status, "attempts": 0, "created_at": now}
        for sha, (name, size) in first_name.items() if sha not in before], Image.id, Image.sha256)}
    by_sha = ids_by_sha(session, shas)
    out = Registered(batch_id or 0)
    out.image_ids = [by_sha[sha] for _, sha, _ in files]
    out.new_ids = [by_sha[sha] for sha in shas if sha in created]
    if batch_id is not None:
        insert_ignore(session, BatchImage, [
            {"batch_id": batch_id, "image_id": by_sha[sha], "source_name": name[:500], "added_at": now}
            for sha, (name, _) in first_name.items()])
    if queue:  # registered -> queued by whichever registration flips it (the UPDATE says)
        known = [by_sha[s] for s in shas if s not in created]
        waiting = [i for part in chunks(known) for i in session.scalars(
            update(Image).where(Image.id.in_(part), Image.status == "registered")
            .values(status="queued").returning(Image.id))]
        out.to_score = out.new_ids + waiting
    return out


def ids_by_sha(session: Session, shas: Sequence[str]) -> dict[str, int]:
    found: dict[str, int] = {}
    for part in chunks(list(shas)):
        found.update(session.execute(select(Image.sha256, Image.id).where(Image.sha256.in_(part))).all())
    return found


def hashes_by_id(session: Session, image_ids: Sequence[int]) -> dict[int, str]:
    return {iid: sha for ids_match in id_in(session, Image.id, image_ids)
            for iid, sha in session.execute(select(Image.id, Image.sha256).where(ids_match))}


def images_by_id(session: Session, image_ids: Sequence[int]) -> list[Image]:
    return [im for part in chunks(list(image_ids))
            for im in session.scalars(select(Image).where(Image.id.in_(part)).order_by(Image.id))]


def count_attempt(session: Session, image_ids: Sequence[int]) -> None:
    """A worker starts on these images: one more delivery, and ``queued_at`` says when it started
    (the sweeper leaves an image alone while its chunk is recent), on the database's clock."""
    now = sql_now(session)
    for part in chunks(list(image_ids)):
        session.execute(update(Image).where(Image.id.in_(part))
                        .values(attempts=Image.attempts + 1, queued_at=now))


def mark_failed(session: Session, errors: dict[int, str]) -> None:
    if errors:
        session.execute(update(Image), [
            {"id": iid, "status": "failed", "error": reason[:1000], "scored_at": utcnow()}
            for iid, reason in errors.items()])


# --------------------------------------------------------------------------- batches
def find_batch(session: Session, ref: str | int) -> Batch | None:
    """A batch by id (ASCII digits within the integer column's 32 bits) or else by name."""
    if isinstance(ref, int) or re.fullmatch(r"[0-9]{1,10}", str(ref)) and int(ref) < 2**31:
        found = session.get(Batch, int(ref))
        if found:
            return found
    return session.scalar(select(Batch).where(Batch.name == str(ref)))


def list_batches(session: Session) -> list[Batch]:
    return list(session.scalars(select(Batch).order_by(Batch.id)))


def batch_counts(session: Session, batch_ids: Sequence[int] | None = None) -> dict[int, dict]:
    """Per batch: total, queued, scored, failed, routed (images sent to review at least once)."""
    q = (select(BatchImage.batch_id, Image.status, func.count())
         .join(Image, Image.id == BatchImage.image_id)
         .group_by(BatchImage.batch_id, Image.status))
    routed_q = (select(BatchImage.batch_id, func.count(func.distinct(ReviewTask.image_id)))
                .join(ReviewTask, ReviewTask.image_id == BatchImage.image_id)
                .group_by(BatchImage.batch_id))
    if batch_ids is not None:
        q = q.where(BatchImage.batch_id.in_(batch_ids))
        routed_q = routed_q.where(BatchImage.batch_id.in_(batch_ids))
    out: dict[int, dict] = {}
    for bid, status, n in session.execute(q):
        row = out.setdefault(bid, {"total": 0, "registered": 0, "queued": 0, "scored": 0,
                                   "failed": 0, "routed": 0})
        row[status] = row.get(status, 0) + n
        row["total"] += n
    for bid, n in session.execute(routed_q):
        if bid in out:
            out[bid]["routed"] = n
    return out


def batch_progress(session: Session, batch_id: int) -> dict:
    """Images of one batch per status: the one query a progress bar polls (no routed count, no
    failure list)."""
    out = {"total": 0, "registered": 0, "queued": 0, "scored": 0, "failed": 0}
    for status, n in session.execute(select(Image.status, func.count())
                                     .join(BatchImage, BatchImage.image_id == Image.id)
                                     .where(BatchImage.batch_id == batch_id).group_by(Image.status)):
        out[status] = out.get(status, 0) + n
        out["total"] += n
    return out


def failed_images(session: Session, batch_id: int, limit: int | None = None,
                  offset: int = 0) -> list[tuple[str, str]]:
    """(name, reason) of a batch's failed images by name; a page of them with ``limit``."""
    stmt = (select(BatchImage.source_name, Image.error)
            .join(Image, Image.id == BatchImage.image_id)
            .where(BatchImage.batch_id == batch_id, Image.status == "failed")
            .order_by(BatchImage.source_name, BatchImage.image_id))
    if limit is not None:
        stmt = stmt.limit(limit).offset(offset)
    return list(session.execute(stmt).all())


def latest_predictions(session: Session, batch_id: int) -> list[tuple[BatchImage, Image, Prediction | None]]:
    """Each image of a batch with its newest prediction (for summaries and the demo table)."""
    q = (select(BatchImage, Image, Prediction)
         .join(Image, Image.id == BatchImage.image_id)
         .outerjoin(Prediction, Prediction.id == Image.latest_prediction_id)
         .where(BatchImage.batch_id == batch_id)
         .order_by(BatchImage.source_name))
    return list(session.execute(q).tuples())


def totals(session: Session) -> dict:
    """Images by status over the whole store, and the review tasks waiting (``verge status``)."""
    by_status = dict(session.execute(select(Image.status, func.count()).group_by(Image.status)).all())
    open_tasks = session.scalar(select(func.count()).select_from(ReviewTask)
                                .where(ReviewTask.state.in_(("open", "claimed"))))
    return {"images": sum(by_status.values()), **{s: by_status.get(s, 0) for s in
            ("registered", "queued", "scored", "failed")}, "open_review_tasks": open_tasks}
