"""The one settings object: every knob verge has, read from ``VERGE_*`` environment variables.

Each field documents its variable; the README's settings table is written from the same list
(``verge settings`` prints it). A value that does not parse raises ``SettingsError`` naming the
variable, so a typo ends in one clear line instead of a traceback deep in a worker.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable


class SettingsError(ValueError):
    """A setting has a value verge cannot use; the message names the variable."""


DEFAULT_CAPTIONS = ("this is a photo of a field", "this is a photo of a road.")


def _path(raw: str) -> Path:
    return Path(raw).expanduser()


def _positive_int(raw: str) -> int:
    value = int(raw)
    if value < 1:
        raise ValueError("must be a positive whole number")
    return value


def _non_negative_int(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise ValueError("must be 0 or a positive whole number")
    return value


def _positive_float(raw: str) -> float:
    value = float(raw)
    if not value > 0:
        raise ValueError("must be a positive number of seconds")
    return value


def _metric(raw: str) -> str:
    value = raw.strip().lower()
    if value not in ("macro_f1", "accuracy"):
        raise ValueError("must be macro_f1 or accuracy")
    return value


def _fraction(raw: str) -> float:
    value = float(raw)
    if not 0.0 <= value <= 1.0:
        raise ValueError("must lie between 0 and 1")
    return value


def _band(raw: str) -> tuple[float, float]:
    parts = [p.strip() for p in raw.split(",")]
    if len(parts) != 2:
        raise ValueError("must be two numbers 'low,high', e.g. 0.4,0.6")
    low, high = float(parts[0]), float(parts[1])
    if not 0.0 <= low <= high <= 1.0:
        raise ValueError("needs 0 <= low <= high <= 1")
    return (low, high)


def _captions(raw: str) -> tuple[str, ...]:
    caps = tuple(c.strip() for c in raw.split("|") if c.strip())
    if len(caps) < 2:
        raise ValueError("needs at least two captions separated by '|' (field first, then road)")
    return caps


def _device(raw: str) -> str:
    value = raw.strip().lower()
    if value not in ("auto", "cpu") and not value.startswith("cuda"):
        raise ValueError("must be auto, cpu, cuda or cuda:N")
    return value


def _gpu_decode(raw: str) -> str:
    value = raw.strip().lower()
    if value not in ("nvjpeg", "dali", "nvimgcodec", "resize", "off"):
        raise ValueError("must be nvjpeg, dali, nvimgcodec, resize or off")
    return value


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("must be 1 or 0 (true/false, yes/no, on/off)")


def _port(raw: str) -> int:
    value = int(raw)
    if not 1 <= value <= 65535:
        raise ValueError("must be a port number between 1 and 65535")
    return value


def _port_or_off(raw: str) -> int:
    value = int(raw)
    if not 0 <= value <= 65535:
        raise ValueError("must be a port number between 1 and 65535, or 0 for off")
    return value


def _urls(raw: str) -> tuple[str, ...]:
    from urllib.parse import urlsplit

    urls = tuple(u for u in raw.replace(",", " ").split() if u)
    for u in urls:
        parts = urlsplit(u)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{u!r} is not an http:// or https:// URL")
    return urls


def _log_format(raw: str) -> str:
    value = raw.strip().lower()
    if value not in ("text", "json"):
        raise ValueError("must be text or json")
    return value


def _str(raw: str) -> str:
    if not raw.strip():
        raise ValueError("must not be empty")
    return raw.strip()


def _opt_str(raw: str) -> str:
    return raw.strip()


def _blob_url(raw: str) -> str:
    value = raw.strip()
    if value.startswith("s3://"):
        bucket = value[5:].split("/", 1)[0]
        if not bucket:
            raise ValueError("needs a bucket: s3://BUCKET or s3://BUCKET/PREFIX")
    elif "://" in value:
        raise ValueError("must be a folder or s3://BUCKET/PREFIX")
    return value


def _setting(env: str, default: Any, parse: Callable[[str], Any], doc: str) -> Any:
    return field(default=default, metadata={"env": env, "parse": parse, "doc": doc})


@dataclass(frozen=True)
class Settings:
    data_dir: Path = _setting(
        "VERGE_DATA_DIR", Path("var"), _path,
        "Where the embedded database, folder blobs and broker folders live; with object storage and a "
        "server database it is only a cache (thumbnails, model weights).")
    database_url: str = _setting(
        "VERGE_DATABASE_URL", "", _opt_str,
        "SQLAlchemy URL; empty means SQLite (WAL) at `$VERGE_DATA_DIR/verge.db`. "
        "Postgres: `postgresql+psycopg://user@host/db`.")
    broker_url: str = _setting(
        "VERGE_BROKER_URL", "", _opt_str,
        "Celery broker; empty means kombu's filesystem transport under `$VERGE_DATA_DIR/broker` "
        "(no server). At scale: `redis://host:6379/0` or RabbitMQ `amqp://user:pass@host:5672//` "
        "(durable quorum queues).")
    queue: str = _setting(
        "VERGE_QUEUE", "verge", _str, "Celery queue name the scoring tasks go to.")
    blob_url: str = _setting(
        "VERGE_BLOB_URL", "", _blob_url,
        "Where submitted images are stored (content-addressed): a folder, empty meaning "
        "`$VERGE_DATA_DIR/blobs`, or `s3://BUCKET/PREFIX` in S3-compatible object storage (MinIO, "
        "Ceph RGW, R2, AWS), reached with the standard `AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`, "
        "`AWS_SECRET_ACCESS_KEY`, `AWS_DEFAULT_REGION`. Head checkpoints live in the database.")
    jobs_queue: str = _setting(
        "VERGE_JOBS_QUEUE", "", _opt_str,
        "Celery queue of the periodic and follow-up jobs (sweeper, retrain, label check, "
        "re-score); empty means `<VERGE_QUEUE>-jobs`. Its own queue, so a scoring backlog never "
        "delays them; `verge worker --queues jobs` serves it.")
    blob_dir: str = _setting(
        "VERGE_BLOB_DIR", "", _opt_str,
        "Deprecated spelling of a folder `VERGE_BLOB_URL` (used only when that is empty).")
    encoder: str = _setting(
        "VERGE_ENCODER", "ViT-B-32", _str,
        "open_clip model name (`ViT-B-32`, `ViT-L-14`, ...) or `verge-tiny` (tests, offline demo).")
    pretrained: str = _setting(
        "VERGE_PRETRAINED", "openai", _str,
        "open_clip pretrained tag (`openai`, `laion2b_s34b_b79k`, ...), a path to a weights file, "
        "or `none` for random weights (scores are then not meaningful).")
    device: str = _setting(
        "VERGE_DEVICE", "auto", _device,
        "`auto` (CUDA with fp16 autocast when present, else CPU), `cpu`, `cuda` or `cuda:N`.")
    batch_size: int = _setting(
        "VERGE_BATCH_SIZE", 32, _positive_int, "Images per forward pass of the encoder.")
    chunk_size: int = _setting(
        "VERGE_CHUNK_SIZE", 64, _positive_int, "Images per Celery task.")
    decode_threads: int = _setting(
        "VERGE_DECODE_THREADS", 4, _positive_int,
        "Threads that decode and preprocess images while the model runs.")
    torch_threads: int = _setting(
        "VERGE_TORCH_THREADS", 0, _non_negative_int,
        "Torch intra-op threads in each worker pool process; 0 = the machine's cores divided by "
        "the pool processes (at least 1), so `-c N` processes do not each start one per core. "
        "A retrain uses it too (0 there: half the cores, at most 4).")
    gpu_decode: str = _setting(
        "VERGE_GPU_DECODE", "nvjpeg", _gpu_decode,
        "Image work on a CUDA worker: `nvjpeg` (baseline JPEGs decoded by nvJPEG; every image resized "
        "on the GPU), `dali` or `nvimgcodec` (every plain JPEG, progressive ones too, decoded on the "
        "GPU by NVIDIA DALI or nvImageCodec: `pip install 'verge[gpu]'`), `resize` (Pillow decodes, "
        "the GPU resizes) or `off` (all on the CPU). Files the GPU decoder refuses go to Pillow. "
        "CPU workers ignore it.")
    max_image_pixels: int = _setting(
        "VERGE_MAX_IMAGE_PIXELS", 100_000_000, _positive_int,
        "Larger images are recorded as failed instead of decoded (decompression-bomb guard).")
    captions: tuple = _setting(
        "VERGE_CAPTIONS", DEFAULT_CAPTIONS, _captions,
        "Zero-shot captions separated by `|`, in class order: field, road.")
    route_band: tuple = _setting(
        "VERGE_ROUTE_BAND", (0.4, 0.6), _band,
        "`low,high`: a p(road) inside this band (inclusive) is routed as `near_threshold`.")
    audit_fraction: float = _setting(
        "VERGE_AUDIT_FRACTION", 0.05, _fraction,
        "Share of confidently scored images routed anyway as `audit` (picked from the image hash).")
    worker_concurrency: int = _setting(
        "VERGE_WORKER_CONCURRENCY", 1, _positive_int,
        "Pool processes per `verge worker`. On a CPU one uses all cores; a GPU needs several "
        "(8 on a 16-core H200 machine) so that CPU decoding and database writes keep it fed.")
    worker_metrics_port: int = _setting(
        "VERGE_WORKER_METRICS_PORT", 0, _port_or_off,
        "Port where `verge worker` serves Prometheus metrics (chunk durations, images scored and "
        "failed, summed over its processes); 0 = off. The web UI serves the rest at `/metrics`.")
    task_max_retries: int = _setting(
        "VERGE_TASK_MAX_RETRIES", 5, _positive_int,
        "Retries (with backoff) of a chunk whose database or broker was unreachable.")
    visibility_timeout: int = _setting(
        "VERGE_VISIBILITY_TIMEOUT", 60, _positive_int,
        "Redis only: seconds before an unacknowledged chunk (a dead worker's) goes to another "
        "worker, i.e. what a worker host that dies whole costs. A chunk still running then is "
        "scored twice, harmlessly (scoring is idempotent); retrains are never handed out twice. "
        "RabbitMQ redelivers as soon as the dead worker's connection drops.")

    requeue_after: int = _setting(
        "VERGE_REQUEUE_AFTER", 3600, _positive_int,
        "Seconds an image may stay `queued` before the beat sweeper sends its chunk again "
        "(a lost message, a broker restart); re-scoring is idempotent.")
    max_attempts: int = _setting(
        "VERGE_MAX_ATTEMPTS", 3, _positive_int,
        "Deliveries of an image that may crash a worker before it is recorded as failed.")
    max_file_bytes: int = _setting(
        "VERGE_MAX_FILE_BYTES", 200_000_000, _positive_int,
        "Files larger than this are refused at submission with a clear reason.")

    # ----------------------------------------------------------------- web UI
    web_host: str = _setting(
        "VERGE_WEB_HOST", "127.0.0.1", _str,
        "Address `verge web` listens on (`0.0.0.0` to serve other machines).")
    web_port: int = _setting(
        "VERGE_WEB_PORT", 8000, _port, "Port `verge web` listens on.")
    secret_key: str = _setting(
        "VERGE_SECRET_KEY", "", _opt_str,
        "Signs the web UI's session cookies; empty means a random key kept in "
        "`$VERGE_DATA_DIR/secret_key` (created once, mode 600). Set it when several web servers "
        "share one database.")
    https: bool = _setting(
        "VERGE_HTTPS", False, _bool,
        "`1` when the web UI is served over HTTPS (behind a proxy): cookies are then marked Secure.")
    trusted_proxies: int = _setting(
        "VERGE_TRUSTED_PROXIES", 0, _non_negative_int,
        "Reverse proxies in front of the web UI whose `X-Forwarded-For`/`-Proto`/`-Host` headers "
        "are trusted (Werkzeug's ProxyFix, this many hops). Behind one proxy set `1`, so that the "
        "login throttle sees each client's own address; `0` trusts no such header.")
    review_lease: int = _setting(
        "VERGE_REVIEW_LEASE", 600, _positive_int,
        "Seconds a reviewer holds a claimed review task; an expired lease returns it to the queue.")
    reviews_per_task: int = _setting(
        "VERGE_REVIEWS_PER_TASK", 1, _positive_int,
        "Distinct reviewers who label each review task (blind). Above 1, agreeing labels are "
        "final and a disagreement becomes a `conflict` an admin adjudicates at `/adjudicate`.")
    gold_fraction: float = _setting(
        "VERGE_GOLD_FRACTION", 0.05, _fraction,
        "Share of each reviewer's fresh claims that hand them a gold image (a known class, marked "
        "by an admin) instead, unannounced; 0 = never. Nothing happens until gold images exist.")
    gold_min_accuracy: float = _setting(
        "VERGE_GOLD_MIN_ACCURACY", 0.9, _fraction,
        "A reviewer below this accuracy on gold is flagged on the users page and their labels "
        "stay out of training until an admin clears them.")
    gold_min_items: int = _setting(
        "VERGE_GOLD_MIN_ITEMS", 10, _positive_int,
        "Gold answers a reviewer gives before their accuracy can flag them.")
    max_upload_bytes: int = _setting(
        "VERGE_MAX_UPLOAD_BYTES", 2_000_000_000, _positive_int,
        "Largest web or API upload request (all files together); larger ones get HTTP 413.")

    caption_road_and_field: str = _setting(
        "VERGE_CAPTION_ROAD_AND_FIELD", "this is a photo of a road through fields.", _str,
        "Zero-shot's third caption, used once a three-class head is active.")
    min_confidence: float = _setting(
        "VERGE_MIN_CONFIDENCE", 0.6, _fraction,
        "Three-class phase: a top probability below this is routed as `near_threshold`.")
    retrain_cron: str = _setting(
        "VERGE_RETRAIN_CRON", "0 3 * * *", _opt_str,
        "When beat retrains (`minute hour day month weekday`, UTC); empty disables the schedule.")
    retrain_after_labels: int = _setting(
        "VERGE_RETRAIN_AFTER_LABELS", 200, _non_negative_int,
        "Beat also retrains once this many new human labels arrived since the last model; 0 disables.")
    promote_metric: str = _setting(
        "VERGE_PROMOTE_METRIC", "macro_f1", _metric,
        "Held-out metric a candidate must beat the active head on: `macro_f1` or `accuracy`.")
    promote_margin: float = _setting(
        "VERGE_PROMOTE_MARGIN", 0.01, _fraction,
        "How much better (absolute) the candidate must be to be promoted.")
    holdout_fraction: float = _setting(
        "VERGE_HOLDOUT_FRACTION", 0.2, _fraction,
        "Share of labeled images (picked from their hash, stable across runs) kept out of training "
        "to judge candidate and active head.")
    suspect_threshold: float = _setting(
        "VERGE_SUSPECT_THRESHOLD", 0.9, _fraction,
        "Out-of-fold probability of another class above which a training label is routed as "
        "`suspect_label`.")
    retrain_lock_ttl: int = _setting(
        "VERGE_RETRAIN_LOCK_TTL", 300, _positive_int,
        "Seconds the retrain lock lives without renewal; a crashed retrain frees it after this.")

    # ----------------------------------------------------------------- integrations
    webhook_urls: tuple = _setting(
        "VERGE_WEBHOOK_URL", (), _urls,
        "Receivers of webhooks (one URL, or several separated by spaces or commas): a JSON POST on "
        "`batch.done`, `model.promoted`, `model.rolled_back`, `label.conflict`, `label.suspect`.")
    webhook_secret: str = _setting(
        "VERGE_WEBHOOK_SECRET", "", _opt_str,
        "Signs each webhook body: `X-Verge-Signature: sha256=<HMAC-SHA256 hex>`; empty sends none.")
    webhook_timeout: float = _setting(
        "VERGE_WEBHOOK_TIMEOUT", 5.0, _positive_float,
        "Seconds a webhook receiver may take to answer one attempt.")
    webhook_max_retries: int = _setting(
        "VERGE_WEBHOOK_MAX_RETRIES", 8, _non_negative_int,
        "Retries of a failed webhook delivery, with exponential backoff, before it is recorded as failed.")
    webhook_backoff: float = _setting(
        "VERGE_WEBHOOK_BACKOFF", 10.0, _positive_float,
        "Seconds before the first webhook retry; each further retry waits twice as long (at most 30 min; on Redis also at most half of `VERGE_VISIBILITY_TIMEOUT`).")
    log_format: str = _setting(
        "VERGE_LOG_FORMAT", "text", _log_format,
        "`text`, or `json` for one JSON object per log line (worker, beat, web; chunk lines carry "
        "`task_id`, `batch_id`, `first_image`, `last_image` as fields).")

    # ----------------------------------------------------------------- derived places
    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'verge.db').resolve()}"

    @property
    def resolved_blob_url(self) -> str:
        """``s3://bucket/prefix`` or the folder holding blobs (VERGE_BLOB_DIR is the old name)."""
        if self.blob_url:
            return self.blob_url if self.blob_url.startswith("s3://") else str(Path(self.blob_url).expanduser())
        return str(Path(self.blob_dir).expanduser() if self.blob_dir else self.data_dir / "blobs")

    @property
    def resolved_blob_dir(self) -> Path:
        """The blob folder when blobs are kept in a folder (callers that need a path)."""
        if self.resolved_blob_url.startswith("s3://"):
            raise SettingsError("VERGE_BLOB_URL names object storage, not a folder")
        return Path(self.resolved_blob_url)

    @property
    def broker_dir(self) -> Path:
        return self.data_dir / "broker"

    @property
    def model_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def resolved_jobs_queue(self) -> str:
        return self.jobs_queue or f"{self.queue}-jobs"

    @property
    def embedded_broker(self) -> bool:
        return not self.broker_url

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: Any) -> "Settings":
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            env = f.metadata["env"]
            raw = environ.get(env)
            if raw is None:
                continue
            try:
                values[f.name] = f.metadata["parse"](raw)
            except (ValueError, TypeError) as exc:
                raise SettingsError(f"{env}={raw!r} is not valid: {exc}") from None
        values.update(overrides)
        return cls(**values)


def settings_table() -> list[tuple[str, str, str]]:
    """(variable, default, meaning) for every setting: the README table and `verge settings`."""
    rows = []
    for f in fields(Settings):
        default = f.default
        if isinstance(default, bool):
            default = int(default)
        if isinstance(default, tuple):
            default = ("|" if f.name == "captions" else ",").join(str(x) for x in default)
        if isinstance(default, float) and default.is_integer() and f.name.startswith("webhook"):
            default = int(default)
        rows.append((f.metadata["env"], str(default) if default != "" else "(empty)", f.metadata["doc"]))
    return rows


def settings_markdown() -> list[str]:
    """``settings_table`` as the README's markdown table, one line each; a ``|`` inside a cell
    (the captions' separator) is escaped so it does not end the cell."""
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    for env, default, doc in settings_table():
        lines.append(f"| `{env}` | `{default}` | {doc} |".replace("|this", "\\|this")
                     .replace("by `|`", "by `\\|`"))
    return lines
