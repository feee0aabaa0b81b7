"""One action, many labels: a reviewer labels several similar images at once (``source="bulk"``).

Each image gets a label by that reviewer, as if they had labeled it alone: an image with an open
task closes it (or, with several reviewers per task, counts as one of them: store/overlap.py);
an image without one simply gains a label. An image another reviewer holds under a live claim,
or one this reviewer already labeled is passed over and named in the answer. A gold image is
labeled like any other (nothing may tell a reviewer it is gold); its known class still wins in
training, and a bulk label is never counted as a gold answer.
``undo`` takes the labels of one bulk action back and reopens the tasks they closed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from sqlalchemy import delete, exists, select, update
from sqlalchemy.orm import Session

from models.classes import CLASSES

from . import overlap
from .schema import Label, ReviewTask, utcnow

SOURCE = "bulk"
MAX_IMAGES = 100
RT = ReviewTask.__table__
LB = Label.__table__


@dataclass
class BulkOutcome:
    labeled: list = field(default_factory=list)   # {"image_id", "label_id", "task_id"}
    skipped: list = field(default_factory=list)   # {"image_id", "reason"}


def label(session: Session, image_ids: Sequence[int], user_id: int, owner: str, cls: str,
          reviews_per_task: int = 1) -> BulkOutcome:
    if cls not in CLASSES:
        raise ValueError(f"class must be one of {', '.join(CLASSES)}, not {cls!r}")
    out = BulkOutcome()
    now = utcnow()
    for image_id in list(dict.fromkeys(int(i) for i in image_ids))[:MAX_IMAGES]:
        if session.execute(select(LB.c.id).where(LB.c.image_id == image_id,
                                                 LB.c.user_id == user_id).limit(1)).first():
            out.skipped.append({"image_id": image_id, "reason": "you already labeled it"})
            continue
        task = session.execute(select(RT.c.id).where(RT.c.image_id == image_id,
                                                     RT.c.state.in_(("open", "claimed")))
                               ).scalar()
        if task is not None and reviews_per_task > 1:
            try:
                got = overlap.post_label(session, task, user_id, owner, cls, SOURCE,
                                         reviews_per_task)
            except overlap.LabelRefused as exc:
                out.skipped.append({"image_id": image_id, "reason": str(exc)})
                continue
            out.labeled.append({"image_id": image_id, "label_id": got.label.id, "task_id": task})
            continue
        if task is not None:
            # take the task the way a label closes one, unless another reviewer holds it now
            took = session.execute(
                update(RT).where(RT.c.id == task, RT.c.state.in_(("open", "claimed")),
                                 (RT.c.state == "open") | (RT.c.lease_owner == owner)
                                 | (RT.c.lease_expires_at < now))
                .values(state="done", lease_owner=owner, lease_expires_at=None, updated_at=now)
            ).rowcount == 1
            if not took:
                out.skipped.append({"image_id": image_id,
                                    "reason": "another reviewer has it on screen"})
                continue
        row = session.execute(LB.insert().values(
            image_id=image_id, user_id=user_id, task_id=task, source=SOURCE, cls=cls,
            created_at=now).returning(LB.c.id)).scalar()
        out.labeled.append({"image_id": image_id, "label_id": row, "task_id": task})
    return out


def undo(session: Session, user_id: int, label_ids: Sequence[int]) -> int:
    """Delete the reviewer's bulk labels ``label_ids``; the tasks they settled go back to the
    queue (open) unless an admin adjudicated them. Returns how many labels went."""
    ids = [int(i) for i in label_ids][:MAX_IMAGES]
    if not ids:
        return 0
    rows = session.execute(select(LB.c.id, LB.c.task_id).where(
        LB.c.id.in_(ids), LB.c.user_id == user_id, LB.c.source == SOURCE)).all()
    if not rows:
        return 0
    gone = session.execute(delete(LB).where(LB.c.id.in_([r.id for r in rows]))).rowcount
    now = utcnow()
    other = RT.alias("other_open")
    for task_id in {r.task_id for r in rows if r.task_id is not None}:
        session.execute(
            update(RT)
            .where(RT.c.id == task_id, RT.c.state.in_(("done", "conflict")),
                   RT.c.adjudicated_by.is_(None), RT.c.resolved_by_version_id.is_(None),
                   ~exists().where(other.c.image_id == RT.c.image_id,
                                   other.c.state.in_(("open", "claimed"))))
            .values(state="open", final_cls=None, lease_owner=None, lease_expires_at=None,
                    updated_at=now))
    return gone
