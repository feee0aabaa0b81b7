"""Training jobs: read labeled images, embed what is not embedded yet, train, record, activate.

``train_binary_dir`` is the seed's recipe on a folder with ``fields/`` and ``roads/``. Its images
are registered (content-addressed, deduplicated) and their embeddings stored, so training again,
or scoring the same files later, never recomputes CLIP.
"""
from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from models.encoder import EncoderSpec
from models.heads import head_bytes
from models.augment import embed_views
from models.pipeline import embed_keys
from models.training import Recipe, EpochStats, train_binary
from store.blobs import BlobStore, open_blobs
from store.db import session_scope
from store.embeddings import save_embeddings, stored_embeddings
from store.images import mark_failed, register_images
from store.labels import TRAINING_PREFIX, replace_source_labels
from store.model_versions import activate_model
from store.schema import ModelVersion
from verge.settings import Settings

from .errors import TrainingDataError
from .submission import IMAGE_SUFFIXES
from .weights import load_encoder

CLASS_FOLDERS = {"fields": "field", "roads": "road"}


@dataclass
class TrainOutcome:
    version_id: int
    path: Path
    examples: int
    reused: int                     # embeddings taken from the database
    embedded: int                   # embeddings computed now
    failed: list                    # (file, reason) left out of training
    history: list
    metrics: dict


def labeled_files(folder: Path) -> list[tuple[Path, str]]:
    folder = Path(folder)
    if not folder.is_dir():
        raise TrainingDataError(f"{folder} is not a folder")
    missing = [name for name in CLASS_FOLDERS if not (folder / name).is_dir()]
    if missing:
        raise TrainingDataError(f"{folder} needs sub-folders fields/ and roads/ (missing: {', '.join(missing)})")
    out = []
    for sub, cls in CLASS_FOLDERS.items():
        for p in sorted((folder / sub).rglob("*")):
            if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES:
                out.append((p, cls))
    return out


def train_binary_dir(settings: Settings, folder: Path, recipe: Recipe = Recipe(),
                     on_epoch: Callable[[EpochStats], None] | None = None,
                     progress_factory=None, activate: bool = True, augment: int = 0) -> TrainOutcome:
    """The seed's recipe on ``folder/fields`` and ``folder/roads``."""
    folder = Path(folder).resolve()
    files = labeled_files(folder)
    if not files:
        raise TrainingDataError(f"no images under {folder}/fields or {folder}/roads")
    return train_binary_files(settings, files, f"{TRAINING_PREFIX}{folder}", recipe, on_epoch,
                              progress_factory, activate, augment)


def train_binary_files(settings: Settings, files: list[tuple[Path, str]], source: str,
                       recipe: Recipe = Recipe(),
                       on_epoch: Callable[[EpochStats], None] | None = None,
                       progress_factory=None, activate: bool = True, augment: int = 0) -> TrainOutcome:
    """Train the binary head on (file, "field"|"road") pairs; record it as a model version.

    ``augment`` > 0 adds that many augmented views of every minority-class image (their
    embeddings are cached under ``<encoder key>#aug<j>``, so a second run encodes nothing)."""
    url = settings.resolved_database_url
    blobs = open_blobs(settings.resolved_blob_url, settings.decode_threads)
    encoder = load_encoder(EncoderSpec(settings.encoder, settings.pretrained), settings.device)

    rows = []
    for path, _ in files:
        data = path.read_bytes()
        rows.append((str(path), blobs.put(data), len(data)))
    with session_scope(url) as s:
        reg = register_images(s, None, rows, queue=False)
        replace_source_labels(s, source, {iid: cls for iid, (_, cls) in zip(reg.image_ids, files)})
        stored = stored_embeddings(s, reg.image_ids, encoder.key)
    sha_of = {iid: sha for iid, (_, sha, _) in zip(reg.image_ids, rows)}
    missing = [iid for iid in dict.fromkeys(reg.image_ids) if iid not in stored]
    bar = progress_factory(len(missing)) if progress_factory and missing else None
    done = embed_keys(encoder, missing, lambda iid: blobs.get(sha_of[iid]),
                      batch_size=settings.batch_size, threads=settings.decode_threads,
                      max_pixels=settings.max_image_pixels, on_progress=bar.update if bar else None,
                      device_decode=settings.gpu_decode if encoder.device.type == "cuda" else "off")
    if bar:
        bar.close()
    with session_scope(url) as s:
        save_embeddings(s, encoder.key, done.vectors)
        # Only images nobody asked to score yet become failed; a scored image keeps its state.
        mark_failed(s, {iid: r for iid, r in done.errors.items()
                          if iid in set(reg.new_ids)})
    vectors = {**stored, **done.vectors}
    label_of = {iid: cls for iid, (_, cls) in zip(reg.image_ids, files)}
    ids = [iid for iid in dict.fromkeys(reg.image_ids) if iid in vectors]
    X = np.stack([vectors[i] for i in ids]).astype(np.float32)
    y = np.array([1.0 if label_of[i] == "road" else 0.0 for i in ids], np.float32)
    groups = np.array(ids)
    if augment:
        extra_X, extra_y, extra_g = augmented_rows(settings, encoder, ids, y, sha_of, blobs, augment)
        X, y, groups = np.concatenate([X, extra_X]), np.concatenate([y, extra_y]), np.concatenate([groups, extra_g])
    result = train_binary(X, y, encoder.key, recipe, on_epoch=on_epoch, groups=groups)
    result.head.meta.metrics.update({"source": source, "augmented_views": int(len(X) - len(ids))})

    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    name = f"binary-{stamp}-{secrets.token_hex(3)}.pt"
    path = Path("database") / name  # the checkpoint lives in model_version.checkpoint
    with session_scope(url) as s:
        mv = ModelVersion(kind=result.head.meta.kind, classes=list(result.head.meta.classes),
                          encoder=encoder.key, path=str(path), checkpoint=head_bytes(result.head),
                          metrics=result.head.meta.metrics,
                          state="candidate", note=f"binary head trained on {source}")
        s.add(mv)
        s.flush()
        if activate:
            activate_model(s, mv.id)
        version_id = mv.id
    failed = [(name, done.errors[iid]) for iid, (name, _, _) in zip(reg.image_ids, rows)
              if iid in done.errors]
    return TrainOutcome(version_id, path, len(ids), len(stored), len(done.vectors), failed, result.history,
                        result.head.meta.metrics)


def augmented_rows(settings: Settings, encoder, ids, y, sha_of, blobs: BlobStore, views: int):
    """Embeddings of ``views`` augmented views of each minority-class image, cached in the
    embedding table under ``<encoder key>#aug<j>``."""
    minority = 0.0 if (y == 0).sum() < (y == 1).sum() else 1.0
    chosen = [iid for iid, label in zip(ids, y) if label == minority]
    url = settings.resolved_database_url
    cached: dict = {}
    with session_scope(url) as s:
        for j in range(1, views + 1):
            for iid, v in stored_embeddings(s, chosen, f"{encoder.key}#aug{j}").items():
                cached[(iid, j)] = v
    todo = [iid for iid in chosen if any((iid, j) not in cached for j in range(1, views + 1))]
    fresh = embed_views(encoder, [(iid, sha_of[iid], blobs.get(sha_of[iid])) for iid in todo], views,
                        settings.batch_size)
    with session_scope(url) as s:
        for j in range(1, views + 1):
            save_embeddings(s, f"{encoder.key}#aug{j}",
                              {iid: v for (iid, jj), v in fresh.items() if jj == j})
    cached.update(fresh)
    keys = sorted(cached)
    return (np.stack([cached[k] for k in keys]).astype(np.float32),
            np.full(len(keys), minority, np.float32), np.array([iid for iid, _ in keys]))
