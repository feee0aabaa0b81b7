"""Training loops: arrays in, a head and its per-epoch history out. No database, no files.

``train_binary`` is the seed's recipe and nothing more: binary cross-entropy, Adam at lr 3e-3,
batch size 3, 7 epochs, one fixed seed -> the same weights every time on the same inputs.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from .heads import Head, new_binary_head


@dataclass(frozen=True)
class BinaryRecipe:
    lr: float = 3e-3
    batch_size: int = 3
    epochs: int = 7
    seed: int = 0


@dataclass
class EpochStats:
    epoch: int
    loss: float
    accuracy: float


@dataclass
class TrainResult:
    head: Head
    history: list = field(default_factory=list)

    @property
    def final(self) -> EpochStats:
        return self.history[-1]


def train_binary(X: np.ndarray, y: np.ndarray, encoder_key: str, recipe: BinaryRecipe = BinaryRecipe(),
                 on_epoch=None) -> TrainResult:
    """Train the seed's binary head on embeddings ``X`` (n, d) with labels ``y`` (1 = road)."""
    if len(X) != len(y) or len(X) == 0:
        raise ValueError(f"need as many labels as embeddings and at least one (got {len(X)}, {len(y)})")
    if len(set(np.asarray(y).tolist())) < 2:
        raise ValueError("training needs examples of both classes (field and road)")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)
        head = new_binary_head(X.shape[1], encoder_key)
        model = head.module
        gen = torch.Generator().manual_seed(recipe.seed)
        xs = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))
        ys = torch.from_numpy(np.asarray(y, dtype=np.float32))
        opt = torch.optim.Adam(model.parameters(), lr=recipe.lr)
        loss_fn = nn.BCEWithLogitsLoss()  # BCE on the sigmoid output, computed stably
        result = TrainResult(head)
        for epoch in range(1, recipe.epochs + 1):
            model.train()
            order = torch.randperm(len(xs), generator=gen)
            total, correct = 0.0, 0
            for i in range(0, len(xs), recipe.batch_size):
                idx = order[i:i + recipe.batch_size]
                logits = model.logits(xs[idx])
                loss = loss_fn(logits, ys[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                total += float(loss) * len(idx)
                correct += int(((logits >= 0) == (ys[idx] >= 0.5)).sum())
            stats = EpochStats(epoch, total / len(xs), correct / len(xs))
            result.history.append(stats)
            if on_epoch:
                on_epoch(stats)
        model.eval()
    head.meta.metrics = {
        "train_loss": result.final.loss,
        "train_accuracy": result.final.accuracy,
        "examples": int(len(xs)),
        "epochs": recipe.epochs,
        "recipe": {"lr": recipe.lr, "batch_size": recipe.batch_size, "epochs": recipe.epochs,
                   "seed": recipe.seed, "loss": "bce", "optimizer": "adam"},
    }
    return result
