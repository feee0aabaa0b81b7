"""Worker memory over a long run (issue 5, item 5).

A real ``verge worker`` (one Celery prefork process, as deployed) is fed N distinct images
(varied copies of the shared photos) through the real ``verge submit``; the resident set size of
the worker's processes is sampled until every image is scored. Printed: RSS at start (model
loaded, idle), after the first 500 images, the peak, at the end, and whether the end lies within
5 % of the after-500 value (the goal: memory flat over long runs).

    .venv/bin/python bench/rss.py                 # 10k images, verge-tiny (a few minutes)
    .venv/bin/python bench/rss.py --n 2000        # quicker
    .venv/bin/python bench/rss.py --encoder ViT-B-32 --n 2000   # the real model's size (slow on CPU)

Redis + Postgres at their local defaults (private queue, throwaway database), or --embedded
(filesystem broker + SQLite; chosen automatically when either server is absent).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

MARK = 500


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=10_000, help="distinct images (default 10000)")
    p.add_argument("--encoder", default="verge-tiny", help="open_clip model (default verge-tiny)")
    p.add_argument("--pretrained", default="none", help="weights; 'none' = seeded random (default)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=32, help="VERGE_BATCH_SIZE (default 32)")
    p.add_argument("--chunk", type=int, default=64, help="VERGE_CHUNK_SIZE (default 64)")
    p.add_argument("--interval", type=float, default=0.5, help="seconds between RSS samples")
    p.add_argument("--embedded", action="store_true", help="filesystem broker + SQLite")
    p.add_argument("--photos", default=None, help="folder of JPEGs to copy (default: shared fields-roads)")
    p.add_argument("--timeout", type=float, default=3600, help="give up after this many seconds")
    a = p.parse_args(argv)
    if a.n < MARK * 2:
        p.error(f"--n must be at least {2 * MARK}: the reference point is the RSS after {MARK} images")
    return a


# --------------------------------------------------------------------------- RSS
def _rss_proc(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _children_proc(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            for tid in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    kids = [int(x) for x in f.read().split()]
                out += kids
                todo += kids
        except OSError:
            continue
    return out


def pss(pid: int) -> int:
    """Proportional set size of the worker and its pool processes together (shared pages, e.g.
    torch's libraries mapped by both after the fork, counted once); 0 where unavailable."""
    try:
        import psutil

        main = psutil.Process(pid)
        return sum(p.memory_full_info().pss for p in [main, *main.children(recursive=True)])
    except Exception:
        return 0


def rss(pid: int) -> tuple[int, int]:
    """(RSS of the main worker process, RSS of its pool processes together), bytes."""
    try:
        import psutil

        main = psutil.Process(pid)
        kids = main.children(recursive=True)
        total = 0
        for k in kids:
            try:
                total += k.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        return main.memory_info().rss, total
    except ImportError:
        return _rss_proc(pid), sum(_rss_proc(k) for k in _children_proc(pid))


def mib(b: float) -> str:
    return f"{b / 2**20:7.1f} MiB"


def main(argv=None) -> None:
    args = parse_args(argv)
    C.install_sigterm()

    try:
        import psutil  # noqa: F401
        how = "psutil"
    except ImportError:
        how = "/proc"
    print(f"# machine: {C.machine()}; load average {C.load()}")
    print(f"# encoder {args.encoder} (pretrained={args.pretrained}), device {args.device}, batch "
          f"{args.batch}, chunk {args.chunk}; RSS via {how} every {args.interval:g} s", flush=True)
    work = C.temp_dir("verge-bench-rss-")
    img_dir = work / "images"
    C.make_copies(args.n, img_dir, C.photos_dir(args.photos))

    embedded = args.embedded or not (C.redis_available() and C.postgres_available())
    data = work / "var"
    data.mkdir()
    env, url, node, where = C.worker_services(data, "rss", embedded, {
        "VERGE_ENCODER": args.encoder, "VERGE_PRETRAINED": args.pretrained,
        "VERGE_DEVICE": args.device, "VERGE_BATCH_SIZE": args.batch, "VERGE_CHUNK_SIZE": args.chunk})
    print(f"# {where}; one `verge worker -c 1`", flush=True)
    worker = C.Worker(env, work / "worker.log", node)
    # the pool process loads the model in worker_process_init: wait until its memory settles
    settle, last, deadline = time.monotonic(), -1, time.monotonic() + 120
    while time.monotonic() - settle < 3 and time.monotonic() < deadline:
        now = sum(rss(worker.proc.pid))
        if abs(now - last) > 2**20:
            settle, last = time.monotonic(), now
        time.sleep(0.5)

    samples: list[tuple[float, int, int, int]] = []   # (t, done, main rss, pool rss)
    stop = threading.Event()
    done_now = [0]

    def sample():
        while not stop.is_set():
            try:
                m, k = rss(worker.proc.pid)
            except Exception:
                break
            samples.append((time.monotonic(), done_now[0], m, k))
            stop.wait(args.interval)

    start_main, start_pool = rss(worker.proc.pid)
    pss_start, pss_mark = pss(worker.proc.pid), [0]
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.monotonic()
    sub = subprocess.Popen([sys.executable, "-m", "verge", "submit", str(img_dir), "--batch", "rss",
                            "--json"], env=env, cwd=C.REPO, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True)
    last_print = 0
    while True:
        done, total = C.batch_done(url, "rss")
        done_now[0] = done
        if sub.poll() is not None and sub.returncode != 0:
            raise SystemExit(f"bench: verge submit exited {sub.returncode}: {sub.stderr.read()}")
        if sub.poll() is not None and total == args.n and done == args.n:
            break
        if not worker.alive():
            raise SystemExit(f"bench: the worker died:\n{worker.tail()}")
        if time.monotonic() - t0 > args.timeout:
            raise SystemExit(f"bench: gave up after {args.timeout:.0f} s with {done}/{args.n} scored")
        if not pss_mark[0] and done >= MARK:
            pss_mark[0] = pss(worker.proc.pid)
        if done - last_print >= max(1000, args.n // 10):
            last_print = done
            if samples:
                _, _, m, k = samples[-1]
                print(f"#   {done:>6} scored: pool {mib(k)}, main {mib(m)}", flush=True)
        time.sleep(0.2)
    elapsed = time.monotonic() - t0
    time.sleep(args.interval * 2)
    stop.set()
    sampler.join()
    end_main, end_pool = rss(worker.proc.pid)
    pss_end = pss(worker.proc.pid)
    worker.stop()

    def at(n_done):
        for t, d, m, k in samples:
            if d >= n_done:
                return m, k
        return samples[-1][2], samples[-1][3]

    mark_main, mark_pool = at(MARK)
    peak_pool = max(k for _, _, _, k in samples)
    peak_total = max(m + k for _, _, m, k in samples)
    print(f"scored {args.n} images in {elapsed:.0f} s ({args.n / elapsed:.1f} img/s)")
    print(f"{'':<22}{'pool process':>14}{'main process':>16}{'together':>14}")
    for name, m, k in (("start (model loaded)", start_main, start_pool),
                       (f"after first {MARK}", mark_main, mark_pool),
                       ("end", end_main, end_pool)):
        print(f"{name:<22}{mib(k):>14}{mib(m):>16}{mib(m + k):>14}")
    print(f"{'peak':<22}{mib(peak_pool):>14}{'':>16}{mib(peak_total):>14}")
    if pss_end:
        print(f"{'PSS together':<22} start {mib(pss_start).strip()}, after {MARK} "
              f"{mib(pss_mark[0]).strip()}, end {mib(pss_end).strip()} (shared pages counted once)")
    growth = (end_main + end_pool) / (mark_main + mark_pool) - 1
    ok = abs(growth) <= 0.05
    print(f"end vs after-{MARK}: {growth:+.1%} (together; pool process alone "
          f"{end_pool / mark_pool - 1:+.1%}) -> goal (within 5 %): {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
