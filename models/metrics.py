"""Held-out metrics for a classifier, from labels and predicted probabilities (numpy only)."""
from __future__ import annotations

import numpy as np


def classification_metrics(y: np.ndarray, probs: np.ndarray, classes, n_bins: int = 10) -> dict:
    """accuracy, macro-F1, per-class precision/recall/F1, confusion matrix (rows = truth), ECE,
    log-loss (mean negative log-probability of the true class).

    ``y`` holds class indices into ``classes``; ``probs`` is (n, k) with k <= len(classes)
    (a binary head judged on three-class labels simply never predicts the third class).
    """
    y = np.asarray(y, dtype=int)
    k = len(classes)
    n = len(y)
    if n == 0:
        return {"n": 0}
    pred = probs.argmax(axis=1)
    conf = probs.max(axis=1)
    cm = np.zeros((k, k), dtype=int)
    np.add.at(cm, (y, pred), 1)
    per_class = {}
    f1s = []
    for i, c in enumerate(classes):
        tp = cm[i, i]
        p_den, r_den = cm[:, i].sum(), cm[i, :].sum()
        precision = tp / p_den if p_den else 0.0
        recall = tp / r_den if r_den else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[c] = {"precision": float(precision), "recall": float(recall), "f1": float(f1),
                        "support": int(r_den)}
        if r_den:  # macro-F1 over the classes present in the held-out labels
            f1s.append(f1)
    correct = pred == y
    p_true = np.where(y < probs.shape[1], probs[np.arange(n), np.minimum(y, probs.shape[1] - 1)], 0.0)
    log_loss = float(-np.log(np.clip(p_true, 1e-7, 1.0)).mean())
    bins = np.minimum((conf * n_bins).astype(int), n_bins - 1)
    ece = sum(abs(correct[bins == b].mean() - conf[bins == b].mean()) * (bins == b).sum() / n
              for b in range(n_bins) if (bins == b).any())
    return {
        "n": int(n),
        "accuracy": float(correct.mean()),
        "macro_f1": float(np.mean(f1s)) if f1s else 0.0,
        "per_class": per_class,
        "confusion": cm.tolist(),
        "classes": list(classes),
        "ece": float(ece),
        "log_loss": log_loss,
    }
