"""Identity of images registered in place: their hash is learnt when a worker first reads them.

An object registered from ``s3://...`` is recorded by location and ETag, without its bytes. The
worker that scores it hashes the bytes it reads anyway; ``adopt_hashes`` then either gives the
image that hash, or -- when another image already has those bytes (a copied file, another object)
-- merges it into that first image: its batch links, labels and source name go to the first
image and its own row goes away. One row per content, as for copied files: dedup stays exact and
each batch's counts add up (a batch counts distinct images).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from .images import ids_by_sha
from .schema import BatchImage, Image, Label
from .sql import chunks, insert_ignore


@dataclass
class Adopted:
    merged: dict = field(default_factory=dict)   # duplicate image id -> the image it joined
    woken: list = field(default_factory=list)    # first images only `registered` so far: now queued


def adopt_hashes(session: Session, hashes: dict[int, str]) -> Adopted:
    """Record the sha256 of images read for the first time; merge those whose bytes are known.

    Run in its own transaction: two workers hashing equal bytes at once collide on the unique
    sha256 index and one gets IntegrityError; it retries and then finds the other's image."""
    out = Adopted()
    if not hashes:
        return out
    keeper = dict(ids_by_sha(session, sorted(set(hashes.values()))))
    named = []
    for iid in sorted(hashes):  # the lowest id of equal bytes in this chunk keeps them
        sha = hashes[iid]
        first = keeper.get(sha)
        if first is None:
            keeper[sha] = iid
            named.append({"id": iid, "sha256": sha})
        elif first != iid:
            out.merged[iid] = first
    if named:
        session.execute(update(Image), named)
    if not out.merged:
        return out
    dups = list(out.merged)
    for part in chunks(dups):
        links = session.execute(select(BatchImage.batch_id, BatchImage.image_id, BatchImage.source_name,
                                       BatchImage.added_at).where(BatchImage.image_id.in_(part))).all()
        insert_ignore(session, BatchImage, [
            {"batch_id": b, "image_id": out.merged[i], "source_name": name, "added_at": at}
            for b, i, name, at in links])
        for dup in part:
            session.execute(update(Label).where(Label.image_id == dup).values(image_id=out.merged[dup]))
        session.execute(delete(BatchImage).where(BatchImage.image_id.in_(part)))
        session.execute(delete(Image).where(Image.id.in_(part)))
    firsts = sorted(set(out.merged.values()))
    for part in chunks(firsts):  # e.g. a training image nobody asked to score: it is asked now
        out.woken += list(session.scalars(select(Image.id).where(Image.id.in_(part),
                                                                 Image.status == "registered")))
    for part in chunks(out.woken):
        session.execute(update(Image).where(Image.id.in_(part)).values(status="queued"))
    return out
