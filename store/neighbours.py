"""Nearest images by stored CLIP embedding, with FAISS (``faiss-cpu``).

One index per database and encoder, per process, built from the ``embedding`` table on first use
(the web app starts that build in the background when it starts) and kept current afterwards:
every search first adds what workers have written since (at most every REFRESH_S seconds).

Vectors are L2-normalised when stored, so inner product is cosine similarity. Below IVF_MIN
vectors the index is exact (a flat scan); from there on it is an inverted file (IVF-Flat) that
scans NPROBE of its sqrt(n) lists per search, so a search at 1M vectors reads ~3 % of them
(bench/neighbours.py measures time and recall against the exact answer).

Keeping current: new embeddings arrive with new predictions (the worker writes both in one
transaction), and prediction ids only grow, so each refresh reads the ids of predictions above
a low-water mark and fetches the embeddings of images the index does not hold yet. The mark
trails by LAG_S so that a transaction which took its prediction id earlier but committed later
is still seen.
"""
from __future__ import annotations

import math
import threading
import time
from collections import deque

import numpy as np
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .sql import chunks
from .schema import Embedding, Prediction

IVF_MIN = 200_000
NPROBE = 16
REFRESH_S = 2.0
LAG_S = 60.0
PAGE = 20_000


def _faiss():
    import faiss  # imported on use: workers and the CLI never need it

    return faiss


class NeighbourIndex:
    """The images of one encoder, searchable by similarity."""

    def __init__(self, encoder: str):
        self.encoder = encoder
        self.index = None
        self.dim: int | None = None
        self.known = np.zeros(0, dtype=bool)  # image_id -> in the index
        self.lock = threading.Lock()
        self.marks: deque = deque()            # (monotonic time, max prediction id) per refresh
        self.low = 0                           # prediction ids above this are re-read
        self.refreshed = 0.0
        self.size = 0

    # ------------------------------------------------------------------ building
    def build(self, session: Session) -> None:
        """Read every stored embedding of this encoder, in pages by image id, and index them."""
        top = session.scalar(select(func.max(Prediction.id))) or 0
        ids_parts, vec_parts = [], []
        after = 0
        while True:
            rows = session.execute(
                select(Embedding.image_id, Embedding.vector)
                .where(Embedding.encoder == self.encoder, Embedding.image_id > after)
                .order_by(Embedding.image_id).limit(PAGE)).all()
            if not rows:
                break
            ids_parts.append(np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows)))
            vec_parts.append(np.frombuffer(b"".join(r[1] for r in rows), dtype="<f4")
                             .reshape(len(rows), -1))
            after = rows[-1][0]
        ids = np.concatenate(ids_parts) if ids_parts else np.zeros(0, dtype=np.int64)
        vecs = np.concatenate(vec_parts) if vec_parts else None
        self.load(ids, vecs)
        self.low = top
        self.marks.clear()
        self.refreshed = time.monotonic()

    def load(self, ids: np.ndarray, vecs: np.ndarray | None) -> None:
        """Index ``vecs`` (n x d float32, rows L2-normalised) under ``ids``."""
        faiss = _faiss()
        if vecs is None or len(ids) == 0:
            self.index, self.dim, self.size = None, None, 0
            self.known = np.zeros(0, dtype=bool)
            return
        vecs = np.ascontiguousarray(vecs, dtype=np.float32)
        n, d = vecs.shape
        if n < IVF_MIN:
            index = faiss.IndexIDMap2(faiss.IndexFlatIP(d))
        else:
            nlist = int(math.sqrt(n))
            quantizer = faiss.IndexFlatIP(d)
            index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
            sample = vecs[np.random.default_rng(0).choice(n, min(n, 40 * nlist), replace=False)]
            index.train(sample)
            index.nprobe = NPROBE
        index.add_with_ids(vecs, ids.astype(np.int64))
        self.index, self.dim, self.size = index, d, n
        self.known = np.zeros(int(ids.max()) + 1, dtype=bool)
        self.known[ids] = True

    # ------------------------------------------------------------------ keeping current
    def refresh(self, session: Session, force: bool = False) -> int:
        """Add embeddings written since the last refresh; returns how many were added."""
        now = time.monotonic()
        if not force and now - self.refreshed < REFRESH_S:
            return 0
        self.refreshed = now
        rows = session.execute(select(Prediction.id, Prediction.image_id)
                               .where(Prediction.id > self.low)).all()
        if not rows:
            return 0
        top = max(r[0] for r in rows)
        self.marks.append((now, top))
        while self.marks and now - self.marks[0][0] >= LAG_S:  # old enough: nothing in flight
            self.low = max(self.low, self.marks.popleft()[1])
        fresh = sorted({iid for _, iid in rows
                        if iid >= len(self.known) or not self.known[iid]})
        added = 0
        for part in chunks(fresh):
            got = session.execute(select(Embedding.image_id, Embedding.vector).where(
                Embedding.encoder == self.encoder, Embedding.image_id.in_(part))).all()
            if got:
                self.add(np.array([g[0] for g in got], dtype=np.int64),
                         np.frombuffer(b"".join(g[1] for g in got), dtype="<f4")
                         .reshape(len(got), -1))
                added += len(got)
        return added

    def add(self, ids: np.ndarray, vecs: np.ndarray) -> None:
        """Index the rows of ``vecs`` under ``ids`` that are not indexed yet."""
        if self.index is None:
            self.load(ids, vecs)
            return
        new = np.ones(len(ids), dtype=bool)
        seen = ids < len(self.known)
        new[seen] = ~self.known[ids[seen]]
        ids, vecs = ids[new], vecs[new]
        if not len(ids):
            return
        self.index.add_with_ids(np.ascontiguousarray(vecs, dtype=np.float32), ids)
        if ids.max() >= len(self.known):
            grown = np.zeros(max(int(ids.max()) + 1, 2 * len(self.known)), dtype=bool)
            grown[:len(self.known)] = self.known
            self.known = grown
        self.known[ids] = True
        self.size += len(ids)

    # ------------------------------------------------------------------ searching
    def search(self, vector: np.ndarray, k: int, exclude: int | None = None
               ) -> list[tuple[int, float]]:
        """The ``k`` most similar images as (image_id, cosine similarity), best first."""
        if self.index is None:
            return []
        q = np.ascontiguousarray(vector, dtype=np.float32).reshape(1, -1)
        scores, ids = self.index.search(q, k + 1)
        out = [(int(i), float(s)) for i, s in zip(ids[0], scores[0])
               if i >= 0 and int(i) != exclude]
        return out[:k]


_indexes: dict[tuple[str, str], NeighbourIndex] = {}
_registry_lock = threading.Lock()


def index_for(url: str, encoder: str, session: Session) -> NeighbourIndex:
    """This process's index for ``encoder`` on database ``url``: built once, then refreshed."""
    with _registry_lock:
        idx = _indexes.get((url, encoder))
        if idx is None:
            idx = _indexes[(url, encoder)] = NeighbourIndex(encoder)
            fresh = True
        else:
            fresh = False
    with idx.lock:
        if fresh or (idx.index is None and idx.refreshed == 0.0):
            idx.build(session)
        else:
            idx.refresh(session)
    return idx


def similar(url: str, session: Session, image_id: int, k: int) -> list[tuple[int, float]]:
    """The ``k`` images most like ``image_id`` by its stored embedding; [] when it has none."""
    row = session.execute(select(Embedding.encoder, Embedding.vector)
                          .where(Embedding.image_id == image_id).limit(1)).first()
    if row is None:
        return []
    idx = index_for(url, row.encoder, session)
    with idx.lock:
        return idx.search(np.frombuffer(row.vector, dtype="<f4"), k, exclude=image_id)


def warm(url: str) -> None:
    """Build the indexes of every encoder with stored embeddings (the web app calls this in a
    background thread at start, so the first reviewer does not wait for it)."""
    import logging

    from .db import session_scope

    try:
        with session_scope(url) as s:
            encoders = list(s.scalars(select(Embedding.encoder).distinct()))
            for enc in encoders:
                index_for(url, enc, s)
    except Exception as exc:  # the first search builds it instead; never take the app down
        logging.getLogger(__name__).warning("neighbour index not built at start: %s", exc)


def forget() -> None:
    """Drop every index (tests, between databases)."""
    with _registry_lock:
        _indexes.clear()
