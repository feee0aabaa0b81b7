"""The retraining job: labels in, maybe a better head out.

1. Take the ``retrain`` lock (leased in the database: a crashed run frees it after its TTL).
   The lease is renewed through every long phase; a run that lost it (it expired and another
   run took it) raises ``LeaseLost`` at its next renewal and never promotes: the promotion's own
   transaction re-confirms the lease.
2. Gather the consensus label of every labeled image and its stored embedding (CLIP is never
   recomputed); ties between reviewers stay out and are listed for adjudication.
3. Split by image hash (stable across runs) into training and held-out images; train a
   three-class candidate with the seed's fixes switched on (class weighting, LR halving, early
   stopping on a validation split of the training part, best epoch kept).
4. Judge candidate and active head on the same held-out labels; record the candidate with its
   metrics and curves (database + TensorBoard); promote it only if it beats the active head by
   the margin, otherwise keep it as a candidate with the reason. The promotion re-reads the
   active head under the active-head guard: if it is no longer the head the candidate was judged
   against (a manual activation or rollback meanwhile), the candidate is kept, not promoted.
   ``on_promoted`` is called the moment the promotion commits (to request the re-score).
5. Out-of-fold predictions over the labeled set: training-folder labels that the model
   confidently rejects are routed to review as ``suspect_label`` (skipped when every label came
   from people: theirs are never flagged).
"""
from __future__ import annotations

import datetime as dt
import logging
import secrets
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


def retrain(settings: Settings, recipe: Recipe = RETRAIN_RECIPE, trigger: str = "manual",
            on_epoch=None, find_suspects: bool = True, on_promoted=None) -> RetrainOutcome:
    url = settings.resolved_database_url
    encoder_key = EncoderSpec(settings.encoder, settings.pretrained).key
    with locks.held(url, "retrain", settings.retrain_lock_ttl) as lease:
        with session_scope(url) as s:
            # the labels this run sees are those before this instant: the version records it as
            # its created_at, so labels that arrive while it trains count towards the next run
            labels_as_of = db_now(s)
            agreed = labels_q.consensus(s)
            found, X, shas = embeddings.embedding_matrix(s, agreed.labels, encoder_key)
            active = model_versions.active_model(s)
            active_info = ((active.id, model_versions.head_checkpoint(s, active.id), active.encoder)
                           if active else None)
        lease.renew()
        ids = found.tolist()
        out = RetrainOutcome(None, False, "", labels=len(ids), ties=agreed.ties)
        if len(ids) < MIN_LABELS or len({agreed.labels[i] for i in ids}) < 2:
            out.reason = (f"not enough labeled images with embeddings from {encoder_key} "
                          f"({len(ids)}; need {MIN_LABELS} over at least two classes)")
            return out
        y = np.array([THREE_CLASSES.index(agreed.labels[i]) for i in ids])
        held = np.array([in_holdout(sha, settings.holdout_fraction) for sha in shas])
        del shas
        if held.sum() == 0 or (~held).sum() == 0:
            held = np.zeros(len(ids), bool)
            held[::5] = True  # tiny label sets: every fifth image
        # index arrays into the one matrix, never copies of its parts
        train_rows, held_rows = np.flatnonzero(~held), np.flatnonzero(held)

        def epoch_hook(stats):
            lease.renew()
            if on_epoch:
                on_epoch(stats)

        result = train_head(THREE_CLASS, X, y, encoder_key, recipe, on_epoch=epoch_hook, rows=train_rows)
        cand = classification_metrics(y[held], predict_rows(result.head, X, held_rows), THREE_CLASSES)
        out.candidate = cand
        if active_info and active_info[2] == encoder_key:
            active_head = load_head(active_info[1], encoder_key)
            out.active = classification_metrics(
                y[held], _expand(predict_rows(active_head, X, held_rows), active_head.meta.classes),
                THREE_CLASSES)
            out.active_version_id = active_info[0]
        metric, margin = settings.promote_metric, settings.promote_margin
        if not out.active:
            promote, out.reason = True, "no comparable active head"
        elif cand[metric] >= out.active[metric] + margin:
            promote, out.reason = True, (f"held-out {metric} {cand[metric]:.3f} beats the active head's "
                                         f"{out.active[metric]:.3f} by at least {margin}")
        else:
            promote, out.reason = False, (f"held-out {metric} {cand[metric]:.3f} does not beat the active "
                                          f"head's {out.active[metric]:.3f} by {margin}")
        result.head.meta.metrics.update({"held_out": cand, "active_held_out": out.active,
                                         "active_version": out.active_version_id,
                                         "labels": len(ids), "ties": len(agreed.ties),
                                         "trigger": trigger, "decision": out.reason})
        stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
        path = f"database/three_class-{stamp}-{secrets.token_hex(3)}.pt"  # model_version.checkpoint
        lease.renew()
        reach("retrain.before_promote")
        with session_scope(url) as s:  # the version row and the flip land together or not at all
            judged_against = active_info[0] if active_info else None
            now_active = head_guard.hold(s, exclusive=True)
            lease.confirm(s)  # still ours (on Postgres: locked until this commits)
            if promote and (now_active.id if now_active else None) != judged_against:
                promote = False
                out.reason = (f"not promoted: version {now_active.id if now_active else None} became "
                              f"active while this candidate was judged against version {judged_against}")
            mv = ModelVersion(kind=THREE_CLASS, classes=list(THREE_CLASSES), encoder=encoder_key,
                              path=path, checkpoint=head_bytes(result.head),
                              metrics=result.head.meta.metrics,
                              state="candidate", note=out.reason, created_at=labels_as_of)
            s.add(mv)
            s.flush()
            if promote:
                model_versions.activate_model(s, mv.id)
            out.version_id, out.promoted = mv.id, promote
        if promote and on_promoted:
            on_promoted(out.version_id)
        if promote:
            webhooks.emit(settings, "model.promoted", {
                "version": out.version_id, "kind": THREE_CLASS, "trigger": trigger, "reason": out.reason,
                "held_out": cand, "previous_version": out.active_version_id})
        write_tensorboard(settings, out.version_id, result.history, cand)
        if find_suspects:
            out.suspects = flag_suspects(settings, ids, X, y, agreed, encoder_key, recipe, result,
                                         lease=lease)
    log.info("retrain (%s): version %s %s: %s", trigger, out.version_id,
             "promoted" if out.promoted else "kept as candidate", out.reason)
    return out


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
