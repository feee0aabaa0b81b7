"""The seed's recipe and each fix its author proposed, measured on the same held-out photos.

    .venv/bin/python bench/recipes.py                          # verge-tiny, random weights
    .venv/bin/python bench/recipes.py --encoder ViT-B-32 --pretrained /path/to/weights.pt

For every option (one at a time, then all together) it trains on a stratified 70 % of the shared
photos, five splits, and prints held-out accuracy, macro-F1 and ECE (mean ± sd). With random
encoder weights the features are weak and the figures say little about real CLIP; the script is
what to run where real weights exist.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.augment import embed_views  # noqa: E402
from models.encoder import EncoderSpec  # noqa: E402
from models.metrics import classification_metrics  # noqa: E402
from models.pipeline import embed_keys  # noqa: E402
from models.training import Recipe, stratified_split, train_binary  # noqa: E402
from store.blobs import sha256_hex  # noqa: E402
from workers.weights import load_encoder  # noqa: E402

PHOTOS = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "fields-roads"
SEED = Recipe()
OPTIONS = {
    "seed recipe (BCE, Adam 3e-3, batch 3, 7 epochs)": (SEED, 0),
    "+ class weighting": (replace(SEED, class_weighting=True), 0),
    "+ LR halving every 3 epochs, 14 epochs": (replace(SEED, lr_halve_every=3, epochs=14), 0),
    "+ early stopping (patience 4, 30 epochs, best kept)": (replace(SEED, epochs=30, val_fraction=0.2, patience=4), 0),
    "+ 3 augmented views of the minority class": (SEED, 3),
    "all of the above": (replace(SEED, class_weighting=True, lr_halve_every=3, epochs=30,
                                 val_fraction=0.2, patience=4), 3),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--encoder", default="verge-tiny")
    ap.add_argument("--pretrained", default="none")
    ap.add_argument("--splits", type=int, default=5)
    args = ap.parse_args()
    if not PHOTOS.is_dir():
        sys.exit(f"the shared photos are not at {PHOTOS}")
    enc = load_encoder(EncoderSpec(args.encoder, args.pretrained), "cpu")
    files = [(p, 0) for p in sorted((PHOTOS / "fields").iterdir())] + \
            [(p, 1) for p in sorted((PHOTOS / "roads").iterdir())]
    data = [p.read_bytes() for p, _ in files]
    done = embed_keys(enc, list(range(len(files))), lambda i: data[i])
    ids = sorted(done.vectors)
    X = np.stack([done.vectors[i] for i in ids])
    y = np.array([files[i][1] for i in ids])
    minority = int(np.bincount(y).argmin())
    views = embed_views(enc, [(i, sha256_hex(data[i]), data[i]) for i in ids if files[i][1] == minority], 3)
    print(f"encoder {enc.key}; {len(ids)} photos ({np.bincount(y).tolist()} field/road); "
          f"{args.splits} stratified 70/30 splits")
    print(f"{'option':<55} {'accuracy':>15} {'macro-F1':>15} {'ECE':>15}")
    for name, (recipe, n_views) in OPTIONS.items():
        scores = []
        for split in range(args.splits):
            tr, te = stratified_split(y, 0.3, seed=100 + split)
            Xtr, ytr, groups = X[tr], y[tr], np.array(ids)[tr]
            if n_views:
                extra = [(iid, j) for iid in groups for j in range(1, n_views + 1) if (iid, j) in views]
                Xtr = np.concatenate([Xtr, np.stack([views[k] for k in extra])])
                ytr = np.concatenate([ytr, np.full(len(extra), minority)])
                groups = np.concatenate([groups, [k[0] for k in extra]])
            head = train_binary(Xtr, ytr.astype(np.float32), enc.key, replace(recipe, seed=split),
                                groups=groups).head
            m = classification_metrics(y[te], head.predict(X[te]), ("field", "road"))
            scores.append((m["accuracy"], m["macro_f1"], m["ece"]))
        s = np.array(scores)
        cells = " ".join(f"{s[:, k].mean():>8.3f} ±{s[:, k].std():.3f}" for k in range(3))
        print(f"{name:<55} {cells}")


if __name__ == "__main__":
    main()
