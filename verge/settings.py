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


def _str(raw: str) -> str:
    if not raw.strip():
        raise ValueError("must not be empty")
    return raw.strip()


def _opt_str(raw: str) -> str:
    return raw.strip()


def _setting(env: str, default: Any, parse: Callable[[str], Any], doc: str) -> Any:
    return field(default=default, metadata={"env": env, "parse": parse, "doc": doc})


@dataclass(frozen=True)
class Settings:
    data_dir: Path = _setting(
        "VERGE_DATA_DIR", Path("var"), _path,
        "Where the embedded database, blobs, model checkpoints and broker folders live.")
    database_url: str = _setting(
        "VERGE_DATABASE_URL", "", _opt_str,
        "SQLAlchemy URL; empty means SQLite (WAL) at `$VERGE_DATA_DIR/verge.db`. "
        "Postgres: `postgresql+psycopg://user@host/db`.")
    broker_url: str = _setting(
        "VERGE_BROKER_URL", "", _opt_str,
        "Celery broker; empty means kombu's filesystem transport under `$VERGE_DATA_DIR/broker` "
        "(no server). At scale: `redis://host:6379/0`.")
    queue: str = _setting(
        "VERGE_QUEUE", "verge", _str, "Celery queue name the scoring tasks go to.")
    blob_dir: str = _setting(
        "VERGE_BLOB_DIR", "", _opt_str,
        "Content-addressed image storage; empty means `$VERGE_DATA_DIR/blobs`. "
        "A shared volume when workers run on other machines.")
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
        "Worker processes per `verge worker` (one per GPU; on CPU one uses all cores).")
    task_max_retries: int = _setting(
        "VERGE_TASK_MAX_RETRIES", 5, _positive_int,
        "Retries (with backoff) of a chunk whose database or broker was unreachable.")
    visibility_timeout: int = _setting(
        "VERGE_VISIBILITY_TIMEOUT", 3600, _positive_int,
        "Seconds before Redis hands an unacknowledged chunk to another worker; "
        "keep it above the longest chunk.")

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

    # ----------------------------------------------------------------- derived places
    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'verge.db').resolve()}"

    @property
    def resolved_blob_dir(self) -> Path:
        return Path(self.blob_dir).expanduser() if self.blob_dir else self.data_dir / "blobs"

    @property
    def broker_dir(self) -> Path:
        return self.data_dir / "broker"

    @property
    def model_dir(self) -> Path:
        return self.data_dir / "models"

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
        if isinstance(default, tuple):
            default = ("|" if f.name == "captions" else ",").join(str(x) for x in default)
        rows.append((f.metadata["env"], str(default) if default != "" else "(empty)", f.metadata["doc"]))
    return rows
