"""Several reviewers per task (``VERGE_REVIEWS_PER_TASK`` = N > 1) and adjudication.

A task stays in the queue until N distinct reviewers have labeled it. Each reviewer claims it
alone under the usual lease (store/review.py), labels it, and it goes back to the queue for the
next one; claim-next never hands a reviewer a task they already labeled, and nothing on the page
or in the API shows another reviewer's label (blind review).

When the N-th label arrives: if all N agree, the task is ``done`` with that ``final_cls``; if
not, it becomes a ``conflict`` that only an admin may settle (``adjudicate``), whose class is then
final. Training takes a task's ``final_cls`` over the raw votes and leaves conflicts out until
they are adjudicated (``apply_to_consensus``).

Why a row lock: "fewer than N labels" is a count over other rows, which no single conditional
UPDATE can guard. So a label first takes the task's row lock (an UPDATE of the task row itself:
a row lock on Postgres, the database write lock on SQLite) and everything after it - the count,
the insert, the close - runs while concurrent labels for the same task wait. Labels for
different tasks never wait on each other.
"""
from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass

from sqlalchemy import exists, func, select, update
from sqlalchemy.orm import Session

from models.classes import CLASSES

from .clock import db_now
from .schema import Image, Label, ReviewClaim, ReviewTask, User, utcnow

RT = ReviewTask.__table__
RC = ReviewClaim.__table__
LB = Label.__table__
ADJUDICATION = "adjudication"


class LabelRefused(Exception):
    """The label cannot be taken (the reason is the message): HTTP 409."""


class TaskNotFound(LookupError):
    pass


@dataclass
class OverlapOutcome:
    label: object            # the stored label row (the earlier one for a double post)
    created: bool
    closed: bool             # this label was the N-th: the task is done or a conflict
    conflict: bool = False   # a double post with another class: nothing changed
    state: str = "open"      # the task's state afterwards


def not_labeled_by(task_col, user_id: int):
    """Claim-next's extra condition under overlap: never the same task twice per reviewer."""
    return ~exists().where(LB.c.task_id == task_col, LB.c.user_id == user_id)


def _lock_task(session: Session, task_id: int):
    now = utcnow()
    return session.execute(
        update(RT).where(RT.c.id == task_id).values(updated_at=now)
        .returning(RT.c.state, RT.c.lease_owner, RT.c.lease_expires_at, RT.c.image_id)).first()


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    if value is not None and value.tzinfo is None:  # SQLite hands back naive UTC datetimes
        return value.replace(tzinfo=dt.timezone.utc)
    return value


def post_label(session: Session, task_id: int, user_id: int, owner: str, cls: str, source: str,
               n: int, time_on_item_ms: int | None = None,
               need_claim: bool = False) -> OverlapOutcome:
    """Store one reviewer's label on a task that wants ``n`` of them. Raises TaskNotFound,
    ValueError (unknown class) or LabelRefused (the task is settled, in conflict, another
    reviewer holds a live claim on it: a label there would make it more than ``n``, or, with
    ``need_claim`` as the web UI and API ask for reviewers, this reviewer never claimed it)."""
    if cls not in CLASSES:
        raise ValueError(f"class must be one of {', '.join(CLASSES)}, not {cls!r}")
    task = _lock_task(session, task_id)
    if task is None:
        raise TaskNotFound(f"no review task {task_id}")
    earlier = session.execute(select(LB).where(LB.c.task_id == task_id,
                                               LB.c.user_id == user_id)).first()
    if earlier is not None:
        return OverlapOutcome(earlier, created=False, closed=False, conflict=earlier.cls != cls,
                              state=task.state)
    now = db_now(session)
    if task.state == "conflict":
        raise LabelRefused(f"task {task_id} is a conflict between reviewers; an admin decides it")
    if task.state not in ("open", "claimed"):
        raise LabelRefused(f"task {task_id} is {task.state}; it takes no more labels")
    expires = _aware(task.lease_expires_at)
    if (task.state == "claimed" and task.lease_owner != owner
            and expires is not None and expires > now):
        raise LabelRefused(f"task {task_id} is claimed by another reviewer")
    if need_claim and task.lease_owner != owner and not session.scalar(
            select(exists().where(RC.c.task_id == task_id, RC.c.user_id == user_id))):
        raise LabelRefused(f"task {task_id} was never claimed by you: claim it first "
                           f"(the review page, or POST /api/v1/tasks/next)")
    new = session.execute(LB.insert().values(
        image_id=task.image_id, user_id=user_id, task_id=task_id, source=source, cls=cls,
        time_on_item_ms=time_on_item_ms, created_at=now).returning(*LB.c)).first()
    votes = Counter(session.scalars(select(LB.c.cls).where(LB.c.task_id == task_id,
                                                           LB.c.user_id.is_not(None))))
    if sum(votes.values()) < n:
        state, final = "open", None
    elif len(votes) == 1:
        state, final = "done", cls
    else:
        state, final = "conflict", None
    session.execute(update(RT).where(RT.c.id == task_id).values(
        state=state, final_cls=final, lease_owner=None if state == "open" else owner,
        lease_expires_at=None, updated_at=now))
    return OverlapOutcome(new, created=True, closed=state != "open", state=state)


def after_undo(session: Session, task_id: int, owner: str, lease_s: float) -> bool:
    """Undo took a label off a task that had its N labels: the task wants one again, and it
    comes back claimed by the reviewer who undid (as at N = 1) unless an admin has already
    adjudicated it or the image has another open task. Returns True when it came back."""
    now = utcnow()
    other = RT.alias("other_open")
    return session.execute(
        update(RT)
        .where(RT.c.id == task_id, RT.c.state.in_(("done", "conflict")),
               RT.c.adjudicated_by.is_(None),
               ~exists().where(other.c.image_id == RT.c.image_id,
                               other.c.state.in_(("open", "claimed"))))
        .values(state="claimed", final_cls=None, lease_owner=owner,
                lease_expires_at=now + dt.timedelta(seconds=lease_s), updated_at=now)
    ).rowcount == 1


# --------------------------------------------------------------------------- adjudication
def conflicts(session: Session, limit: int = 200) -> list[dict]:
    """Conflicts waiting for an admin, oldest first, with each reviewer's class."""
    tasks = session.execute(
        select(RT.c.id, RT.c.image_id, RT.c.updated_at, Image.source_name)
        .join(Image, Image.id == RT.c.image_id)
        .where(RT.c.state == "conflict").order_by(RT.c.updated_at, RT.c.id).limit(limit)).all()
    votes = reviews(session, [t.id for t in tasks])
    return [{"task_id": t.id, "image_id": t.image_id, "source_name": t.source_name,
             "since": t.updated_at, "reviews": votes.get(t.id, [])} for t in tasks]


def reviews(session: Session, task_ids: list[int]) -> dict[int, list[dict]]:
    """Each reviewer's label on each task, oldest first (the conflicts list, and the
    adjudication page through store/review.py ``task_details``)."""
    out: dict[int, list[dict]] = {}
    if not task_ids:
        return out
    for tid, name, cls, source, at in session.execute(
            select(LB.c.task_id, User.name, LB.c.cls, LB.c.source, LB.c.created_at)
            .join(User, User.id == LB.c.user_id)
            .where(LB.c.task_id.in_(task_ids)).order_by(LB.c.id)):
        out.setdefault(tid, []).append({"reviewer": name, "class": cls, "source": source,
                                        "at": at})
    return out


def adjudicate(session: Session, task_id: int, admin_id: int, cls: str) -> str:
    """The admin's class becomes the task's final label. Only a conflict can be adjudicated
    (LabelRefused otherwise, e.g. a second admin who came too late). Returns the final class."""
    if cls not in CLASSES:
        raise ValueError(f"class must be one of {', '.join(CLASSES)}, not {cls!r}")
    done = session.execute(
        update(RT).where(RT.c.id == task_id, RT.c.state == "conflict")
        .values(state="done", final_cls=cls, adjudicated_by=admin_id, updated_at=utcnow())
    ).rowcount
    if done != 1:
        state = session.scalar(select(RT.c.state).where(RT.c.id == task_id))
        if state is None:
            raise TaskNotFound(f"no review task {task_id}")
        raise LabelRefused(f"task {task_id} is {state}, not a conflict")
    return cls


def conflict_count(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(RT).where(RT.c.state == "conflict"))


# --------------------------------------------------------------------------- training
def apply_to_consensus(session: Session, out) -> None:
    """Final labels win over raw votes, and conflicts stay out of training until adjudicated.
    ``out`` is store.labels.Consensus; an image with several tasks takes its newest final."""
    finals = session.execute(
        select(RT.c.image_id, RT.c.final_cls).where(RT.c.final_cls.is_not(None))
        .order_by(RT.c.id)).all()
    for image_id, cls in finals:
        out.labels[image_id] = cls
        out.human.add(image_id)
        out.ties.pop(image_id, None)
    settled = {image_id for image_id, _ in finals}
    waiting: dict[int, Counter] = {}
    for image_id, cls in session.execute(
            select(RT.c.image_id, LB.c.cls).join(LB, LB.c.task_id == RT.c.id)
            .where(RT.c.state == "conflict", LB.c.user_id.is_not(None))):
        if image_id not in settled:
            waiting.setdefault(image_id, Counter())[cls] += 1
    for image_id, votes in waiting.items():
        out.labels.pop(image_id, None)
        out.human.discard(image_id)
        out.ties[image_id] = dict(votes)
