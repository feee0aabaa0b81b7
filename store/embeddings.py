"""Image embeddings: one vector per image and encoder, stored as little-endian float32 bytes.
Read back as a dict (a chunk's few images) or straight into one matrix (retraining's millions)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from . import embedding_copy
from .schema import Embedding, Image
from .sql import id_in, insert_ignore


def pack_vector(v: np.ndarray) -> bytes:
    return np.ascontiguousarray(v, dtype="<f4").tobytes()


def unpack_vector(b: bytes) -> np.ndarray:
    return np.frombuffer(b, dtype="<f4")


def stored_embeddings(session: Session, image_ids: Sequence[int], encoder: str) -> dict[int, np.ndarray]:
    out: dict[int, np.ndarray] = {}
    for ids_match in id_in(session, Embedding.image_id, image_ids):
        for iid, vec in session.execute(select(Embedding.image_id, Embedding.vector).where(
                Embedding.encoder == encoder, ids_match)):
            out[iid] = unpack_vector(vec)
    return out


def embedding_matrix(session: Session, image_ids: Sequence[int], encoder: str,
                     page: int = 20_000, on_page=None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The stored embeddings of ``image_ids`` read straight into one float32 matrix, in image id
    order: (ids found, matrix with a row per id found, their sha256). One allocation and no dict
    of vectors, so a million labels cost the matrix (2 GB at 512-d) and little more; ids without
    an embedding from ``encoder`` are left out. ``on_page()`` is called after each page of
    ``page`` ids (a long read renews its job's lease there)."""
    ids = np.unique(np.asarray(list(image_ids), dtype=np.int64))
    found = np.empty(len(ids), np.int64)
    X: np.ndarray | None = None
    shas: list[str] = []
    n = 0
    postgres = session.get_bind().dialect.name == "postgresql"
    for i in range(0, len(ids), page):
        got = embedding_copy.read_page(session, ids[i:i + page].tolist(), encoder) if postgres else None
        if got is not None and len(got[0]):  # one binary COPY of the page (store/embedding_copy.py)
            if X is None:  # untouched rows of np.empty cost no memory
                X = np.empty((len(ids), got[1].shape[1]), np.float32)
            X[n:n + len(got[0])] = got[1]
            found[n:n + len(got[0])] = got[0]
            shas.extend(got[2])
            n += len(got[0])
        for match in (() if got is not None else id_in(session, Embedding.image_id, ids[i:i + page].tolist())):
            for iid, vec, sha in session.execute(
                    select(Embedding.image_id, Embedding.vector, Image.sha256)
                    .join(Image, Image.id == Embedding.image_id)
                    .where(Embedding.encoder == encoder, match).order_by(Embedding.image_id)):
                v = unpack_vector(vec)
                if X is None:  # untouched rows of np.empty cost no memory
                    X = np.empty((len(ids), len(v)), np.float32)
                X[n] = v
                found[n] = iid
                shas.append(sha)
                n += 1
        if on_page is not None:
            on_page()
    if X is None:
        X = np.empty((0, 0), np.float32)
    return found[:n], X[:n], shas


def save_embeddings(session: Session, encoder: str, vectors: dict[int, np.ndarray]) -> None:
    insert_ignore(session, Embedding, [
        {"image_id": iid, "encoder": encoder, "dim": int(v.shape[0]), "vector": pack_vector(v)}
        for iid, v in vectors.items()])
