"""Scoring a chunk of images: the worker's hot path.

1. In one short transaction: find the chunk's images that still lack a prediction from the
   active scorer, count the delivery (an image whose deliveries keep killing workers ends as
   failed). Attempts count per image: a chunk delivered again is scored one image at a time, so
   one image that kills its worker fails alone and the rest of its chunk is scored.
2. Outside any transaction: reuse stored embeddings, decode + embed the rest (thread pool
   overlapping the model), apply the head and zero-shot, route.
3. In one transaction: embeddings, predictions, review tasks, image states. Unique indexes make a
   concurrent or repeated run of the same chunk a no-op instead of a duplicate: only the
   predictions this chunk actually wrote open tasks and change image states, so a chunk that
   overlaps another loses nothing of its own. The transaction holds the active-head guard
   (store/active_head.py) and re-reads the active head: if a promotion or rollback happened while
   the chunk embedded, it re-scores the vectors just computed with the head now active.

The encoder is loaded once per process; the active head is looked up per chunk and reloaded only
when its version changes, so a promotion reaches running workers on their next chunk.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError

from models.encoder import Encoder, EncoderSpec
from models.heads import THREE_CLASS, Head, load_head
from models.pipeline import embed_keys, stack
from models.zeroshot import ZeroShot, zero_shot_for
from store import active_head, captions
from store.blobs import open_blobs, read_image, sha256_hex
from store.db import session_scope
from store.embeddings import save_embeddings, stored_embeddings
from store.identity import adopt_hashes
from store.images import count_attempt, images_by_id, mark_failed
from store.model_versions import active_model, head_checkpoint
from store.pausepoints import reach
from store.predictions import already_predicted, apply_rescore, record_predictions
from store.review import rescore_page
from models.classes import CLASSES
from verge.settings import Settings

from .app import enqueue
from .routing import HUMAN_REASONS, RoutingPolicy, binary_class, route, route_three_class
from .weights import load_encoder

log = logging.getLogger("verge.scoring")


@dataclass
class ChunkReport:
    scored: int = 0
    failed: int = 0
    routed: int = 0
    skipped: int = 0          # already scored by this model version (a redelivery)
    linked: int = 0           # registered in place, found to be bytes verge knew: merged into those
    embedded: int = 0         # embeddings computed (the rest were reused)
    seconds: float = 0.0


@dataclass(frozen=True)
class Judges:
    """What turns stored embeddings into predictions besides the head: zero-shot over the
    binary and the three-class captions, and the routing policy. Built from a loaded encoder
    (``Scorer``) or from the caption embeddings a worker recorded (``recorded_judges``)."""
    encoder_key: str
    dim: int
    zero_shot: ZeroShot
    zero_shot3: ZeroShot
    policy: RoutingPolicy


def _caption_sets(settings: Settings) -> tuple[tuple, tuple]:
    """(binary captions, three-class captions): field/road with the seed's captions; the third
    caption joins for the three-class phase."""
    return tuple(settings.captions[:2]), (*settings.captions[:2], settings.caption_road_and_field)


def _policy(settings: Settings) -> RoutingPolicy:
    return RoutingPolicy(settings.route_band, settings.audit_fraction, settings.min_confidence)


def record_captions(session, judges: Judges) -> None:
    """Record the judges' caption embeddings (a no-op if they are recorded already)."""
    for zs in (judges.zero_shot, judges.zero_shot3):
        captions.remember(session, judges.encoder_key, zs.captions, zs.logit_scale, zs.text)


def recorded_judges(session, settings: Settings, encoder_key: str) -> Judges | None:
    """Judges from the caption embeddings a worker recorded for ``encoder_key``, or None when no
    worker has recorded them (a re-score then loads the encoder)."""
    two, three = _caption_sets(settings)
    got2, got3 = captions.recalled(session, encoder_key, two), captions.recalled(session, encoder_key, three)
    if got2 is None or got3 is None:
        return None
    zs2 = ZeroShot.from_text(encoder_key, two, CLASSES[:2], got2[1], got2[0])
    zs3 = ZeroShot.from_text(encoder_key, three, CLASSES, got3[1], got3[0])
    return Judges(encoder_key, int(zs2.text.shape[1]), zs2, zs3, _policy(settings))


def predict(judges: Judges, images, X, head: Head | None, mv_id: int | None) -> list[dict]:
    """Both judges and the routing decision for each image: rows for ``record_predictions``."""
    three = head is not None and head.meta.kind == THREE_CLASS
    zs2 = judges.zero_shot.predict(X)                  # p(road) for the dashboards, both phases
    zs = judges.zero_shot3.predict(X) if three else zs2
    zs_classes = judges.zero_shot3.classes if three else judges.zero_shot.classes
    head_probs = head.predict(X) if head is not None and len(X) else None
    out = []
    for i, im in enumerate(images):
        zs_p_road = float(zs2[i, 1])
        zs_row = dict(zip(zs_classes, map(float, zs[i])))
        head_row = (dict(zip(head.meta.classes, map(float, head_probs[i])))
                    if head_probs is not None else None)
        p_road = head_row["road"] if head_row else None
        if three:
            decision = route_three_class(head_row, zs_row, im.sha256, judges.policy)
            predicted = max(head_row, key=head_row.get)
        else:
            decision = route(p_road, zs_p_road, im.sha256, judges.policy)
            predicted = binary_class(zs_p_road if p_road is None else p_road)
        out.append({
            "image_id": im.id, "model_version_id": mv_id, "encoder": judges.encoder_key,
            "head_probs": head_row, "p_road": p_road, "zs_probs": zs_row, "zs_p_road": zs_p_road,
            "predicted_class": predicted, "zs_class": max(zs_row, key=zs_row.get),
            "routed": decision.routed, "reasons": decision.reasons_text,
            "priority": decision.priority,
        })
    return out


def _test_crash(im) -> None:
    """Where a test makes one image kill its worker process as it is decoded, as a decoder crash
    or an OOM kill would (``VERGE_TEST_CRASH_ON=<sha256 or storage key>``, never set in
    production; the process dies at once, with no goodbye to the broker)."""
    crash = os.environ.get("VERGE_TEST_CRASH_ON")
    if crash and crash in (im.sha256, im.storage_key):
        os._exit(70)


class Scorer:
    """Everything a worker process keeps loaded between chunks."""

    def __init__(self, settings: Settings, encoder: Encoder | None = None):
        self.settings = settings
        self.encoder = encoder or load_encoder(EncoderSpec(settings.encoder, settings.pretrained),
                                               settings.device)
        two, three = _caption_sets(settings)
        self.zero_shot: ZeroShot = zero_shot_for(self.encoder, two, CLASSES[:2])
        self.zero_shot3: ZeroShot = zero_shot_for(self.encoder, three, CLASSES)
        self.blobs = open_blobs(settings.resolved_blob_url, settings.decode_threads)
        self.policy = _policy(settings)
        self.judges = Judges(self.encoder.key, self.encoder.embedding_dim, self.zero_shot, self.zero_shot3,
                             self.policy)
        self._head: tuple[int, Head] | None = None
        self._captions_recorded = False  # once per process, with the first chunk's write

    def head_for(self, version_id: int | None, path: str | None = None) -> Head | None:
        if version_id is None:
            return None
        if self._head is None or self._head[0] != version_id:
            with session_scope(self.settings.resolved_database_url) as s:
                checkpoint = head_checkpoint(s, version_id)  # from the database, not a disk
            head = load_head(checkpoint, self.encoder.key)  # refuses a head of another encoder
            self._head = (version_id, head)
            log.info("switched to head version %s (%s)", version_id, head.meta.kind)
        return self._head[1]

    def embed(self, images):
        """(stored vectors by image id, freshly Embedded for the rest, sha256 of the images read
        for the first time: objects registered in place are hashed from the bytes decoded)."""
        ids = [im.id for im in images]
        with session_scope(self.settings.resolved_database_url) as s:
            vectors = stored_embeddings(s, ids, self.encoder.key)
        todo = {im.id: im for im in images if im.id not in vectors}
        hashes: dict[int, str] = {}

        def load(iid):
            im = todo[iid]
            # a gone object raises its reason; the pool is as large as the decode threads
            data = read_image(self.blobs, im.storage_key, im.etag, self.settings.decode_threads)
            if im.sha256 is None:
                hashes[iid] = sha256_hex(data)
            _test_crash(im)
            return data

        # object storage that stops answering raises out of here: the chunk is retried, not failed
        done = embed_keys(self.encoder, list(todo), load,
                          batch_size=self.settings.batch_size, threads=self.settings.decode_threads,
                          max_pixels=self.settings.max_image_pixels,
                          device_decode=self.settings.gpu_decode if self.encoder.device.type == "cuda" else "off")
        return vectors, done, hashes

    def score_chunk(self, image_ids: list[int]) -> ChunkReport:
        """Score a chunk. Its first delivery goes in one piece: one attempt counted for all its
        images in one statement, one embedding pass, one write. A chunk delivered again (an
        image of it has an attempt behind it: a worker died on it, or it is a retry) goes one
        image at a time, each image's attempt counted as it starts and its result written before
        the next starts: if one image kills the worker again, only that image has gained an
        attempt, the images before it are scored, and after ``VERGE_MAX_ATTEMPTS`` it alone ends
        ``failed`` while the rest of the chunk is scored."""
        started = time.perf_counter()
        report = ChunkReport()
        url = self.settings.resolved_database_url
        with session_scope(url) as s:
            mv = active_model(s)
            mv_id, mv_path = (mv.id, mv.path) if mv else (None, None)
            images = [im for im in images_by_id(s, image_ids) if im.status != "failed"]
            seen = already_predicted(s, [im.id for im in images], mv_id)
            todo = [im for im in images if im.id not in seen]
            redelivered = any(im.attempts for im in todo)
            if not redelivered:
                count_attempt(s, [im.id for im in todo])
        report.skipped = len(images) - len(todo)
        # Deliveries that began and never finished (the worker was killed) show up as attempts.
        spent = {im.id: im.attempts for im in todo if im.attempts >= self.settings.max_attempts}
        if not redelivered:
            self._score_piece(todo, mv_id, mv_path, report)
        else:
            log.info("a chunk of %d delivered again: scoring its %d images one at a time",
                     len(image_ids), len(todo))
            if spent:
                with session_scope(url) as s:
                    mark_failed(s, {iid: self._gave_up(n) for iid, n in spent.items()})
                report.failed += len(spent)
            for im in todo:
                if im.id in spent:
                    continue
                with session_scope(url) as s:
                    count_attempt(s, [im.id])
                mv_id, mv_path = self._score_piece([im], mv_id, mv_path, report)
        report.seconds = time.perf_counter() - started
        return report

    def _gave_up(self, attempts: int) -> str:
        return (f"scoring was interrupted {attempts} times (the worker died while scoring this image); "
                f"gave up after VERGE_MAX_ATTEMPTS={self.settings.max_attempts}")

    def _score_piece(self, todo: list, mv_id: int | None, mv_path: str | None,
                     report: ChunkReport) -> tuple[int | None, str | None]:
        """Embed, predict and write ``todo`` (their attempt already counted; ``score_chunk`` has
        failed those past ``VERGE_MAX_ATTEMPTS``), adding to ``report``. Returns the active head
        the write was made with."""
        url = self.settings.resolved_database_url
        errors: dict[int, str] = {}
        head = self.head_for(mv_id, mv_path)

        stored, fresh, hashes = self.embed(todo) if todo else ({}, None, {})
        vectors, sizes = dict(stored), {}
        if fresh is not None:
            vectors.update(fresh.vectors)
            errors.update(fresh.errors)
            sizes = fresh.sizes
            report.embedded += len(fresh.vectors)
        woken: list[int] = []
        if hashes:
            adopted = adopt_hashes_retrying(url, hashes)
            for im in todo:
                im.sha256 = im.sha256 or hashes.get(im.id)  # routing's audit draw reads it
            for dup, first in adopted.merged.items():
                # the first image's embedding is this one (same bytes); it is scored on its own
                vector = vectors.pop(dup, None)
                if vector is not None and first not in vectors and first not in stored:
                    vectors[first] = vector
                errors.pop(dup, None)
                sizes.pop(dup, None)
            woken = adopted.woken
            report.linked += len(adopted.merged)
            todo = [im for im in todo if im.id not in adopted.merged]
        scored = [im for im in todo if im.id in vectors]
        predictions = self.predict(scored, stack([vectors[im.id] for im in scored],
                                                 self.encoder.embedding_dim), head, mv_id)
        new_vectors = {iid: v for iid, v in vectors.items() if iid not in stored}
        reach("scoring.before_write")
        while True:
            with session_scope(url) as s:
                now_active = active_head.hold(s)
                now_id = now_active.id if now_active else None
                now_path = now_active.path if now_active else None
                if now_id == mv_id:
                    if not self._captions_recorded:  # for re-scores that do not load CLIP
                        record_captions(s, self.judges)
                    save_embeddings(s, self.encoder.key, new_vectors)
                    recorded = record_predictions(s, predictions, sizes)
                    mark_failed(s, errors)
                    break
            log.info("the active head changed from %s to %s while a chunk embedded; re-scoring it",
                     mv_id, now_id)
            mv_id, mv_path, head = now_id, now_path, self.head_for(now_id, now_path)
            predictions = self.predict(scored, stack([vectors[im.id] for im in scored],
                                                     self.encoder.embedding_dim), head, mv_id)
        self._captions_recorded = True
        report.routed += recorded.routed
        report.scored += recorded.written
        report.skipped += len(predictions) - recorded.written  # another delivery wrote them first
        if woken:
            enqueue(self.settings, woken)
        report.failed += len(errors)
        return mv_id, mv_path

    def predict(self, images, X, head: Head | None, mv_id: int | None) -> list[dict]:
        """Both judges and the routing decision for each image: rows for ``record_predictions``."""
        return predict(self.judges, images, X, head, mv_id)

    def rescore_open_tasks(self) -> dict:
        """``rescore_open_tasks`` with this process's loaded encoder (its caption embeddings are
        recorded on the way, for re-scores elsewhere that do not load it)."""
        return rescore_open_tasks(self.settings, self)


def rescore_open_tasks(settings: Settings, scorer: Scorer | None = None) -> dict:
    """After a promotion or rollback: re-score the images of open review tasks with the active
    head from their stored embeddings (no CLIP forward pass). Tasks a better model is now sure
    about leave the review queue as ``resolved`` (by that version; a rollback reopens them).

    Needs no CLIP model: zero-shot reads the caption embeddings a worker recorded
    (store/captions.py); only if none has, the encoder is loaded (``scorer_for``) and they are
    recorded. ``scorer``: a Scorer this process already holds (its judges are used).

    Pages through the open tasks in id order, ``RESCORE_PAGE`` at a time, each page read,
    predicted and written on its own, so memory stays bounded whatever the queue's length.
    Idempotent: images whose current prediction already comes from the active head are skipped.
    Each page's write holds the active-head guard and stops the re-score if the head changed
    meanwhile (whoever changed it asks for its own re-score)."""
    url = settings.resolved_database_url
    encoder_key = scorer.encoder.key if scorer else EncoderSpec(settings.encoder, settings.pretrained).key
    with session_scope(url) as s:
        mv = active_model(s)
        if mv is None:
            return {"rescored": 0, "resolved": 0}
        mv_id = mv.id
        judges = scorer.judges if scorer else recorded_judges(s, settings, encoder_key)
        checkpoint = None if scorer else head_checkpoint(s, mv_id)
        if scorer:
            record_captions(s, judges)
    if judges is None:  # no worker recorded its captions yet: load the encoder once, record them
        log.info("re-score: no recorded caption embeddings for %s; loading the encoder", encoder_key)
        return rescore_open_tasks(settings, scorer_for(settings))
    head = scorer.head_for(mv_id) if scorer else load_head(checkpoint, encoder_key)
    rescored = resolved = 0
    after = 0
    while True:
        with session_scope(url) as s:
            page = rescore_page(s, HUMAN_REASONS, after, RESCORE_PAGE)
            if not page:
                break
            after = page[-1].task_id
            todo = [item for item in page if item.current_version != mv_id]
            vectors = stored_embeddings(s, [item.id for item in todo], encoder_key)
        todo = [item for item in todo if item.id in vectors]
        if not todo:
            continue
        predictions = predict(judges, todo, stack([vectors[item.id] for item in todo], judges.dim), head, mv_id)
        del vectors
        reach("rescore.before_write")
        with session_scope(url) as s:
            now_active = active_head.hold(s)
            if now_active is None or now_active.id != mv_id:
                log.info("re-score with head %s stopped: head %s is active now", mv_id,
                         now_active.id if now_active else None)
                break
            resolved += apply_rescore(s, predictions, mv_id,
                                        {item.id: item.task_id for item in todo})
        rescored += len(predictions)
    log.info("re-scored %d open tasks with head %s: %d resolved", rescored, mv_id, resolved)
    return {"rescored": rescored, "resolved": resolved}


def adopt_hashes_retrying(url: str, hashes: dict[int, str], tries: int = 5):
    """``store.identity.adopt_hashes`` in its own transaction, again when a concurrent chunk
    claimed the same bytes first (unique index): the second pass merges into that image."""
    for attempt in range(tries):
        try:
            with session_scope(url) as s:
                return adopt_hashes(s, hashes)
        except IntegrityError:
            if attempt == tries - 1:
                raise
            time.sleep(0.05 * (attempt + 1))


# open review tasks re-scored per page (read, predicted and written together)
RESCORE_PAGE = 2000
_scorers: dict = {}


def loaded_scorer(settings: Settings) -> Scorer | None:
    """The process's Scorer if it already built one (nothing is loaded here)."""
    return _scorers.get(settings)


def scorer_for(settings: Settings) -> Scorer:
    """The process's Scorer (the model stays loaded between chunks)."""
    key = settings  # frozen dataclass: any change of settings builds a new scorer
    if key not in _scorers:
        _scorers.clear()
        _scorers[key] = Scorer(settings)
    return _scorers[key]

