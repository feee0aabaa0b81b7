"""The review queue: claim a task under a lease, label it, skip it, undo a label, release a claim.

Every write carries its own condition (``UPDATE ... WHERE state = ... AND lease_owner = ...``),
so the outcome never depends on something read earlier in another statement: two reviewers
racing for one task, a late label, a double post all resolve inside one statement.

Claim-next takes the highest-priority task that is open or whose lease has expired (an expired
lease is simply claimable again: nothing has to sweep it). On Postgres the candidate row is
picked with ``SELECT ... FOR UPDATE SKIP LOCKED`` inside the UPDATE, so concurrent claimers
skip each other's rows instead of queueing on them; on SQLite the whole UPDATE runs under the
database's single write lock, which makes the same statement atomic.

Every other write of review tasks that follows from scoring lives here too (the bottom of the
file): a chunk opens tasks for the predictions it routed, retraining for suspect labels, a
re-score resolves or refreshes them, a rollback reopens them. A task's routing reasons are read
with ``split_reasons`` and matched with ``has_reason``, here only.

The lease rule for labels (also in ``webui/README.md``):

* A label is always stored (a reviewer's click is never thrown away), once per task and
  reviewer: posting the same label twice stores it once; posting a *different* class for a task
  the reviewer already labeled is a conflict (undo first).
* It closes the task (state ``done``) unless somebody else holds a live claim on it. So a
  reviewer whose lease expired while they looked still closes the task if nobody re-claimed it;
  if another reviewer did, the late label is kept as an extra label and the other reviewer's
  claim is left alone (their label will close the task, and the image then has two labels).
  A label on a task that is already done is likewise kept as an extra label.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import NamedTuple, Sequence

from sqlalchemy import (
    DateTime, Integer, Row, bindparam, case, delete, exists, func, literal, or_, select, text, update,
)
from sqlalchemy.orm import Session, aliased

from models.classes import CLASSES

from .clock import db_now
from .schema import (
    Batch, BatchImage, Image, Label, Prediction, ReviewClaim, ReviewSkip, ReviewTask, User, utcnow,
)
from .sql import chunks, dialect_insert, id_in, insert_ignore

MAX_EXCLUDE = 8
# The writes below are Core statements on the tables: the ORM's bulk-UPDATE bookkeeping would
# cost more than the statements themselves on this hot path.
RT = ReviewTask.__table__
LB = Label.__table__
RC = ReviewClaim.__table__
IMAGES = Image.__table__
PREDICTIONS = Prediction.__table__


def _claimable(table=RT):
    """Literal SQL (not bound parameters) so that SQLite and Postgres both see it matches the
    partial index ix_review_task_claimable; bound values would hide that from the planner."""
    return text(f"{table.name}.state IN ('open', 'claimed')")


# Built once: making aliases is costly next to the statements themselves.
_OWN = RT.alias("own")
_CAND = RT.alias("cand")
_OTHER = RT.alias("other")
_CLAIMABLE = {t.name: _claimable(t) for t in (RT, _CAND, _OTHER)}


class TaskNotFound(LookupError):
    pass


class NotClaimed(PermissionError):
    """A reviewer labels only a task they claimed (or correct their own label)."""


@dataclass
class LabelOutcome:
    label: Row              # the stored label row (the earlier one for a double post)
    created: bool           # False: this exact label was already stored (double post)
    closed: bool            # this label closed the task
    conflict: bool = False  # a double post with another class: nothing changed

    @property
    def override(self) -> bool:
        """An admin labeled a task they had not claimed."""
        return bool(self.label.admin_override)


@dataclass
class UndoOutcome:
    label_id: int
    task_id: int
    image_id: int
    cls: str
    reopened: bool          # the task is back, claimed by the reviewer who undid


def _lease_end(lease_s: float, now: dt.datetime) -> dt.datetime:
    return now + dt.timedelta(seconds=lease_s)


def claim_next(session: Session, user_id: int, owner: str, lease_s: float,
               exclude: Sequence[int] = (), overlap: bool = False) -> int | None:
    """Claim a task for ``owner`` and return its id (None when the queue is empty for them).

    A live claim the reviewer already holds comes back first (a page reload, the prefetched
    next image), with its lease renewed; ``exclude`` names claims the caller is already showing.
    Then the highest-priority open or lease-expired task the reviewer has not skipped (with
    ``overlap``, several reviewers per task: nor already labeled, store/overlap.py).
    """
    now = db_now(session)  # the database's clock: hosts' clocks may disagree
    until = _lease_end(lease_s, now)
    exclude = [int(i) for i in exclude][:MAX_EXCLUDE]

    own = _OWN.c
    own_q = (select(own.id).where(own.state == "claimed", own.lease_owner == owner,
                                  own.lease_expires_at > now)
             .order_by(own.priority.desc(), own.id.desc()).limit(1))
    if exclude:
        own_q = own_q.where(own.id.not_in(exclude))
    renewed = session.execute(
        update(RT)
        .where(RT.c.id == own_q.scalar_subquery(), RT.c.lease_owner == owner,
               RT.c.state == "claimed")
        .values(lease_expires_at=until, updated_at=now)
        .returning(RT.c.id)).scalar()
    if renewed is not None:
        return renewed

    t = _CAND.c
    cand = (select(t.id)
            .where(_CLAIMABLE["cand"],
                   or_(t.state == "open", t.lease_expires_at < now),
                   ~exists().where(ReviewSkip.task_id == t.id, ReviewSkip.user_id == user_id))
            .order_by(t.priority.desc(), t.id.desc())
            .limit(1)
            .with_for_update(skip_locked=True))
    if exclude:
        cand = cand.where(t.id.not_in(exclude))
    if overlap:  # hook: store/overlap.py
        from .overlap import not_labeled_by
        cand = cand.where(not_labeled_by(t.id, user_id))
    from .gold import not_gold  # hook: a gold task is only ever its own reviewer's (store/gold.py)
    cand = cand.where(not_gold(t.id))
    claimed = session.execute(
        update(RT)
        .where(RT.c.id == cand.scalar_subquery(),
               or_(RT.c.state == "open",
                   (RT.c.state == "claimed") & (RT.c.lease_expires_at < now)))
        .values(state="claimed", lease_owner=owner, lease_expires_at=until, updated_at=now)
        .returning(RT.c.id)).scalar()
    if claimed is not None:  # entitles the reviewer to label it, even after the lease ran out
        _insert_ignore(session, RC, {"task_id": claimed, "user_id": user_id})
    return claimed


def renew(session: Session, owner: str, task_ids: Sequence[int], lease_s: float) -> list[int]:
    """Extend the reviewer's live claims on ``task_ids``; returns the ids still held."""
    if not task_ids:
        return []
    now = db_now(session)
    return list(session.scalars(
        update(RT)
        .where(RT.c.id.in_([int(i) for i in task_ids][:MAX_EXCLUDE]),
               RT.c.state == "claimed", RT.c.lease_owner == owner)
        .values(lease_expires_at=_lease_end(lease_s, now), updated_at=now)
        .returning(RT.c.id)))


def release(session: Session, owner: str, task_ids: Sequence[int],
            leases: dict[int, dt.datetime] | None = None) -> int:
    """Give the reviewer's claims back to the queue (leaving the page, skipping).

    ``leases`` (task id -> the lease's end as the caller last saw it) ends only those leases:
    a task claimed or renewed since (a reloaded page re-claimed it) keeps its later lease."""
    ids = [int(i) for i in task_ids][:MAX_EXCLUDE]
    if not ids:
        return 0
    free = dict(state="open", lease_owner=None, lease_expires_at=None, updated_at=utcnow())
    mine = (RT.c.state == "claimed") & (RT.c.lease_owner == owner)
    if not leases:
        return session.execute(update(RT).where(RT.c.id.in_(ids), mine).values(**free)).rowcount
    done = 0
    for tid in ids:
        cond = [RT.c.id == tid, mine]
        seen = leases.get(tid)
        if seen is not None:
            seen = seen.astimezone(dt.timezone.utc)
            if session.get_bind().dialect.name == "sqlite":  # stored naive, in UTC
                seen = seen.replace(tzinfo=None)
            cond.append(RT.c.lease_expires_at <= seen)
        done += session.execute(update(RT).where(*cond).values(**free)).rowcount
    return done


def skip(session: Session, task_id: int, user_id: int, owner: str) -> bool:
    """The reviewer passes: the task goes back to the queue for everybody else, never to them
    again. Returns False when there is no such task."""
    if session.scalar(select(RT.c.id).where(RT.c.id == task_id)) is None:
        return False
    _insert_ignore(session, ReviewSkip.__table__, {"task_id": task_id, "user_id": user_id,
                                                   "created_at": utcnow()})
    release(session, owner, [task_id])
    return True


def post_label(session: Session, task_id: int, user_id: int, owner: str, cls: str, source: str,
               time_on_item_ms: int | None = None, admin: bool = False) -> LabelOutcome:
    """Store a reviewer's label for a task and close the task if the lease rule allows (see the
    module docstring). A reviewer labels only a task they claimed at some point (or one they
    labeled before: a double post or a correction); an admin may label any task, and a label
    on a task they had not claimed is stored with ``admin_override``. Raises TaskNotFound,
    NotClaimed, or ValueError for a class verge does not know.
    Two statements: the label (taking the image from the task, under the claim condition),
    then the conditional close."""
    if cls not in CLASSES:
        raise ValueError(f"class must be one of {', '.join(CLASSES)}, not {cls!r}")
    now = db_now(session)
    claimed = or_(func.coalesce(RT.c.lease_owner, "") == owner,
                  exists().where(RC.c.task_id == RT.c.id, RC.c.user_id == user_id))
    row = select(RT.c.image_id, literal(user_id), RT.c.id, literal(source), literal(cls),
                 literal(time_on_item_ms, Integer), literal(now, LB.c.created_at.type),
                 ~claimed if admin else literal(False)).where(RT.c.id == task_id)
    if not admin:
        row = row.where(claimed)
    cols = ["image_id", "user_id", "task_id", "source", "cls", "time_on_item_ms", "created_at",
            "admin_override"]
    new = _insert_ignore(session, LB, row, returning=tuple(LB.c), from_select=cols)
    if new is None:  # no such task, this reviewer already labeled it, or never claimed it
        earlier = session.execute(select(LB).where(LB.c.task_id == task_id,
                                                   LB.c.user_id == user_id)).first()
        if earlier is not None:
            return LabelOutcome(earlier, created=False, closed=False, conflict=earlier.cls != cls)
        if session.scalar(select(RT.c.id).where(RT.c.id == task_id)) is None:
            raise TaskNotFound(f"no review task {task_id}")
        raise NotClaimed(f"task {task_id} was never claimed by you: claim it first "
                         f"(the review page, or POST /api/v1/tasks/next)")
    closed = session.execute(
        update(RT)
        .where(RT.c.id == task_id, _CLAIMABLE["review_task"],
               or_(RT.c.state == "open", RT.c.lease_owner == owner,
                   RT.c.lease_expires_at.is_(None), RT.c.lease_expires_at < now))
        .values(state="done", lease_owner=owner, lease_expires_at=None, updated_at=now)
    ).rowcount == 1
    return LabelOutcome(new, created=True, closed=closed)


def undo(session: Session, user_id: int, owner: str, lease_s: float,
         label_id: int | None = None) -> UndoOutcome | None:
    """Delete the reviewer's label ``label_id`` (default: their newest review label). If that
    label is what closed its task, the task comes back claimed by them so they can label it
    again; an extra label just goes. Returns None when there is nothing of theirs to undo."""
    q = select(LB).where(LB.c.user_id == user_id, LB.c.task_id.is_not(None))
    q = q.where(LB.c.id == label_id) if label_id is not None else q.order_by(LB.c.id.desc())
    label = session.execute(q.limit(1)).first()
    if label is None:
        return None
    if session.execute(delete(LB).where(LB.c.id == label.id)).rowcount != 1:
        return None  # a concurrent undo got there first
    now = db_now(session)
    other = _OTHER.c
    reopened = session.execute(
        update(RT)
        .where(RT.c.id == label.task_id, RT.c.state == "done", RT.c.lease_owner == owner,
               ~exists().where(LB.c.task_id == label.task_id),
               ~exists().where(other.image_id == RT.c.image_id, _CLAIMABLE["other"]))
        .values(state="claimed", lease_owner=owner, lease_expires_at=_lease_end(lease_s, now),
                updated_at=now)
    ).rowcount == 1
    return UndoOutcome(label.id, label.task_id, label.image_id, label.cls, reopened)


def task_details(session: Session, task_id: int, adjudication: bool = False) -> dict | None:
    """What a reviewer sees for a task: the image, the scores that routed it (the task's
    prediction; for a task opened without one, the image's current one), its batches. With
    ``adjudication`` (an admin's page for a conflict, store/overlap.py) also the task's final
    class and every reviewer's label, which the review page and the API never show (blind
    review)."""
    row = session.execute(
        select(ReviewTask, Image, Prediction).join(Image, Image.id == ReviewTask.image_id)
        .outerjoin(Prediction, Prediction.id == func.coalesce(ReviewTask.prediction_id,
                                                              Image.latest_prediction_id))
        .where(ReviewTask.id == task_id)).first()
    if row is None:
        return None
    task, image, pred = row
    batches = list(session.scalars(
        select(Batch.name).join(BatchImage, BatchImage.batch_id == Batch.id)
        .where(BatchImage.image_id == image.id).order_by(Batch.id).limit(5)))
    out = {
        "task_id": task.id, "state": task.state, "priority": task.priority,
        "reasons": split_reasons(task.reasons),
        "lease_owner": task.lease_owner, "lease_expires_at": iso_utc(task.lease_expires_at),
        "image_id": image.id, "source_name": image.source_name, "width": image.width,
        "height": image.height, "sha256": image.sha256, "batches": batches,
        "prediction": None if pred is None else {
            "id": pred.id, "model_version_id": pred.model_version_id,
            "head_p_road": pred.p_road, "head_probs": pred.head_probs,
            "predicted_class": pred.predicted_class, "zs_p_road": pred.zs_p_road,
            "zs_probs": pred.zs_probs, "zs_class": pred.zs_class},
    }
    if adjudication:
        from .overlap import reviews

        out.update(final_cls=task.final_cls, adjudicated=task.adjudicated_by is not None,
                   reviews=reviews(session, [task.id]).get(task.id, []))
    return out


def open_count(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(ReviewTask)
                          .where(_claimable()))


def queue_overview(session: Session, active_window_s: float = 3600) -> dict:
    """Open tasks by reason and by batch, the oldest waiting, and who is reviewing now."""
    now = db_now(session)
    claimable = _claimable()
    live = (ReviewTask.state == "claimed") & (ReviewTask.lease_expires_at >= now)
    counts = session.execute(select(
        func.count(), func.sum(case((live, 1), else_=0)), func.min(ReviewTask.created_at))
        .where(claimable)).one()
    by_reason: dict[str, int] = {}
    for reasons, n in session.execute(select(ReviewTask.reasons, func.count())
                                      .where(claimable).group_by(ReviewTask.reasons)):
        for r in split_reasons(reasons) or ["(none)"]:
            by_reason[r] = by_reason.get(r, 0) + n
    by_batch = session.execute(
        select(Batch.id, Batch.name, func.count(), func.min(ReviewTask.created_at))
        .join(BatchImage, BatchImage.batch_id == Batch.id)
        .join(ReviewTask, ReviewTask.image_id == BatchImage.image_id)
        .where(claimable).group_by(Batch.id, Batch.name)
        .order_by(func.count().desc()).limit(50)).all()
    holding = dict(session.execute(select(ReviewTask.lease_owner, func.count())
                                   .where(live).group_by(ReviewTask.lease_owner)).all())
    since = now - dt.timedelta(seconds=active_window_s)
    labeled = {name: (n, last) for name, n, last in session.execute(
        select(User.name, func.count(), func.max(Label.created_at))
        .join(User, User.id == Label.user_id).where(Label.created_at >= since)
        .group_by(User.name))}
    reviewers = sorted(set(holding) | set(labeled))
    return {
        "open": (counts[0] or 0) - (counts[1] or 0), "claimed": counts[1] or 0,
        "total": counts[0] or 0, "oldest_created_at": counts[2],
        "by_reason": sorted(by_reason.items(), key=lambda kv: -kv[1]),
        "by_batch": [{"batch_id": b, "batch": name, "open": n, "oldest_created_at": oldest}
                     for b, name, n, oldest in by_batch],
        "reviewers": [{"name": r, "holding": holding.get(r, 0),
                       "labels": labeled.get(r, (0, None))[0],
                       "last_label_at": labeled.get(r, (0, None))[1]} for r in reviewers],
        "active_window_s": active_window_s,
    }


# --------------------------------------------------------------------------- helpers
def iso_utc(value: dt.datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:  # SQLite hands back naive datetimes; verge stores UTC
        value = value.replace(tzinfo=dt.timezone.utc)
    return value.isoformat()


def _insert_ignore(session: Session, table, values, returning=None, from_select=None):
    """INSERT ... ON CONFLICT DO NOTHING of one row (a dict, or a SELECT with ``from_select``
    naming its columns); with ``returning``, the new row or None when nothing was inserted."""
    insert = dialect_insert(session)
    stmt = (insert(table).from_select(from_select, values) if from_select
            else insert(table).values(**values)).on_conflict_do_nothing()
    if returning is None:
        session.execute(stmt)
        return None
    return session.execute(stmt.returning(*returning)).first()


# --------------------------------------------------------------------------- routing reasons
# A task's ``reasons`` is the comma-separated list workers/routing.py wrote ("near_threshold,audit").
def split_reasons(reasons: str | None) -> list[str]:
    return [r for r in (reasons or "").split(",") if r]


def has_reason(col, reason: str):
    """``col`` (comma-separated reasons) lists ``reason`` itself: "audit" does not match
    "audit_x". Spelled as LIKEs on the column itself, not on ``',' || col || ','``: Postgres
    estimates these from the column's statistics (a few distinct values) and so walks the newest
    images first; the concatenation has no statistics and its default estimate (a handful of
    rows) made it collect every match first."""
    return or_(col == reason, col.startswith(f"{reason},", autoescape=True),
               col.endswith(f",{reason}", autoescape=True),
               col.contains(f",{reason},", autoescape=True))


# --------------------------------------------------------------------------- tasks the scorer
# and retraining open, a re-score settles, a rollback reopens
def open_routed_tasks(session: Session, routed: Sequence[tuple[Row, float]], now) -> None:
    """A task for each newly written prediction a chunk routed, (row, priority): the partial
    unique index keeps one open task per image, so an image that has one keeps it."""
    insert_ignore(session, ReviewTask, [
        {"image_id": row.image_id, "prediction_id": row.id, "state": "open",
         "reasons": row.reasons, "priority": float(priority), "created_at": now, "updated_at": now}
        for row, priority in routed])


def open_review_tasks(session: Session, items: dict[int, tuple[str, float]]) -> int:
    """Open a task (reason, priority) for each image that has no open or claimed task yet.
    Returns how many were opened."""
    if not items:
        return 0
    busy = {i for part in chunks(list(items)) for i in session.scalars(
        select(ReviewTask.image_id).where(ReviewTask.image_id.in_(part),
                                          ReviewTask.state.in_(("open", "claimed"))))}
    now = utcnow()
    rows = [{"image_id": iid, "state": "open", "reasons": reason, "priority": float(priority),
             "created_at": now, "updated_at": now}
            for iid, (reason, priority) in items.items() if iid not in busy]
    insert_ignore(session, ReviewTask, rows)
    return len(rows)


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
        q = q.where(~has_reason(ReviewTask.reasons, reason))
    return [RescoreItem(*row) for row in session.execute(q)]


_REFRESH_OPEN_TASK = (
    update(RT).where(RT.c.id == bindparam("b_task", type_=Integer), RT.c.state == "open")
    .values(prediction_id=bindparam("b_pred", type_=Integer), reasons=bindparam("b_reasons"),
            priority=bindparam("b_priority"), updated_at=bindparam("b_now", type_=DateTime(timezone=True))))


def settle_rescored(session: Session, predictions: list[dict], pred_id: dict[int, int],
                    version_id: int, task_of_image: dict[int, int] | None = None) -> int:
    """The task side of a re-score (store/predictions.py ``apply_rescore`` wrote the
    predictions, ``pred_id`` per image): resolve the tasks the new head no longer routes, point
    the rest at their new prediction with its reasons and priority. ``task_of_image`` names the
    task read for each image (default: its open task). Returns the number of tasks resolved.

    Every write is conditional on the task still being open: a claim or a label that landed
    since the tasks were read wins, and the re-score leaves that task alone."""
    if task_of_image is None:
        image_ids = [p["image_id"] for p in predictions]
        task_of_image = {i: t for ids_match in id_in(session, RT.c.image_id, image_ids)
                         for i, t in session.execute(select(RT.c.image_id, RT.c.id).where(
                             RT.c.state == "open", ids_match))}
    now = utcnow()
    settled = [task_of_image[p["image_id"]] for p in predictions
               if not p["routed"] and p["image_id"] in task_of_image and p["image_id"] in pred_id]
    resolved = 0
    this_version = (select(PREDICTIONS.c.id).where(PREDICTIONS.c.image_id == RT.c.image_id,
                                                   PREDICTIONS.c.model_version_id == version_id)
                    .scalar_subquery())
    for ids_match in id_in(session, RT.c.id, settled):
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
        session.connection().execute(_REFRESH_OPEN_TASK, refreshed)
    return resolved


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


def follow_restored_predictions(session: Session, left_id: int) -> None:
    """After a rollback from head ``left_id`` pointed images back (store/predictions.py
    ``point_back``): open and claimed tasks that showed the left head's prediction show the
    image's current one, with its reasons when it routed the image."""
    routed_by = PREDICTIONS.alias("other")
    from_left = select(PREDICTIONS.c.id).where(PREDICTIONS.c.model_version_id == left_id)
    current = (select(IMAGES.c.latest_prediction_id).where(IMAGES.c.id == RT.c.image_id)
               .correlate(RT).scalar_subquery())
    reasons = (select(routed_by.c.reasons).where(routed_by.c.id == IMAGES.c.latest_prediction_id,
                                                 IMAGES.c.id == RT.c.image_id,
                                                 routed_by.c.routed.is_(True))
               .correlate(RT).scalar_subquery())
    session.execute(update(RT).where(RT.c.state.in_(("open", "claimed")),
                                     RT.c.prediction_id.in_(from_left),
                                     current.not_in(from_left))
                    .values(prediction_id=current, reasons=func.coalesce(reasons, RT.c.reasons),
                            updated_at=utcnow()))
