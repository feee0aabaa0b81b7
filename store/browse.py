"""Read-only views for the web UI and the API: browsing images, an image's history, batches
with progress, the dashboard's aggregates, label listings. Lists page by key (``id < after``),
never by OFFSET, so page 1000 costs what page 1 costs.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import Integer, and_, cast, exists, func, or_, select
from sqlalchemy.orm import Session

from . import images
from .review import has_reason
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


def score_in(lo: float | None, hi: float | None, pred=Prediction):
    """``lo <= coalesce(p_road, zs_p_road) <= hi`` -- the head's p(road), or zero-shot's where no
    head has scored the image -- (either bound optional), spelled on the columns themselves
    so that Postgres estimates it from their statistics (the COALESCE has none: its default
    estimate, 20 times too few rows at 1M images, sent the browse query to parallel workers)."""
    def within(col):
        return and_(*([col >= lo] if lo is not None else []), *([col <= hi] if hi is not None else []))

    return or_(and_(pred.p_road.is_not(None), within(pred.p_road)),
               and_(pred.p_road.is_(None), within(pred.zs_p_road)))


def browse_images(session: Session, f: BrowseFilter, after: int | None = None,
                  limit: int = 60) -> list[tuple[Image, Prediction | None, int]]:
    """Images newest first with their latest prediction and label count, ``limit`` per page;
    ``after`` is the last image id of the previous page.

    Every filter is a per-image test (a primary-key join to the latest prediction, EXISTS probes
    by image id), so the database can walk ``image`` newest first and stop after ``limit``
    matches instead of collecting every match and sorting (bench/store.py)."""
    labels = (select(func.count()).where(Label.image_id == Image.id)
              .correlate(Image).scalar_subquery())
    stmt = (select(Image, Prediction, labels)
            .outerjoin(Prediction, Prediction.id == Image.latest_prediction_id))

    def below(col):  # the page bound, repeated inside EXISTS so a merge join starts there too
        return [col < after] if after is not None else []

    if after is not None:
        stmt = stmt.where(Image.id < after)
    if f.batch_id is not None:
        stmt = stmt.where(exists().where(BatchImage.image_id == Image.id,
                                         BatchImage.batch_id == f.batch_id))
    if f.status:
        stmt = stmt.where(Image.status == f.status)
    if f.predicted_class:
        stmt = stmt.where(Prediction.predicted_class == f.predicted_class)
    if f.score_min is not None or f.score_max is not None:
        stmt = stmt.where(score_in(f.score_min, f.score_max))
    if f.routed is not None:
        routed = exists().where(ReviewTask.image_id == Image.id, *below(ReviewTask.image_id))
        stmt = stmt.where(routed if f.routed else ~routed)
    if f.labeled is not None:
        labeled = exists().where(Label.image_id == Image.id, *below(Label.image_id))
        stmt = stmt.where(labeled if f.labeled else ~labeled)
    if f.reason:
        stmt = stmt.where(exists().where(ReviewTask.image_id == Image.id,
                                         *below(ReviewTask.image_id),
                                         has_reason(ReviewTask.reasons, f.reason)))
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
    """Batches newest first, with the progress counts of ``images.batch_counts``."""
    stmt = select(Batch).order_by(Batch.id.desc()).limit(limit)
    if before is not None:
        stmt = stmt.where(Batch.id < before)
    batches = list(session.scalars(stmt))
    counts = images.batch_counts(session, [b.id for b in batches]) if batches else {}
    empty = {"total": 0, "registered": 0, "queued": 0, "scored": 0, "failed": 0, "routed": 0}
    return [(b, counts.get(b.id, empty)) for b in batches]


FAILURES_PAGE = 100


def batch_status(session: Session, ref: str | int, failures_offset: int = 0,
                 failures_limit: int = FAILURES_PAGE) -> dict | None:
    """The same keys as ``verge status BATCH --json``; ``failures`` is one page of the failed
    images (by name), ``failures_offset`` where it starts: a batch with thousands of failures
    is never read whole for a page view."""
    batch = images.find_batch(session, ref)
    if batch is None:
        return None
    counts = images.batch_counts(session, [batch.id]).get(batch.id, {})
    labeled = session.scalar(
        select(func.count(func.distinct(Label.image_id)))
        .join(BatchImage, BatchImage.image_id == Label.image_id)
        .where(BatchImage.batch_id == batch.id, Label.user_id.is_not(None)))
    return {"batch": batch.name, "batch_id": batch.id, "source": batch.source,
            "created_at": batch.created_at, "total": counts.get("total", 0),
            "queued": counts.get("queued", 0) + counts.get("registered", 0),
            "scored": counts.get("scored", 0), "failed": counts.get("failed", 0),
            "routed": counts.get("routed", 0), "labeled": labeled or 0,
            "failures": [{"name": n, "reason": r} for n, r in
                         images.failed_images(session, batch.id, failures_limit, failures_offset)],
            "failures_offset": failures_offset}


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
    # One scan of the version's predictions gives both histograms and the head-vs-zero-shot
    # agreement: counts per (head bin, zero-shot bin, same class), at most bins^2 * 2 groups.
    head_bin = _bucket(session, Prediction.p_road, bins)
    zs_bin = _bucket(session, Prediction.zs_p_road, bins)
    same_class = Prediction.predicted_class == Prediction.zs_class
    head_hist, zs_hist = [0] * bins, [0] * bins
    n = agree = 0
    for hb, zb, same, count in session.execute(
            select(head_bin, zs_bin, same_class, func.count()).where(which)
            .group_by(head_bin, zs_bin, same_class)):
        if hb is not None:  # the head's p(road) is NULL for zero-shot-only predictions
            head_hist[min(max(int(hb), 0), bins - 1)] += count
            n += count
            agree += count if same else 0
        if zb is not None:
            zs_hist[min(max(int(zb), 0), bins - 1)] += count
    human = Label.user_id.is_not(None)
    # Reviewers against both judges in one join of the human labels with this version's
    # predictions (was four): counts per (label, head class, zero-shot class).
    pairs = session.execute(
        select(Label.cls, Prediction.predicted_class, Prediction.zs_class, func.count())
        .select_from(Label).join(Prediction, (Prediction.image_id == Label.image_id) & which)
        .where(human).group_by(Label.cls, Prediction.predicted_class, Prediction.zs_class)).all()

    def vs_reviewers(head: bool, judged: list[str]) -> dict:
        total = same = left_out = 0
        for cls, head_cls, zs_cls, count in pairs:
            if cls in judged:
                total += count
                same += count if (head_cls if head else zs_cls) == cls else 0
            else:
                left_out += count
        return {"n": total, "agree": same, "left_out": left_out}

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
        "head_vs_reviewers": (vs_reviewers(True, classes)
                              if model_version_id is not None else None),
        "zs_vs_reviewers": vs_reviewers(False, ["field", "road"]),
        "labels_per_day": [(str(today - dt.timedelta(days=i)),
                            per_day.get(str(today - dt.timedelta(days=i)), 0))
                           for i in range(days - 1, -1, -1)],
        "labels_by_class": by_class,
    }
