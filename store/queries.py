"""The queries the rest of verge runs. Bulk statements, one round trip per table per call; no
per-image queries in loops. Every function takes the caller's session: the caller owns the
transaction, so a chunk's writes land together or not at all.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import NamedTuple, Sequence

import numpy as np
from sqlalchemy import DateTime, Integer, any_, bindparam, case, func, or_, select, text, update
from sqlalchemy.dialects.postgresql import ARRAY as PG_ARRAY
from sqlalchemy.orm import Session, aliased

from . import embedding_copy
from .pausepoints import reach
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


def insert_new(session: Session, model, rows: list[dict], *returning) -> list:
    """INSERT ... ON CONFLICT DO NOTHING ... RETURNING ``returning``: the rows this call actually
    wrote (a concurrent writer's rows are not among them), so that only those get their follow-up
    writes. Rows come back in no particular order: key them by a unique column."""
    if not rows:
        return []
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    stmt = insert(model.__table__).on_conflict_do_nothing().returning(*returning)
    return [row for part in _chunks(rows) for row in session.connection().execute(stmt, part)]


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
    reach("register.before_insert")
    status = "queued" if queue else "registered"
    # Only the rows this call wrote are new: a concurrent registration of the same file may have
    # inserted it since ``before`` was read, and then it is that registration's to enqueue.
    created = {sha for _, sha in insert_new(session, Image, [
        {"sha256": sha, "storage_key": sha, "source_name": name[:500], "size_bytes": size,
         "status": status, "attempts": 0, "created_at": now}
        for sha, (name, size) in first_name.items() if sha not in before], IM.c.id, IM.c.sha256)}
    by_sha = _ids_by_sha(session, shas)
    out = Registered(batch_id or 0)
    out.image_ids = [by_sha[sha] for _, sha, _ in files]
    out.new_ids = [by_sha[sha] for sha in shas if sha in created]
    if batch_id is not None:
        insert_ignore(session, BatchImage, [
            {"batch_id": batch_id, "image_id": by_sha[sha], "source_name": name[:500], "added_at": now}
            for sha, (name, _) in first_name.items()])
    if queue:  # registered -> queued by whichever registration flips it (the UPDATE says)
        known = [by_sha[s] for s in shas if s not in created]
        waiting = [i for part in _chunks(known) for i in session.scalars(
            update(Image).where(Image.id.in_(part), Image.status == "registered")
            .values(status="queued").returning(Image.id))]
        out.to_score = out.new_ids + waiting
    return out


def _ids_by_sha(session: Session, shas: Sequence[str]) -> dict[str, int]:
    found: dict[str, int] = {}
    for part in _chunks(list(shas)):
        found.update(session.execute(select(Image.sha256, Image.id).where(Image.sha256.in_(part))).all())
    return found


def find_batch(session: Session, ref: str | int) -> Batch | None:
    """A batch by id (ASCII digits within the integer column's 32 bits) or else by name."""
    if isinstance(ref, int) or re.fullmatch(r"[0-9]{1,10}", str(ref)) and int(ref) < 2**31:
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
    """Retire the active head and activate ``version_id`` in the caller's one transaction, under
    the active-head guard (store/active_head.py) held until that transaction ends."""
    from . import active_head

    active_head.hold(session, exclusive=True)
    session.execute(update(ModelVersion).where(ModelVersion.state == "active")
                    .values(state="retired"))
    session.flush()
    from .clock import db_now

    session.execute(update(ModelVersion).where(ModelVersion.id == version_id)
                    .values(state="active", activated_at=db_now(session)))


def head_checkpoint(session: Session, version_id: int) -> bytes | str:
    """A model version's checkpoint: its bytes, kept in the database, or (versions recorded
    before checkpoints moved there) the file path they were saved to."""
    data, path = session.execute(select(ModelVersion.checkpoint, ModelVersion.path)
                                 .where(ModelVersion.id == version_id)).one()
    return bytes(data) if data is not None else path


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
                     page: int = 20_000, on_page=None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The stored embeddings of ``image_ids`` read straight into one float32 matrix, in image id
    order: (ids found, matrix with a row per id found, their sha256). One allocation and no dict
    of vectors, so a million labels cost the matrix (2 GB at 512-d) and little more; ids without
    an embedding from ``encoder`` are left out. ``on_page()`` is called after each page of
    ``page`` ids (a long read renews its job's lease there)."""
    ids = np.unique(np.asarray(list(image_ids), dtype=np.int64))
    found = np.empty(len(ids), np.int64)
    X: np.ndarray | None = None
    shas: list[str] = []
    n = 0
    postgres = session.get_bind().dialect.name == "postgresql"
    for i in range(0, len(ids), page):
        got = embedding_copy.read_page(session, ids[i:i + page].tolist(), encoder) if postgres else None
        if got is not None and len(got[0]):  # one binary COPY of the page (store/embedding_copy.py)
            if X is None:  # untouched rows of np.empty cost no memory
                X = np.empty((len(ids), got[1].shape[1]), np.float32)
            X[n:n + len(got[0])] = got[1]
            found[n:n + len(got[0])] = got[0]
            shas.extend(got[2])
            n += len(got[0])
        for match in (() if got is not None else _id_in(session, Embedding.image_id, ids[i:i + page].tolist())):
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
        if on_page is not None:
            on_page()
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


PT = Prediction.__table__


def _insert_predictions(session: Session, predictions: list[dict], now) -> list:
    """Insert prediction rows from the scorer's dicts (which also carry the routing
    ``priority``); returns the rows written, in the order given. An image that already has a
    prediction from that version (a concurrent delivery of the chunk, a concurrent re-score)
    keeps it, and its row is not among those returned."""
    if not predictions:
        return []
    if session.get_bind().dialect.name == "postgresql":
        found = session.execute(_INSERT_PREDICTIONS_PG, {
            col: [json.dumps(p.get(col)) if col in _JSON_COLS and p.get(col) is not None else p.get(col)
                  for p in predictions]
            for col in _PRED_COLS if col != "created_at"} | {"created_at": [now] * len(predictions)})
    else:
        found = insert_new(session, Prediction, [
            {**{k: v for k, v in p.items() if k != "priority"}, "created_at": now} for p in predictions],
            PT.c.id, PT.c.image_id, PT.c.routed, PT.c.reasons)
    written = {row.image_id: row for row in found}
    return [written[p["image_id"]] for p in predictions if p["image_id"] in written]


# Postgres: one INSERT ... SELECT FROM unnest(arrays) per call, whatever the row count: a
# multi-row VALUES list of thousands of rows cost more to build and parse than to write
_PRED_TYPES = {"image_id": "int", "model_version_id": "int", "encoder": "text", "head_probs": "json",
               "p_road": "float8", "zs_probs": "json", "zs_p_road": "float8", "predicted_class": "text",
               "zs_class": "text", "routed": "bool", "reasons": "text", "created_at": "timestamptz"}
_PRED_COLS = tuple(_PRED_TYPES)
_JSON_COLS = {"head_probs", "zs_probs"}
_INSERT_PREDICTIONS_PG = text(
    f"INSERT INTO prediction ({', '.join(_PRED_COLS)}) SELECT * FROM unnest("
    + ", ".join(f"CAST(:{c} AS {t}[])" for c, t in _PRED_TYPES.items())
    + ") ON CONFLICT DO NOTHING RETURNING id, image_id, routed, reasons")


class Recorded(NamedTuple):
    written: int   # predictions this call wrote (images another writer scored first are not)
    routed: int    # review tasks opened


def record_predictions(session: Session, predictions: list[dict], sizes: dict[int, tuple[int, int]]) -> Recorded:
    """Insert predictions, open review tasks for routed ones, mark the images scored: only for the
    predictions this call wrote, so a concurrent writer of one image costs nothing else.

    Each prediction dict carries Prediction's columns plus ``priority``.
    """
    if not predictions:
        return Recorded(0, 0)
    now = utcnow()
    rows = _insert_predictions(session, predictions, now)
    priority = {p["image_id"]: p["priority"] for p in predictions}
    routed = [(row, priority[row.image_id]) for row in rows if row.routed]
    if routed:
        insert_ignore(session, ReviewTask, [  # the partial unique index keeps one open task per image
            {"image_id": row.image_id, "prediction_id": row.id, "state": "open",
             "reasons": row.reasons, "priority": float(priority), "created_at": now, "updated_at": now}
            for row, priority in routed])
    if not rows:
        return Recorded(0, 0)
    session.connection().execute(_SCORED, [  # and point each image at its new prediction
        {"b_image": row.image_id, "b_now": now, "b_pred": row.id,
         "b_width": sizes.get(row.image_id, (None, None))[0],
         "b_height": sizes.get(row.image_id, (None, None))[1]}
        for row in rows])
    return Recorded(len(rows), len(routed))


class RescoreItem(NamedTuple):
    task_id: int
    id: int                 # the image's (what the scorer's ``predict`` reads, with sha256)
    sha256: str
    current_version: int | None  # the model version of the image's current prediction


def rescore_page(session: Session, human_reasons: Sequence[str], after_task_id: int,
                 limit: int) -> list[RescoreItem]:
    """Open (unclaimed) tasks with ids above ``after_task_id``, at most ``limit`` of them, in id
    order: one bounded page of a re-score. Only tasks routed for reasons a better model can
    settle, i.e. none of ``human_reasons`` (audit samples and suspect labels wait for a person
    regardless)."""
    q = (select(ReviewTask.id, ReviewTask.image_id, Image.sha256, Prediction.model_version_id)
         .join(Image, Image.id == ReviewTask.image_id)
         .outerjoin(Prediction, Prediction.id == Image.latest_prediction_id)
         .where(ReviewTask.state == "open", ReviewTask.id > after_task_id)
         .order_by(ReviewTask.id).limit(limit))
    for reason in human_reasons:
        q = q.where(ReviewTask.reasons.not_like(f"%{reason}%"))
    return [RescoreItem(*row) for row in session.execute(q)]


RT = ReviewTask.__table__


def apply_rescore(session: Session, predictions: list[dict], version_id: int,
                  task_of_image: dict[int, int] | None = None) -> int:
    """Record re-score predictions; resolve the tasks the new head no longer routes, refresh the
    rest. ``task_of_image`` names the task read for each image (default: its open task).
    Returns the number of tasks resolved.

    Every task write is conditional on the task still being open: a claim or a label that landed
    since the tasks were read wins, and the re-score leaves that task alone. An image that
    already has a prediction from this version (a concurrent re-score or chunk wrote it) keeps
    that one; the task is pointed at it."""
    if not predictions:
        return 0
    rows = _insert_predictions(session, predictions, utcnow())
    point_to_latest(session, rows)
    image_ids = [p["image_id"] for p in predictions]
    pred_id = {row.image_id: row.id for row in rows}
    missing = [i for i in image_ids if i not in pred_id]
    for ids_match in _id_in(session, PT.c.image_id, missing):
        pred_id.update(session.execute(select(PT.c.image_id, PT.c.id).where(
            PT.c.model_version_id == version_id, ids_match)).all())
    if task_of_image is None:
        task_of_image = {i: t for ids_match in _id_in(session, RT.c.image_id, image_ids)
                         for i, t in session.execute(select(RT.c.image_id, RT.c.id).where(
                             RT.c.state == "open", ids_match))}
    now = utcnow()
    settled = [task_of_image[p["image_id"]] for p in predictions
               if not p["routed"] and p["image_id"] in task_of_image and p["image_id"] in pred_id]
    resolved = 0
    this_version = (select(PT.c.id).where(PT.c.image_id == RT.c.image_id,
                                          PT.c.model_version_id == version_id).scalar_subquery())
    for ids_match in _id_in(session, RT.c.id, settled):
        resolved += len(session.execute(
            update(RT).where(ids_match, RT.c.state == "open")
            .values(state="resolved", resolved_by_version_id=version_id, prediction_id=this_version,
                    lease_owner=None, lease_expires_at=None, updated_at=now)
            .returning(RT.c.id)).all())
    refreshed = [{"b_task": task_of_image[p["image_id"]], "b_pred": pred_id[p["image_id"]],
                  "b_reasons": p["reasons"], "b_priority": float(p["priority"]), "b_now": now}
                 for p in predictions
                 if p["routed"] and p["image_id"] in task_of_image and p["image_id"] in pred_id]
    if refreshed:
        session.connection().execute(_REFRESH, refreshed)
    return resolved


_REFRESH = (update(RT).where(RT.c.id == bindparam("b_task", type_=Integer), RT.c.state == "open")
            .values(prediction_id=bindparam("b_pred", type_=Integer), reasons=bindparam("b_reasons"),
                    priority=bindparam("b_priority"),
                    updated_at=bindparam("b_now", type_=DateTime(timezone=True))))


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
        .values(state="open", resolved_by_version_id=None, lease_owner=None, lease_expires_at=None,
                updated_at=utcnow()))
    return res.rowcount or 0


def restore_predictions(session: Session, left_id: int, restored_id: int) -> None:
    """Rolling back from head ``left_id`` to ``restored_id``: every image whose current
    prediction came from the head being left points back at the restored head's prediction
    (else its newest prediction from any other head), and so do its open and claimed tasks.
    Images only the left head ever scored keep that prediction until a re-score replaces it."""
    P2 = PT.alias("other")
    from_left = select(PT.c.id).where(PT.c.model_version_id == left_id)
    restored = func.coalesce(
        select(P2.c.id).where(P2.c.image_id == IM.c.id, P2.c.model_version_id == restored_id)
        .scalar_subquery(),
        select(func.max(P2.c.id)).where(
            P2.c.image_id == IM.c.id,
            or_(P2.c.model_version_id.is_(None), P2.c.model_version_id != left_id)).scalar_subquery())
    session.execute(update(IM).where(IM.c.latest_prediction_id.in_(from_left), restored.is_not(None))
                    .values(latest_prediction_id=restored))
    current = (select(IM.c.latest_prediction_id).where(IM.c.id == RT.c.image_id)
               .correlate(RT).scalar_subquery())
    reasons = (select(P2.c.reasons).where(P2.c.id == IM.c.latest_prediction_id, IM.c.id == RT.c.image_id,
                                          P2.c.routed.is_(True))
               .correlate(RT).scalar_subquery())
    session.execute(update(RT).where(RT.c.state.in_(("open", "claimed")),
                                     RT.c.prediction_id.in_(from_left),
                                     current.not_in(from_left))
                    .values(prediction_id=current, reasons=func.coalesce(reasons, RT.c.reasons),
                            updated_at=utcnow()))


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
    q = (select(BatchImage, Image, Prediction)
         .join(Image, Image.id == BatchImage.image_id)
         .outerjoin(Prediction, Prediction.id == Image.latest_prediction_id)
         .where(BatchImage.batch_id == batch_id)
         .order_by(BatchImage.source_name))
    return list(session.execute(q).tuples())
