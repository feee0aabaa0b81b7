"""Gold images: images whose class an admin knows (from a folder, or from an adjudicated task).

``VERGE_GOLD_FRACTION`` of a reviewer's fresh claims hand them a gold image as an ordinary task:
a review_task row like any other (its image's own scores, routing reasons and priority), and the
only record that it is gold is a ``gold_task`` row nothing on the page or in the API reads. Their
answers give each reviewer an accuracy on gold; below ``VERGE_GOLD_MIN_ACCURACY`` after at least
``VERGE_GOLD_MIN_ITEMS`` answers the reviewer is flagged (``reviewer_gold.flagged_at``) and their
labels stay out of training (``apply_to_consensus``) until an admin clears them. Clearing starts
a new count: answers from before it no longer weigh.
"""
from __future__ import annotations

import datetime as dt
import random
from collections import Counter, defaultdict

from sqlalchemy import exists, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from models.classes import CLASSES

from .schema import (
    GoldImage, GoldTask, Image, Label, Prediction, ReviewerGold, ReviewTask, utcnow,
)
from .sql import chunks

RT = ReviewTask.__table__
_rng = random.SystemRandom()


def mark(session: Session, image_ids_classes: list[tuple[int, str]], source: str,
         admin_id: int | None) -> int:
    """Make images gold (or change their class). Returns how many rows were written."""
    n = 0
    for image_id, cls in image_ids_classes:
        if cls not in CLASSES:
            raise ValueError(f"class must be one of {', '.join(CLASSES)}, not {cls!r}")
        row = session.get(GoldImage, image_id)
        if row is None:
            session.add(GoldImage(image_id=image_id, cls=cls, source=source, created_by=admin_id))
        else:
            row.cls, row.source, row.created_by = cls, source, admin_id
        n += 1
    session.flush()
    return n


def mark_hashes(session: Session, hashes, cls: str, source: str, admin_id: int | None) -> int:
    """Make the stored images with these SHA-256 hashes gold ``cls`` (``verge gold add``);
    hashes of no stored image are passed over. Returns how many images were marked."""
    from .images import ids_by_sha

    ids = ids_by_sha(session, sorted(hashes)).values()
    return mark(session, [(i, cls) for i in ids], source, admin_id)


def mark_adjudicated(session: Session, task_id: int, admin_id: int) -> tuple[int, str] | None:
    """Make an adjudicated task's image gold with its final class; None if it is not one."""
    row = session.execute(select(RT.c.image_id, RT.c.final_cls)
                          .where(RT.c.id == task_id, RT.c.state == "done",
                                 RT.c.adjudicated_by.is_not(None))).first()
    if row is None:
        return None
    mark(session, [(row.image_id, row.final_cls)], f"adjudicated:{task_id}", admin_id)
    return row.image_id, row.final_cls


def count(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(GoldImage))


def _priority(pred: Prediction) -> float:
    """As routing computes it (workers/routing.py), so a gold task's priority looks like any."""
    if pred.head_probs and len(pred.head_probs) > 2:
        top, second = sorted(pred.head_probs.values(), reverse=True)[:2]
        return round(1.0 - (top - second), 6)
    primary = pred.zs_p_road if pred.p_road is None else pred.p_road
    return round(1.0 - 2.0 * abs(primary - 0.5), 6)


def claim(session: Session, user_id: int, owner: str, lease_s: float, fraction: float,
          exclude=(), roll: float | None = None) -> int | None:
    """With probability ``fraction``, hand the reviewer a gold image they have not answered as a
    new claimed task; None otherwise (then the ordinary claim runs). Never while the reviewer
    holds a live claim the caller is not already showing (that claim comes back first)."""
    if fraction <= 0 or (roll if roll is not None else _rng.random()) >= fraction:
        return None
    now = utcnow()
    live = select(RT.c.id).where(RT.c.state == "claimed", RT.c.lease_owner == owner,
                                 RT.c.lease_expires_at > now)
    if exclude:
        live = live.where(RT.c.id.not_in(list(exclude)))
    if session.execute(live.limit(1)).first() is not None:
        return None
    _retire_abandoned(session, now)
    answered = (select(GoldTask.task_id).join(ReviewTask, ReviewTask.id == GoldTask.task_id)
                .where(GoldTask.user_id == user_id, ReviewTask.image_id == GoldImage.image_id))
    labeled = select(Label.id).where(Label.image_id == GoldImage.image_id,
                                     Label.user_id == user_id)
    candidates = session.execute(
        select(GoldImage.image_id, Image.latest_prediction_id)
        .join(Image, Image.id == GoldImage.image_id)
        .where(Image.latest_prediction_id.is_not(None), ~exists(answered), ~exists(labeled),
               ~exists().where(RT.c.image_id == GoldImage.image_id,
                               RT.c.state.in_(("open", "claimed"))))
        .order_by(func.random()).limit(3)).all()
    for image_id, pred_id in candidates:
        pred = session.get(Prediction, pred_id)
        try:
            with session.begin_nested():  # another reviewer may take this image at the same time
                task = ReviewTask(image_id=image_id, prediction_id=pred_id, state="claimed",
                                  reasons=pred.reasons or "audit",
                                  priority=_priority(pred), lease_owner=owner,
                                  lease_expires_at=now + dt.timedelta(seconds=lease_s))
                session.add(task)
                session.flush()
                session.add(GoldTask(task_id=task.id, user_id=user_id))
                session.flush()
            return task.id
        except IntegrityError:
            continue
    return None


def not_gold(task_col):
    """Claim-next's condition: a gold task is never handed on to another reviewer."""
    return ~exists().where(GoldTask.task_id == task_col)


def _retire_abandoned(session: Session, now) -> None:
    """A gold task its reviewer released, skipped or let expire is closed (``skipped``): nobody
    else may get it, and its image becomes free to be handed out again."""
    mine = select(GoldTask.task_id)
    session.execute(
        update(RT).where(RT.c.id.in_(mine), RT.c.state.in_(("open", "claimed")),
                         (RT.c.state == "open") | (RT.c.lease_expires_at < now))
        .values(state="skipped", lease_owner=None, lease_expires_at=None, updated_at=now))


def gold_task_owner(session: Session, task_id: int) -> int | None:
    """The reviewer a gold task was handed to, or None when ``task_id`` is not a gold task."""
    return session.scalar(select(GoldTask.user_id).where(GoldTask.task_id == task_id))


def record_answer(session: Session, user_id: int, min_accuracy: float, min_items: int) -> None:
    """After a gold answer: flag the reviewer when their accuracy since their last clearing is
    below ``min_accuracy`` over at least ``min_items`` answers."""
    acc = accuracy(session, [user_id]).get(user_id)
    if acc is None or acc["answers"] < min_items or acc["accuracy"] >= min_accuracy:
        return
    row = session.get(ReviewerGold, user_id)
    if row is None:
        session.add(ReviewerGold(user_id=user_id, flagged_at=utcnow()))
    elif row.flagged_at is None:
        row.flagged_at = utcnow()
    session.flush()


def accuracy(session: Session, user_ids=None) -> dict[int, dict]:
    """Per reviewer: gold answers and how many were right, since their last clearing."""
    q = (select(Label.user_id, Label.cls, GoldImage.cls)
         .join(GoldTask, GoldTask.task_id == Label.task_id)
         .join(GoldImage, GoldImage.image_id == Label.image_id)
         .outerjoin(ReviewerGold, ReviewerGold.user_id == Label.user_id)
         .where(Label.user_id.is_not(None),
                (ReviewerGold.cleared_at.is_(None)) | (Label.created_at > ReviewerGold.cleared_at)))
    if user_ids is not None:
        q = q.where(Label.user_id.in_(list(user_ids)))
    tally: dict[int, Counter] = defaultdict(Counter)
    for uid, said, truth in session.execute(q):
        tally[uid]["answers"] += 1
        tally[uid]["right"] += int(said == truth)
    return {uid: {"answers": t["answers"], "right": t["right"],
                  "accuracy": t["right"] / t["answers"]} for uid, t in tally.items()}


def flagged(session: Session) -> set[int]:
    return set(session.scalars(select(ReviewerGold.user_id)
                               .where(ReviewerGold.flagged_at.is_not(None))))


def clear(session: Session, user_id: int, admin_id: int) -> bool:
    """An admin vouches for the reviewer: their labels count again and their gold count restarts."""
    return session.execute(
        update(ReviewerGold).where(ReviewerGold.user_id == user_id,
                                   ReviewerGold.flagged_at.is_not(None))
        .values(flagged_at=None, cleared_at=utcnow(), cleared_by=admin_id)).rowcount == 1


def users_overview(session: Session) -> dict[int, dict]:
    """For the admin users page: gold accuracy and the flag, per reviewer."""
    acc = accuracy(session)
    flags = {uid: at for uid, at in session.execute(
        select(ReviewerGold.user_id, ReviewerGold.flagged_at))}
    return {uid: {**acc.get(uid, {"answers": 0, "right": 0, "accuracy": None}),
                  "flagged_at": flags.get(uid)}
            for uid in set(acc) | set(flags)}


# --------------------------------------------------------------------------- training
def apply_to_consensus(session: Session, out) -> None:
    """Flagged reviewers' labels leave training (an image keeps whatever other people or a
    training folder said about it), and a gold image trains with its known class."""
    bad = flagged(session)
    touched = (set(session.scalars(select(Label.image_id).where(Label.user_id.in_(bad))))
               if bad else set())
    for part in chunks(sorted(touched)):
        _drop_flagged(session, out, bad, part)
    for image_id, cls in session.execute(select(GoldImage.image_id, GoldImage.cls)):
        out.labels[image_id] = cls
        out.human.add(image_id)
        out.ties.pop(image_id, None)


def _drop_flagged(session: Session, out, bad: set[int], image_ids: list[int]) -> None:
    settled = set(session.scalars(select(RT.c.image_id).where(RT.c.final_cls.is_not(None),
                                                              RT.c.image_id.in_(image_ids))))
    votes: dict[int, Counter] = defaultdict(Counter)
    human: set[int] = set()
    for image_id, user_id, cls in session.execute(
            select(Label.image_id, Label.user_id, Label.cls).where(Label.image_id.in_(image_ids))):
        if user_id in bad:
            continue
        votes[image_id][cls] += 1
        if user_id is not None:
            human.add(image_id)
    for image_id in image_ids:
        if image_id in settled:
            continue  # another reviewer agreed, or an admin decided: that stands
        out.labels.pop(image_id, None)
        out.human.discard(image_id)
        out.ties.pop(image_id, None)
        ranked = votes[image_id].most_common()
        if not ranked:
            continue
        if len(ranked) > 1 and ranked[0][1] == ranked[1][1]:
            out.ties[image_id] = dict(votes[image_id])
            continue
        out.labels[image_id] = ranked[0][0]
        if image_id in human:
            out.human.add(image_id)
