"""Similar images at scale (issue 12, item 4): k = 24 nearest of one image among N stored 512-d
embeddings, through the same call the review page's ``/review/api/similar`` makes
(``store.neighbours.similar``: read the image's vector by primary key, search the FAISS index).

The embeddings are stored in a throwaway embedded database (SQLite, the real migrations), in
clusters as CLIP embeddings of a photo collection are (near-duplicates, scenes, classes), then
the index is built from the table the way a web worker builds it at start. Baseline, in the same
run: the exact answer by brute force over the same vectors in NumPy (one matrix-vector product
and a partial sort). Printed: build time, p50/p95 per search for both, their ratio, and recall@k
of the index against the exact answer.

    .venv/bin/python bench/neighbours.py                # 1M embeddings (a few minutes)
    .venv/bin/python bench/neighbours.py --rows 100000  # a quick run
"""
from __future__ import annotations

import argparse
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402,F401  (puts the checkout first on sys.path)

import numpy as np  # noqa: E402

ENCODER = "ViT-B-32/openai"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--k", type=int, default=24)
    p.add_argument("--queries", type=int, default=300)
    p.add_argument("--clusters", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def clustered(n: int, d: int, clusters: int, rng) -> np.ndarray:
    centres = rng.standard_normal((clusters, d)).astype(np.float32)
    out = np.empty((n, d), dtype=np.float32)
    step = 100_000
    for lo in range(0, n, step):
        hi = min(n, lo + step)
        which = rng.integers(0, clusters, hi - lo)
        out[lo:hi] = centres[which] + 0.6 * rng.standard_normal((hi - lo, d)).astype(np.float32)
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


def fill(path: Path, vecs: np.ndarray) -> None:
    """Images and their embeddings, written straight into the migrated tables."""
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")
    now = "2026-11-29 00:00:00.000000"
    step = 50_000
    for lo in range(0, len(vecs), step):
        hi = min(len(vecs), lo + step)
        conn.executemany(
            "INSERT INTO image (id, sha256, storage_key, source_name, size_bytes, status, attempts,"
            " created_at) VALUES (?, ?, ?, ?, 1, 'scored', 1, ?)",
            [(i + 1, f"{i + 1:064x}", f"{i + 1:064x}", f"img-{i + 1}.jpg", now)
             for i in range(lo, hi)])
        conn.executemany(
            "INSERT INTO embedding (image_id, encoder, dim, vector) VALUES (?, ?, ?, ?)",
            [(i + 1, ENCODER, vecs.shape[1], vecs[i].astype("<f4").tobytes())
             for i in range(lo, hi)])
        conn.commit()
    conn.close()


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def main(argv=None) -> int:
    args = parse_args(argv)
    import migrations
    from store import neighbours
    from store.db import dispose_engines, session_scope

    rng = np.random.default_rng(args.seed)
    print(f"# machine: {C.machine()}")
    print(f"# {args.rows} embeddings of {args.dim} dims in {args.clusters} clusters, k = {args.k}, "
          f"{args.queries} queries")
    t = time.perf_counter()
    vecs = clustered(args.rows, args.dim, args.clusters, rng)
    tmp = Path(tempfile.mkdtemp(prefix="verge-nn-"))
    C.on_exit(lambda: __import__("shutil").rmtree(tmp, ignore_errors=True))
    url = f"sqlite:///{tmp / 'verge.db'}"
    migrations.upgrade(url)
    dispose_engines()
    fill(tmp / "verge.db", vecs)
    print(f"stored in {time.perf_counter() - t:.1f} s")

    t = time.perf_counter()
    with session_scope(url) as s:
        idx = neighbours.index_for(url, ENCODER, s)
    build_s = time.perf_counter() - t
    kind = type(idx.index).__name__
    print(f"index built from the table in {build_s:.1f} s: {kind}, {idx.size} vectors"
          + (f", nlist {idx.index.nlist}, nprobe {idx.index.nprobe}" if hasattr(idx.index, "nlist") else ""))

    picks = rng.choice(args.rows, args.queries, replace=False) + 1
    t_index, t_exact, recall = [], [], []
    for image_id in picks:
        with session_scope(url) as s:
            t0 = time.perf_counter()
            got = neighbours.similar(url, s, int(image_id), args.k)
            t_index.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        q = vecs[image_id - 1]
        sims = vecs @ q
        sims[image_id - 1] = -np.inf
        top = np.argpartition(-sims, args.k)[:args.k]
        exact = set((top[np.argsort(-sims[top])] + 1).tolist())
        t_exact.append(time.perf_counter() - t0)
        recall.append(len(exact & {i for i, _ in got}) / args.k)
    ms = lambda xs, q: 1000 * pct(xs, q)  # noqa: E731
    print(f"{'':<34}{'p50 ms':>9}{'p95 ms':>9}")
    print(f"{'index (store.neighbours.similar)':<34}{ms(t_index, .5):>9.2f}{ms(t_index, .95):>9.2f}")
    print(f"{'baseline: exact NumPy brute force':<34}{ms(t_exact, .5):>9.2f}{ms(t_exact, .95):>9.2f}")
    print(f"p95 ratio index / baseline: {pct(t_index, .95) / pct(t_exact, .95):.3f}")
    print(f"recall@{args.k} against the exact answer: mean {statistics.mean(recall):.3f}, "
          f"min {min(recall):.3f}")
    print(f"goal: p95 <= 50 ms at 1M: {'met' if ms(t_index, .95) <= 50 else 'NOT met'}"
          + ("" if args.rows >= 1_000_000 else f" (this run: {args.rows} rows)"))
    dispose_engines()
    return 0


if __name__ == "__main__":
    sys.exit(main())
