"""Classification heads on CLIP embeddings, and their checkpoints.

The binary head is exactly the seed's: Linear(d->256) -> ReLU -> Linear(256->1) -> sigmoid,
p(road) >= 0.5 means road. ``d`` comes from the encoder, never a literal 512. A checkpoint carries
its metadata, and ``load_head`` refuses one made for another encoder.
"""
from __future__ import annotations

import datetime as dt
import io
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .classes import BINARY_CLASSES
from .classes import CLASSES as THREE_CLASSES  # the three-class head outputs every class
from .errors import HeadMismatch

BINARY = "binary"
THREE_CLASS = "three_class"
HIDDEN = 256


class BinaryHead(nn.Module):
    def __init__(self, dim: int, hidden: int = HIDDEN):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """p(road) for each row of ``x``."""
        return torch.sigmoid(self.logits(x))


class MulticlassHead(nn.Module):
    """The same two layers with one output per class; softmax gives the probabilities."""

    def __init__(self, dim: int, n_classes: int, hidden: int = HIDDEN):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, n_classes))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits(x), dim=-1)


@dataclass
class HeadMeta:
    kind: str
    classes: tuple
    encoder: str           # EncoderSpec.key of the embeddings it was trained on
    embedding_dim: int
    created: str = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc).isoformat())
    metrics: dict = field(default_factory=dict)


@dataclass
class Head:
    """A trained head and what it is: the unit saved, loaded and applied."""
    module: nn.Module
    meta: HeadMeta

    def check_encoder(self, encoder_key: str) -> None:
        if encoder_key != self.meta.encoder:
            raise HeadMismatch(
                f"this {self.meta.kind} head was trained on embeddings of '{self.meta.encoder}', "
                f"not '{encoder_key}'; train a head for this encoder or switch VERGE_ENCODER/"
                f"VERGE_PRETRAINED back")

    @torch.inference_mode()
    def predict(self, embeddings: np.ndarray) -> np.ndarray:
        """Class probabilities, shape (n, len(classes)); for the binary head [p(field), p(road)]."""
        if embeddings.shape[1] != self.meta.embedding_dim:
            raise HeadMismatch(f"head expects {self.meta.embedding_dim}-d embeddings, "
                               f"got {embeddings.shape[1]}-d")
        x = torch.from_numpy(np.ascontiguousarray(embeddings, dtype=np.float32))
        self.module.eval()
        if self.meta.kind == BINARY:
            p_road = self.module(x).numpy()
            return np.stack([1.0 - p_road, p_road], axis=1).astype(np.float32)
        return self.module(x).numpy().astype(np.float32)


def new_head(kind: str, dim: int, encoder_key: str) -> Head:
    classes = BINARY_CLASSES if kind == BINARY else THREE_CLASSES
    return Head(_BUILDERS[kind](HeadMeta(kind, classes, encoder_key, dim)),
                HeadMeta(kind, classes, encoder_key, dim))


def new_binary_head(dim: int, encoder_key: str) -> Head:
    return new_head(BINARY, dim, encoder_key)


def save_head(head: Head, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save({"meta": asdict(head.meta), "state_dict": head.module.state_dict()}, tmp)
    tmp.replace(path)  # atomic: a reader never sees half a checkpoint
    return path


_BUILDERS = {
    BINARY: lambda meta: BinaryHead(meta.embedding_dim),
    THREE_CLASS: lambda meta: MulticlassHead(meta.embedding_dim, len(meta.classes)),
}


def head_bytes(head: Head) -> bytes:
    """The checkpoint as bytes (what the database keeps: ``model_version.checkpoint``)."""
    buf = io.BytesIO()
    torch.save({"meta": asdict(head.meta), "state_dict": head.module.state_dict()}, buf)
    return buf.getvalue()


def load_head(source: Path | str | bytes, encoder_key: str | None = None) -> Head:
    """A head from a checkpoint file or from checkpoint bytes."""
    path = "checkpoint bytes" if isinstance(source, bytes) else source
    ckpt = torch.load(io.BytesIO(source) if isinstance(source, bytes) else Path(source),
                      map_location="cpu", weights_only=True)
    meta_dict = dict(ckpt["meta"])
    meta_dict["classes"] = tuple(meta_dict["classes"])
    meta = HeadMeta(**meta_dict)
    if meta.kind not in _BUILDERS:
        raise ValueError(f"checkpoint {path} holds an unknown head kind '{meta.kind}'")
    module = _BUILDERS[meta.kind](meta)
    module.load_state_dict(ckpt["state_dict"])
    module.eval()
    head = Head(module, meta)
    if encoder_key is not None:
        head.check_encoder(encoder_key)
    return head
