"""Read-only views for the web UI and the API: browsing images, an image's history, batches
with progress, the dashboard's aggregates, label listings. Lists page by key (``id < after``),
never by OFFSET, so page 1000 costs what page 1 costs.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import Integer, and_, cast, exists, func, select
from sqlalchemy.orm import Session, aliased

from . import queries as q
from .schema import (
    Batch, BatchImage, Image, Label, ModelVersion, Prediction, ReviewTask, User, utcnow,
)


@dataclass
class BrowseFilter:
    batch_id: int | None = None
    status: str | None = None
    predicted_class: str | None = None
    score_min: float | None = None     # p(road): the head's, else zero-shot's
    score_max: float | None = None
    routed: bool | None = None         # sent to review at least once
    labeled: bool | None = None        # has any label
    reason: str | None = None          # one routing reason, e.g. near_threshold


def _latest_prediction_id(image_id_col):
    newer = aliased(Prediction, name="newest")
    return (select(func.max(newer.id)).where(newer.image_id == image_id_col)
            .correlate_except(newer).scalar_subquery())


def score_expr(pred=Prediction):
    return func.coalesce(pred.p_road, pred.zs_p_road)


def browse_images(session: Session, f: BrowseFilter, after: int | None = None,
                  limit: int = 60) -> list[tuple[Image, Prediction | None, int]]:
    """Images newest first with their latest prediction and label count, ``limit`` per page;
    ``after`` is the last image id of the previous page."""
    labels = (select(func.count()).where(Label.image_id == Image.id)
              .correlate(Image).scalar_subquery())
    stmt = (select(Image, Prediction, labels)
            .outerjoin(Prediction, and_(Prediction.image_id == Image.id,
                                        Prediction.id == _latest_prediction_id(Image.id))))
    if after is not None:
        stmt = stmt.where(Image.id < after)
    if f.batch_id is not None:
        stmt = stmt.where(exists().where(BatchImage.image_id == Image.id,
                                         BatchImage.batch_id == f.batch_id))
    if f.status:
        stmt = stmt.where(Image.status == f.status)
    if f.predicted_class:
        stmt = stmt.where(Prediction.predicted_class == f.predicted_class)
    if f.score_min is not None:
        stmt = stmt.where(score_expr() >= f.score_min)
    if f.score_max is not None:
        stmt = stmt.where(score_expr() <= f.score_max)
    if f.routed is not None:
        routed = exists().where(ReviewTask.image_id == Image.id)
        stmt = stmt.where(routed if f.routed else ~routed)
    if f.labeled is not None:
        labeled = exists().where(Label.image_id == Image.id)
        stmt = stmt.where(labeled if f.labeled else ~labeled)
    if f.reason:
        stmt = stmt.where(exists().where(
            ReviewTask.image_id == Image.id,
            ("," + ReviewTask.reasons + ",").contains(f",{f.reason},", autoescape=True)))
    return [tuple(r) for r in session.execute(stmt.order_by(Image.id.desc()).limit(limit))]


def image_history(session: Session, image_id: int) -> dict | None:
    """One image with everything verge knows about it, oldest first."""
    image = session.get(Image, image_id)
    if image is None:
        return None
    batches = session.execute(
        select(Batch, BatchImage.source_name, BatchImage.added_at)
        .join(BatchImage, BatchImage.batch_id == Batch.id)
        .where(BatchImage.image_id == image_id).order_by(Batch.id)).all()
    predictions = session.execute(
        select(Prediction, ModelVersion).outerjoin(ModelVersion,
                                                   ModelVersion.id == Prediction.model_version_id)
        .where(Prediction.image_id == image_id).order_by(Prediction.id)).all()
    tasks = list(session.scalars(select(ReviewTask).where(ReviewTask.image_id == image_id)
                                 .order_by(ReviewTask.id)))
    labels = session.execute(
        select(Label, User.name).outerjoin(User, User.id == Label.user_id)
        .where(Label.image_id == image_id).order_by(Label.id)).all()
    return {"image": image, "batches": batches, "predictions": predictions, "tasks": tasks,
            "labels": labels}


# --------------------------------------------------------------------------- batches
def batches_page(session: Session, before: int | None = None, limit: int = 50) -> list[tuple[Batch, dict]]:
    """Batches newest first, with the progress counts of ``queries.batch_counts``."""
    stmt = select(Batch).order_by(Batch.id.desc()).limit(limit)
    if before is not None:
        stmt = stmt.where(Batch.id < before)
    batches = list(session.scalars(stmt))
    counts = q.batch_counts(session, [b.id for b in batches]) if batches else {}
    empty = {"total": 0, "registered": 0, "queued": 0, "scored": 0, "failed": 0, "routed": 0}
    return [(b, counts.get(b.id, empty)) for b in batches]


def batch_status(session: Session, ref: str | int) -> dict | None:
    """The same keys as ``verge status BATCH --json``."""
    batch = q.find_batch(session, ref)
    if batch is None:
        return None
    counts = q.batch_counts(session, [batch.id]).get(batch.id, {})
    labeled = session.scalar(
        select(func.count(func.distinct(Label.image_id)))
        .join(BatchImage, BatchImage.image_id == Label.image_id)
        .where(BatchImage.batch_id == batch.id, Label.user_id.is_not(None)))
    return {"batch": batch.name, "batch_id": batch.id, "source": batch.source,
            "created_at": batch.created_at, "total": counts.get("total", 0),
            "queued": counts.get("queued", 0) + counts.get("registered", 0),
            "scored": counts.get("scored", 0), "failed": counts.get("failed", 0),
            "routed": counts.get("routed", 0), "labeled": labeled or 0,
            "failures": [{"name": n, "reason": r} for n, r in q.failed_images(session, batch.id)]}


# --------------------------------------------------------------------------- labels
def list_labels(session: Session, after: int | None = None, limit: int = 100,
                batch_id: int | None = None, user_id: int | None = None,
                reviewed_only: bool = True) -> list[tuple[Label, str | None]]:
    """Labels oldest first (``after`` is the last label id already seen), with reviewer names."""
    stmt = (select(Label, User.name).outerjoin(User, User.id == Label.user_id)
            .order_by(Label.id).limit(limit))
    if after is not None:
        stmt = stmt.where(Label.id > after)
    if reviewed_only:
        stmt = stmt.where(Label.user_id.is_not(None))
    if user_id is not None:
        stmt = stmt.where(Label.user_id == user_id)
    if batch_id is not None:
        stmt = stmt.where(exists().where(BatchImage.image_id == Label.image_id,
                                         BatchImage.batch_id == batch_id))
    return [tuple(r) for r in session.execute(stmt)]


# --------------------------------------------------------------------------- dashboard
def model_versions(session: Session) -> list[ModelVersion]:
    return list(session.scalars(select(ModelVersion).order_by(ModelVersion.id.desc())))


def _bucket(session: Session, expr, bins: int):
    scaled = expr * bins
    if session.get_bind().dialect.name == "postgresql":
        return cast(func.floor(scaled), Integer)
    return cast(scaled, Integer)  # SQLite's CAST truncates, which is floor for p >= 0


def histogram(session: Session, expr, where, bins: int = 20) -> list[int]:
    """Counts of ``expr`` (a probability) in ``bins`` equal bins over [0, 1]."""
    bucket = _bucket(session, expr, bins)
    counts = [0] * bins
    for b, n in session.execute(select(bucket, func.count()).where(where, expr.is_not(None))
                                .group_by(bucket)):
        counts[min(max(int(b), 0), bins - 1)] += n
    return counts


def dashboard(session: Session, model_version_id: int | None, bins: int = 20,
              days: int = 30) -> dict:
    """Histograms of the head's and zero-shot's p(road) over the predictions of one model version
    (``None``: the zero-shot-only predictions), agreement rates, and labels per day."""
    which = (Prediction.model_version_id.is_(None) if model_version_id is None
             else Prediction.model_version_id == model_version_id)
    classes = ["field", "road"]
    if model_version_id is not None:
        mv = session.get(ModelVersion, model_version_id)
        classes = list(mv.classes) if mv else classes
    head_hist = histogram(session, Prediction.p_road, which, bins)
    zs_hist = histogram(session, Prediction.zs_p_road, which, bins)
    n, agree = session.execute(select(
        func.count(), func.sum(cast(Prediction.predicted_class == Prediction.zs_class, Integer)))
        .where(which, Prediction.p_road.is_not(None))).one()
    human = Label.user_id.is_not(None)

    def vs_reviewers(col, judged: list[str]) -> dict:
        total, same = session.execute(
            select(func.count(), func.sum(cast(col == Label.cls, Integer)))
            .join(Label, Label.image_id == Prediction.image_id)
            .where(which, human, Label.cls.in_(judged))).one()
        left_out = session.scalar(
            select(func.count()).select_from(Prediction)
            .join(Label, Label.image_id == Prediction.image_id)
            .where(which, human, Label.cls.not_in(judged)))
        return {"n": total or 0, "agree": same or 0, "left_out": left_out or 0}

    since = utcnow() - dt.timedelta(days=days)
    day = func.date(Label.created_at)
    per_day = {str(d): c for d, c in session.execute(
        select(day, func.count()).where(human, Label.created_at >= since).group_by(day))}
    today = utcnow().date()
    by_class = dict(session.execute(select(Label.cls, func.count()).where(human)
                                    .group_by(Label.cls)).all())
    return {
        "bins": bins, "head_hist": head_hist, "zs_hist": zs_hist,
        "predictions": sum(zs_hist), "has_head": model_version_id is not None,
        "head_vs_zs": {"n": n or 0, "agree": agree or 0},
        "head_vs_reviewers": (vs_reviewers(Prediction.predicted_class, classes)
                              if model_version_id is not None else None),
        "zs_vs_reviewers": vs_reviewers(Prediction.zs_class, ["field", "road"]),
        "labels_per_day": [(str(today - dt.timedelta(days=i)),
                            per_day.get(str(today - dt.timedelta(days=i)), 0))
                           for i in range(days - 1, -1, -1)],
        "labels_by_class": by_class,
    }
