"""The store under production-sized tables (issue 5, item 3).

A throwaway Postgres database is created with the real migrations, then bulk-loaded server-side
(INSERT ... SELECT FROM generate_series: one statement per table) with

  1M images in 100 batches, ~1M predictions of the active binary head, ~200k open review tasks
  (the images whose p(road) fell in the routing band), 50k done tasks with reviewers' labels,
  20 reviewers, 40 live claims at the head of the queue and ~5000 expired ones (2.5 %),

then VACUUM ANALYZE (the state autovacuum keeps a real database in). Measured, each call in its
own transaction exactly as the web UI makes it (``store.review`` / ``store.browse``):

  claim-next, post-label ....... a reviewer's loop: claim, label, claim, ... (goal p95 <= 25 ms)
  browse ....................... the browse page's query with two filters (several pairs)
  dashboard aggregates ......... the dashboard page, the review-queue overview, the open count

    .venv/bin/python bench/store.py                 # 1M rows (loading takes a few minutes)
    .venv/bin/python bench/store.py --rows 100000   # a quick run
    .venv/bin/python bench/store.py --explain       # also print the plans of claim-next/post-label

Postgres at its local default (or VERGE_DATABASE_URL's server); the database is dropped at the end.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

REVIEWERS = 20
ENCODER = "ViT-B-32/openai"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=1_000_000, help="images (default 1M); tasks scale with it")
    p.add_argument("--iters", type=int, default=300, help="claim/label iterations (default 300)")
    p.add_argument("--heavy-iters", type=int, default=20,
                   help="iterations of each browse query and dashboard aggregate (default 20; "
                        "0 skips them)")
    p.add_argument("--clients", type=int, default=4, choices=range(0, REVIEWERS + 1), metavar="K",
                   help="reviewers claiming and labeling at once in the concurrent phase (0: skip)")
    p.add_argument("--index", action="append", default=[], metavar="SQL",
                   help="extra CREATE INDEX statement run after loading (repeatable): try an index "
                        "on the throwaway database before proposing it for the schema")
    p.add_argument("--setting", action="append", default=[], metavar="NAME=VALUE",
                   help="planner/server setting for the throwaway database (ALTER DATABASE ... SET), "
                        "e.g. random_page_cost=1.1 (repeatable)")
    p.add_argument("--explain", action="store_true",
                   help="print EXPLAIN ANALYZE of the claim-next and post-label statements")
    return p.parse_args(argv)


# --------------------------------------------------------------------------- loading
def load(url: str, n: int, extra_sql: list[str] = ()) -> dict:
    """Fill the tables; returns what was made. Deterministic (setseed)."""
    from sqlalchemy import text

    from store.db import get_engine

    n_batches = 100
    per_batch = -(-n // n_batches)
    n_queued = min(500, n // 100)
    # images with a prediction: every one scored (not failed, not queued); prediction id = image id
    scored = f"g % 100 <> 7 AND g <= {n - n_queued}"
    steps = [
        ("users", f"""
         INSERT INTO user_account (id, name, password_hash, role, created_at)
         SELECT g, 'reviewer' || g, 'bench-no-login', 'reviewer', now()
         FROM generate_series(1, {REVIEWERS}) g"""),
        ("batches", f"""
         INSERT INTO batch (id, name, source, created_at)
         SELECT g, 'bench-batch-' || g, 'cli', now() - ({n_batches} - g) * interval '1 hour'
         FROM generate_series(1, {n_batches}) g"""),
        ("model versions", f"""
         INSERT INTO model_version (id, kind, classes, encoder, path, metrics, state, created_at, activated_at)
         VALUES (1, 'binary', '["field", "road"]', '{ENCODER}', '/nonexistent/1.pt', '{{}}', 'retired',
                 now() - interval '30 days', now() - interval '30 days'),
                (2, 'binary', '["field", "road"]', '{ENCODER}', '/nonexistent/2.pt', '{{}}', 'active',
                 now() - interval '10 days', now() - interval '10 days')"""),
        # ~1 % failed, the newest few queued, the rest scored and pointing at their prediction
        # (image.latest_prediction_id, which record_predictions sets when it scores an image)
        ("images", f"""
         INSERT INTO image (id, sha256, storage_key, source_name, size_bytes, width, height, status,
                            error, attempts, queued_at, created_at, scored_at, latest_prediction_id)
         SELECT g, md5(g::text) || md5('x' || g), md5(g::text) || md5('x' || g),
                'photos/img-' || g || '.jpg', 50000 + (g::bigint * 7919) % 200000, 1600, 1067,
                CASE WHEN g > {n - n_queued} THEN 'queued' WHEN g % 100 = 7 THEN 'failed' ELSE 'scored' END,
                CASE WHEN g % 100 = 7 AND g <= {n - n_queued} THEN 'truncated or corrupt image data' END,
                1, ts, ts, CASE WHEN g <= {n - n_queued} THEN ts + interval '2 seconds' END,
                CASE WHEN {scored} THEN g END
         FROM (SELECT g, now() - ({n} - g) * interval '1 second' AS ts
               FROM generate_series(1, {n}) g) s"""),
        ("batch_image", f"""
         INSERT INTO batch_image (batch_id, image_id, source_name, added_at)
         SELECT (g - 1) / {per_batch} + 1, g, 'img-' || g || '.jpg', now() - ({n} - g) * interval '1 second'
         FROM generate_series(1, {n}) g"""),
        # every 5th image landed in the band [0.4, 0.6] (routed: near_threshold); every 20th from
        # 1 was an audit pick that a reviewer has since labeled; the rest are confident.
        ("predictions", f"""
         INSERT INTO prediction (id, image_id, model_version_id, encoder, head_probs, p_road, zs_probs,
                                 zs_p_road, predicted_class, zs_class, routed, reasons, created_at)
         SELECT g, g, 2, '{ENCODER}',
                json_build_object('field', 1 - p, 'road', p), p,
                json_build_object('field', 1 - z, 'road', z), z,
                CASE WHEN p >= 0.5 THEN 'road' ELSE 'field' END,
                CASE WHEN z >= 0.5 THEN 'road' ELSE 'field' END,
                g % 5 = 0 OR g % 20 = 1,
                CASE WHEN g % 5 = 0 THEN 'near_threshold' WHEN g % 20 = 1 THEN 'audit' ELSE '' END,
                now() - ({n} - g) * interval '1 second' + interval '2 seconds'
         FROM (SELECT g,
                      CASE WHEN g % 5 = 0 THEN 0.4 + 0.2 * r1
                           WHEN r1 < 0.5 THEN 0.4 * r2 ELSE 0.6 + 0.4 * r2 END AS p,
                      CASE WHEN r3 < 0.85 THEN (CASE WHEN r1 < 0.5 THEN 0.4 * r2 ELSE 0.6 + 0.4 * r2 END)
                           ELSE r2 END AS z
               FROM (SELECT g, random() AS r1, random() AS r2, random() AS r3
                     FROM generate_series(1, {n}) g) r) s
         WHERE {scored}"""),
        ("open review tasks", """
         INSERT INTO review_task (id, image_id, prediction_id, state, reasons, priority,
                                  created_at, updated_at)
         SELECT p.id, p.image_id, p.id, 'open', p.reasons, 1 - 2 * abs(p.p_road - 0.5),
                p.created_at, p.created_at
         FROM prediction p WHERE p.image_id % 5 = 0"""),
        ("done tasks", f"""
         INSERT INTO review_task (id, image_id, prediction_id, state, reasons, priority,
                                  lease_owner, created_at, updated_at)
         SELECT p.id, p.image_id, p.id, 'done', p.reasons, 1 - 2 * abs(p.p_road - 0.5),
                'reviewer' || ((p.image_id / 20) % {REVIEWERS} + 1), p.created_at, p.created_at
         FROM prediction p WHERE p.image_id % 20 = 1"""),
        ("labels", f"""
         INSERT INTO label (id, image_id, user_id, task_id, source, cls, time_on_item_ms, created_at)
         SELECT t.id, t.image_id, (t.image_id / 20) % {REVIEWERS} + 1, t.id, 'review',
                (ARRAY['field', 'road', 'road_and_field'])[1 + (t.image_id / 20) % 3],
                800 + (t.image_id * 31) % 4000, now() - random() * interval '60 days'
         FROM review_task t WHERE t.state = 'done'"""),
        # other reviewers at work: 40 live claims at the top of the queue; 2.5 % of the queue
        # claimed by reviewers who left (expired leases: claimable again, never swept)
        ("live claims", """
         UPDATE review_task SET state = 'claimed', lease_owner = 'ghost' || (id % 10),
                lease_expires_at = now() + interval '10 minutes'
         WHERE id IN (SELECT id FROM review_task WHERE state = 'open'
                      ORDER BY priority DESC, id DESC LIMIT 40)"""),
        ("expired claims", """
         UPDATE review_task SET state = 'claimed', lease_owner = 'gone' || (id % 10),
                lease_expires_at = now() - interval '1 hour'
         WHERE state = 'open' AND id % 200 = 5"""),
    ]
    engine = get_engine(url)
    t_all = time.perf_counter()
    with engine.begin() as conn:
        conn.execute(text("SELECT setseed(0.42)"))
        for what, sql in steps:
            t0 = time.perf_counter()
            rows = conn.execute(text(sql)).rowcount
            print(f"#   {what}: {rows} rows in {time.perf_counter() - t0:.1f} s", flush=True)
        for table in ("user_account", "batch", "model_version", "image", "prediction",
                      "review_task", "label"):
            conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                              f"(SELECT max(id) FROM {table}))"))
    for sql in extra_sql:
        t0 = time.perf_counter()
        with engine.begin() as conn:
            conn.execute(text(sql))
        print(f"#   extra: {sql} ({time.perf_counter() - t0:.1f} s)", flush=True)
    t0 = time.perf_counter()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE"))
    print(f"#   VACUUM ANALYZE in {time.perf_counter() - t0:.1f} s; loaded in "
          f"{time.perf_counter() - t_all:.0f} s", flush=True)
    with engine.connect() as conn:
        counts = {t: conn.execute(text(f"SELECT count(*) FROM {t}")).scalar()
                  for t in ("image", "prediction", "label")}
        counts["open tasks"] = conn.execute(text(
            "SELECT count(*) FROM review_task WHERE state IN ('open', 'claimed')")).scalar()
        counts["db size"] = conn.execute(text(
            "SELECT pg_size_pretty(pg_database_size(current_database()))")).scalar()
    return {"batches": n_batches, **counts}


# --------------------------------------------------------------------------- timing
def timed(url: str, fn, n: int) -> tuple[list[float], list]:
    """Run ``fn(session)`` ``n`` times, each in its own committed transaction; ms per call."""
    from store.db import session_scope

    out, results = [], []
    for i in range(n):
        t0 = time.perf_counter()
        with session_scope(url) as s:
            results.append(fn(s, i))
        out.append((time.perf_counter() - t0) * 1000)
    return out, results


def report(name: str, ms: list[float], goal: float | None = None) -> dict:
    p50, p95 = C.pct(ms, 50), C.pct(ms, 95)
    verdict = ""
    if goal is not None:
        verdict = f"  goal p95 <= {goal:g} ms: {'met' if p95 <= goal else 'NOT met'}"
    print(f"{name:<58} p50 {p50:8.2f} ms   p95 {p95:8.2f} ms   max {max(ms):8.2f} ms  "
          f"(n={len(ms)}){verdict}", flush=True)
    return {"p50": p50, "p95": p95}


def reviewer_loop(url: str, iters: int, users: list[int], lease_s: float = 600):
    """A reviewer's rhythm: claim the next task, label it; ms of each call. ``users`` take turns
    (reviewers working at the same time must be different people: a reviewer's claim-next hands
    back the claim they already hold)."""
    from store import review
    from store.db import session_scope

    claims, labels = [], []
    for i in range(iters):
        uid = users[i % len(users)]
        owner = f"reviewer{uid}"
        t0 = time.perf_counter()
        with session_scope(url) as s:
            task_id = review.claim_next(s, uid, owner, lease_s)
        claims.append((time.perf_counter() - t0) * 1000)
        if task_id is None:
            raise RuntimeError("claim-next found the queue empty")
        cls = ("field", "road", "road_and_field")[i % 3]
        t0 = time.perf_counter()
        with session_scope(url) as s:
            out = review.post_label(s, task_id, uid, owner, cls, "review", 1500)
        labels.append((time.perf_counter() - t0) * 1000)
        if not out.closed:
            raise RuntimeError(f"the label on task {task_id} by {owner} did not close it")
    return claims, labels


def explain(url: str, label: str, fn) -> None:
    """EXPLAIN (ANALYZE, BUFFERS) of every statement ``fn(session)`` sends (``fn`` runs once for
    real to capture them); each plan is taken in a transaction that is rolled back."""
    from sqlalchemy import event

    from store.db import get_engine, session_scope

    engine = get_engine(url)
    captured: list[tuple[str, object]] = []

    def grab(conn, cursor, statement, parameters, context, executemany):
        captured.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", grab)
    try:
        with session_scope(url) as s:
            fn(s)
    finally:
        event.remove(engine, "before_cursor_execute", grab)
    for stmt, params in captured:
        if not stmt.lstrip().upper().startswith(("SELECT", "UPDATE", "INSERT", "DELETE", "WITH")):
            continue
        raw = engine.raw_connection()
        try:
            cur = raw.cursor()
            cur.execute("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + stmt, params)
            plan = "\n".join("      " + r[0] for r in cur.fetchall())
            raw.rollback()
        finally:
            raw.close()
        print(f"\n  [{label}] {' '.join(stmt.split())[:400]}\n{plan}")
    print(flush=True)


def commit_floor(url: str, n: int = 50) -> list[float]:
    """ms of a durable one-row INSERT + COMMIT: what every write transaction pays for the WAL
    flush on this disk, whatever the query."""
    from sqlalchemy import text

    from store.db import get_engine

    engine = get_engine(url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE bench_commit_probe (x int)"))
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO bench_commit_probe VALUES (:i)"), {"i": i})
        out.append((time.perf_counter() - t0) * 1000)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE bench_commit_probe"))
    return out


def _reviewer_process(job):
    url, iters, users = job
    reviewer_loop(url, 3, users)  # this process's first connection and compiled statements
    return reviewer_loop(url, iters, users)


def main(argv=None) -> None:
    args = parse_args(argv)
    C.install_sigterm()
    print(f"# machine: {C.machine()}; load average {C.load()}")
    if not C.postgres_available():
        raise SystemExit(f"bench: no Postgres at {C.pg_admin_url()} (set VERGE_DATABASE_URL to a server)")
    import migrations
    from store import browse, images, review
    from sqlalchemy import text

    from store.db import get_engine

    url = C.throwaway_database("store")
    if args.setting:
        from sqlalchemy.engine import make_url

        db_name = make_url(url).database
        with get_engine(url).connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            for item in args.setting:
                name, _, value = item.partition("=")
                conn.execute(text(f'ALTER DATABASE "{db_name}" SET {name} = {value}'))
                print(f"# setting for this database: {name} = {value}")
        from store.db import dispose_engines

        dispose_engines()  # new connections pick the settings up
    with get_engine(url).connect() as conn:
        version = conn.execute(text("SHOW server_version")).scalar()
    print(f"# Postgres {version}; throwaway database {url.rsplit('/', 1)[-1]}, migrations "
          f"{migrations.head_revision()}")
    migrations.upgrade(url)
    print(f"# loading {args.rows} images ...", flush=True)
    made = load(url, args.rows, args.index)
    print("# loaded: " + ", ".join(f"{k} {v}" for k, v in made.items()), flush=True)
    from store import review as _r

    if args.explain:
        explain(url, "claim-next", lambda s: _r.claim_next(s, 3, "reviewer3", 600))
        task = [None]

        def claim_then_label(s):
            task[0] = _r.claim_next(s, 4, "reviewer4", 600)

        from store.db import session_scope

        with session_scope(url) as s:
            claim_then_label(s)
        explain(url, "post-label", lambda s: _r.post_label(s, task[0], 4, "reviewer4", "road",
                                                              "review", 900))

    report("durable commit floor (one-row INSERT + COMMIT, fsync)", commit_floor(url))
    everyone = list(range(1, REVIEWERS + 1))
    reviewer_loop(url, 10, everyone)  # warm the pool, the caches, the statement cache
    claims, labels = reviewer_loop(url, args.iters, everyone)
    res = {"claim": report("claim-next (store.review.claim_next)", claims, 25),
           "label": report("post-label (store.review.post_label)", labels, 25)}

    if args.clients > 1:  # separate processes, as gunicorn's web workers are
        import multiprocessing

        per = max(1, args.iters // args.clients)
        with multiprocessing.get_context("spawn").Pool(args.clients) as pool:
            outs = pool.map(_reviewer_process, [
                (url, per, [u for u in range(1, REVIEWERS + 1) if u % args.clients == k])
                for k in range(args.clients)])
        report(f"claim-next, {args.clients} reviewer processes at once", [x for o in outs for x in o[0]], 25)
        report(f"post-label, {args.clients} reviewer processes at once", [x for o in outs for x in o[1]], 25)

    h = args.heavy_iters
    if h <= 0:
        print(f"# goal (p95 <= 25 ms for claim-next and post-label): "
              f"{'met' if res['claim']['p95'] <= 25 and res['label']['p95'] <= 25 else 'NOT met'}")
        return
    newest_batch, oldest_batch = made["batches"], 1
    BF = browse.BrowseFilter
    mid = args.rows // 2
    browse_cases = [
        ("browse: batch (newest) + class=road", BF(batch_id=newest_batch, predicted_class="road"), None),
        ("browse: batch (oldest) + class=road", BF(batch_id=oldest_batch, predicted_class="road"), None),
        ("browse: class=field + p(road) in [0.45, 0.55]", BF(predicted_class="field", score_min=0.45,
                                                          score_max=0.55), None),
        ("browse: reason=near_threshold + labeled=no", BF(reason="near_threshold", labeled=False), None),
        ("browse: status=failed + batch (oldest)", BF(status="failed", batch_id=oldest_batch), None),
        ("browse: routed=yes + class=road, page at mid-table", BF(routed=True, predicted_class="road"), mid),
    ]
    for name, f, after in browse_cases:
        ms, rows = timed(url, lambda s, i, f=f, after=after: len(browse.browse_images(s, f, after=after,
                                                                                       limit=61)), h)
        res[name] = report(f"{name} ({rows[0]} rows)", ms)
        if args.explain:
            explain(url, name, lambda s, f=f, after=after: browse.browse_images(s, f, after=after, limit=61))
    if args.explain:
        explain(url, "dashboard", lambda s: browse.dashboard(s, 2))
    ms, _ = timed(url, lambda s, i: browse.dashboard(s, 2), h)
    res["dashboard"] = report("dashboard aggregates (store.browse.dashboard, active head)", ms)
    ms, _ = timed(url, lambda s, i: review.queue_overview(s), h)
    res["queue"] = report("review queue overview (store.review.queue_overview)", ms)
    ms, _ = timed(url, lambda s, i: review.open_count(s), h)
    report("open task count (store.review.open_count, review page)", ms)
    ms, _ = timed(url, lambda s, i: images.totals(s), h)
    report("totals (store.images.totals, `verge status`)", ms)
    met = res["claim"]["p95"] <= 25 and res["label"]["p95"] <= 25
    print(f"# goal (p95 <= 25 ms for claim-next and post-label): {'met' if met else 'NOT met'}")


if __name__ == "__main__":
    main()
