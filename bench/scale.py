"""verge at a million images (issue 18): re-score, export, submit and retrain, wall time and peak RSS.

A throwaway Postgres database is created with the real migrations and loaded fast (INSERT ...
SELECT FROM generate_series server-side, the embeddings by one binary COPY stream built in numpy):

  N images (default 1M) in 100 batches, each scored (a prediction of an earlier head that
  image.latest_prediction_id points at), each labeled by one of 20 reviewers, each with a stored
  512-d float32 embedding of ViT-B-32 with random weights (the key a worker would have written;
  three learnable class clusters, the class the reviewer gave); N/5 open review tasks routed
  ``near_threshold`` (200k at 1M: a better head can settle them).

Then, each in its own process (peak RSS: that process's VmHWM, read every 20 ms):

  rescore ..... a new three-class head is promoted and ``rescore_open_tasks()`` runs, as the jobs
                worker does after a promotion (all N/5 open tasks), with the caption embeddings
                the scoring workers recorded (recorded first, by a Scorer, not measured)
  export ...... ``verge export --format jsonl`` of every image, to /dev/null
  submit ...... ``verge submit`` of a folder of 200k small files (200 folders; Redis broker,
                private queue, no worker): seconds until the first chunk is in the queue, peak RSS
                of the whole submission
  retrain ..... ``verge retrain --no-rescore`` on the N labeled embeddings

Goals on the 2-core machine: re-score completes in <= 120 s and <= 1,500 MB; export <= 400 MB
whatever the row count; first chunk <= 5 s and submit <= 300 MB; retrain <= 60 s and <= 6,000 MB.
A step that fails prints FAIL for its time and why on a ``#`` line. The last line is exactly

  scale: rescore_s=... rescore_rss_mb=... export_s=... export_rss_mb=... submit_first_s=...
         submit_rss_mb=... retrain_s=... retrain_rss_mb=...   (one line)

    .venv/bin/python bench/scale.py                       # 1M images (loading takes minutes)
    .venv/bin/python bench/scale.py --images 100000       # a quicker look
    .venv/bin/python bench/scale.py --only export,submit  # some steps (others print skip)
    .venv/bin/python bench/scale.py --keep-db verge_scale_1m   # load once into that database and
                                                          # keep it; later runs copy it (seconds)

Postgres and Redis at their local defaults (or VERGE_DATABASE_URL's / VERGE_BROKER_URL's); the
database, the queue and the files are removed at the end (a --keep-db database stays: `dropdb`).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

REVIEWERS = 20
DIM = 512
CLASSES = ("field", "road", "road_and_field")
ENCODER, PRETRAINED = "ViT-B-32", "none"
STEPS = ("rescore", "export", "submit", "retrain")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=1_000_000, help="images (default 1M); open tasks are 1/5")
    p.add_argument("--files", type=int, default=200_000, help="files in the submitted folder (default 200k)")
    p.add_argument("--only", default=",".join(STEPS), help="comma-separated steps to run")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per step before it is killed")
    p.add_argument("--keep-db", metavar="NAME", default=None,
                   help="load into database NAME and keep it (or reuse it if it already holds this --images "
                        "load); each run then works on a copy made from it (CREATE DATABASE ... TEMPLATE), "
                        "so a 1M run does not pay the ~9 min loader again. Drop it with "
                        "`dropdb NAME` when done")
    return p.parse_args(argv)


# --------------------------------------------------------------------------- loading
def _copy_embeddings(conn, n: int, encoder_key: str, cls_of: np.ndarray, seed: int = 0) -> None:
    """One binary COPY: rows laid out by a numpy structured array (no Python per row)."""
    rng = np.random.default_rng(seed)
    shared = rng.standard_normal(DIM)
    dirs = rng.standard_normal((3, DIM))
    centres = shared + 0.5 * dirs / np.linalg.norm(dirs, axis=1, keepdims=True) * np.linalg.norm(shared)
    centres = (centres / np.linalg.norm(centres, axis=1, keepdims=True)).astype(np.float32)
    enc = encoder_key.encode()
    row = np.dtype([("nf", ">i2"), ("l1", ">i4"), ("id", ">i4"), ("l2", ">i4"), ("enc", f"S{len(enc)}"),
                    ("l3", ">i4"), ("dim", ">i4"), ("l4", ">i4"), ("vec", "<f4", (DIM,))])
    with conn.cursor().copy("COPY embedding (image_id, encoder, dim, vector) FROM STDIN (FORMAT BINARY)") as cp:
        cp.write(b"PGCOPY\n\xff\r\n\x00" + (0).to_bytes(4, "big") + (0).to_bytes(4, "big"))
        for lo in range(0, n, 20_000):
            ids = np.arange(lo + 1, min(n, lo + 20_000) + 1)
            x = centres[cls_of[ids - 1]] + rng.standard_normal((len(ids), DIM), dtype=np.float32) * 0.035
            x /= np.linalg.norm(x, axis=1, keepdims=True)
            rows = np.empty(len(ids), row)
            rows["nf"], rows["l1"], rows["id"], rows["l2"], rows["enc"] = 4, 4, ids, len(enc), enc
            rows["l3"], rows["dim"], rows["l4"], rows["vec"] = 4, DIM, DIM * 4, x
            cp.write(rows.tobytes())
        cp.write((-1).to_bytes(2, "big", signed=True))


def load(url: str, n: int, encoder_key: str) -> dict:
    import psycopg

    n_batches = 100
    per_batch = -(-n // n_batches)
    cls_of = (np.arange(1, n + 1) % 3).astype(np.int64)  # image g's class: CLASSES[g % 3]
    steps = [
        ("reviewers", f"""INSERT INTO user_account (id, name, password_hash, role, created_at)
            SELECT g, 'reviewer' || g, 'bench-no-login', 'reviewer', now() FROM generate_series(1, {REVIEWERS}) g"""),
        ("batches", f"""INSERT INTO batch (id, name, source, created_at)
            SELECT g, 'scale-batch-' || g, 'cli', now() FROM generate_series(1, {n_batches}) g"""),
        # the head that made the predictions, retired (its checkpoint is not on disk): the re-score
        # step promotes a real one; retrain alone then has no active head to beat
        ("model version", f"""INSERT INTO model_version (id, kind, classes, encoder, path, metrics, state,
                                                        created_at, activated_at)
            VALUES (1, 'binary', '["field", "road"]', '{encoder_key}', '/nonexistent/1.pt', '{{}}', 'retired',
                    now() - interval '10 days', now() - interval '10 days')"""),
        ("images", f"""INSERT INTO image (id, sha256, storage_key, source_name, size_bytes, width, height, status,
                                         attempts, queued_at, created_at, scored_at, latest_prediction_id)
            SELECT g, md5(g::text) || md5('x' || g), md5(g::text) || md5('x' || g), 'photos/img-' || g || '.jpg',
                   50000 + (g::bigint * 7919) % 200000, 1600, 1067, 'scored', 1, now(), now(), now(), g
            FROM generate_series(1, {n}) g"""),
        ("batch_image", f"""INSERT INTO batch_image (batch_id, image_id, source_name, added_at)
            SELECT (g - 1) / {per_batch} + 1, g, 'img-' || g || '.jpg', now() FROM generate_series(1, {n}) g"""),
        ("predictions", f"""INSERT INTO prediction (id, image_id, model_version_id, encoder, head_probs, p_road,
                                                   zs_probs, zs_p_road, predicted_class, zs_class, routed,
                                                   reasons, created_at)
            SELECT g, g, 1, '{encoder_key}', json_build_object('field', 1 - p, 'road', p), p,
                   json_build_object('field', 1 - p, 'road', p), p,
                   CASE WHEN p >= 0.5 THEN 'road' ELSE 'field' END, CASE WHEN p >= 0.5 THEN 'road' ELSE 'field' END,
                   g % 5 = 0, CASE WHEN g % 5 = 0 THEN 'near_threshold' ELSE '' END, now()
            FROM (SELECT g, CASE WHEN g % 5 = 0 THEN 0.4 + 0.2 * ((g::bigint * 7919) % 1000) / 1000.0
                                 ELSE ((g::bigint * 104729) % 1000) / 1000.0 END AS p
                  FROM generate_series(1, {n}) g) s"""),
        ("open review tasks", """INSERT INTO review_task (image_id, prediction_id, state, reasons, priority,
                                                         created_at, updated_at)
            SELECT p.image_id, p.id, 'open', 'near_threshold', 1 - 2 * abs(p.p_road - 0.5), now(), now()
            FROM prediction p WHERE p.routed"""),
        ("labels", f"""INSERT INTO label (image_id, user_id, source, cls, time_on_item_ms, created_at)
            SELECT g, g % {REVIEWERS} + 1, 'review', (ARRAY['field', 'road', 'road_and_field'])[g % 3 + 1],
                   1500, now() - interval '1 day' FROM generate_series(1, {n}) g"""),
    ]
    plain = url.replace("postgresql+psycopg://", "postgresql://")
    t_all = time.perf_counter()
    with psycopg.connect(plain) as conn:
        for what, sql in steps:
            t0 = time.perf_counter()
            rows = conn.execute(sql).rowcount
            print(f"#   {what}: {rows} rows in {time.perf_counter() - t0:.1f} s", flush=True)
        t0 = time.perf_counter()
        _copy_embeddings(conn, n, encoder_key, cls_of)
        print(f"#   embeddings ({DIM}-d float32, binary COPY): {n} rows in {time.perf_counter() - t0:.1f} s",
              flush=True)
        for table in ("user_account", "batch", "model_version", "image", "prediction", "review_task", "label"):
            conn.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))")
        conn.commit()
    with psycopg.connect(plain, autocommit=True) as conn:
        t0 = time.perf_counter()
        conn.execute("VACUUM ANALYZE")
        print(f"#   VACUUM ANALYZE in {time.perf_counter() - t0:.1f} s; loaded in "
              f"{time.perf_counter() - t_all:.0f} s", flush=True)
    return _stats(url)


def _stats(url: str) -> dict:
    import psycopg

    with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as conn:
        return {"open tasks": conn.execute("SELECT count(*) FROM review_task WHERE state = 'open'").fetchone()[0],
                "db size": conn.execute("SELECT pg_size_pretty(pg_database_size(current_database()))").fetchone()[0]}


def _admin():
    import psycopg

    return psycopg.connect(C.pg_admin_url().replace("postgresql+psycopg://", "postgresql://"), autocommit=True)


def kept_database(name: str, n: int, encoder_key: str) -> tuple[str, dict | None]:
    """Database ``name`` migrated to head and loaded with ``n`` images (loads it only if it does not
    hold that load yet; a database comment records what it holds). Returns its URL and what the
    load made (None when reused)."""
    from sqlalchemy.engine import make_url

    import migrations

    if not name.replace("_", "").isalnum():
        raise SystemExit(f"bench: --keep-db {name!r}: letters, digits and _ only")
    tag = f"verge scale: images={n} encoder={encoder_key} dim={DIM}"
    url = make_url(C.pg_admin_url()).set(database=name).render_as_string(hide_password=False)
    with _admin() as conn:
        row = conn.execute("SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
                           (name,)).fetchone()
        if row is not None and row[0] != tag:
            print(f"# --keep-db {name}: holds {row[0]!r}, not this load; dropped and loaded again", flush=True)
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
            row = None
        if row is None:
            conn.execute(f'CREATE DATABASE "{name}"')
    if row is not None:
        migrations.upgrade(url)  # a no-op unless migrations were added since it was loaded
        print(f"# --keep-db {name}: reusing its load ({tag})", flush=True)
        return url, None
    migrations.upgrade(url)
    made = load(url, n, encoder_key)
    with _admin() as conn:
        conn.execute(f"COMMENT ON DATABASE \"{name}\" IS '{tag}'")
    return url, made


def copy_of(template: str) -> str:
    """A throwaway database copied from ``template`` (dropped when the script ends)."""
    from sqlalchemy.engine import make_url

    from store.db import dispose_engines

    dispose_engines()
    name = f"verge_bench_scale_{uuid.uuid4().hex[:8]}"
    t0 = time.perf_counter()
    with _admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')

    def drop_copy():
        with _admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    C.on_exit(drop_copy)
    print(f"# copied {template} to {name} in {time.perf_counter() - t0:.1f} s", flush=True)
    return make_url(C.pg_admin_url()).set(database=name).render_as_string(hide_password=False)


def make_folder(root: Path, n: int) -> Path:
    """``n`` small files with distinct bytes in 200 folders (no worker runs: they are never decoded)."""
    t0 = time.perf_counter()
    per = -(-n // 200)
    for i in range(n):
        if i % per == 0:
            folder = root / f"d{i // per:03d}"
            folder.mkdir(parents=True)
        with open(folder / f"{i:07d}.jpg", "wb") as fh:
            fh.write(b"\xff\xd8\xff\xe0 scale bench file %d \xff\xd9" % i)
    print(f"#   {n} files in {root} in {time.perf_counter() - t0:.1f} s", flush=True)
    return root


# --------------------------------------------------------------------------- measuring
def _hwm_mb(pid: int) -> float:
    """The process's peak resident memory so far (VmHWM), in MB; 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def run_measured(cmd: list[str], env: dict, timeout: float, log: Path, watch=None) -> tuple[float, float, int, object]:
    """Run ``cmd``; returns (seconds, peak RSS in MB, exit status, what ``watch`` returned).
    ``watch(started)`` is polled while it runs (e.g. for the first queued chunk). The peak is the
    process's own VmHWM read every 20 ms (the kernel's ru_maxrss would also count this script's
    memory, which an exec'd child inherits as its starting high-water mark)."""
    with open(log, "w") as fh:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, cwd=C.REPO, stdout=fh, stderr=subprocess.STDOUT)
        seen, peak = None, 0.0
        while proc.poll() is None:
            peak = max(peak, _hwm_mb(proc.pid))
            if seen is None and watch is not None:
                seen = watch(t0)
            if time.perf_counter() - t0 > timeout:
                proc.kill()
                proc.wait()
                break
            time.sleep(0.02)
        took = time.perf_counter() - t0
    return took, peak, proc.returncode, seen


# What the scoring workers that made the loaded predictions did once each: record the text
# embeddings of their captions (Scorer, first chunk's write). Run before the re-score step, not measured.
RECORD_CAPTIONS = """
from store.db import session_scope
from verge.settings import Settings
from workers.scoring import Scorer, record_captions

settings = Settings.from_env()
with session_scope(settings.resolved_database_url) as s:
    record_captions(s, Scorer(settings).judges)
"""

# The jobs worker's re-score task after a promotion (workers/tasks.py: rescore_open): no encoder
# is loaded in this process; zero-shot reads the recorded caption embeddings.
RESCORE = """
import json, sys
from models.encoder import EncoderSpec
from models.heads import THREE_CLASS, new_head, save_head
from store.db import session_scope
from store.model_versions import activate_model
from store.schema import ModelVersion
from verge.settings import Settings
from workers.scoring import rescore_open_tasks

settings = Settings.from_env()
key = EncoderSpec(settings.encoder, settings.pretrained).key
head = new_head(THREE_CLASS, %d, key)
path = save_head(head, settings.model_dir / "scale-promoted.pt")
with session_scope(settings.resolved_database_url) as s:  # a promotion, as retrain makes it
    mv = ModelVersion(kind=THREE_CLASS, classes=list(head.meta.classes), encoder=key,
                      path=str(path.resolve()), metrics={}, state="candidate")
    s.add(mv)
    s.flush()
    activate_model(s, mv.id)
print(json.dumps(rescore_open_tasks(settings)))
""" % DIM


def main(argv=None) -> int:
    args = parse_args(argv)
    C.install_sigterm()
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    if not C.postgres_available():
        raise SystemExit("bench: needs Postgres (127.0.0.1:5432 or VERGE_DATABASE_URL)")
    from models.encoder import EncoderSpec

    import migrations

    encoder_key = EncoderSpec(ENCODER, PRETRAINED).key
    print(f"# machine: {C.machine()}; load {C.load()}")
    print(f"# {args.images} images, {args.images // 5} open tasks, {args.images} labels and "
          f"{DIM}-d embeddings ({encoder_key}); submit of {args.files} files")
    if args.keep_db:
        _, made = kept_database(args.keep_db, args.images, encoder_key)
        url = copy_of(args.keep_db)
        if made is None:
            made = _stats(url)
    else:
        url = C.throwaway_database("scale")
        migrations.upgrade(url)
        made = load(url, args.images, encoder_key)
    print(f"# loaded: {made}")
    tmp = C.temp_dir("verge-scale-")
    env = C.bench_env({"VERGE_DATA_DIR": tmp / "var", "VERGE_DATABASE_URL": url,
                       "VERGE_ENCODER": ENCODER, "VERGE_PRETRAINED": PRETRAINED})
    figures: dict[str, str] = {}

    def record(name: str, took: float, rss: float, rc: int, log: Path, ok_text: str = "") -> None:
        tail = log.read_text()[-600:].strip().splitlines()
        if rc != 0:
            print(f"# {name}: FAILED (exit {rc}) after {took:.1f} s, peak RSS {rss:.0f} MB: "
                  f"{tail[-1] if tail else ''}", flush=True)
            figures[f"{name}_s"] = "FAIL"
        else:
            print(f"# {name}: {took:.1f} s, peak RSS {rss:.0f} MB {ok_text}".rstrip(), flush=True)
            figures[f"{name}_s"] = f"{took:.1f}"
        figures[f"{name}_rss_mb"] = f"{rss:.0f}"

    py = sys.executable
    if "rescore" in only:
        t0 = time.perf_counter()
        done = subprocess.run([py, "-c", RECORD_CAPTIONS], env=env, cwd=C.REPO, capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"bench: recording the caption embeddings failed: {done.stderr[-600:]}")
        print(f"#   a scoring worker's caption embeddings recorded in {time.perf_counter() - t0:.1f} s (not measured)",
              flush=True)
        log = tmp / "rescore.log"
        took, rss, rc, _ = run_measured([py, "-c", RESCORE], env, args.timeout, log)
        record("rescore", took, rss, rc, log, log.read_text().strip().splitlines()[-1] if rc == 0 else "")
    if "export" in only:
        log = tmp / "export.log"
        out = tmp / "export.jsonl"
        took, rss, rc, _ = run_measured([py, "-m", "verge", "export", "--format", "jsonl", "-o", str(out)],
                                        env, args.timeout, log)
        lines = sum(1 for _ in open(out, "rb")) if out.exists() else 0
        record("export", took, rss, rc, log, f"({lines} lines, {out.stat().st_size / 2**20:.0f} MiB)"
               if out.exists() else "")
        out.unlink(missing_ok=True)
    if "submit" in only:
        if not C.redis_available():
            raise SystemExit("bench: the submit step needs Redis (127.0.0.1:6379 or VERGE_BROKER_URL)")
        import redis

        broker = C.redis_url()
        queue, _ = C.private_queue(broker, "scale")
        folder = make_folder(tmp / "files", args.files)
        r = redis.Redis.from_url(broker)

        def first_chunk(started: float):
            return time.perf_counter() - started if r.llen(queue) > 0 else None

        log = tmp / "submit.log"
        took, rss, rc, first = run_measured(
            [py, "-m", "verge", "submit", str(folder), "--batch", "scale-submit", "--json"],
            {**env, "VERGE_BROKER_URL": broker, "VERGE_QUEUE": queue}, args.timeout, log, watch=first_chunk)
        record("submit", took, rss, rc, log, f"(whole submission; {r.llen(queue)} chunks queued)")
        figures["submit_first_s"] = f"{first:.1f}" if first is not None else "FAIL"
        print(f"# submit: first chunk in the queue after {figures['submit_first_s']} s", flush=True)
    if "retrain" in only:
        log = tmp / "retrain.log"
        took, rss, rc, _ = run_measured([py, "-m", "verge", "retrain", "--no-rescore"], env, args.timeout, log)
        lines = log.read_text().strip().splitlines()
        steps = [line for line in lines if line.startswith("steps: ")]
        record("retrain", took, rss, rc, log, "| " + " ".join([*lines[-3:-1], *steps[-1:]])[:400]
               if rc == 0 else "")
    keys = ["rescore_s", "rescore_rss_mb", "export_s", "export_rss_mb", "submit_first_s", "submit_rss_mb",
            "retrain_s", "retrain_rss_mb"]
    print("scale: " + " ".join(f"{k}={figures.get(k, 'skip')}" for k in keys))
    return 0


if __name__ == "__main__":
    sys.exit(main())
