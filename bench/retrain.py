"""Retraining on 100k stored embeddings (issue 5, item 4): goal <= 30 s on this CPU.

The real job -- ``workers.retrain.retrain(settings)``, what `verge retrain` and Celery beat's
``verge.retrain`` task run -- against a throwaway Postgres database created with the real
migrations and filled with

  N images (default 100k), each with one stored 512-d float32 unit embedding of the encoder the
  settings name (ViT-B-32, random weights: the key the workers would have written), and each
  labeled by one of 20 reviewers (every 10th also by a second reviewer who agrees; 1 % of the
  labels are mistakes); N/200 more images on which two reviewers disagree (ties: kept out of
  training and listed); an active three-class head trained on the first 2 % of the labels
  ("yesterday's head") for the candidate to beat. With ``--folder-share F`` a share F of the
  images is labeled by a training folder instead (label rows without a user, as `verge train
  binary FOLDER` records them): only those can be flagged as suspects, so only then does
  retrain() run its out-of-fold pass; the bench then counts how many of the folder's planted
  mistakes it caught.

The vectors are synthetic: three class centroids on the unit sphere around a shared direction
(CLIP's photo embeddings all lie in one narrow cone), road_and_field between road and field, plus
noise, normalised; class mix 60 % road, 30 % field, 10 % road_and_field. Learnable, not trivial
(~0.93 held-out accuracy, road_and_field's F1 ~0.72). Loading (~10 s) is not timed. Then retrain() runs once, timed in total and by
phase (the module's own functions wrapped with timers; nothing else changes).

    .venv/bin/python bench/retrain.py                  # 100k labels (~20 s in all)
    .venv/bin/python bench/retrain.py --rows 20000     # a quicker look
    .venv/bin/python bench/retrain.py --folder-share 0.5   # half the labels from a training folder
    .venv/bin/python bench/retrain.py --profile        # also the cProfile top of retrain()

Postgres at its local default (or VERGE_DATABASE_URL's server); the database is dropped at the end.
"""
from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

REVIEWERS = 20
DIM = 512
CLASSES = ("field", "road", "road_and_field")  # models.classes.CLASSES
MIX = (0.30, 0.60, 0.10)  # field, road, road_and_field: road-heavy, like the product's traffic
MISTAKES = 0.01           # labels that name another class than the vector's
FOLDER = "training:/bench/folder"
GOAL_S = 30.0


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=100_000, help="labeled images (default 100000)")
    p.add_argument("--encoder", default="ViT-B-32", help="VERGE_ENCODER the settings name (default ViT-B-32)")
    p.add_argument("--pretrained", default="none",
                   help="VERGE_PRETRAINED (default none: the key random-weight workers write)")
    p.add_argument("--noise", type=float, default=0.11,
                   help="per-dimension noise around the class centroids (default 0.11: ~0.94 accuracy)")
    p.add_argument("--folder-share", type=float, default=0.0,
                   help="share of the images labeled by a training folder instead of reviewers (default 0)")
    p.add_argument("--fixed-batch", action="store_true",
                   help="retrain with batches of 32 whatever the label count (the recipe before "
                        "max_batches_per_epoch; the suspect pass then trains its folds 15 epochs "
                        "again)")
    p.add_argument("--no-suspects", action="store_true",
                   help="retrain(find_suspects=False): leave out the out-of-fold suspect pass")
    p.add_argument("--threads", type=int, default=0,
                   help="torch intra-op threads (default: torch's own, one per core)")
    p.add_argument("--profile", action="store_true", help="print the cProfile top of retrain()")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


# --------------------------------------------------------------------------- data
def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def centroids(rng: np.random.Generator) -> np.ndarray:
    """Three class centres on the unit sphere. All share one direction (cosine 0.8 between field
    and road, as CLIP photo embeddings sit in a narrow cone); road_and_field lies between the two
    (cosine 0.94 to each)."""
    shared, field_dir, road_dir = _unit(rng.standard_normal((3, DIM)))
    spread = 0.5
    return _unit(np.stack([shared + spread * field_dir,
                           shared + spread * road_dir,
                           shared + spread * _unit(field_dir + road_dir)]))


def vectors(rng: np.random.Generator, centres: np.ndarray, y: np.ndarray, noise: float) -> np.ndarray:
    x = centres[y] + rng.standard_normal((len(y), DIM), dtype=np.float32) * noise
    return _unit(x).astype("<f4")  # store/embeddings.pack_vector's format: float32 little-endian


# --------------------------------------------------------------------------- loading
def load(url: str, n: int, encoder_key: str, noise: float, seed: int, folder_share: float) -> dict:
    """Fill the database; returns what was made. Images and reviewers server-side, embeddings and
    labels by binary COPY in chunks (vectors are made in numpy, 2 KiB each)."""
    import psycopg
    from sqlalchemy import text

    from store.db import get_engine

    rng = np.random.default_rng(seed)
    noise_rng = np.random.default_rng((seed, 1))  # the vectors' own stream: options never move them
    centres = centroids(rng)
    n_ties = n // 200
    total = n + n_ties
    truth = rng.choice(3, size=total, p=MIX)
    given = truth.copy()  # what the (first) reviewer said
    wrong = rng.random(n) < MISTAKES
    given[:n][wrong] = (truth[:n][wrong] + rng.integers(1, 3, wrong.sum())) % 3
    folder = rng.random(n) < folder_share  # labeled by a training folder, not by a person
    plain = url.replace("postgresql+psycopg://", "postgresql://")
    t_all = time.perf_counter()

    def step(what, fn):
        t0 = time.perf_counter()
        rows = fn()
        print(f"#   {what}: {rows} rows in {time.perf_counter() - t0:.1f} s", flush=True)

    with psycopg.connect(plain) as conn:
        def reviewers():
            return conn.execute(
                "INSERT INTO user_account (id, name, password_hash, role, created_at) "
                f"SELECT g, 'reviewer' || g, 'bench-no-login', 'reviewer', now() "
                f"FROM generate_series(1, {REVIEWERS}) g").rowcount

        def images():
            return conn.execute(
                "INSERT INTO image (id, sha256, storage_key, source_name, size_bytes, width, height, "
                "                   status, attempts, queued_at, created_at, scored_at) "
                "SELECT g, md5(g::text) || md5('x' || g), md5(g::text) || md5('x' || g), "
                "       'photos/img-' || g || '.jpg', 50000 + (g::bigint * 7919) % 200000, 1600, 1067, "
                "       'scored', 1, now(), now(), now() "
                f"FROM generate_series(1, {total}) g").rowcount

        def embeddings():
            with conn.cursor().copy("COPY embedding (image_id, encoder, dim, vector) "
                                    "FROM STDIN (FORMAT BINARY)") as cp:
                cp.set_types(["int4", "varchar", "int4", "bytea"])
                for lo in range(0, total, 10_000):
                    ys = truth[lo:lo + 10_000]
                    for i, v in enumerate(vectors(noise_rng, centres, ys, noise), start=lo + 1):
                        cp.write_row((i, encoder_key, DIM, v.tobytes()))
            return total

        def labels():
            rows = 0
            with conn.cursor().copy("COPY label (image_id, user_id, source, cls, time_on_item_ms, "
                                    "created_at) FROM STDIN (FORMAT BINARY)") as cp:
                cp.set_types(["int4", "int4", "varchar", "varchar", "int4", "timestamptz"])
                now = time.time()

                def at(i):  # spread over the last 60 days
                    return dt.datetime.fromtimestamp(now - (i * 5_184_000 // total), dt.timezone.utc)

                for i in range(n):
                    if folder[i]:
                        cp.write_row((i + 1, None, FOLDER, CLASSES[given[i]], None, at(i)))
                        rows += 1
                        continue
                    first = i % REVIEWERS + 1
                    cp.write_row((i + 1, first, "review", CLASSES[given[i]], 1500, at(i)))
                    rows += 1
                    if i % 10 == 0:  # a second opinion that agrees
                        cp.write_row((i + 1, first % REVIEWERS + 1, "review", CLASSES[given[i]], 1800, at(i)))
                        rows += 1
                for i in range(n, total):  # two reviewers disagree: a tie
                    other = CLASSES[(truth[i] + 1) % 3]
                    cp.write_row((i + 1, 1, "review", CLASSES[truth[i]], 1500, at(i)))
                    cp.write_row((i + 1, 2, "review", other, 1500, at(i)))
                    rows += 2
            return rows

        step("reviewers", reviewers)
        step("images", images)
        step(f"embeddings ({DIM}-d float32, {encoder_key})", embeddings)
        step("labels", labels)
        for table in ("user_account", "image"):
            conn.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))")
        conn.commit()
    t0 = time.perf_counter()
    with get_engine(url).connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))
    print(f"#   VACUUM ANALYZE in {time.perf_counter() - t0:.1f} s", flush=True)
    return {"given": given, "mistakes": int(wrong.sum()), "ties": n_ties,
            "folder": int(folder.sum()), "planted": set((np.flatnonzero(wrong & folder) + 1).tolist()),
            "seconds": time.perf_counter() - t_all}


def activate_previous_head(url: str, settings, encoder_key: str, n: int) -> tuple[int, dict]:
    """Yesterday's head: a three-class head trained (with the retrain recipe) on the first 2 % of
    the labels, recorded as the active version. The candidate has to beat it on held-out labels."""
    from models.heads import THREE_CLASS, save_head
    from models.training import RETRAIN_RECIPE, train_head
    from store.db import session_scope
    from store.embeddings import stored_embeddings
    from store.labels import consensus
    from store.model_versions import activate_model
    from store.schema import ModelVersion

    k = max(50, n // 50)
    with session_scope(url) as s:
        agreed = consensus(s)
        ids = sorted(agreed.labels)[:k]
        vecs = stored_embeddings(s, ids, encoder_key)
    X = np.stack([vecs[i] for i in ids])
    y = np.array([CLASSES.index(agreed.labels[i]) for i in ids])
    head = train_head(THREE_CLASS, X, y, encoder_key, RETRAIN_RECIPE).head
    path = save_head(head, settings.model_dir / "previous-three-class.pt")
    with session_scope(url) as s:
        mv = ModelVersion(kind=THREE_CLASS, classes=list(CLASSES), encoder=encoder_key,
                          path=str(path.resolve()), metrics=head.meta.metrics, state="candidate",
                          note=f"bench: trained on {k} labels")
        s.add(mv)
        s.flush()
        activate_model(s, mv.id)
        return mv.id, head.meta.metrics


# --------------------------------------------------------------------------- phases
class Phases:
    """Wall time spent inside named functions while retrain() runs: each is replaced, for the
    length of the run, by a wrapper that adds its duration to a phase (the code is unchanged)."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self._undo = []

    def wrap(self, module, name: str, phase: str):
        fn = getattr(module, name)

        def timed(*a, **kw):
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - t0

        setattr(module, name, timed)
        self._undo.append((module, name, fn))

    def restore(self):
        while self._undo:
            module, name, fn = self._undo.pop()
            setattr(module, name, fn)


def main(argv=None) -> None:
    args = parse_args(argv)
    C.install_sigterm()
    print(f"# machine: {C.machine()}; load average {C.load()}")
    if not C.postgres_available():
        raise SystemExit(f"bench: no Postgres at {C.pg_admin_url()} (set VERGE_DATABASE_URL to a server)")
    import torch
    from sqlalchemy import text

    import migrations
    import workers.retrain as R
    from models.encoder import EncoderSpec
    from models.training import RETRAIN_RECIPE
    from store.db import get_engine
    from verge.settings import Settings

    if args.threads:
        torch.set_num_threads(args.threads)
    url = C.throwaway_database("retrain")
    with get_engine(url).connect() as conn:
        version = conn.execute(text("SHOW server_version")).scalar()
    migrations.upgrade(url)
    print(f"# Postgres {version}; throwaway database {url.rsplit('/', 1)[-1]}, migrations "
          f"{migrations.head_revision()}; torch {torch.__version__}, {torch.get_num_threads()} threads")
    data_dir = C.temp_dir("verge-bench-retrain-")
    settings = Settings.from_env({}, database_url=url, data_dir=data_dir, encoder=args.encoder,
                                 pretrained=args.pretrained, torch_threads=args.threads)
    # retrain() sets torch's threads itself for its length (VERGE_TORCH_THREADS; 0: half the
    # cores, at most 4): --threads reaches it through the settings
    key = EncoderSpec(settings.encoder, settings.pretrained).key
    print(f"# loading {args.rows} labeled images ...", flush=True)
    made = load(url, args.rows, key, args.noise, args.seed, args.folder_share)
    t0 = time.perf_counter()
    prev_id, prev = activate_previous_head(url, settings, key, args.rows)
    print(f"#   active head: version {prev_id}, trained on {prev['examples'] + prev['validation_examples']} "
          f"labels in {time.perf_counter() - t0:.1f} s; loaded in {made['seconds'] + time.perf_counter() - t0:.0f} s")
    counts = np.bincount(made["given"][:args.rows], minlength=3) / args.rows
    print(f"# labels: {args.rows} images with a consensus label ("
          + ", ".join(f"{c} {p:.1%}" for c, p in zip(CLASSES, counts))
          + f"), {made['mistakes']} of them mistakes; {made['folder']} from a training folder "
          f"({len(made['planted'])} of its labels wrong); {made['ties']} more images tied")
    recipe = replace(RETRAIN_RECIPE, max_batches_per_epoch=0) if args.fixed_batch else RETRAIN_RECIPE
    print(f"# recipe: {recipe}", flush=True)

    ph = Phases()
    ph.wrap(R, "read_labeled_set", "read")  # retrain()'s named steps (workers/retrain.py)
    ph.wrap(R, "train_head", "train")
    ph.wrap(R, "judge", "judge")
    ph.wrap(R, "record_version", "write")
    ph.wrap(R, "write_tensorboard", "write")
    ph.wrap(R, "flag_suspects", "suspects")
    ph.wrap(R, "out_of_fold_probs", "oof")
    C.on_exit(ph.restore)

    profiler = None
    if args.profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    t0 = time.perf_counter()
    out = R.retrain(settings, recipe, trigger="bench", find_suspects=not args.no_suspects)  # as beat runs it
    wall = time.perf_counter() - t0
    if profiler:
        profiler.disable()
    ph.restore()

    if out.version_id is None:
        raise SystemExit(f"bench: retrain trained nothing: {out.reason}")
    from sqlalchemy import select

    from store.db import session_scope
    from store.schema import ModelVersion, ReviewTask
    from workers.routing import SUSPECT_LABEL

    with session_scope(url) as s:
        m = s.get(ModelVersion, out.version_id).metrics
        flagged = set(s.scalars(select(ReviewTask.image_id).where(ReviewTask.reasons == SUSPECT_LABEL)))
    sec = ph.seconds
    other = wall - sum(v for k, v in sec.items() if k != "oof")
    rows = [
        ("read labels + embeddings (read_labeled_set: consensus, one matrix)", sec.get("read", 0), ""),
        ("train the candidate (train_head)", sec.get("train", 0),
         f"{m['examples']} examples, {m['validation_examples']} validation; {m['epochs_run']} epochs "
         f"(best {m['best_epoch']}), batch {m['recipe']['batch_size_used']}"),
        ("judge candidate + active head on held-out labels", sec.get("judge", 0), ""),
        ("write the version (checkpoint, TensorBoard)", sec.get("write", 0), ""),
        ("suspect pass (flag_suspects)", sec.get("suspects", 0),
         "skipped (--no-suspects)" if "suspects" not in sec else
         f"out-of-fold training {sec['oof']:.1f} s; {out.suspects} routed, {len(flagged & made['planted'])} "
         f"of the folder's {len(made['planted'])} wrong labels among them" if "oof" in sec else
         "no out-of-fold pass: every label came from people"),
        ("the rest (lock, transactions, stacking arrays)", other, ""),
    ]
    for name, s_, note in rows:
        print(f"  {name:<66} {s_:6.1f} s" + (f"   {note}" if note else ""))
    c, a = out.candidate, out.active
    print(f"candidate version {out.version_id}: held-out accuracy {c['accuracy']:.3f}, macro-F1 "
          f"{c['macro_f1']:.3f}, ECE {c['ece']:.3f} on {c['n']} images; per class F1 "
          + ", ".join(f"{k} {v['f1']:.3f}" for k, v in c["per_class"].items()))
    if a:
        print(f"active version {out.active_version_id} on the same images: accuracy {a['accuracy']:.3f}, "
              f"macro-F1 {a['macro_f1']:.3f}")
    print(("PROMOTED: " if out.promoted else "kept as candidate: ") + out.reason
          + f"; {len(out.ties)} ties listed")
    if profiler:
        import io
        import pstats

        buf = io.StringIO()
        pstats.Stats(profiler, stream=buf).sort_stats("cumulative").print_stats(30)
        print(buf.getvalue())
    print(f"# load average at the end: {C.load()}")
    print(f"retrain: {out.labels} labeled embeddings in {wall:.1f} s "
          f"(goal <= {GOAL_S:g} s: {'met' if wall <= GOAL_S else 'NOT met'})")


if __name__ == "__main__":
    main()
