"""Zero-shot captions' text embeddings, per encoder and caption set.

A worker that has CLIP loaded records the text embeddings of its captions; a re-score after a
promotion reads them back and needs only the head and the stored image embeddings, not the
model (~630 MB for ViT-B-32 on top of torch, loaded for its text tower alone)."""
from __future__ import annotations

import hashlib
import json
from typing import Sequence

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from .sql import insert_ignore
from .schema import CaptionEmbedding, utcnow


def captions_sha(captions: Sequence[str]) -> str:
    return hashlib.sha256(json.dumps(list(captions)).encode()).hexdigest()


def remember(session: Session, encoder: str, captions: Sequence[str], logit_scale: float,
             vectors: np.ndarray) -> None:
    """Record (once: a second writer of the same row is a no-op) what ``encoder`` makes of
    ``captions``: their unit text vectors (k, d) and CLIP's logit scale."""
    vectors = np.ascontiguousarray(vectors, dtype="<f4")
    if vectors.ndim != 2 or len(vectors) != len(captions):
        raise ValueError(f"need one vector per caption (got {vectors.shape} for {len(captions)})")
    insert_ignore(session, CaptionEmbedding, [{
        "encoder": encoder, "captions_sha": captions_sha(captions), "captions": list(captions),
        "logit_scale": float(logit_scale), "dim": int(vectors.shape[1]), "vectors": vectors.tobytes(),
        "created_at": utcnow()}])


def recalled(session: Session, encoder: str, captions: Sequence[str]) -> tuple[float, np.ndarray] | None:
    """(logit scale, (k, d) float32 text vectors) recorded for ``captions`` under ``encoder``,
    or None if no worker has recorded them."""
    row = session.scalar(select(CaptionEmbedding).where(CaptionEmbedding.encoder == encoder,
                                                        CaptionEmbedding.captions_sha == captions_sha(captions)))
    if row is None or list(row.captions) != list(captions):
        return None
    return row.logit_scale, np.frombuffer(row.vectors, dtype="<f4").reshape(len(row.captions), row.dim).copy()
