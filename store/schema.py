"""The database schema (SQLAlchemy 2.0 declarative). Alembic migrations in ``migrations/`` mirror it;
a test compares the two on SQLite and Postgres so they cannot drift apart.
"""
from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    JSON, Boolean, DateTime, Float, ForeignKey, Index, Integer, LargeBinary, String, Text,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

# Image lifecycle: registered (known, e.g. from a training folder, not yet asked to be scored)
# -> queued (a scoring task is on its way) -> scored | failed (with a one-line reason).
IMAGE_STATES = ("registered", "queued", "scored", "failed")
# Review task lifecycle; at most one task per image is open or claimed at a time. ``conflict``:
# with several reviews per task (VERGE_REVIEWS_PER_TASK) the reviewers disagreed and an admin
# adjudicates (store/overlap.py).
TASK_STATES = ("open", "claimed", "done", "skipped", "resolved", "conflict")
# Model version states: store/model_versions.py.


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class Base(DeclarativeBase):
    type_annotation_map = {dt.datetime: DateTime(timezone=True)}


class Batch(Base):
    __tablename__ = "batch"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    source: Mapped[str] = mapped_column(String(20), default="cli")  # cli | web | api | training
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Image(Base):
    __tablename__ = "image"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # NULL only for an object registered in place until a worker has read (and hashed) it; then
    # a second image with the same bytes is merged into the first (workers/identity.py)
    sha256: Mapped[str | None] = mapped_column(String(64), unique=True)
    # the blob key (the sha256) of a copied image, or ``s3://bucket/key`` of one registered in place
    storage_key: Mapped[str] = mapped_column(String(1200))
    # the object's ETag when registered in place: a later read gets that version or a reason
    etag: Mapped[str | None] = mapped_column(String(200))
    source_name: Mapped[str] = mapped_column(String(500))  # the file name it first arrived under
    size_bytes: Mapped[int] = mapped_column(Integer)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(12), default="queued", index=True)
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # scoring deliveries that began
    # last time a scoring task was sent for it, or a worker started its chunk (the sweeper's clock)
    queued_at: Mapped[dt.datetime | None] = mapped_column()
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    scored_at: Mapped[dt.datetime | None] = mapped_column()
    # The image's current prediction: its newest (max prediction.id), set by the statement that
    # records a prediction, in its transaction (store/predictions.py), except that a rollback
    # points it back at the restored head's prediction (store/predictions.py point_back). Browse,
    # export and summaries join this one row by primary key
    # instead of finding max(id) per image. No foreign key: prediction already points at image,
    # and a cycle between the two tables would buy nothing the writers don't already ensure.
    latest_prediction_id: Mapped[int | None] = mapped_column(Integer)
    __table_args__ = (
        # one row per object version registered in place (re-registering a prefix links them)
        Index("uq_image_location", "storage_key", "etag", unique=True),
    )


class BatchImage(Base):
    __tablename__ = "batch_image"
    batch_id: Mapped[int] = mapped_column(ForeignKey("batch.id", ondelete="CASCADE"), primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("image.id", ondelete="CASCADE"), primary_key=True,
                                          index=True)
    source_name: Mapped[str] = mapped_column(String(500))  # the name it had in this batch
    added_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Embedding(Base):
    __tablename__ = "embedding"
    image_id: Mapped[int] = mapped_column(ForeignKey("image.id", ondelete="CASCADE"), primary_key=True)
    encoder: Mapped[str] = mapped_column(String(200), primary_key=True)  # EncoderSpec.key
    dim: Mapped[int] = mapped_column(Integer)
    vector: Mapped[bytes] = mapped_column(LargeBinary)  # float32, little-endian, L2-normalised


class CaptionEmbedding(Base):
    """The text embeddings of one set of zero-shot captions under one encoder, recorded by a
    worker that has the encoder loaded: a re-score reads them instead of loading CLIP for its
    text tower (store/captions.py)."""
    __tablename__ = "caption_embedding"
    encoder: Mapped[str] = mapped_column(String(200), primary_key=True)  # EncoderSpec.key
    captions_sha: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256 of the captions' JSON
    captions: Mapped[list] = mapped_column(JSON)
    logit_scale: Mapped[float] = mapped_column(Float)
    dim: Mapped[int] = mapped_column(Integer)
    vectors: Mapped[bytes] = mapped_column(LargeBinary)  # (len(captions), dim) float32, little-endian
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class ModelVersion(Base):
    __tablename__ = "model_version"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))  # binary | three_class
    classes: Mapped[list] = mapped_column(JSON)
    encoder: Mapped[str] = mapped_column(String(200))
    path: Mapped[str] = mapped_column(String(500))  # where the checkpoint came from (informative)
    # the checkpoint itself (~0.5 MB): every worker, web server and retrain reads it from here, so
    # no process needs another's disk. Deferred: read only when a process switches heads.
    checkpoint: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)
    metrics: Mapped[dict] = mapped_column(JSON, default=dict)
    state: Mapped[str] = mapped_column(String(12), default="candidate")
    note: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    activated_at: Mapped[dt.datetime | None] = mapped_column()
    __table_args__ = (
        # Exactly one active head: promotion flips the flag inside one transaction.
        Index("uq_model_version_one_active", "state", unique=True,
              sqlite_where=text("state = 'active'"), postgresql_where=text("state = 'active'")),
    )


class Prediction(Base):
    """What one scorer said about one image. ``model_version_id`` is NULL for zero-shot-only
    scoring (no head active); otherwise the head that produced ``head_probs``."""
    __tablename__ = "prediction"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("image.id", ondelete="CASCADE"))
    model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_version.id"))
    encoder: Mapped[str] = mapped_column(String(200))
    head_probs: Mapped[dict | None] = mapped_column(JSON)   # {"field": .., "road": ..}
    p_road: Mapped[float | None] = mapped_column(Float)     # the head's p(road); NULL without head
    zs_probs: Mapped[dict] = mapped_column(JSON)            # {"field": .., "road": ..}
    zs_p_road: Mapped[float] = mapped_column(Float)
    predicted_class: Mapped[str] = mapped_column(String(20))
    zs_class: Mapped[str] = mapped_column(String(20))
    routed: Mapped[bool] = mapped_column(Boolean, default=False)
    reasons: Mapped[str] = mapped_column(String(200), default="")  # comma-separated
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    image: Mapped[Image] = relationship()
    __table_args__ = (
        # One prediction per image per model version (and one zero-shot-only prediction): re-running
        # a chunk can never add a second row.
        Index("uq_prediction_image_version", "image_id", "model_version_id", unique=True),
        Index("uq_prediction_image_zeroshot", "image_id", unique=True,
              sqlite_where=text("model_version_id IS NULL"),
              postgresql_where=text("model_version_id IS NULL")),
    )


class ReviewTask(Base):
    __tablename__ = "review_task"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("image.id", ondelete="CASCADE"), index=True)
    prediction_id: Mapped[int | None] = mapped_column(ForeignKey("prediction.id"))
    state: Mapped[str] = mapped_column(String(12), default="open")
    reasons: Mapped[str] = mapped_column(String(200))
    priority: Mapped[float] = mapped_column(Float)  # higher = more uncertain = sooner
    lease_owner: Mapped[str | None] = mapped_column(String(100))
    lease_expires_at: Mapped[dt.datetime | None] = mapped_column()
    # set when a newly promoted head re-scored the image as certain: the task left the queue as
    # "resolved" by that version; rolling the version back reopens it
    resolved_by_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_version.id"))
    # with overlap (VERGE_REVIEWS_PER_TASK > 1): the task's final class, set when the N reviewers
    # agreed or an admin adjudicated their conflict (then ``adjudicated_by`` names the admin)
    final_cls: Mapped[str | None] = mapped_column(String(20))
    adjudicated_by: Mapped[int | None] = mapped_column(ForeignKey("user_account.id"))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    __table_args__ = (
        Index("uq_review_task_one_open", "image_id", unique=True,
              sqlite_where=text("state IN ('open', 'claimed')"),
              postgresql_where=text("state IN ('open', 'claimed')")),
        # claim-next: highest priority open task first
        Index("ix_review_task_queue", "state", "priority", "id"),
        # claim-next as the web UI runs it: open tasks and (possibly expired) claims, scanned
        # backwards by priority; the few live claims are filtered out on the way (store/review.py)
        Index("ix_review_task_claimable", "priority", "id",
              sqlite_where=text("state IN ('open', 'claimed')"),
              postgresql_where=text("state IN ('open', 'claimed')")),
        # claim-next first renews the reviewer's own live claim: find it without reading every
        # claimed row (bench/store.py --explain: 109 buffers -> 3 at 1M images)
        Index("ix_review_task_owner_claims", "lease_owner",
              sqlite_where=text("state = 'claimed'"), postgresql_where=text("state = 'claimed'")),
    )


class ReviewSkip(Base):
    """A reviewer passed on a task: it goes back to the queue for the others, not to them."""
    __tablename__ = "review_skip"
    task_id: Mapped[int] = mapped_column(ForeignKey("review_task.id", ondelete="CASCADE"),
                                         primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user_account.id", ondelete="CASCADE"),
                                         primary_key=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class ReviewClaim(Base):
    """A reviewer claimed a task (once is enough): what entitles them to label it, even late,
    after their lease ran out (store/review.py)."""
    __tablename__ = "review_claim"
    task_id: Mapped[int] = mapped_column(ForeignKey("review_task.id", ondelete="CASCADE"),
                                         primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user_account.id", ondelete="CASCADE"),
                                         primary_key=True)


class User(Base):
    __tablename__ = "user_account"  # "user" is reserved in Postgres
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    password_hash: Mapped[str] = mapped_column(String(300))
    role: Mapped[str] = mapped_column(String(20), default="reviewer")  # reviewer | admin
    token_hash: Mapped[str | None] = mapped_column(String(128), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Label(Base):
    """A class given to an image by a person (``user_id``) or by a training set (``source``)."""
    __tablename__ = "label"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("image.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("user_account.id"))
    task_id: Mapped[int | None] = mapped_column(ForeignKey("review_task.id"))
    source: Mapped[str] = mapped_column(String(200))  # "review", "api", "training:<dir>"
    cls: Mapped[str] = mapped_column(String(20))
    time_on_item_ms: Mapped[int | None] = mapped_column(Integer)
    # an admin labeled a task they had not claimed (reviewers cannot: store/review.py)
    admin_override: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    __table_args__ = (
        # a reviewer labels a task once: a double-posted label is stored once
        Index("uq_label_task_user", "task_id", "user_id", unique=True),
        # undo (a reviewer's newest label) and listing a reviewer's labels
        Index("ix_label_user_id", "user_id", "id"),
        # labels per day on the dashboard
        Index("ix_label_created_at", "created_at"),
    )


class WebSession(Base):
    """A signed-in browser. The session cookie carries a random id whose SHA-256 is ``id``: the
    cookie is only good while its row exists, so logout, a password or role change and an
    admin's "sign out everywhere" end it on the server (store/sessions.py)."""
    __tablename__ = "web_session"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user_account.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    seen_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class LoginAttempt(Base):
    """Sign-in attempts per key (a name at an address, or an address) in the current window,
    counted by one atomic upsert before the password is checked (store/throttle.py), so every
    server process and machine sharing the database shares the count."""
    __tablename__ = "login_attempt"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)  # SHA-256 of what is counted
    attempts: Mapped[int] = mapped_column(Integer)
    window_start: Mapped[dt.datetime] = mapped_column(index=True)


class GoldImage(Base):
    """An image whose class is known (store/gold.py): handed to reviewers unannounced to
    measure them, and trained on with this class."""
    __tablename__ = "gold_image"
    image_id: Mapped[int] = mapped_column(ForeignKey("image.id", ondelete="CASCADE"),
                                          primary_key=True)
    cls: Mapped[str] = mapped_column(String(20))
    source: Mapped[str] = mapped_column(String(200))  # "folder:<dir>" | "adjudicated:<task id>"
    created_by: Mapped[int | None] = mapped_column(ForeignKey("user_account.id"))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class GoldTask(Base):
    """A review task that carries a gold image to one reviewer. Kept apart from review_task so
    nothing a reviewer can see (page or API) tells it from any other task."""
    __tablename__ = "gold_task"
    task_id: Mapped[int] = mapped_column(ForeignKey("review_task.id", ondelete="CASCADE"),
                                         primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user_account.id", ondelete="CASCADE"),
                                         index=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class ReviewerGold(Base):
    """A reviewer flagged for low accuracy on gold: their labels stay out of training until an
    admin clears them; gold answers before ``cleared_at`` no longer count."""
    __tablename__ = "reviewer_gold"
    user_id: Mapped[int] = mapped_column(ForeignKey("user_account.id", ondelete="CASCADE"),
                                         primary_key=True)
    flagged_at: Mapped[dt.datetime | None] = mapped_column()
    cleared_at: Mapped[dt.datetime | None] = mapped_column()
    cleared_by: Mapped[int | None] = mapped_column(ForeignKey("user_account.id"))


class Guidelines(Base):
    """The labeling guidelines admins write (Markdown, one row): in the database, so every web
    server shows the same text whatever machine it runs on (webui/guidelines.py renders it)."""
    __tablename__ = "guidelines"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)  # always 1
    text: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_by: Mapped[int | None] = mapped_column(ForeignKey("user_account.id", ondelete="SET NULL"))


class JobLock(Base):
    """A named lock with a lease: a holder that crashes stops renewing it, and once
    ``expires_at`` passes the next job may take it over (two retrains never run at once)."""
    __tablename__ = "job_lock"
    name: Mapped[str] = mapped_column(String(50), primary_key=True)
    owner: Mapped[str] = mapped_column(String(100))
    acquired_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column()


class WebhookDelivery(Base):
    """One event for one receiver (``VERGE_WEBHOOK_URL``): what was sent, how often, how it went.
    ``dedupe_key`` names the occurrence (e.g. a batch finishing at N images) so that two workers
    noticing it at once send it once."""
    __tablename__ = "webhook_delivery"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    delivery_id: Mapped[str] = mapped_column(String(36), unique=True)  # X-Verge-Delivery
    event: Mapped[str] = mapped_column(String(50))
    url: Mapped[str] = mapped_column(String(2000))
    body: Mapped[str] = mapped_column(Text)             # exactly the bytes signed and sent
    dedupe_key: Mapped[str | None] = mapped_column(String(200))
    state: Mapped[str] = mapped_column(String(12), default="pending")  # pending | delivered | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_status: Mapped[int | None] = mapped_column(Integer)   # HTTP status of the last attempt
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    __table_args__ = (
        Index("uq_webhook_delivery_dedupe", "dedupe_key", "url", unique=True),
        # the admin page lists failures newest first
        Index("ix_webhook_delivery_state", "state", "id"),
    )
