"""CLIP zero-shot: the second judge. One caption per class; softmax over CLIP's scaled cosines.

Text embeddings depend only on the encoder and the captions, so they are computed once and kept.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .encoder import Encoder


class ZeroShot:
    def __init__(self, encoder: Encoder, captions: Sequence[str], classes: Sequence[str]):
        if len(captions) != len(classes):
            raise ValueError(f"{len(captions)} captions for {len(classes)} classes")
        self.captions = tuple(captions)
        self.classes = tuple(classes)
        self.encoder_key = encoder.key
        self.logit_scale = encoder.logit_scale
        self.text = encoder.encode_texts(self.captions)  # (k, d), unit vectors

    @classmethod
    def from_text(cls, encoder_key: str, captions: Sequence[str], classes: Sequence[str],
                  text: np.ndarray, logit_scale: float) -> "ZeroShot":
        """The judge from text embeddings recorded earlier (store/captions.py): no model needed."""
        if len(captions) != len(classes) or len(text) != len(captions):
            raise ValueError(f"{len(captions)} captions, {len(classes)} classes, {len(text)} vectors")
        self = cls.__new__(cls)
        self.captions, self.classes = tuple(captions), tuple(classes)
        self.encoder_key, self.logit_scale = encoder_key, float(logit_scale)
        self.text = np.asarray(text, dtype=np.float32)
        return self

    def predict(self, embeddings: np.ndarray) -> np.ndarray:
        """(n, k) probabilities over the classes, rows summing to 1."""
        logits = self.logit_scale * (embeddings @ self.text.T)
        logits -= logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


_cache: dict = {}


def zero_shot_for(encoder: Encoder, captions: Sequence[str], classes: Sequence[str]) -> ZeroShot:
    """The cached ZeroShot for this encoder and caption set (text encoded once per process)."""
    key = (id(encoder), encoder.key, tuple(captions), tuple(classes))
    if key not in _cache:
        _cache[key] = ZeroShot(encoder, captions, classes)
    return _cache[key]
