"""What people (and training folders) say an image is: consensus for training, rows for export."""
from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Iterator

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .queries import _chunks
from .schema import Batch, BatchImage, Image, Label, ModelVersion, Prediction, User

TRAINING_PREFIX = "training:"


@dataclass
class Consensus:
    labels: dict = field(default_factory=dict)        # image_id -> class
    human: set = field(default_factory=set)           # image ids whose label came from people
    ties: dict = field(default_factory=dict)          # image_id -> {class: votes}, for adjudication


def consensus(session: Session) -> Consensus:
    """One label per image. People outvote training folders (they may be correcting them);
    among people the majority wins, one vote per person (their newest label of the image: a
    reviewer who labels a reopened task again does not vote twice); a tie keeps the image out of
    training and lists it."""
    human: dict[int, Counter] = defaultdict(Counter)
    folder: dict[int, Counter] = defaultdict(Counter)
    vote: dict[tuple[int, int], str] = {}
    for image_id, user_id, cls in session.execute(select(Label.image_id, Label.user_id, Label.cls)
                                                  .order_by(Label.id)):
        if user_id is None:
            folder[image_id][cls] += 1
        else:
            vote[(image_id, user_id)] = cls
    for (image_id, _), cls in vote.items():
        human[image_id][cls] += 1
    out = Consensus()
    for image_id, votes in {**folder, **human}.items():
        ranked = votes.most_common()
        if len(ranked) > 1 and ranked[0][1] == ranked[1][1]:
            out.ties[image_id] = dict(votes)
            continue
        out.labels[image_id] = ranked[0][0]
        if image_id in human:
            out.human.add(image_id)
    from . import gold, overlap  # hooks: final labels of reviewed tasks win; gold; flagged
    overlap.apply_to_consensus(session, out)
    gold.apply_to_consensus(session, out)
    return out


def labels_since(session: Session, since) -> int:
    q = select(func.count()).select_from(Label).where(Label.user_id.is_not(None))
    if since is not None:
        q = q.where(Label.created_at > since)
    return session.scalar(q)


def export_rows(session: Session, batch_id: int | None = None) -> Iterator[dict]:
    """Per image: hash, source name, latest prediction and its model version, human labels, final."""
    q = (select(Image, Prediction, ModelVersion.kind)  # the image's current prediction
         .outerjoin(Prediction, Prediction.id == Image.latest_prediction_id)
         .outerjoin(ModelVersion, ModelVersion.id == Prediction.model_version_id)
         .order_by(Image.id))
    if batch_id is not None:
        q = q.join(BatchImage, BatchImage.image_id == Image.id).where(BatchImage.batch_id == batch_id)
    agreed = consensus(session)
    rows = session.execute(q).all()
    ids = [im.id for im, _, _ in rows]
    people: dict[int, list] = defaultdict(list)
    batches: dict[int, list] = defaultdict(list)
    for part in _chunks(ids):
        for iid, name, cls, at in session.execute(
                select(Label.image_id, User.name, Label.cls, Label.created_at)
                .join(User, User.id == Label.user_id).where(Label.image_id.in_(part)).order_by(Label.id)):
            people[iid].append({"reviewer": name, "class": cls, "at": at.isoformat()})
        for iid, bname in session.execute(select(BatchImage.image_id, Batch.name)
                                          .join(Batch, Batch.id == BatchImage.batch_id)
                                          .where(BatchImage.image_id.in_(part))):
            batches[iid].append(bname)
    for im, pred, kind in rows:
        yield {
            "image_id": im.id, "sha256": im.sha256, "source_name": im.source_name,
            "batches": sorted(batches.get(im.id, [])), "status": im.status, "error": im.error,
            "predicted_class": pred.predicted_class if pred else None,
            "head_p_road": pred.p_road if pred else None,
            "head_probs": pred.head_probs if pred else None,
            "zero_shot_probs": pred.zs_probs if pred else None,
            "model_version": pred.model_version_id if pred else None,
            "model_kind": kind,
            "routed": pred.routed if pred else None, "reasons": pred.reasons if pred else None,
            "human_labels": people.get(im.id, []),
            "final_label": agreed.labels.get(im.id) or (pred.predicted_class if pred else None),
            "final_label_source": ("human" if im.id in agreed.human else
                                   "training" if im.id in agreed.labels else
                                   "model" if pred else None),
        }
