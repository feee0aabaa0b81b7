"""The retraining job: labels in, maybe a better head out. ``retrain`` reads as its steps:

0. Take the ``retrain`` lock (leased in the database: a crashed run frees it after its TTL) and
   set torch's intra-op threads (``torch_threads``). The lease is renewed through every long
   phase (each page of the read, each epoch); a run that lost it (it expired and another run
   took it) raises ``LeaseLost`` at its next renewal and never promotes: the promotion's own
   transaction re-confirms the lease.
1. ``read_labeled_set``: the consensus label of every labeled image and its stored embedding,
   read into one preallocated float32 matrix (CLIP is never recomputed; ties between reviewers
   stay out and are listed for adjudication); rows split by image hash (stable across runs)
   into training and held-out rows, kept as index arrays.
2. ``train_head``: a three-class candidate with the seed's fixes switched on (class weighting,
   LR halving, early stopping on a validation split of the training rows, best epoch kept).
3. ``judge``: candidate and active head on the same held-out rows; promote only if the
   candidate beats the active head by the margin, otherwise keep it as a candidate with the
   reason.
4. ``record_version``: the candidate with its metrics and curves (database + TensorBoard). The
   promotion re-reads the active head under the active-head guard: if it is no longer the head
   the candidate was judged against (a manual activation or rollback meanwhile), the candidate
   is kept, not promoted. ``on_promoted`` is called the moment the promotion commits (to
   request the re-score).
5. ``flag_suspects``: out-of-fold predictions over the labeled set; training-folder labels that
   the model confidently rejects are routed to review as ``suspect_label`` (skipped when every
   label came from people: theirs are never flagged).
"""
from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import secrets
import time
from dataclasses import dataclass, field, replace

import numpy as np
from sqlalchemy import select

from models.encoder import EncoderSpec
from models.heads import THREE_CLASS, THREE_CLASSES, head_bytes, load_head
from models.metrics import classification_metrics
from models.training import (RETRAIN_RECIPE, Recipe, TrainResult, batch_size_for, out_of_fold_probs,
                             predict_rows, train_head)
from store import active_head as head_guard
from store import labels as labels_q
from store import locks
from store import embeddings, model_versions
from store import review as review_q
from store.clock import db_now
from store.db import session_scope
from store.pausepoints import reach
from store.schema import ModelVersion
from verge.settings import Settings

from . import webhooks
from .routing import SUSPECT_LABEL

log = logging.getLogger("verge.retrain")
MIN_LABELS = 10


@dataclass
class RetrainOutcome:
    version_id: int | None
    promoted: bool
    reason: str
    candidate: dict = field(default_factory=dict)    # held-out metrics
    active: dict = field(default_factory=dict)       # the active head's, on the same labels
    active_version_id: int | None = None
    labels: int = 0
    ties: dict = field(default_factory=dict)
    suspects: int = 0
    seconds: dict = field(default_factory=dict)      # wall time of each step, by name

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def in_holdout(sha256: str, fraction: float) -> bool:
    # the low hex digits: independent of the audit sample, which reads the high ones
    return int(sha256[-8:], 16) / float(16 ** 8) < fraction


def _expand(probs: np.ndarray, classes) -> np.ndarray:
    """A head's probabilities laid out over the three classes (a binary head never says 'both')."""
    out = np.zeros((len(probs), len(THREE_CLASSES)), np.float32)
    for j, c in enumerate(classes):
        out[:, THREE_CLASSES.index(c)] = probs[:, j]
    return out


@dataclass
class LabeledSet:
    """What a retrain trains and judges on: the consensus label of each labeled image that has a
    stored embedding, its row in one float32 matrix, and whether it is held out."""
    ids: list                 # image ids, one per row of X
    X: np.ndarray             # (n, d) float32: the one copy of the embeddings
    y: np.ndarray             # class index per row
    held: np.ndarray          # bool per row: held out for judging (by image hash)
    agreed: labels_q.Consensus
    labels_as_of: dt.datetime
    active: tuple | None      # (version id, checkpoint, encoder) of the active head when read

    @property
    def train_rows(self) -> np.ndarray:
        return np.flatnonzero(~self.held)

    @property
    def held_rows(self) -> np.ndarray:
        return np.flatnonzero(self.held)


def retrain(settings: Settings, recipe: Recipe = RETRAIN_RECIPE, trigger: str = "manual",
            on_epoch=None, find_suspects: bool = True, on_promoted=None) -> RetrainOutcome:
    """Labels in, maybe a better head out: the steps of the module docstring, in order."""
    url = settings.resolved_database_url
    encoder_key = EncoderSpec(settings.encoder, settings.pretrained).key
    with locks.held(url, "retrain", settings.retrain_lock_ttl) as lease, torch_threads(settings.torch_threads):
        # 1. the labeled set: consensus labels, their embeddings in one matrix, the hold-out split
        clock = time.perf_counter()
        data = read_labeled_set(settings, encoder_key, lease)
        out = RetrainOutcome(None, False, "", labels=len(data.ids), ties=data.agreed.ties)
        clock = _lap(out, "read", clock)
        if len(data.ids) < MIN_LABELS or len(np.unique(data.y)) < 2:
            out.reason = (f"not enough labeled images with embeddings from {encoder_key} "
                          f"({len(data.ids)}; need {MIN_LABELS} over at least two classes)")
            return out

        # 2. train the candidate on the training rows (index arrays into X, never copies)
        def epoch_hook(stats):
            lease.renew()
            if on_epoch:
                on_epoch(stats)

        result = train_head(THREE_CLASS, data.X, data.y, encoder_key, recipe, on_epoch=epoch_hook,
                            rows=data.train_rows)
        clock = _lap(out, "train", clock)

        # 3. judge candidate and active head on the same held-out rows; decide
        promote = judge(settings, data, result, encoder_key, out)
        clock = _lap(out, "judge", clock)
        result.head.meta.metrics.update({"held_out": out.candidate, "active_held_out": out.active,
                                         "active_version": out.active_version_id,
                                         "labels": len(data.ids), "ties": len(data.agreed.ties),
                                         "trigger": trigger, "decision": out.reason})

        # 4. record the version; promote it if it won and the active head is still the one it beat
        lease.renew()
        reach("retrain.before_promote")
        record_version(url, data, result, promote, lease, out)
        if out.promoted and on_promoted:
            on_promoted(out.version_id)
        if out.promoted:
            webhooks.emit(settings, "model.promoted", {
                "version": out.version_id, "kind": THREE_CLASS, "trigger": trigger, "reason": out.reason,
                "held_out": out.candidate, "previous_version": out.active_version_id})
        write_tensorboard(settings, out.version_id, result.history, out.candidate)
        clock = _lap(out, "record", clock)

        # 5. training-folder labels the model confidently rejects go to people
        if find_suspects:
            out.suspects = flag_suspects(settings, data.ids, data.X, data.y, data.agreed, encoder_key, recipe,
                                         result, lease=lease)
            _lap(out, "suspects", clock)
    log.info("retrain (%s): version %s %s: %s", trigger, out.version_id,
             "promoted" if out.promoted else "kept as candidate", out.reason)
    return out


def _lap(out: RetrainOutcome, step: str, since: float) -> float:
    now = time.perf_counter()
    out.seconds[step] = round(now - since, 2)
    return now


@contextlib.contextmanager
def torch_threads(requested: int):
    """Torch's intra-op threads for the length of a retrain, chosen rather than inherited:
    ``VERGE_TORCH_THREADS`` when set, else half the machine's cores, at most 4 (1 on 2 cores). A
    retrain runs beside the scoring workers, which have the cores divided between them, and a
    256-wide head gains little past a few threads; torch's own default is one per core (96 on
    96 cores), and threads that outnumber the free cores spin in each other's way: two threads
    on two busy cores trained ~7x slower than one (bench/README.md)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(requested if requested > 0 else max(1, min(4, (os.cpu_count() or 1) // 2)))
    log.info("retrain: %d torch intra-op threads", torch.get_num_threads())
    try:
        yield
    finally:
        torch.set_num_threads(before)


def read_labeled_set(settings: Settings, encoder_key: str, lease: locks.Lease) -> LabeledSet:
    """Consensus labels and their stored embeddings (CLIP is never recomputed), read into one
    preallocated float32 matrix page by page, the lease renewed after every page; ties between
    reviewers stay out (listed for adjudication). Rows are split by image hash (stable across
    runs) into training and held-out rows."""
    with session_scope(settings.resolved_database_url) as s:
        # the labels this run sees are those before this instant: the version records it as
        # its created_at, so labels that arrive while it trains count towards the next run
        labels_as_of = db_now(s)
        agreed = labels_q.consensus(s)
        lease.renew()
        found, X, shas = embeddings.embedding_matrix(s, agreed.labels, encoder_key, on_page=lease.renew)
        active = model_versions.active_model(s)
        active_info = (active.id, model_versions.head_checkpoint(s, active.id), active.encoder) if active else None
    lease.renew()
    ids = found.tolist()
    y = np.array([THREE_CLASSES.index(agreed.labels[i]) for i in ids], dtype=np.int64)
    held = np.fromiter((in_holdout(sha, settings.holdout_fraction) for sha in shas), bool, len(shas))
    del shas
    if held.sum() == 0 or (~held).sum() == 0:
        held = np.zeros(len(ids), bool)
        held[::5] = True  # tiny label sets: every fifth image
    return LabeledSet(ids, X, y, held, agreed, labels_as_of, active_info)


def judge(settings: Settings, data: LabeledSet, result: TrainResult, encoder_key: str,
          out: RetrainOutcome) -> bool:
    """Held-out metrics of the candidate and of the active head (same rows) into ``out``; whether
    the candidate should be promoted, with the reason in ``out.reason``."""
    held_rows, y_held = data.held_rows, data.y[data.held]
    cand = classification_metrics(y_held, predict_rows(result.head, data.X, held_rows), THREE_CLASSES)
    out.candidate = cand
    if data.active and data.active[2] == encoder_key:
        active_head = load_head(data.active[1], encoder_key)
        out.active = classification_metrics(
            y_held, _expand(predict_rows(active_head, data.X, held_rows), active_head.meta.classes),
            THREE_CLASSES)
        out.active_version_id = data.active[0]
    metric, margin = settings.promote_metric, settings.promote_margin
    if not out.active:
        out.reason = "no comparable active head"
        return True
    if cand[metric] >= out.active[metric] + margin:
        out.reason = (f"held-out {metric} {cand[metric]:.3f} beats the active head's "
                      f"{out.active[metric]:.3f} by at least {margin}")
        return True
    out.reason = (f"held-out {metric} {cand[metric]:.3f} does not beat the active "
                  f"head's {out.active[metric]:.3f} by {margin}")
    return False


def record_version(url: str, data: LabeledSet, result: TrainResult, promote: bool, lease: locks.Lease,
                   out: RetrainOutcome) -> None:
    """The version row and the flip land together or not at all. The promotion re-reads the
    active head under the guard: if it is not the head the candidate was judged against, the
    candidate is kept, not promoted; the lease is re-confirmed in the same transaction."""
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    path = f"database/three_class-{stamp}-{secrets.token_hex(3)}.pt"  # model_version.checkpoint
    with session_scope(url) as s:
        judged_against = data.active[0] if data.active else None
        now_active = head_guard.hold(s, exclusive=True)
        lease.confirm(s)  # still ours (on Postgres: locked until this commits)
        if promote and (now_active.id if now_active else None) != judged_against:
            promote = False
            out.reason = (f"not promoted: version {now_active.id if now_active else None} became "
                          f"active while this candidate was judged against version {judged_against}")
        mv = ModelVersion(kind=THREE_CLASS, classes=list(THREE_CLASSES), encoder=result.head.meta.encoder,
                          path=path, checkpoint=head_bytes(result.head),
                          metrics=result.head.meta.metrics,
                          state="candidate", note=out.reason, created_at=data.labels_as_of)
        s.add(mv)
        s.flush()
        if promote:
            model_versions.activate_model(s, mv.id)
        out.version_id, out.promoted = mv.id, promote


def flag_suspects(settings: Settings, ids, X, y, agreed, encoder_key: str, recipe: Recipe,
                  candidate: TrainResult | None = None, lease: locks.Lease | None = None) -> int:
    """Route training-folder labels the model confidently rejects (out-of-fold) to people."""
    if len(ids) < 10 or all(iid in agreed.human for iid in ids):
        return 0  # only labels from training folders are ever flagged: no need to train 5 folds
    epochs = min(recipe.epochs, 15)
    if candidate and candidate.best_epoch and batch_size_for(recipe, len(ids) * 4 // 5) > recipe.batch_size:
        # A large label set: the candidate's early stopping, judged on thousands of validation
        # labels, says how many epochs this data wants (1-3 at 100k labels); folds trained to 15
        # took minutes there and grew more confident on ambiguous images (bench/retrain.py).
        epochs = min(epochs, candidate.best_epoch)
    oof = out_of_fold_probs(THREE_CLASS, X, y, encoder_key, replace(recipe, epochs=epochs), folds=5,
                            on_epoch=(lambda _stats: lease.renew()) if lease else None)
    suspects = {}
    for i, iid in enumerate(ids):
        if iid in agreed.human:
            continue  # a person already decided this one
        p_given = float(oof[i, y[i]])
        if 1.0 - p_given >= settings.suspect_threshold:
            suspects[iid] = 1.0 - p_given
    with session_scope(settings.resolved_database_url) as s:
        if lease:
            lease.confirm(s)
        opened = review_q.open_review_tasks(s, {iid: (SUSPECT_LABEL, p) for iid, p in suspects.items()})
    if opened:
        webhooks.emit(settings, "label.suspect", {
            "routed": opened, "threshold": settings.suspect_threshold,
            "images": [{"image_id": iid, "p_other": round(p, 4)} for iid, p in sorted(suspects.items())][:1000]})
    return opened


def write_tensorboard(settings: Settings, version_id: int, history, held_out: dict) -> None:
    """Curves per epoch for TensorBoard (`tensorboard --logdir $VERGE_DATA_DIR/runs`)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # pragma: no cover - tensorboard is a dependency; never fail a retrain on it
        return
    writer = SummaryWriter(str(settings.data_dir / "runs" / f"version-{version_id}"))
    for h in history:
        writer.add_scalar("train/loss", h.loss, h.epoch)
        writer.add_scalar("train/accuracy", h.accuracy, h.epoch)
        writer.add_scalar("train/lr", h.lr, h.epoch)
        for key in ("accuracy", "macro_f1", "ece"):
            if key in h.val:
                writer.add_scalar(f"validation/{key}", h.val[key], h.epoch)
    for key in ("accuracy", "macro_f1", "ece"):
        if key in held_out:
            writer.add_scalar(f"held_out/{key}", held_out[key], len(history))
    writer.close()


def new_labels_since_last_model(settings: Settings) -> int:
    with session_scope(settings.resolved_database_url) as s:
        last = s.scalar(select(ModelVersion.created_at).order_by(ModelVersion.id.desc()).limit(1))
        return labels_q.labels_since(s, last)
