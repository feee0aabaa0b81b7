"""Loop simulation: how many labels does verge's routing need, against random sampling and full
supervision, to reach a target held-out accuracy?

Simulated reviewers answer with the ground truth. Each round the head is retrained on the labels
so far; verge then sends the next K items the routing policy ranks highest (workers/routing.py:
near the threshold, judges disagreeing, most uncertain first), the baseline sends K at random.

    .venv/bin/python bench/loop.py                       # synthetic 64-d set, 4000 pool items
    .venv/bin/python bench/loop.py --data photos         # the 153 shared photos, tiny encoder

Prints both curves (labels -> accuracy), the labels each needs to reach the target (a fraction of
what full supervision reaches), and as the last line `ratio: verge/full=<x> random/full=<y>`.

    .venv/bin/python bench/loop.py --team                # a review team (bench/_team.py)

With ``--team``: three simulated reviewers, one wrong on 15 %, overlap 2 and gold on, with and
without bulk labeling of similar images; prints the actions each setting needs to reach the
target (against full supervision's one label per item), and how many of the careless reviewer's
wrong labels reach training with gold and overlap on and off.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(1, str(Path(__file__).resolve().parent))

from _team import item_shas, route_next  # noqa: E402  (the routing loop the team shares)
from models.training import Recipe, train_binary  # noqa: E402

FAST = Recipe(lr=3e-3, batch_size=32, epochs=15, seed=0)


def synthetic(n: int, dim: int = 64, clusters: int = 24, seed: int = 0):
    """Each class is a mixture of clusters whose edges touch the other class's: most items are
    easy, the boundary regions are where labels pay off (trampled paths, roads between fields).
    The truth is the class of the nearest cluster centre, so full supervision can learn it."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, dim))
    centre_class = np.arange(clusters) % 2
    which = rng.integers(0, clusters, n)
    X = centres[which] + rng.normal(scale=0.9, size=(n, dim))
    nearest = ((X[:, None, :] - centres[None]) ** 2).sum(-1).argmin(1)
    y = centre_class[nearest].astype(np.float32)
    # a weaker second judge (zero-shot stand-in): right 75 % of the time, unsure near 0.5
    right = rng.random(n) < 0.75
    zs = np.clip(np.where(right == (y == 1), 0.7, 0.3) + rng.normal(scale=0.1, size=n), 0.01, 0.99)
    X = X / np.linalg.norm(X, axis=1, keepdims=True)
    return X.astype(np.float32), y, zs


def photos():
    from models.encoder import EncoderSpec, load_encoder
    from models.pipeline import embed_keys
    from models.zeroshot import ZeroShot
    from verge.settings import DEFAULT_CAPTIONS

    root = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "fields-roads"
    files = [(p, 0.0) for p in sorted((root / "fields").iterdir())] + \
            [(p, 1.0) for p in sorted((root / "roads").iterdir())]
    enc = load_encoder(EncoderSpec("verge-tiny", "none"), "cpu")
    done = embed_keys(enc, list(range(len(files))), lambda i: files[i][0].read_bytes())
    keep = sorted(done.vectors)
    X = np.stack([done.vectors[i] for i in keep])
    y = np.array([files[i][1] for i in keep], np.float32)
    zs = ZeroShot(enc, DEFAULT_CAPTIONS, ("field", "road")).predict(X)[:, 1]
    return X, y, zs


def accuracy(X, y, train_idx, test_X, test_y):
    """(held-out accuracy, head) of the seed's head trained on ``train_idx``; one class -> no head."""
    if len(set(y[train_idx].tolist())) < 2:
        return float((test_y == np.bincount(y[train_idx].astype(int)).argmax()).mean()), None
    head = train_binary(X[train_idx], y[train_idx], "sim", FAST).head
    return float(((head.predict(test_X)[:, 1] >= 0.5) == (test_y >= 0.5)).mean()), head


def simulate(strategy: str, X, y, zs, test_X, test_y, seed_n: int, step: int, budget: int, seed: int):
    rng = np.random.default_rng(seed)
    labeled = list(rng.choice(len(y), seed_n, replace=False))
    shas = item_shas(len(y))
    curve = []
    while True:
        acc, head = accuracy(X, y, np.array(labeled), test_X, test_y)
        curve.append((len(labeled), acc))
        if len(labeled) >= budget:
            return curve
        pool = np.setdiff1d(np.arange(len(y)), labeled)
        pick = route_next(None if strategy == "random" else head, X, zs, shas, pool, step, rng)
        labeled.extend(int(i) for i in pick)


def labels_to_reach(curve, target):
    for n, acc in curve:
        if acc >= target:
            return n
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", choices=["synthetic", "photos"], default="synthetic")
    ap.add_argument("--n", type=int, default=3000, help="pool size (synthetic)")
    ap.add_argument("--step", type=int, default=None, help="labels per round")
    ap.add_argument("--target", type=float, default=0.98,
                    help="fraction of full supervision's held-out accuracy to reach")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--team", action="store_true", help="a review team instead (bench/_team.py)")
    args = ap.parse_args()
    t0 = time.time()
    if args.data == "synthetic":
        X, y, zs = synthetic(args.n + 2000)
        test_X, test_y = X[args.n:], y[args.n:]
        X, y, zs = X[:args.n], y[:args.n], zs[:args.n]
    else:
        X, y, zs = photos()
        rng = np.random.default_rng(0)
        idx = rng.permutation(len(y))
        test, pool = idx[: len(y) // 3], idx[len(y) // 3:]
        test_X, test_y = X[test], y[test]
        X, y, zs = X[pool], y[pool], zs[pool]
    step = args.step or max(4, len(y) // 40)
    seed_n = max(6, step // 2)
    full = accuracy(X, y, np.arange(len(y)), test_X, test_y)[0]
    target = args.target * full
    print(f"data={args.data} pool={len(y)} test={len(test_y)} step={step} "
          f"full supervision: {len(y)} labels -> held-out accuracy {full:.4f}; target {target:.4f}")
    if args.team:
        return team_main(args, X, y, zs, test_X, test_y, step, seed_n, target, t0)
    budget = len(y) // 2
    results = {}
    for strategy in ("verge", "random"):
        needs, curves = [], []
        for s in range(args.seeds):
            curve = simulate(strategy, X, y, zs, test_X, test_y, seed_n, step, budget, seed=s)
            curves.append(curve)
            needs.append(labels_to_reach(curve, target))
        results[strategy] = needs
        mean_curve = [(c[0], float(np.mean([cv[k][1] for cv in curves]))) for k, c in enumerate(curves[0])]
        print(f"{strategy:>6} curve (labels: accuracy, mean of {args.seeds} seeds): " +
              " ".join(f"{n}:{a:.3f}" for n, a in mean_curve[:: max(1, len(mean_curve) // 12)]))
        print(f"{strategy:>6} labels to reach target per seed: {needs}")

    def ratio(needs):
        reached = [n for n in needs if n is not None]
        if len(reached) < len(needs):
            return float("nan")  # did not reach the target within half the pool
        return float(np.mean(reached)) / len(y)

    print(f"elapsed {time.time() - t0:.1f}s")
    print(f"ratio: verge/full={ratio(results['verge']):.3f} random/full={ratio(results['random']):.3f}")


def team_main(args, X, y, zs, test_X, test_y, step, seed_n, target, t0) -> None:
    from _team import Config, simulate_team

    full_actions = len(y)  # full supervision: one label per item, one action each
    settings = [
        ("overlap 2 + gold, bulk", Config(overlap=2, gold=True, bulk=True)),
        ("overlap 2 + gold, no bulk", Config(overlap=2, gold=True, bulk=False)),
        ("no overlap, no gold, bulk", Config(overlap=1, gold=False, bulk=True)),
        ("no overlap, no gold, no bulk", Config(overlap=1, gold=False, bulk=False)),
    ]
    print(f"team: 3 reviewers, one wrong on 15 %; full supervision = {full_actions} actions; "
          f"first {seed_n} tasks by k-means coverage of the embeddings; counted at the action "
          f"after which the training set first reaches the target")
    print(f"{'setting':<30}{'actions':>9}{'/full':>8}{'sel keys':>9}{'trained':>9}{'acc':>7}"
          f"{'careless wrong':>16}{'in training':>13}{'kept out':>10}")
    for name, cfg in settings:
        rows = []
        for s in range(args.seeds):
            curve, team = simulate_team(cfg, X, y, zs, test_X, test_y, seed_n, step,
                                        budget_actions=full_actions, seed=s, target=target,
                                        accuracy=accuracy)
            actions, acc, trained = curve[-1]
            wrong, used = team.careless_wrong()
            rows.append((actions if acc >= target else float("nan"), acc, trained, team.keys,
                         wrong, used, 2 in team.flagged))
        a = np.array([r[0] for r in rows], float)
        wrong, used = sum(r[4] for r in rows), sum(r[5] for r in rows)
        print(f"{name:<30}{np.mean(a):>9.0f}{np.mean(a) / full_actions:>8.3f}"
              f"{np.mean([r[3] for r in rows]):>9.0f}{np.mean([r[2] for r in rows]):>9.0f}"
              f"{np.mean([r[1] for r in rows]):>7.3f}{wrong:>16}{used:>13}"
              f"{(1 - used / wrong) if wrong else float('nan'):>10.3f}"
              + ("  (careless flagged on gold)" if any(r[6] for r in rows) else ""))
    print(f"elapsed {time.time() - t0:.1f}s")


if __name__ == "__main__":
    main()
