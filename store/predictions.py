"""Predictions: what a head (and the zero-shot judge) said about an image, and the pointer
``image.latest_prediction_id`` to the one that stands. A chunk's scores are recorded in one call
(``record_predictions``), a re-score's in another (``apply_rescore``); the review tasks either
opens or settles are written by store/review.py.

``image.latest_prediction_id`` moves forward only (to a higher prediction id): of two
transactions recording predictions for one image, the later row wins whichever commits first (on
Postgres the second UPDATE waits for the first's row lock and re-reads the row). The one
exception is a rollback, which points images back at the restored head's prediction
(``point_back``).
"""
from __future__ import annotations

import json
from typing import NamedTuple, Sequence

from sqlalchemy import DateTime, Integer, bindparam, case, func, or_, select, text, update
from sqlalchemy.orm import Session

from . import review
from .schema import Image, Prediction, utcnow
from .sql import chunks, id_in, insert_new

IMAGES = Image.__table__
PREDICTIONS = Prediction.__table__

# Prebuilt once (compiled and cached by SQLAlchemy), run as one executemany per call.
_IMAGE_ID = bindparam("b_image", type_=Integer)
_PREDICTION_ID = bindparam("b_pred", type_=Integer)
_PREDICTION_IS_NEWER = or_(IMAGES.c.latest_prediction_id.is_(None),
                           IMAGES.c.latest_prediction_id < _PREDICTION_ID)
_POINT_IMAGE_AT_NEWER_PREDICTION = (
    update(IMAGES).where(IMAGES.c.id == _IMAGE_ID, _PREDICTION_IS_NEWER)
    .values(latest_prediction_id=_PREDICTION_ID))
_MARK_SCORED_AND_POINT = (
    update(IMAGES).where(IMAGES.c.id == _IMAGE_ID)
    .values(status="scored", error=None,
            scored_at=bindparam("b_now", type_=DateTime(timezone=True)),
            # a chunk that reused a stored embedding decoded nothing: keep the known size
            width=func.coalesce(bindparam("b_width", type_=Integer), IMAGES.c.width),
            height=func.coalesce(bindparam("b_height", type_=Integer), IMAGES.c.height),
            latest_prediction_id=case((_PREDICTION_IS_NEWER, _PREDICTION_ID),
                                      else_=IMAGES.c.latest_prediction_id)))

# Postgres: one INSERT ... SELECT FROM unnest(arrays) per call, whatever the row count: a
# multi-row VALUES list of thousands of rows cost more to build and parse than to write
_COLUMN_TYPES = {"image_id": "int", "model_version_id": "int", "encoder": "text", "head_probs": "json",
                 "p_road": "float8", "zs_probs": "json", "zs_p_road": "float8", "predicted_class": "text",
                 "zs_class": "text", "routed": "bool", "reasons": "text", "created_at": "timestamptz"}
_COLUMNS = tuple(_COLUMN_TYPES)
_JSON_COLUMNS = {"head_probs", "zs_probs"}
_INSERT_PREDICTIONS_FROM_ARRAYS = text(
    f"INSERT INTO prediction ({', '.join(_COLUMNS)}) SELECT * FROM unnest("
    + ", ".join(f"CAST(:{c} AS {t}[])" for c, t in _COLUMN_TYPES.items())
    + ") ON CONFLICT DO NOTHING RETURNING id, image_id, routed, reasons")


def already_predicted(session: Session, image_ids: Sequence[int], model_version_id: int | None) -> set[int]:
    cond = (Prediction.model_version_id.is_(None) if model_version_id is None
            else Prediction.model_version_id == model_version_id)
    return {i for part in chunks(list(image_ids))
            for i in session.scalars(select(Prediction.image_id).where(cond, Prediction.image_id.in_(part)))}


def point_to_latest(session: Session, rows: Sequence[Prediction]) -> None:
    """Keep ``image.latest_prediction_id`` right after inserting prediction ``rows`` (ids
    assigned), in the caller's transaction: one bulk UPDATE."""
    if rows:
        session.connection().execute(_POINT_IMAGE_AT_NEWER_PREDICTION,
                                     [{"b_image": r.image_id, "b_pred": r.id} for r in rows])


def insert_predictions(session: Session, predictions: list[dict], now) -> list:
    """Insert prediction rows from the scorer's dicts (which also carry the routing
    ``priority``); returns the rows written (id, image_id, routed, reasons), in the order given.
    An image that already has a prediction from that version (a concurrent delivery of the
    chunk, a concurrent re-score) keeps it, and its row is not among those returned."""
    if not predictions:
        return []
    if session.get_bind().dialect.name == "postgresql":
        found = session.execute(_INSERT_PREDICTIONS_FROM_ARRAYS, {
            col: [json.dumps(p.get(col)) if col in _JSON_COLUMNS and p.get(col) is not None else p.get(col)
                  for p in predictions]
            for col in _COLUMNS if col != "created_at"} | {"created_at": [now] * len(predictions)})
    else:
        found = insert_new(session, Prediction, [
            {**{k: v for k, v in p.items() if k != "priority"}, "created_at": now} for p in predictions],
            PREDICTIONS.c.id, PREDICTIONS.c.image_id, PREDICTIONS.c.routed, PREDICTIONS.c.reasons)
    written = {row.image_id: row for row in found}
    return [written[p["image_id"]] for p in predictions if p["image_id"] in written]


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
    rows = insert_predictions(session, predictions, now)
    priority = {p["image_id"]: p["priority"] for p in predictions}
    routed = [(row, priority[row.image_id]) for row in rows if row.routed]
    review.open_routed_tasks(session, routed, now)
    if not rows:
        return Recorded(0, 0)
    session.connection().execute(_MARK_SCORED_AND_POINT, [  # and point each image at its new prediction
        {"b_image": row.image_id, "b_now": now, "b_pred": row.id,
         "b_width": sizes.get(row.image_id, (None, None))[0],
         "b_height": sizes.get(row.image_id, (None, None))[1]}
        for row in rows])
    return Recorded(len(rows), len(routed))


def apply_rescore(session: Session, predictions: list[dict], version_id: int,
                  task_of_image: dict[int, int] | None = None) -> int:
    """Record re-score predictions; resolve the tasks the new head no longer routes, refresh the
    rest (store/review.py ``settle_rescored``). ``task_of_image`` names the task read for each
    image (default: its open task). Returns the number of tasks resolved.

    An image that already has a prediction from this version (a concurrent re-score or chunk
    wrote it) keeps that one; the task is pointed at it."""
    if not predictions:
        return 0
    rows = insert_predictions(session, predictions, utcnow())
    point_to_latest(session, rows)
    pred_id = {row.image_id: row.id for row in rows}
    missing = [p["image_id"] for p in predictions if p["image_id"] not in pred_id]
    for ids_match in id_in(session, PREDICTIONS.c.image_id, missing):
        pred_id.update(session.execute(select(PREDICTIONS.c.image_id, PREDICTIONS.c.id).where(
            PREDICTIONS.c.model_version_id == version_id, ids_match)).all())
    return review.settle_rescored(session, predictions, pred_id, version_id, task_of_image)


def point_back(session: Session, left_id: int, restored_id: int) -> None:
    """Rolling back from head ``left_id`` to ``restored_id``: every image whose current
    prediction came from the head being left points back at the restored head's prediction (else
    its newest prediction from any other head: ``image.latest_prediction_id`` cannot say which
    that is, since it points at the left head's). Images only the left head ever scored keep
    that prediction until a re-score replaces it."""
    other = PREDICTIONS.alias("other")
    from_left = select(PREDICTIONS.c.id).where(PREDICTIONS.c.model_version_id == left_id)
    restored = func.coalesce(
        select(other.c.id).where(other.c.image_id == IMAGES.c.id, other.c.model_version_id == restored_id)
        .scalar_subquery(),
        select(func.max(other.c.id)).where(
            other.c.image_id == IMAGES.c.id,
            or_(other.c.model_version_id.is_(None), other.c.model_version_id != left_id)).scalar_subquery())
    session.execute(update(IMAGES).where(IMAGES.c.latest_prediction_id.in_(from_left), restored.is_not(None))
                    .values(latest_prediction_id=restored))
