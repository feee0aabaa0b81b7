"""The queries the rest of verge runs. Bulk statements, one round trip per table per call; no
per-image queries in loops. Every function takes the caller's session: the caller owns the
transaction, so a chunk's writes land together or not at all.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from sqlalchemy import DateTime, Integer, any_, bindparam, case, func, or_, select, update
from sqlalchemy.dialects.postgresql import ARRAY as PG_ARRAY
from sqlalchemy.orm import Session, aliased

from .schema import (
    Batch, BatchImage, Embedding, Image, Label, ModelVersion, Prediction, ReviewTask, utcnow,
)

_IN_CHUNK = 900  # keeps IN lists and multi-row VALUES under every driver's parameter limits


def _chunks(seq: Sequence, n: int = _IN_CHUNK):
    for i in range(0, len(seq), n):
        yield seq[i:i + n]


def _id_in(session: Session, column, ids: Sequence[int]):
    """WHERE clauses that together mean ``column IN ids``: one ``= ANY(array)`` on Postgres (one
    statement with one parameter, whatever the number of ids: 100k embeddings read in half the
    time of 112 statements of 900 parameters), IN lists under SQLite's parameter limit there."""
    ids = list(ids)
    if not ids:
        return
    if session.get_bind().dialect.name == "postgresql":
        yield column == any_(bindparam(None, ids, type_=PG_ARRAY(Integer)))
    else:
        for part in _chunks(ids):
            yield column.in_(part)


def insert_ignore(session: Session, model, rows: list[dict]) -> None:
    """INSERT ... ON CONFLICT DO NOTHING on SQLite and Postgres: concurrent writers of the same
    row (two submitters of one file, a redelivered chunk) both succeed, and one row remains."""
    if not rows:
        return
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:  # pragma: no cover - verge supports the two
        raise RuntimeError(f"unsupported database dialect {dialect}")
    # Core executemany: one cached statement (SQLAlchemy batches the rows into multi-row
    # INSERTs on Postgres), instead of compiling a new VALUES list for every call
    session.connection().execute(insert(model.__table__).on_conflict_do_nothing(), rows)


# --------------------------------------------------------------------------- batches & images
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
    before = _ids_by_sha(session, shas)
    status = "queued" if queue else "registered"
    insert_ignore(session, Image, [
        {"sha256": sha, "storage_key": sha, "source_name": name[:500], "size_bytes": size,
         "status": status, "attempts": 0, "created_at": now}
        for sha, (name, size) in first_name.items() if sha not in before])
    by_sha = _ids_by_sha(session, shas)
    out = Registered(batch_id or 0)
    out.image_ids = [by_sha[sha] for _, sha, _ in files]
    out.new_ids = [by_sha[sha] for sha in shas if sha not in before]
    if batch_id is not None:
        insert_ignore(session, BatchImage, [
            {"batch_id": batch_id, "image_id": by_sha[sha], "source_name": name[:500], "added_at": now}
            for sha, (name, _) in first_name.items()])
    if queue:
        waiting = [i for part in _chunks([by_sha[s] for s in before])
                   for i in session.scalars(select(Image.id).where(
                       Image.id.in_(part), Image.status == "registered"))]
        for part in _chunks(waiting):
            session.execute(update(Image).where(Image.id.in_(part), Image.status == "registered")
                            .values(status="queued"))
        out.to_score = out.new_ids + waiting
    return out


def _ids_by_sha(session: Session, shas: Sequence[str]) -> dict[str, int]:
    found: dict[str, int] = {}
    for part in _chunks(list(shas)):
        found.update(session.execute(select(Image.sha256, Image.id).where(Image.sha256.in_(part))).all())
    return found


def find_batch(session: Session, ref: str | int) -> Batch | None:
    if isinstance(ref, int) or str(ref).isdigit():
        found = session.get(Batch, int(ref))
        if found:
            return found
    return session.scalar(select(Batch).where(Batch.name == str(ref)))


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


def list_batches(session: Session) -> list[Batch]:
    return list(session.scalars(select(Batch).order_by(Batch.id)))


# --------------------------------------------------------------------------- models
def active_model(session: Session) -> ModelVersion | None:
    return session.scalar(select(ModelVersion).where(ModelVersion.state == "active"))


def activate_model(session: Session, version_id: int) -> None:
    """Retire the active head and activate ``version_id`` in the caller's one transaction."""
    session.execute(update(ModelVersion).where(ModelVersion.state == "active")
                    .values(state="retired"))
    session.flush()
    session.execute(update(ModelVersion).where(ModelVersion.id == version_id)
                    .values(state="active", activated_at=utcnow()))


# --------------------------------------------------------------------------- embeddings
def pack_vector(v: np.ndarray) -> bytes:
    return np.ascontiguousarray(v, dtype="<f4").tobytes()


def unpack_vector(b: bytes) -> np.ndarray:
    return np.frombuffer(b, dtype="<f4")


def stored_embeddings(session: Session, image_ids: Sequence[int], encoder: str) -> dict[int, np.ndarray]:
    out: dict[int, np.ndarray] = {}
    for ids_match in _id_in(session, Embedding.image_id, image_ids):
        for iid, vec in session.execute(select(Embedding.image_id, Embedding.vector).where(
                Embedding.encoder == encoder, ids_match)):
            out[iid] = unpack_vector(vec)
    return out


def embedding_matrix(session: Session, image_ids: Sequence[int], encoder: str,
                     page: int = 20_000) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The stored embeddings of ``image_ids`` read straight into one float32 matrix, in image id
    order: (ids found, matrix with a row per id found, their sha256). One allocation and no dict
    of vectors, so a million labels cost the matrix (2 GB at 512-d) and little more; ids without
    an embedding from ``encoder`` are left out."""
    ids = np.unique(np.asarray(list(image_ids), dtype=np.int64))
    found = np.empty(len(ids), np.int64)
    X: np.ndarray | None = None
    shas: list[str] = []
    n = 0
    for i in range(0, len(ids), page):
        for match in _id_in(session, Embedding.image_id, ids[i:i + page].tolist()):
            for iid, vec, sha in session.execute(
                    select(Embedding.image_id, Embedding.vector, Image.sha256)
                    .join(Image, Image.id == Embedding.image_id)
                    .where(Embedding.encoder == encoder, match).order_by(Embedding.image_id)):
                v = unpack_vector(vec)
                if X is None:  # untouched rows of np.empty cost no memory
                    X = np.empty((len(ids), len(v)), np.float32)
                X[n] = v
                found[n] = iid
                shas.append(sha)
                n += 1
    if X is None:
        X = np.empty((0, 0), np.float32)
    return found[:n], X[:n], shas


def save_embeddings(session: Session, encoder: str, vectors: dict[int, np.ndarray]) -> None:
    insert_ignore(session, Embedding, [
        {"image_id": iid, "encoder": encoder, "dim": int(v.shape[0]), "vector": pack_vector(v)}
        for iid, v in vectors.items()])


# --------------------------------------------------------------------------- scoring
def images_by_id(session: Session, image_ids: Sequence[int]) -> list[Image]:
    return [im for part in _chunks(list(image_ids))
            for im in session.scalars(select(Image).where(Image.id.in_(part)).order_by(Image.id))]


def already_predicted(session: Session, image_ids: Sequence[int], model_version_id: int | None) -> set[int]:
    cond = (Prediction.model_version_id.is_(None) if model_version_id is None
            else Prediction.model_version_id == model_version_id)
    return {i for part in _chunks(list(image_ids))
            for i in session.scalars(select(Prediction.image_id).where(cond, Prediction.image_id.in_(part)))}


def count_attempt(session: Session, image_ids: Sequence[int]) -> None:
    """A worker starts on these images: one more delivery, and ``queued_at`` says when it started
    (the sweeper leaves an image alone while its chunk is recent)."""
    now = utcnow()
    for part in _chunks(list(image_ids)):
        session.execute(update(Image).where(Image.id.in_(part))
                        .values(attempts=Image.attempts + 1, queued_at=now))


def mark_failed(session: Session, errors: dict[int, str]) -> None:
    if errors:
        session.execute(update(Image), [
            {"id": iid, "status": "failed", "error": reason[:1000], "scored_at": utcnow()}
            for iid, reason in errors.items()])


# image.latest_prediction_id moves forward only (to a higher prediction id): of two transactions
# recording predictions for one image, the later row wins whichever commits first (on Postgres
# the second UPDATE waits for the first's row lock and re-reads the row).
IM = Image.__table__
_PRED = bindparam("b_pred", type_=Integer)
_NEWER = or_(IM.c.latest_prediction_id.is_(None), IM.c.latest_prediction_id < _PRED)
_POINT = (update(IM).where(IM.c.id == bindparam("b_image", type_=Integer), _NEWER)
          .values(latest_prediction_id=_PRED))
_SCORED = (update(IM).where(IM.c.id == bindparam("b_image", type_=Integer))
           .values(status="scored", error=None,
                   scored_at=bindparam("b_now", type_=DateTime(timezone=True)),
                   # a chunk that reused a stored embedding decoded nothing: keep the known size
                   width=func.coalesce(bindparam("b_width", type_=Integer), IM.c.width),
                   height=func.coalesce(bindparam("b_height", type_=Integer), IM.c.height),
                   latest_prediction_id=case((_NEWER, _PRED), else_=IM.c.latest_prediction_id)))


def point_to_latest(session: Session, rows: Sequence[Prediction]) -> None:
    """Keep ``image.latest_prediction_id`` right after inserting prediction ``rows`` (ids
    assigned), in the caller's transaction: one bulk UPDATE."""
    if rows:
        session.connection().execute(_POINT, [{"b_image": r.image_id, "b_pred": r.id} for r in rows])


def _insert_predictions(session: Session, predictions: list[dict], now) -> list[Prediction]:
    """Prediction rows from the scorer's dicts (which also carry the routing ``priority``)."""
    rows = [Prediction(**{k: v for k, v in p.items() if k != "priority"}, created_at=now)
            for p in predictions]
    session.add_all(rows)
    session.flush()  # assigns ids (one multi-row INSERT ... RETURNING)
    return rows


def record_predictions(session: Session, predictions: list[dict], sizes: dict[int, tuple[int, int]]) -> int:
    """Insert predictions, open review tasks for routed ones, mark the images scored.

    Each prediction dict carries Prediction's columns plus ``priority``. Returns tasks opened.
    """
    if not predictions:
        return 0
    now = utcnow()
    rows = _insert_predictions(session, predictions, now)
    routed = [(row, p["priority"]) for row, p in zip(rows, predictions) if row.routed]
    if routed:
        insert_ignore(session, ReviewTask, [  # the partial unique index keeps one open task per image
            {"image_id": row.image_id, "prediction_id": row.id, "state": "open",
             "reasons": row.reasons, "priority": float(priority), "created_at": now, "updated_at": now}
            for row, priority in routed])
    session.connection().execute(_SCORED, [  # and point each image at its new prediction
        {"b_image": row.image_id, "b_now": now, "b_pred": row.id,
         "b_width": sizes.get(row.image_id, (None, None))[0],
         "b_height": sizes.get(row.image_id, (None, None))[1]}
        for row in rows])
    return len(routed)


def open_model_tasks(session: Session, human_reasons: Sequence[str]) -> list[ReviewTask]:
    """Open (unclaimed) tasks routed only for reasons a better model can settle, i.e. for none
    of ``human_reasons`` (audit samples and suspect labels wait for a person regardless)."""
    q = select(ReviewTask).where(ReviewTask.state == "open")
    for reason in human_reasons:
        q = q.where(ReviewTask.reasons.not_like(f"%{reason}%"))
    return list(session.scalars(q))


def apply_rescore(session: Session, predictions: list[dict], version_id: int) -> int:
    """Record re-score predictions; resolve tasks the new head no longer routes, refresh the rest.
    Returns the number of tasks resolved."""
    if not predictions:
        return 0
    rows = _insert_predictions(session, predictions, utcnow())
    point_to_latest(session, rows)
    by_image = {row.image_id: (row, p["priority"]) for row, p in zip(rows, predictions)}
    resolved = 0
    for task in session.scalars(select(ReviewTask).where(
            ReviewTask.state == "open", ReviewTask.image_id.in_(list(by_image)))):
        row, priority = by_image[task.image_id]
        task.prediction_id = row.id
        if row.routed:
            task.reasons, task.priority = row.reasons, float(priority)
        else:
            task.state, task.resolved_by_version_id = "resolved", version_id
            resolved += 1
    return resolved


def open_review_tasks(session: Session, items: dict[int, tuple[str, float]]) -> int:
    """Open a task (reason, priority) for each image that has no open or claimed task yet.
    Returns how many were opened."""
    if not items:
        return 0
    busy = {i for part in _chunks(list(items)) for i in session.scalars(
        select(ReviewTask.image_id).where(ReviewTask.image_id.in_(part),
                                          ReviewTask.state.in_(("open", "claimed"))))}
    now = utcnow()
    rows = [{"image_id": iid, "state": "open", "reasons": reason, "priority": float(priority),
             "created_at": now, "updated_at": now}
            for iid, (reason, priority) in items.items() if iid not in busy]
    insert_ignore(session, ReviewTask, rows)
    return len(rows)


def hashes_by_id(session: Session, image_ids: Sequence[int]) -> dict[int, str]:
    return {iid: sha for ids_match in _id_in(session, Image.id, image_ids)
            for iid, sha in session.execute(select(Image.id, Image.sha256).where(ids_match))}


def reopen_resolved(session: Session, version_id: int) -> int:
    """Undo what a version's re-scoring resolved (when that version is rolled back)."""
    live = aliased(ReviewTask)
    has_live = (select(live.id).where(live.image_id == ReviewTask.image_id,
                                      live.state.in_(("open", "claimed"))).exists())
    res = session.execute(update(ReviewTask).where(
        ReviewTask.state == "resolved", ReviewTask.resolved_by_version_id == version_id, ~has_live)
        .values(state="open", resolved_by_version_id=None, updated_at=utcnow()))
    return res.rowcount or 0


# --------------------------------------------------------------------------- labels
def replace_source_labels(session: Session, source: str, labels: dict[int, str]) -> None:
    """Set the labels a non-human source (a training folder) gives; re-running replaces them."""
    ids = list(labels)
    for part in _chunks(ids):
        session.execute(Label.__table__.delete().where(Label.source == source, Label.image_id.in_(part)))
    now = utcnow()
    session.add_all([Label(image_id=i, source=source, cls=c, created_at=now) for i, c in labels.items()])


def totals(session: Session) -> dict:
    by_status = dict(session.execute(select(Image.status, func.count()).group_by(Image.status)).all())
    open_tasks = session.scalar(select(func.count()).select_from(ReviewTask)
                                .where(ReviewTask.state.in_(("open", "claimed"))))
    return {"images": sum(by_status.values()), **{s: by_status.get(s, 0) for s in
            ("registered", "queued", "scored", "failed")}, "open_review_tasks": open_tasks}


def latest_predictions(session: Session, batch_id: int) -> list[tuple[BatchImage, Image, Prediction | None]]:
    """Each image of a batch with its newest prediction (for summaries and the demo table)."""
    newest = (select(Prediction.image_id, func.max(Prediction.id).label("pid"))
              .group_by(Prediction.image_id).subquery())
    q = (select(BatchImage, Image, Prediction)
         .join(Image, Image.id == BatchImage.image_id)
         .outerjoin(newest, newest.c.image_id == Image.id)
         .outerjoin(Prediction, Prediction.id == newest.c.pid)
         .where(BatchImage.batch_id == batch_id)
         .order_by(BatchImage.source_name))
    return list(session.execute(q).tuples())
