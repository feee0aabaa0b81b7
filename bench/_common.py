"""Shared pieces of the benchmarks: varied copies of the shared photos, cleanup that runs however
the script ends, and the benchmarks' side of the services in tests/services.py (a throwaway
Postgres database, a private Redis queue, a real ``verge worker``), each dropped at exit and each
failure a one-line ``bench:`` exit. Not a benchmark itself (the leading underscore keeps it out of
the list).
"""
from __future__ import annotations

import atexit
import hashlib
import io
import multiprocessing
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
# The checkout goes first: `python bench/x.py` works without an install, and bench/store.py can
# never shadow the `store` package.
sys.path[:] = [str(REPO)] + [p for p in sys.path if p != str(REPO)]

from tests import services  # noqa: E402  (the checkout's, now first on sys.path)
from tests.services import ServiceError, port_open  # noqa: E402,F401  (the scripts use port_open)

PG_DEFAULT = services.PG_ADMIN_DEFAULT
REDIS_DEFAULT = services.REDIS_DEFAULT
PHOTO_DIRS = (REPO.parent / "shared" / "datasets" / "fields-roads",   # /work/shared next to the checkout
              REPO / "shared" / "datasets" / "fields-roads")          # a device machine's copy

_cleanups: list[Callable[[], None]] = []


# --------------------------------------------------------------------------- cleanup
def on_exit(fn: Callable[[], None]) -> Callable[[], None]:
    """Run ``fn`` when the script ends (normally, by exception, Ctrl-C or SIGTERM), newest first."""
    _cleanups.append(fn)
    return fn


def _run_cleanups() -> None:
    while _cleanups:
        fn = _cleanups.pop()
        try:
            fn()
        except Exception as exc:  # cleanup must go on; say what was left behind
            print(f"# cleanup: {fn.__name__} failed: {exc}", file=sys.stderr)


def _on_signal(signum, _frame):
    raise SystemExit(128 + signum)


atexit.register(_run_cleanups)


def install_sigterm() -> None:
    """SIGTERM (e.g. from `timeout`) ends the script through its cleanups. Called from each
    script's main(), so pool processes it spawns keep the default behaviour."""
    signal.signal(signal.SIGTERM, _on_signal)


def bench_env(extra: dict) -> dict:
    """The environment for verge subprocesses: no inherited VERGE_* knobs, only ours."""
    return services.child_env(extra, clean=True)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(re.search(r"MemTotal:\s+(\d+)", open("/proc/meminfo").read()).group(1))
        mem = f", {kb / 2**20:.0f} GiB RAM"
    except (OSError, AttributeError):
        pass
    gpu = ""
    try:
        import torch

        if torch.cuda.is_available():
            gpu = f", GPU {torch.cuda.get_device_name(0)}"
        else:
            gpu = ", no GPU"
    except Exception:
        pass
    return f"{os.cpu_count()} CPU cores ({cpu}){mem}{gpu}; {platform.system()} {platform.release()}"


def load() -> str:
    """The 1/5/15-minute load averages and the core count: the noise on a shared machine."""
    try:
        one, five, fifteen = os.getloadavg()
        return f"{one:.1f} / {five:.1f} / {fifteen:.1f} on {os.cpu_count()} cores"
    except OSError:
        return "unknown"


# --------------------------------------------------------------------------- photos
def photos_dir(given: str | None = None) -> Path:
    candidates = [Path(given)] if given else list(PHOTO_DIRS)
    for d in candidates:
        if d.is_dir() and any(d.rglob("*.jp*g")):
            return d
    raise SystemExit(f"bench: no photos found in {', '.join(map(str, candidates))}; "
                     f"pass --photos DIR (a folder of JPEGs, e.g. the shared fields-roads set)")


# The bench corpora (bench/README.md, "Corpora"), both made from the shared photos:
#   A: the photos as they are -- each copy re-encoded with its original's quantisation tables,
#      subsampling and progressive flag (27 % progressive, 224-2845 px on the long side);
#   B: every photo scaled to CORPUS_B_SIDE px on its long side and saved as a baseline JPEG
#      (quality 90, 4:2:0), the size of a web or camera-roll image.
CORPORA = ("A", "B")
CORPUS_B_SIDE = 1024


def _vary(job) -> list[tuple[int, str, int]]:
    """Write the copies of one original: each has one more pixel inverted and is re-encoded as
    its corpus says (A: with the original's own quantisation tables and subsampling, so sizes
    stay realistic; B: scaled to CORPUS_B_SIDE, baseline, quality 90)."""
    from PIL import Image, ImageOps

    src, items, out_dir, corpus = job
    img = Image.open(src)
    img.load()
    if corpus == "B":
        img = (ImageOps.exif_transpose(img) or img).convert("RGB")
        scale = CORPUS_B_SIDE / max(img.size)
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))),
                         Image.Resampling.BICUBIC)
        extra = {"quality": 90, "subsampling": "4:2:0"}
    else:
        extra = {k: img.info[k] for k in ("exif", "icc_profile") if img.info.get(k)}
        if img.info.get("progressive"):
            extra["progressive"] = True
        extra.update(quality="keep", subsampling="keep")
    w, h = img.size
    seen: set[str] = set()
    written = []
    for k, variant in items:
        for attempt in range(20):
            i = variant * 20 + attempt + 1
            xy = ((i * 7919) % w, (i * 104729) % h)
            px = img.getpixel(xy)
            img.putpixel(xy, tuple(255 - c for c in px) if isinstance(px, tuple) else 255 - px)
            buf = io.BytesIO()
            img.save(buf, "JPEG", **extra)
            data = buf.getvalue()
            digest = hashlib.sha256(data).hexdigest()
            if digest not in seen:  # an inverted pixel that quantised away: invert another
                seen.add(digest)
                break
        path = Path(out_dir) / f"{k:06d}-{Path(src).stem[:40]}.jpg"
        path.write_bytes(data)
        written.append((k, str(path), len(data)))
    return written


def make_copies(n: int, out_dir: Path, photos: Path, processes: int | None = None,
                quiet: bool = False, corpus: str = "A") -> list[Path]:
    """``n`` distinct JPEG files of ``corpus`` (CORPORA) made from the photos in ``photos`` (copy
    k comes from original k mod count). Returns them in order. Identical files would be
    deduplicated by verge, so every copy differs from every other in at least one pixel."""
    if corpus not in CORPORA:
        raise SystemExit(f"bench: no corpus {corpus!r}; there are {', '.join(CORPORA)}")
    originals = sorted(p for p in photos.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg"))
    if not originals:
        raise SystemExit(f"bench: no JPEGs under {photos}")
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs: dict[int, list] = {}
    for k in range(n):
        jobs.setdefault(k % len(originals), []).append((k, k // len(originals)))
    work = [(str(originals[i]), items, str(out_dir), corpus) for i, items in jobs.items()]
    # large originals first so one 6000-px photo does not finish last on its own
    work.sort(key=lambda j: -Path(j[0]).stat().st_size * len(j[1]))
    started = time.perf_counter()
    paths: dict[int, Path] = {}
    total = 0
    ctx = multiprocessing.get_context("spawn")  # never fork a process that may hold torch threads
    with ctx.Pool(processes or os.cpu_count() or 1) as pool:
        for written in pool.imap_unordered(_vary, work):
            for k, p, size in written:
                paths[k] = Path(p)
                total += size
    out = [paths[k] for k in range(n)]
    digests = {hashlib.sha256(p.read_bytes()).hexdigest() for p in out}
    if len(digests) != n:
        raise SystemExit(f"bench: only {len(digests)} of {n} copies are distinct")
    if not quiet:
        print(f"# images: corpus {corpus}, {n} distinct JPEGs from {len(originals)} photos in "
              f"{photos} (mean {total / n / 1024:.0f} KiB, {total / 2**20:.0f} MiB; "
              f"{corpus_stats(out[:len(originals)])}), made in {time.perf_counter() - started:.1f} s")
    return out


def corpus_stats(files: list[Path]) -> str:
    """Share of progressive JPEGs and the long-side range, from the headers of ``files``."""
    from PIL import Image

    sides, progressive = [], 0
    for p in files:
        with Image.open(p) as im:
            sides.append(max(im.size))
            progressive += bool(im.info.get("progressive") or im.info.get("progression"))
    if not files:
        return "empty"
    return (f"{progressive / len(files):.0%} progressive, long side {min(sides)}-{max(sides)} px, "
            f"median {sorted(sides)[len(sides) // 2]} px")


def temp_dir(prefix: str) -> Path:
    d = Path(tempfile.mkdtemp(prefix=prefix))

    def remove_temp_dir():
        shutil.rmtree(d, ignore_errors=True)

    on_exit(remove_temp_dir)
    return d


# --------------------------------------------------------------------------- services
def pg_admin_url() -> str:
    """The server of VERGE_DATABASE_URL when that names Postgres, else the local default; the
    admin connection goes to its ``postgres`` database."""
    from sqlalchemy.engine import make_url

    url = os.environ.get("VERGE_BENCH_PG_ADMIN") or os.environ.get("VERGE_DATABASE_URL") or PG_DEFAULT
    u = make_url(url)
    if not u.drivername.startswith("postgresql"):
        u = make_url(PG_DEFAULT)
    return u.set(drivername="postgresql+psycopg", database="postgres").render_as_string(hide_password=False)


def redis_url() -> str:
    url = os.environ.get("VERGE_BROKER_URL") or REDIS_DEFAULT
    return url if url.startswith("redis") else REDIS_DEFAULT


def postgres_available() -> bool:
    return services.postgres_available(pg_admin_url())


def redis_available() -> bool:
    return services.redis_available(redis_url())


def throwaway_database(tag: str) -> str:
    """CREATE DATABASE verge_bench_<tag>_<random>; dropped (WITH FORCE) when the script ends."""
    db = services.ThrowawayDatabase(pg_admin_url(), f"verge_bench_{tag}")
    on_exit(db.drop)
    return db.url


def private_queue(url: str, tag: str) -> tuple[str, str]:
    """A queue name nobody else uses, and a worker node name; their Redis keys go at the end."""
    queue = services.PrivateQueue(url, tag, prefix="verge-bench")
    on_exit(queue.clean)
    return queue.name, queue.node


def worker_services(data: Path, tag: str, embedded: bool, knobs: dict) -> tuple[dict, str, str, str]:
    """Where a benchmark's `verge` processes keep their work: the filesystem broker + SQLite under
    ``data``, or Redis + a throwaway Postgres database with a private queue (both removed at the
    end). Migrates the database. Returns (environment for verge processes, database URL, worker
    node name, a few words saying which)."""
    import migrations

    env = {"VERGE_DATA_DIR": data, **knobs}
    if embedded:
        url = f"sqlite:///{(data / 'verge.db').resolve()}"
        queue, node = f"bench-{tag}-{os.getpid()}", f"bench-{tag}-{os.getpid()}@localhost"
        where = "filesystem broker + SQLite"
    else:
        url = throwaway_database(tag)
        broker = redis_url()
        queue, node = private_queue(broker, tag)
        env.update({"VERGE_DATABASE_URL": url, "VERGE_BROKER_URL": broker})
        where = "Redis + Postgres"
    env["VERGE_QUEUE"] = queue
    migrations.upgrade(url)
    return bench_env(env), url, node, where


def s3_server(log: Path) -> services.S3Server:
    """moto's standalone S3 server on a free port of 127.0.0.1; stopped at exit."""
    try:
        server = services.S3Server(log)
    except ServiceError as exc:
        raise SystemExit(f"bench: {exc}") from None
    on_exit(server.stop)
    return server


# --------------------------------------------------------------------------- verge processes
def verge(env: dict, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """`verge ARGS` with ``env`` (from ``bench_env``); a failure ends the script in one line."""
    try:
        return services.verge(env, *args, timeout=timeout, cwd=REPO, clean=True)
    except ServiceError as exc:
        raise SystemExit(f"bench: {exc}") from None


class Worker(services.Worker):
    """A real ``verge worker`` (Celery prefork) in its own process group; stopped at exit."""

    def __init__(self, env: dict, log: Path, node: str, concurrency: int = 1,
                 ready_timeout: float = 300):
        try:
            super().__init__(env, log, concurrency, name=node, ready_timeout=ready_timeout,
                             cwd=REPO, clean=True)
        except ServiceError as exc:
            raise SystemExit(f"bench: {exc}") from None
        on_exit(self.stop)

    def received_at(self) -> list[float]:
        """Epoch seconds at which the worker received each scoring task (from Celery's log)."""
        import datetime as dt

        pat = re.compile(r"\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}): INFO/MainProcess\] "
                         r"Task verge\.score_chunk\[[^\]]+\] received")
        return [dt.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
                for m in pat.finditer(self.log.read_text(errors="replace"))]

    def chunk_seconds(self) -> list[tuple[int, float]]:
        """(images, seconds) of every chunk the worker logged."""
        pat = re.compile(r"chunk of (\d+): scored=\d+ .* in ([\d.]+)s")
        return [(int(m.group(1)), float(m.group(2)))
                for m in pat.finditer(self.log.read_text(errors="replace"))]


def batch_done(url: str, batch: str) -> tuple[int, int]:
    """(images of the batch scored or failed, images of the batch) -- one cheap query."""
    from sqlalchemy import text

    from store.db import get_engine

    with get_engine(url).connect() as conn:
        row = conn.execute(text(
            "SELECT count(*) FILTER (WHERE i.status IN ('scored', 'failed')), count(*) "
            "FROM batch b JOIN batch_image bi ON bi.batch_id = b.id "
            "JOIN image i ON i.id = bi.image_id WHERE b.name = :n") if url.startswith("postgresql")
            else text(
            "SELECT sum(CASE WHEN i.status IN ('scored', 'failed') THEN 1 ELSE 0 END), count(*) "
            "FROM batch b JOIN batch_image bi ON bi.batch_id = b.id "
            "JOIN image i ON i.id = bi.image_id WHERE b.name = :n"), {"n": batch}).one()
    return int(row[0] or 0), int(row[1] or 0)


def activate_random_head(url: str, encoder: str, pretrained: str, dim: int, model_dir: Path) -> int:
    """Record a seeded random binary head as the active model version, so the worker applies the
    head as well as zero-shot (both judges, as in production)."""
    import torch

    from models.encoder import EncoderSpec
    from models.heads import new_binary_head, save_head
    from store.db import session_scope
    from store.model_versions import activate_model
    from store.schema import ModelVersion

    key = EncoderSpec(encoder, pretrained).key
    torch.manual_seed(0)
    path = save_head(new_binary_head(dim, key), model_dir / "bench-head.pt")
    with session_scope(url) as s:
        mv = ModelVersion(kind="binary", classes=["field", "road"], encoder=key, path=str(path),
                          metrics={}, state="candidate", note="bench: random head")
        s.add(mv)
        s.flush()
        activate_model(s, mv.id)
        return mv.id


def wait_until(pred: Callable[[], bool], timeout: float, what: str, interval: float = 0.1,
               alive: Callable[[], bool] | None = None) -> None:
    try:
        services.wait_until(pred, timeout, what, interval, alive=alive)
    except ServiceError as exc:
        raise SystemExit(f"bench: {exc}") from None


def pct(values: list[float], p: float) -> float:
    """The p-th percentile (nearest rank) of ``values``."""
    s = sorted(values)
    if not s:
        return float("nan")
    k = max(0, min(len(s) - 1, int(round(p / 100 * len(s) + 0.5)) - 1))
    return s[k]


class GpuSampler:
    """GPU utilisation and memory in use, sampled every ``interval`` s while a part runs, from
    ``nvidia-smi -lms`` (one long-running process), else from NVML through torch. ``summary()``
    gives the mean, the median, the share of samples at >= 90 % and a per-second timeline."""

    def __init__(self, index: int = 0, interval: float = 0.2, command: list[str] | None = None):
        import threading

        self.samples: list[tuple[float, float, float]] = []  # (seconds since start, util %, MiB)
        self.index, self.interval = index, interval
        self.t0 = time.monotonic()
        self._stop = threading.Event()
        self._proc = None
        cmd = command or (["nvidia-smi", "--query-gpu=utilization.gpu,memory.used",
                           "--format=csv,noheader,nounits", "-i", str(index),
                           "-lms", str(int(interval * 1000))] if shutil.which("nvidia-smi") else None)
        if cmd:
            self._proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                          text=True, start_new_session=True)
            on_exit(self.stop)
            target = self._read_smi
        else:
            target = self._read_nvml
        self._thread = threading.Thread(target=target, daemon=True)
        self._thread.start()

    def _add(self, util: float, mib: float) -> None:
        self.samples.append((time.monotonic() - self.t0, util, mib))

    def _read_smi(self) -> None:
        for line in self._proc.stdout:
            if self._stop.is_set():
                break
            try:
                util, mib = (float(x) for x in line.split(",")[:2])
            except ValueError:
                continue
            self._add(util, mib)

    def _read_nvml(self) -> None:
        import torch

        while not self._stop.wait(self.interval):
            try:
                util = float(torch.cuda.utilization(self.index))
                mib = torch.cuda.device_memory_used(self.index) / 2**20
            except Exception:  # no NVML binding: say so once, in the summary
                return
            self._add(util, mib)

    def stop(self) -> None:
        self._stop.set()
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            self._proc.wait()
        self._thread.join(timeout=2)

    def summary(self) -> str:
        self.stop()
        if not self.samples:
            return "GPU utilisation: no samples (neither nvidia-smi nor NVML answered)"
        utils = sorted(u for _, u, _ in self.samples)
        mean = sum(utils) / len(utils)
        busy = sum(u >= 90 for u in utils) / len(utils)
        per_second: dict[int, list[float]] = {}
        for t, u, _ in self.samples:
            per_second.setdefault(int(t), []).append(u)
        timeline = " ".join(f"{sum(v) / len(v):.0f}" for _, v in sorted(per_second.items()))
        return (f"GPU utilisation: mean {mean:.0f} %, median {utils[len(utils) // 2]:.0f} %, "
                f">= 90 % in {busy:.0%} of {len(utils)} samples; memory used up to "
                f"{max(m for _, _, m in self.samples) / 1024:.1f} GiB; per second: {timeline}")
