"""What people (and training folders) say an image is: consensus for training, rows for export."""
from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from itertools import groupby
from typing import Iterator

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .schema import Batch, BatchImage, Image, Label, ModelVersion, Prediction, User, utcnow
from .sql import chunks, id_in

TRAINING_PREFIX = "training:"  # a training folder's labels: source "training:<folder>"


@dataclass
class Consensus:
    labels: dict = field(default_factory=dict)        # image_id -> class
    human: set = field(default_factory=set)           # image ids whose label came from people
    ties: dict = field(default_factory=dict)          # image_id -> {class: votes}, for adjudication


def decide(human: Counter, folder: Counter) -> tuple[str | None, bool, dict | None]:
    """One image's label from its votes: (label, from people, tie votes). People outvote
    training folders (they may be correcting them); among people the majority wins; a tie
    keeps the image out of training and lists it."""
    votes = human or folder
    if not votes:
        return None, False, None
    ranked = votes.most_common()
    if len(ranked) > 1 and ranked[0][1] == ranked[1][1]:
        return None, False, dict(votes)
    return ranked[0][0], bool(human), None


def consensus(session: Session) -> Consensus:
    """One label per image (see ``decide``), over every label: what retraining trains on. One
    vote per person: their newest label of the image (a reviewer who labels a reopened task
    again does not vote twice). The labels are read in image order, one image's votes at a time
    (a million labels never sit in memory as vote counters; only the result does)."""
    out = Consensus()
    rows = session.execute(select(Label.image_id, Label.user_id, Label.cls)
                           .order_by(Label.image_id, Label.id).execution_options(yield_per=50_000))
    for image_id, votes in groupby(rows, key=lambda r: r[0]):
        newest: dict[int, str] = {}
        folder = Counter()
        for _, user_id, cls in votes:
            if user_id is None:
                folder[cls] += 1
            else:
                newest[user_id] = cls
        label, from_people, tie = decide(Counter(newest.values()), folder)
        if tie is not None:
            out.ties[image_id] = tie
            continue
        out.labels[image_id] = label
        if from_people:
            out.human.add(image_id)
    from . import gold, overlap  # hooks: final labels of reviewed tasks win; gold; flagged
    overlap.apply_to_consensus(session, out)
    gold.apply_to_consensus(session, out)
    return out


def replace_source_labels(session: Session, source: str, labels: dict[int, str]) -> None:
    """Set the labels a non-human source (a training folder) gives; re-running replaces them."""
    for part in chunks(list(labels)):
        session.execute(Label.__table__.delete().where(Label.source == source, Label.image_id.in_(part)))
    now = utcnow()
    session.add_all([Label(image_id=i, source=source, cls=c, created_at=now) for i, c in labels.items()])


def labels_since(session: Session, since) -> int:
    q = select(func.count()).select_from(Label).where(Label.user_id.is_not(None))
    if since is not None:
        q = q.where(Label.created_at > since)
    return session.scalar(q)


EXPORT_PAGE = 2000  # images per page: memory and each query stay bounded whatever the row count


def export_rows(session: Session, batch_id: int | None = None, page: int = EXPORT_PAGE) -> Iterator[dict]:
    """Per image: hash, source name, latest prediction and its model version, human labels, final.

    Pages through images in id order (keyset: ``id > last``), joining each image's newest
    prediction by ``image.latest_prediction_id``; labels, batch names and the consensus are read
    for one page's images at a time. Memory stays at one page however many images there are, and
    one batch's export reads that batch's rows only (by the batch_image primary key)."""
    P, I = Prediction, Image
    cols = (I.id, I.sha256, I.source_name, I.status, I.error, P.id, P.predicted_class, P.p_road,
            P.head_probs, P.zs_probs, P.model_version_id, ModelVersion.kind, P.routed, P.reasons)
    base = (select(*cols)
            .outerjoin(P, P.id == I.latest_prediction_id)
            .outerjoin(ModelVersion, ModelVersion.id == P.model_version_id))
    if batch_id is not None:
        base = base.join(BatchImage, (BatchImage.image_id == I.id) & (BatchImage.batch_id == batch_id))
    last = 0
    while True:
        rows = session.execute(base.where(I.id > last).order_by(I.id).limit(page)).all()
        if not rows:
            return
        last = rows[-1][0]
        yield from _export_page(session, rows)
        if len(rows) < page:
            return


def _export_page(session: Session, rows) -> Iterator[dict]:
    ids = [r[0] for r in rows]
    people: dict[int, list] = defaultdict(list)
    newest: dict[tuple[int, int], str] = {}
    human: dict[int, Counter] = defaultdict(Counter)
    folder: dict[int, Counter] = defaultdict(Counter)
    batches: dict[int, list] = defaultdict(list)
    for match in id_in(session, Label.image_id, ids):
        for iid, user_id, name, cls, at in session.execute(
                select(Label.image_id, Label.user_id, User.name, Label.cls, Label.created_at)
                .outerjoin(User, User.id == Label.user_id).where(match).order_by(Label.id)):
            if user_id is None:
                folder[iid][cls] += 1
                continue
            newest[iid, user_id] = cls  # one vote per person, as consensus counts them
            people[iid].append({"reviewer": name, "class": cls, "at": at.isoformat()})
    for match in id_in(session, BatchImage.image_id, ids):
        for iid, bname in session.execute(select(BatchImage.image_id, Batch.name)
                                          .join(Batch, Batch.id == BatchImage.batch_id).where(match)):
            batches[iid].append(bname)
    for (iid, _), cls in newest.items():
        human[iid][cls] += 1
    for (iid, sha, source_name, status, error, pid, predicted, p_road, head_probs, zs_probs,
         version, kind, routed, reasons) in rows:
        label, from_people, _ = decide(human.get(iid, Counter()), folder.get(iid, Counter()))
        has_pred = pid is not None
        yield {
            "image_id": iid, "sha256": sha, "source_name": source_name,
            "batches": sorted(batches.get(iid, [])), "status": status, "error": error,
            "predicted_class": predicted, "head_p_road": p_road, "head_probs": head_probs,
            "zero_shot_probs": zs_probs, "model_version": version, "model_kind": kind,
            "routed": routed, "reasons": reasons,
            "human_labels": people.get(iid, []),
            "final_label": label or predicted,
            "final_label_source": ("human" if from_people else "training" if label else
                                   "model" if has_pred else None),
        }
