"""The review path over HTTP under load (issue 12, item 6): 50 simulated reviewers (locust,
headless) against gunicorn (4 workers) + Postgres holding 1M images and 200k open review tasks,
each reviewer looping claim -> label through the JSON API for 2 minutes.

The database is bench/store.py's (the same loader: 1M images, ~200k open tasks, live and expired
claims), in a throwaway Postgres database; each simulated reviewer has its own account and API
token. Printed: per request p50/p95/p99 and errors (from locust's own statistics), and from the
database afterwards: tasks labeled by more than one reviewer (N = 1: must be 0) or, with
``--reviews-per-task 2``, tasks with other than 2 labels among those settled, and any task with
more than N. Baseline in the same run: the same claim -> label loop called in-process
(store functions, one reviewer), so the ratio shows what HTTP, gunicorn and 50-way concurrency add.

    .venv/bin/python bench/web_load.py                         # 1M images, N = 1, 2 minutes
    .venv/bin/python bench/web_load.py --reviews-per-task 2
    .venv/bin/python bench/web_load.py --rows 50000 --time 30s # a quick run
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

LOCUSTFILE = '''
import json, os, random
from locust import task, between
from locust.contrib.fasthttp import FastHttpUser

TOKENS = json.load(open(os.environ["VERGE_LOAD_TOKENS"]))
_next = iter(range(10 ** 9))

class Reviewer(FastHttpUser):  # geventhttpclient: far less of the shared CPU than requests
    wait_time = between(float(os.environ["VERGE_LOAD_THINK_MIN"]), float(os.environ["VERGE_LOAD_THINK_MAX"]))

    def on_start(self):
        self.auth = {"Authorization": "Bearer " + TOKENS[next(_next) % len(TOKENS)]}

    @task
    def claim_and_label(self):
        with self.client.post("/api/v1/tasks/next", json={}, headers=self.auth, name="claim",
                              catch_response=True) as r:
            if r.status_code != 200:
                r.failure(f"claim: {r.status_code} {r.text[:200]}")
                return
            t = r.json()["task"]
        if t is None:
            return
        cls = random.choice(["field", "road"])
        with self.client.post("/api/v1/labels", json={"task_id": t["task_id"], "class": cls,
                              "time_on_item_ms": 900}, headers=self.auth, name="label",
                              catch_response=True) as r:
            if r.status_code not in (200, 201):
                r.failure(f"label: {r.status_code} {r.text[:200]}")
'''


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--users", type=int, default=50)
    p.add_argument("--time", default="2m", help="locust run time (e.g. 2m, 30s)")
    p.add_argument("--workers", type=int, default=4, help="gunicorn workers")
    p.add_argument("--threads", type=int, default=8,
                   help="threads per gunicorn worker (gthread, as docker-compose and webui/README "
                        "run it); 1: gunicorn's sync workers")
    p.add_argument("--spawn-rate", type=float, default=10,
                   help="reviewers starting per second (locust -r); 50 at 10/s start within 5 s")
    p.add_argument("--reviews-per-task", type=int, default=1)
    p.add_argument("--think", default="0.5,1.5",
                   help="seconds a simulated reviewer looks at an image: min,max")
    return p.parse_args(argv)


def locust_command() -> list[str] | None:
    """How to start locust: ``$VERGE_LOCUST`` (a locust executable, e.g. from a venv of its own:
    locust pins its own Flask), else this interpreter's module, else ``locust`` on PATH."""
    import importlib.util
    import shutil

    if os.environ.get("VERGE_LOCUST"):
        return [os.environ["VERGE_LOCUST"]]
    if importlib.util.find_spec("locust") is not None:
        return [sys.executable, "-m", "locust"]
    found = shutil.which("locust")
    return [found] if found else None


def server_times(log: Path) -> dict[str, list[float]]:
    """Milliseconds each claim and label spent inside gunicorn (its access log's %(D)s): what the
    app and the database took, without the wait for a free worker thread and the client's side."""
    out: dict[str, list[float]] = {"claim": [], "label": []}
    if not log.exists():
        return out
    for line in log.read_text().splitlines():
        parts = line.split()
        if len(parts) != 3 or not parts[2].isdigit():
            continue
        name = {"/api/v1/tasks/next": "claim", "/api/v1/labels": "label"}.get(parts[0])
        if name:
            out[name].append(int(parts[2]) / 1000)
    return {k: v for k, v in out.items() if v}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def baseline(url: str, uid: int, name: str, n: int = 200) -> list[float]:
    from store import review
    from store.db import session_scope

    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        with session_scope(url) as s:
            tid = review.claim_next(s, uid, name, 600)
        if tid is None:
            break
        with session_scope(url) as s:
            review.post_label(s, tid, uid, name, "road", "bench")
        out.append(time.perf_counter() - t0)
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    C.install_sigterm()
    locust = locust_command()
    if locust is None:
        print("verge: error: locust is not installed (pip install 'verge[bench]', or set "
              "VERGE_LOCUST to a locust executable)", file=sys.stderr)
        return 2
    import importlib.util

    import migrations
    from sqlalchemy import text

    import store.users  # noqa: F401  (the package, before bench/store.py puts bench/ first)
    saved = list(sys.path)
    spec = importlib.util.spec_from_file_location("store_bench", Path(__file__).parent / "store.py")
    store_bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(store_bench)  # bench/store.py's loader (its name would shadow `store`)
    sys.path[:] = saved

    from store import users as store_users
    from store.db import get_engine, session_scope
    from webui.security import new_token

    print(f"# machine: {C.machine()}")
    print(f"# load: {C.load()}")
    kind = f"-k gthread --threads {args.threads} " if args.threads > 1 else ""
    print(f"# {args.users} reviewers, gunicorn {kind}-w {args.workers}, N = {args.reviews_per_task}, "
          f"think {args.think} s, {args.time}, {args.spawn_rate:g} starting per second")
    url = C.throwaway_database("webload")
    migrations.upgrade(url)
    print(f"# loading {args.rows} images")
    made = store_bench.load(url, args.rows)
    print(f"# {json.dumps(made)}")

    tokens = []
    with session_scope(url) as s:
        for i in range(args.users):
            token, digest = new_token()
            u = store_users.create_user(s, f"load{i}", "bench-no-login", "reviewer")
            store_users.set_token_hash(s, u.id, digest)
            tokens.append(token)
        base_uid = store_users.create_user(s, "baseline", "bench-no-login", "reviewer").id
    tmp = C.temp_dir("verge-webload-")
    (tmp / "tokens.json").write_text(json.dumps(tokens))
    (tmp / "locustfile.py").write_text(LOCUSTFILE)

    b = baseline(url, base_uid, "baseline")
    print(f"baseline (in-process claim+label, one reviewer, {len(b)} loops): "
          f"p50 {1000 * C.pct(b, 50):.1f} ms, p95 {1000 * C.pct(b, 95):.1f} ms")

    with get_engine(url).connect() as conn:
        since = conn.execute(text("SELECT coalesce(max(id), 0) FROM label")).scalar()
    port = free_port()
    env = {**os.environ, "VERGE_DATABASE_URL": url, "VERGE_DATA_DIR": str(tmp / "var"),
           "VERGE_REVIEWS_PER_TASK": str(args.reviews_per_task), "VERGE_GOLD_FRACTION": "0",
           "VERGE_SECRET_KEY": "bench", "PYTHONPATH": str(C.REPO)}
    threads = ["-k", "gthread", "--threads", str(args.threads)] if args.threads > 1 else []
    web = subprocess.Popen([sys.executable, "-m", "gunicorn", *threads, "-w", str(args.workers),
                            "-b", f"127.0.0.1:{port}", "--log-level", "warning",
                            "--access-logfile", str(tmp / "access.log"),
                            "--access-logformat", "%(U)s %(s)s %(D)s",
                            "webui:create_app()"],
                           env=env, cwd=C.REPO, start_new_session=True)
    C.on_exit(lambda: (web.terminate(), web.wait(timeout=30)))
    C.wait_until(lambda: C.port_open("127.0.0.1", port), 60, "gunicorn to listen")
    lo, hi = args.think.split(",")
    lenv = {**env, "VERGE_LOAD_TOKENS": str(tmp / "tokens.json"), "VERGE_LOAD_THINK_MIN": lo,
            "VERGE_LOAD_THINK_MAX": hi}
    t0 = time.perf_counter()
    proc = subprocess.run([*locust, "-f", str(tmp / "locustfile.py"),
                           "--headless", "-u", str(args.users), "-r", str(args.spawn_rate),
                           "-t", args.time, "--host", f"http://127.0.0.1:{port}",
                           "--csv", str(tmp / "stats"), "--only-summary"],
                          env=lenv, capture_output=True, text=True)
    print(f"# locust ran {time.perf_counter() - t0:.0f} s, exit {proc.returncode}")
    if not (tmp / "stats_stats.csv").exists():
        print(f"verge: error: locust wrote no statistics: {proc.stderr.strip()[-300:]}",
              file=sys.stderr)
        return 1
    rows = list(csv.DictReader(open(tmp / "stats_stats.csv")))
    print(f"{'request':<12}{'count':>8}{'errors':>8}{'p50 ms':>8}{'p95 ms':>8}{'p99 ms':>8}{'req/s':>8}")
    for r in rows:
        print(f"{r['Name']:<12}{r['Request Count']:>8}{r['Failure Count']:>8}{r['50%']:>8}"
              f"{r['95%']:>8}{r['99%']:>8}{float(r['Requests/s']):>8.1f}")
    served = server_times(tmp / "access.log")
    for name, ms in served.items():
        print(f"# inside gunicorn (request read to response written), {name}: {len(ms)} requests, "
              f"p50 {C.pct(ms, 50):.0f} ms, p95 {C.pct(ms, 95):.0f} ms")
    fails = (tmp / "stats_failures.csv")
    if fails.exists():
        for r in list(csv.DictReader(open(fails)))[:5]:
            print(f"# failure: {r}")

    n = args.reviews_per_task
    with get_engine(url).connect() as conn:
        per_task = conn.execute(text(
            "SELECT count(*) FILTER (WHERE c > 1), count(*) FILTER (WHERE c > :n), "
            "count(*) FILTER (WHERE c = :n), count(*) FROM (SELECT task_id, count(*) AS c FROM label "
            "WHERE id > :since GROUP BY task_id) t"), {"n": n, "since": since}).one()
        twice = conn.execute(text(
            "SELECT count(*) FROM (SELECT task_id, user_id FROM label WHERE id > :since "
            "GROUP BY task_id, user_id HAVING count(*) > 1) t"), {"since": since}).scalar()
        settled_wrong = conn.execute(text(
            "SELECT count(*) FROM review_task t WHERE t.state IN ('done', 'conflict') AND "
            "t.updated_at > now() - interval '1 hour' AND t.id IN (SELECT task_id FROM label "
            "WHERE id > :since) AND (SELECT count(*) FROM label l WHERE l.task_id = t.id) <> :n"),
            {"n": n, "since": since}).scalar()
    multi, over, exact, touched = per_task
    print(f"tasks labeled in the run: {touched}; by more than one reviewer: {multi}; "
          f"with more than N={n}: {over}; with exactly N: {exact}; settled with other than N: "
          f"{settled_wrong}; one reviewer twice on a task: {twice}")
    label_p95 = max(float(r["95%"]) for r in rows if r["Name"] in ("claim", "label"))
    errors = sum(int(r["Failure Count"]) for r in rows if r["Name"] == "Aggregated")
    print(f"p95 ratio (worst HTTP request / in-process claim+label): "
          f"{label_p95 / (1000 * C.pct(b, 95)):.1f}")
    ok = label_p95 <= 100 and errors == 0 and over == 0 and twice == 0 and (
        multi == 0 if n == 1 else settled_wrong == 0)
    print(f"goals (p95 <= 100 ms, 0 errors, no double labels at N=1 / exactly N at N=2): "
          f"{'met' if ok else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
