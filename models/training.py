"""Training loops: arrays in, a head, its per-epoch curves and held-out metrics out.
No database, no files.

``Recipe()`` is the seed's recipe and nothing more: binary cross-entropy, Adam at lr 3e-3,
batch size 3, 7 epochs, one fixed seed -> the same weights every time on the same inputs. The
fixes the seed's author proposed are options, each off by default: class weighting, halving the
learning rate every N epochs, early stopping on a stratified validation split (the best epoch's
weights are kept), more epochs; and, for large label sets, batches that grow with the set up to a
cap (``max_batches_per_epoch``, ``max_batch_size``). Augmented views of images are made and
encoded before training, by ``workers/training.py`` with ``models/augment.py``; they reach this
module as extra rows of ``X``, tied to their image by ``groups`` and weighed by ``sample_weight``.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from .heads import BINARY, Head, new_head
from .metrics import classification_metrics


@dataclass(frozen=True)
class Recipe:
    lr: float = 3e-3
    batch_size: int = 3
    epochs: int = 7
    seed: int = 0
    class_weighting: bool = False   # weight each class by n / (k * n_class)
    lr_halve_every: int = 0         # 0: constant learning rate
    val_fraction: float = 0.0       # > 0: stratified validation split, metrics every epoch
    patience: int = 0               # > 0 (needs val_fraction): stop after this many epochs without improvement
    monitor: str = "log_loss"       # validation metric that picks the best epoch (losses: lower wins)
    min_delta: float = 0.0          # an epoch counts as an improvement only if it beats the best by more
    max_batches_per_epoch: int = 0  # > 0: a training set larger than batch_size * this trains in
    #                                 larger batches, so that an epoch stays this many steps
    max_batch_size: int = 0         # > 0 (with max_batches_per_epoch): the batch grows no further;
    #                                 an epoch is then max_batches_per_epoch steps of this size, a
    #                                 part of a larger training set (the next epoch goes on where
    #                                 it stopped, so every row is drawn once per pass)


# The retraining job's defaults: the seed's fixes switched on, batches sized for many labels.
# Up to 8000 training rows an epoch is steps of 32; beyond, the batch grows with the set (64k rows
# -> batch 257, 250 steps): at 100k labels 2000 steps of 32 took ~2 s an epoch, mostly per-step
# overhead, 250 steps of 257 ~0.6 s, and the held-out accuracy and macro-F1 stayed within 0.01
# (bench/README.md, section 4). Past 128k training rows the batch stays 512 and an epoch is 250
# steps of it (128k rows): a 131k-parameter head does not need 640k rows per epoch at 1M labels,
# and an epoch's cost stops growing with the label set (early stopping, LR halving and patience
# count the same steps at any size). Early stopping still picks the epoch; an epoch whose
# validation log-loss is better by no more than 1e-4 is no improvement (separable labels drive the
# loss towards 0 by ever smaller steps: without it all 40 epochs ran, 45 s each at 1M labels).
RETRAIN_RECIPE = Recipe(lr=3e-3, batch_size=32, epochs=40, class_weighting=True,
                        lr_halve_every=10, val_fraction=0.2, patience=6, max_batches_per_epoch=250,
                        max_batch_size=512, min_delta=1e-4)


@dataclass
class EpochStats:
    epoch: int
    loss: float
    accuracy: float
    lr: float = 0.0
    val: dict = field(default_factory=dict)


@dataclass
class TrainResult:
    head: Head
    history: list = field(default_factory=list)
    best_epoch: int = 0

    @property
    def final(self) -> EpochStats:
        return self.history[-1]


def batch_size_for(recipe: Recipe, n_train: int) -> int:
    """The batch ``recipe`` trains ``n_train`` rows in: ``batch_size``, or larger once an epoch
    would take more than ``max_batches_per_epoch`` steps (the epoch count, LR halving and
    patience then still mean the same number of steps whatever the size of the label set), but
    never larger than ``max_batch_size`` when that is set."""
    if recipe.max_batches_per_epoch and n_train > recipe.batch_size * recipe.max_batches_per_epoch:
        grown = -(-n_train // recipe.max_batches_per_epoch)
        return min(grown, recipe.max_batch_size) if recipe.max_batch_size else grown
    return recipe.batch_size


def rows_per_epoch(recipe: Recipe, n_train: int) -> int:
    """How many training rows one epoch draws: all of them, or ``max_batches_per_epoch`` capped
    batches when the batch has reached ``max_batch_size``."""
    if recipe.max_batches_per_epoch:
        return min(n_train, batch_size_for(recipe, n_train) * recipe.max_batches_per_epoch)
    return n_train


def stratified_split(y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, held_out), each class split in the same proportion (at least one held out
    per class that has two or more examples)."""
    rng = np.random.default_rng(seed)
    train, held = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        k = int(round(len(idx) * fraction))
        if len(idx) >= 2:
            k = min(max(k, 1), len(idx) - 1)
        else:
            k = 0
        held.extend(idx[:k])
        train.extend(idx[k:])
    return np.sort(np.array(train, dtype=int)), np.sort(np.array(held, dtype=int))


def class_weights(y: np.ndarray, k: int) -> np.ndarray:
    counts = np.bincount(y, minlength=k).astype(np.float64)
    w = np.where(counts > 0, len(y) / (k * np.maximum(counts, 1)), 0.0)
    return w.astype(np.float32)


def train_head(kind: str, X: np.ndarray, y: np.ndarray, encoder_key: str,
               recipe: Recipe = Recipe(), sample_weight: np.ndarray | None = None,
               groups: np.ndarray | None = None, on_epoch=None,
               rows: np.ndarray | None = None) -> TrainResult:
    """Train a head of ``kind`` on embeddings ``X`` (n, d) and class indices ``y``.

    ``groups`` ties augmented views to their source image so a validation split never sees a
    view of a training image; ``sample_weight`` weighs rows (e.g. augmented views). ``rows``
    trains on those rows of ``X`` only: an index array instead of a copy of a large matrix
    (batches are gathered from ``X`` as they are drawn).
    """
    X = np.ascontiguousarray(X, dtype=np.float32)
    y = np.asarray(y, dtype=np.int64)
    if len(X) != len(y) or len(X) == 0:
        raise ValueError(f"need as many labels as embeddings and at least one (got {len(X)}, {len(y)})")
    rows = np.arange(len(y)) if rows is None else np.asarray(rows, dtype=np.int64)
    if len(rows) == 0:
        raise ValueError("need at least one row to train on")
    if len(np.unique(y[rows])) < 2:
        raise ValueError("training needs examples of both classes (field and road)"
                         if kind == BINARY else "training needs examples of at least two classes")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)
        head = new_head(kind, X.shape[1], encoder_key)
        k = len(head.meta.classes)
        if recipe.val_fraction > 0:
            # split whole groups (an image and its augmented views); validation judges each
            # held-out group's first row, the real image, never an augmented view
            # (array operations: a million rows split in a fraction of a second)
            g = np.arange(len(rows)) if groups is None else np.asarray(groups)[rows]
            uniq, first = np.unique(g, return_index=True)  # each group's first row
            _, va_g = stratified_split(y[rows][first], recipe.val_fraction, recipe.seed)
            val_idx = rows[np.sort(first[va_g])]
            train_idx = rows[np.flatnonzero(~np.isin(g, uniq[va_g]))]
        else:
            train_idx, val_idx = rows, np.array([], dtype=np.int64)
        result = _fit(head, X, y, k, train_idx, val_idx, recipe, sample_weight, on_epoch)
    head.meta.metrics = {
        "train_loss": result.final.loss,
        "train_accuracy": result.final.accuracy,
        "examples": int(len(train_idx)),
        "validation_examples": int(len(val_idx)),
        "epochs_run": len(result.history),
        "best_epoch": result.best_epoch,
        "recipe": {**asdict(recipe), "loss": "bce" if kind == BINARY else "cross_entropy",
                   "optimizer": "adam", "batch_size_used": batch_size_for(recipe, len(train_idx))},
        "curves": [asdict(h) for h in result.history],
    }
    if len(val_idx):
        head.meta.metrics["validation"] = result.history[result.best_epoch - 1].val
    return result


def _fit(head: Head, X, y, k, train_idx, val_idx, recipe: Recipe, sample_weight, on_epoch) -> TrainResult:
    model = head.module
    binary = head.meta.kind == BINARY
    gen = torch.Generator().manual_seed(recipe.seed)
    # rows are gathered from X batch by batch: no copy of the training part of the matrix
    base, tr = torch.from_numpy(X), torch.from_numpy(np.asarray(train_idx, dtype=np.int64))
    ys = torch.from_numpy(y[train_idx])
    row_w = torch.ones(len(train_idx))
    if sample_weight is not None:
        row_w = torch.from_numpy(np.asarray(sample_weight, np.float32)[train_idx])
    if recipe.class_weighting:
        row_w = row_w * torch.from_numpy(class_weights(y[train_idx], k))[ys]
    opt = torch.optim.Adam(model.parameters(), lr=recipe.lr)
    sched = (torch.optim.lr_scheduler.StepLR(opt, step_size=recipe.lr_halve_every, gamma=0.5)
             if recipe.lr_halve_every else None)
    batch = batch_size_for(recipe, len(train_idx))
    per_epoch = rows_per_epoch(recipe, len(train_idx))
    result = TrainResult(head)
    best_score, best_state, since_best = -np.inf, None, 0
    order, cursor = None, len(tr)  # a permutation of the training rows, drawn from in turn
    for epoch in range(1, recipe.epochs + 1):
        model.train()
        total, correct, drawn = 0.0, 0, 0
        while drawn < per_epoch:
            if cursor >= len(tr):
                order, cursor = torch.randperm(len(tr), generator=gen), 0
            idx = order[cursor:cursor + min(batch, per_epoch - drawn)]
            cursor += len(idx)
            drawn += len(idx)
            logits = model.logits(base[tr[idx]])
            if binary:
                per_row = nn.functional.binary_cross_entropy_with_logits(
                    logits, ys[idx].float(), reduction="none")
                hits = (logits >= 0).long() == ys[idx]
            else:
                per_row = nn.functional.cross_entropy(logits, ys[idx], reduction="none")
                hits = logits.argmax(dim=1) == ys[idx]
            w = row_w[idx]
            loss = (per_row * w).sum() / w.sum() if (sample_weight is not None or recipe.class_weighting) \
                else per_row.mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
            correct += int(hits.sum())
        stats = EpochStats(epoch, total / drawn, correct / drawn, opt.param_groups[0]["lr"])
        if sched:
            sched.step()
        if len(val_idx):
            model.eval()
            stats.val = classification_metrics(y[val_idx], predict_rows(head, X, val_idx), head.meta.classes)
            score = -stats.val[recipe.monitor] if "loss" in recipe.monitor else stats.val[recipe.monitor]
            if score > best_score + recipe.min_delta:
                best_score, best_state, since_best = score, copy.deepcopy(model.state_dict()), 0
                result.best_epoch = epoch
            else:
                since_best += 1
        result.history.append(stats)
        if on_epoch:
            on_epoch(stats)
        if recipe.patience and len(val_idx) and since_best >= recipe.patience:
            break
    if best_state is not None:
        model.load_state_dict(best_state)  # early stopping keeps the best checkpoint, not the last
    else:
        result.best_epoch = len(result.history)
    model.eval()
    return result


def train_binary(X: np.ndarray, y: np.ndarray, encoder_key: str, recipe: Recipe = Recipe(),
                 on_epoch=None, sample_weight=None, groups=None) -> TrainResult:
    """The binary head on labels ``y`` (1 = road)."""
    return train_head(BINARY, X, np.asarray(y).astype(np.int64), encoder_key, recipe,
                      sample_weight, groups, on_epoch)


def predict_rows(head: Head, X: np.ndarray, rows: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """``head.predict(X[rows])`` a slice at a time: memory of one slice, not a copy of the rows."""
    rows = np.asarray(rows, dtype=np.int64)
    out = np.empty((len(rows), len(head.meta.classes)), np.float32)
    with torch.no_grad():
        for i in range(0, len(rows), chunk):
            out[i:i + chunk] = head.predict(X[rows[i:i + chunk]])
    return out


def out_of_fold_probs(kind: str, X: np.ndarray, y: np.ndarray, encoder_key: str, recipe: Recipe,
                      folds: int = 5, on_epoch=None) -> np.ndarray:
    """Each row's class probabilities from a head that never saw it (k-fold, stratified)."""
    y = np.asarray(y, dtype=np.int64)
    rng = np.random.default_rng(recipe.seed)
    fold_of = np.zeros(len(y), dtype=int)
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        fold_of[idx] = np.arange(len(idx)) % folds
    k = 2 if kind == BINARY else 3
    out = np.zeros((len(y), k), np.float32)
    plain = Recipe(**{**asdict(recipe), "val_fraction": 0.0, "patience": 0})
    for f in range(folds):
        tr, te = np.flatnonzero(fold_of != f), np.flatnonzero(fold_of == f)
        if len(te) == 0 or len(np.unique(y[tr])) < 2:
            continue
        out[te] = predict_rows(train_head(kind, X, y, encoder_key, plain, rows=tr, on_epoch=on_epoch).head,
                               X, te)
    return out
