"""Exports people train on: class-per-folder trees (``imagefolder``) and Hugging Face's imagefolder
layout with a metadata file (``hf``).

Both read the same rows as ``verge export`` (``store.labels.export_rows``), a page at a time, and
place each image with a final class under ``DIR/[SPLIT/]CLASS/``: a hard link to the stored blob
when it lies on the same file system, otherwise a copy. A split is picked from the image's hash,
so an image stays in its split however often the export is rerun and whatever else is added.
"""
from __future__ import annotations

import io
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

from sqlalchemy import select
from sqlalchemy.orm import Session

from models.classes import CLASSES

from .embeddings import unpack_vector
from .labels import export_rows
from .schema import Embedding, Image, Prediction
from .sql import chunks

DATASET_FORMATS = ("imagefolder", "hf")
# suffixes the Hugging Face imagefolder loader picks up (its list is longer; these are what
# verge decodes)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".tif", ".tiff", ".webp"}
_PIL_SUFFIX = {"JPEG": ".jpg", "PNG": ".png", "GIF": ".gif", "BMP": ".bmp", "TIFF": ".tif",
               "WEBP": ".webp"}
_SPLIT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,40}$")
PAGE = 500


class ExportError(ValueError):
    """The request cannot be exported as asked; the message says why."""


def parse_split(text: str | None) -> list[tuple[str, float]]:
    """``train=0.8,val=0.2`` -> [("train", 0.8), ("val", 0.2)]; fractions must add up to 1."""
    if not text:
        return []
    parts = []
    for item in text.split(","):
        name, sep, frac = item.strip().partition("=")
        if not sep or not _SPLIT_NAME.match(name.strip()):
            raise ExportError(f"split {item.strip()!r} is not NAME=FRACTION (e.g. train=0.8,val=0.2)")
        try:
            value = float(frac)
        except ValueError:
            raise ExportError(f"split {item.strip()!r}: {frac!r} is not a number") from None
        if not 0 < value <= 1:
            raise ExportError(f"split {item.strip()!r}: the fraction must lie in (0, 1]")
        parts.append((name.strip(), value))
    names = [n for n, _ in parts]
    if len(set(names)) != len(names):
        raise ExportError(f"split names repeat: {text!r}")
    if abs(sum(v for _, v in parts) - 1.0) > 1e-6:
        raise ExportError(f"split fractions add up to {sum(v for _, v in parts):g}, not 1")
    return parts


def split_of(sha256: str, splits: list[tuple[str, float]]) -> str | None:
    """The split an image belongs to, from hex digits 8-16 of its hash (the holdout reads the
    last ones, the audit sample the first ones: the three stay independent)."""
    if not splits:
        return None
    u = int(sha256[8:16], 16) / float(16 ** 8)
    acc = 0.0
    for name, frac in splits:
        acc += frac
        if u < acc:
            return name
    return splits[-1][0]


@dataclass
class DatasetReport:
    written: int = 0
    linked: int = 0            # hard links (the rest were copied)
    skipped: dict = field(default_factory=dict)   # reason -> count
    per_class: dict = field(default_factory=dict)  # "split/class" or "class" -> count

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1

    def summary(self) -> str:
        where = ", ".join(f"{k} {v}" for k, v in sorted(self.per_class.items()))
        skipped = "; ".join(f"{v} {k}" for k, v in sorted(self.skipped.items()))
        return (f"{self.written} images ({self.linked} hard-linked)" + (f": {where}" if where else "")
                + (f"; left out: {skipped}" if skipped else ""))


def _paged(rows: Iterable[dict]) -> Iterator[list[dict]]:
    page: list[dict] = []
    for row in rows:
        page.append(row)
        if len(page) >= PAGE:
            yield page
            page = []
    if page:
        yield page


def _suffix(source_name: str, data: Callable[[], bytes]) -> str:
    suffix = Path(source_name or "").suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return suffix
    from PIL import Image as PILImage  # only for files that arrived without a usable suffix

    try:
        with PILImage.open(io.BytesIO(data())) as im:
            return _PIL_SUFFIX.get(im.format or "", ".png")
    except Exception:
        return ".jpg"


def _place(blobs, key: str, dest: Path, report: DatasetReport) -> None:
    """Hard-link the stored blob to ``dest`` when the store is a local folder on the same file
    system; otherwise write a copy of its bytes."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        dest.unlink()
    source = None
    path_for = getattr(blobs, "path_for", None)
    if path_for is not None:
        try:
            source = Path(path_for(key))
        except Exception:
            source = None
    if source is not None and source.exists():
        try:
            os.link(source, dest)
            report.linked += 1
            return
        except OSError:  # another file system, or links not allowed: copy instead
            shutil.copyfile(source, dest)
            return
    dest.write_bytes(blobs.get(key))


def _flat_probs(prefix: str, probs: dict | None) -> dict:
    """Per-class columns with one type in every row (a binary head has no road_and_field)."""
    probs = probs or {}
    return {f"{prefix}_{c}": (float(probs[c]) if c in probs else None) for c in CLASSES}


def write_dataset(session: Session, blobs, out_dir: Path, fmt: str, batch_id: int | None = None,
                  splits: list[tuple[str, float]] | None = None, embeddings: bool = False,
                  rows: Iterable[dict] | None = None) -> DatasetReport:
    """Write ``imagefolder`` or ``hf`` into ``out_dir`` (created; it must be empty or absent).

    ``hf`` adds ``metadata.parquet`` beside each split's class folders: the final class as
    ``label`` (the loader infers no label from folder names once metadata exists), the scores,
    model version,
    labels, source name and batches of every image, and with ``embeddings`` its stored CLIP
    embedding (the encoder named per row). Parquet, not JSON lines, because its column types are
    written down: a split whose images all lack a head score still has the same columns as the
    others, which the loader requires."""
    if fmt not in DATASET_FORMATS:
        raise ExportError(f"unknown dataset format {fmt!r}: use {' or '.join(DATASET_FORMATS)}")
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ExportError(f"{out_dir} exists and is not an empty folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    splits = splits or []
    report = DatasetReport()
    metadata: dict[str, _MetadataWriter] = {}
    try:
        for page in _paged(export_rows(session, batch_id) if rows is None else rows):
            keep = []
            for row in page:
                if row["status"] == "failed":
                    report.skip("failed to decode")
                elif row["final_label"] not in CLASSES:
                    report.skip("without a class (not scored yet)")
                else:
                    keep.append(row)
            if not keep:
                continue
            ids = [r["image_id"] for r in keep]
            keys, encoders = {}, {}
            for part in chunks(ids):
                for iid, key, enc in session.execute(
                        select(Image.id, Image.storage_key, Prediction.encoder)
                        .outerjoin(Prediction, Prediction.id == Image.latest_prediction_id)
                        .where(Image.id.in_(part))):
                    keys[iid], encoders[iid] = key, enc
            vectors = _embeddings(session, encoders) if embeddings and fmt == "hf" else {}
            for row in keep:
                iid = row["image_id"]
                split = split_of(row["sha256"], splits)
                suffix = _suffix(row["source_name"], lambda: blobs.get(keys[iid]))
                rel = Path(row["final_label"]) / f"{iid}-{row['sha256'][:12]}{suffix}"
                base = out_dir / split if split else out_dir
                _place(blobs, keys[iid], base / rel, report)
                report.written += 1
                where = f"{split}/{row['final_label']}" if split else row["final_label"]
                report.per_class[where] = report.per_class.get(where, 0) + 1
                if fmt == "hf":
                    writer = metadata.get(split or "")
                    if writer is None:
                        writer = metadata[split or ""] = _MetadataWriter(base / "metadata.parquet",
                                                                         embeddings)
                    writer.add(_metadata(row, rel, vectors.get(iid), encoders.get(iid), embeddings))
            for writer in metadata.values():
                writer.flush()
    finally:
        for writer in metadata.values():
            writer.close()
    return report


class _MetadataWriter:
    """One split's metadata.parquet, written a page at a time under a fixed schema."""

    def __init__(self, path: Path, embeddings: bool):
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.pa = pa
        cols = [("file_name", pa.string()), ("image_id", pa.int64()), ("sha256", pa.string()),
                ("source_name", pa.string()), ("batches", pa.list_(pa.string())),
                ("label", pa.string()), ("label_source", pa.string()),
                ("predicted_class", pa.string()), ("model_version", pa.int64()),
                ("model_kind", pa.string()),
                *[(f"head_p_{c}", pa.float64()) for c in CLASSES],
                *[(f"zero_shot_p_{c}", pa.float64()) for c in CLASSES],
                ("routed", pa.bool_()), ("reasons", pa.string()),
                ("human_labels", pa.list_(pa.struct([("reviewer", pa.string()), ("class", pa.string()),
                                                     ("at", pa.string())])))]
        if embeddings:
            cols += [("embedding", pa.list_(pa.float32())), ("embedding_encoder", pa.string())]
        self.schema = pa.schema(cols)
        self.writer = pq.ParquetWriter(str(path), self.schema)
        self.rows: list[dict] = []

    def add(self, row: dict) -> None:
        self.rows.append(row)

    def flush(self) -> None:
        if self.rows:
            self.writer.write_table(self.pa.Table.from_pylist(self.rows, schema=self.schema))
            self.rows = []

    def close(self) -> None:
        self.flush()
        self.writer.close()


def _embeddings(session: Session, encoders: dict[int, str | None]) -> dict[int, list[float]]:
    out = {}
    ids = [i for i, e in encoders.items() if e]
    for part in chunks(ids):
        for iid, enc, blob in session.execute(select(Embedding.image_id, Embedding.encoder, Embedding.vector)
                                              .where(Embedding.image_id.in_(part))):
            if enc == encoders[iid]:
                out[iid] = [float(x) for x in unpack_vector(blob)]
    return out


def _metadata(row: dict, rel: Path, vector, encoder, embeddings: bool) -> dict:
    meta = {
        "file_name": rel.as_posix(),
        "image_id": row["image_id"], "sha256": row["sha256"], "source_name": row["source_name"],
        "batches": list(row["batches"]),
        "label": row["final_label"], "label_source": row["final_label_source"],
        "predicted_class": row["predicted_class"],
        "model_version": row["model_version"], "model_kind": row["model_kind"] or "zero_shot",
        **_flat_probs("head_p", row["head_probs"]),
        **_flat_probs("zero_shot_p", row["zero_shot_probs"]),
        "routed": bool(row["routed"]), "reasons": row["reasons"] or "",
        "human_labels": [{"reviewer": h["reviewer"], "class": h["class"], "at": h["at"]}
                         for h in row["human_labels"]],
    }
    if embeddings:
        meta["embedding"] = vector
        meta["embedding_encoder"] = encoder if vector is not None else None
    return meta
