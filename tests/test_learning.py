"""The learning loop on stored embeddings: retrain, the promotion gate, re-scoring shrinking the
queue, rollback, suspect labels, the lock, export. Synthetic embeddings (three clean clusters in
the tiny encoder's 64-d space) make every outcome deterministic; the encoder itself is real
(zero-shot's text embeddings come from it)."""
from __future__ import annotations

import csv
import datetime as dt
import io
import json
from dataclasses import replace

import numpy as np
import pytest
from sqlalchemy import func, select

import migrations
from models.heads import save_head
from models.training import train_binary
from store.blobs import sha256_hex
from store.db import session_scope
from store.embeddings import save_embeddings, stored_embeddings
from store.export import write_export
from store.images import register_images
from store.labels import replace_source_labels
from store.locks import LockBusy, acquire
from store.model_versions import activate_model, active_model, head_checkpoint
from store.review import open_review_tasks
from store.schema import JobLock, Label, ModelVersion, ReviewTask, User, utcnow
from workers.activation import rollback
from workers.retrain import retrain
from workers.routing import NEAR_THRESHOLD, SUSPECT_LABEL

KEY = "verge-tiny/random-seed0"
CLASSES = ("field", "road", "road_and_field")


def cluster_data(n_per_class=60, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(3, 64))
    y = np.repeat(np.arange(3), n_per_class)
    X = centers[y] + rng.normal(scale=0.35, size=(len(y), 64))
    return (X / np.linalg.norm(X, axis=1, keepdims=True)).astype(np.float32), y


@pytest.fixture
def loop(settings):
    """A database holding: labeled images (field/road from a training folder, road-and-field
    from reviewers, three training labels flipped), unlabeled images with open review tasks,
    and an active binary head trained on the field/road labels."""
    url = settings.resolved_database_url
    migrations.upgrade(url)
    X, y = cluster_data()
    n = len(y)
    with session_scope(url) as s:
        reg = register_images(s, None, [(f"img-{i}.jpg", sha256_hex(str(i).encode()), 100) for i in range(2 * n)],
                                queue=False)
        ids = reg.image_ids
        save_embeddings(s, KEY, {ids[i]: X[i % n] + 0 for i in range(n)})
        # unlabeled copies (slightly moved) wait in the review queue
        rng = np.random.default_rng(1)
        moved = X + rng.normal(scale=0.05, size=X.shape).astype(np.float32)
        save_embeddings(s, KEY, {ids[n + i]: moved[i] / np.linalg.norm(moved[i]) for i in range(n)})
        open_review_tasks(s, {ids[n + i]: (NEAR_THRESHOLD, 0.5) for i in range(n)})
        alice, bob = User(name="alice", password_hash="x"), User(name="bob", password_hash="x")
        s.add_all([alice, bob])
        s.flush()
        given = {ids[i]: CLASSES[y[i]] for i in range(n) if y[i] < 2}
        flipped = [ids[i] for i in (0, 1, 2)]  # fields labeled road by the folder
        for iid in flipped:
            given[iid] = "road"
        replace_source_labels(s, "training:/photos", given)
        for i in range(n):
            if y[i] == 2:
                s.add(Label(image_id=ids[i], user_id=alice.id, source="review", cls="road_and_field"))
        # a reviewer tie is kept out of training and listed
        s.add_all([Label(image_id=ids[n - 1], user_id=alice.id, source="review", cls="road"),
                   Label(image_id=ids[n - 1], user_id=bob.id, source="review", cls="field")])
        binary = train_binary(X[y < 2], (y[y < 2] == 1).astype(np.float32), KEY).head
        path = save_head(binary, settings.model_dir / "binary.pt")
        mv = ModelVersion(kind="binary", classes=["field", "road"], encoder=KEY, path=str(path), metrics={})
        s.add(mv)
        s.flush()
        activate_model(s, mv.id)
    return {"url": url, "ids": ids, "flipped": flipped, "binary": mv.id, "n": n}


def open_tasks(url):
    with session_scope(url) as s:
        return s.scalar(select(func.count()).select_from(ReviewTask).where(ReviewTask.state == "open"))


def test_retrain_promotes_rescoring_shrinks_the_queue_and_rollback_restores_it(settings, loop):
    from workers.scoring import Scorer

    url = loop["url"]
    before = open_tasks(url)
    out = retrain(settings)
    assert out.promoted and out.version_id and out.active_version_id == loop["binary"]
    assert out.candidate["macro_f1"] > out.active["macro_f1"] + settings.promote_margin
    # alice's newer label replaces her vote (one per person): road against bob's field
    assert list(out.ties.values()) == [{"road": 1, "field": 1}]
    # the flipped training labels are found out of fold and sent to people
    assert out.suspects >= 3
    with session_scope(url) as s:
        suspects = set(s.scalars(select(ReviewTask.image_id).where(ReviewTask.reasons == SUSPECT_LABEL)))
        active = active_model(s)
        assert active.id == out.version_id and active.kind == "three_class"
        assert active.metrics["held_out"]["n"] == out.candidate["n"] and active.metrics["curves"]
    assert set(loop["flipped"]) <= suspects
    assert (settings.data_dir / "runs" / f"version-{out.version_id}").is_dir()  # TensorBoard curves

    with_suspects = open_tasks(url)
    report = Scorer(settings).rescore_open_tasks()
    assert report["resolved"] > 0.5 * loop["n"], report
    assert open_tasks(url) == with_suspects - report["resolved"]
    with session_scope(url) as s:  # suspects wait for a person whatever the model says
        assert s.scalar(select(func.count()).select_from(ReviewTask).where(
            ReviewTask.reasons == SUSPECT_LABEL, ReviewTask.state == "open")) == len(suspects)

    again = retrain(settings, find_suspects=False)  # nothing new: same data, same seed
    assert not again.promoted and "does not beat" in again.reason
    with session_scope(url) as s:
        assert s.get(ModelVersion, again.version_id).state == "candidate"
        assert active_model(s).id == out.version_id

    old, new, reopened = rollback(settings)
    assert (old, new, reopened) == (out.version_id, loop["binary"], report["resolved"])
    assert open_tasks(url) == with_suspects
    assert before < with_suspects


def test_rescore_reads_recorded_caption_embeddings_and_loads_no_encoder(settings, loop, tiny_encoder):
    """Zero-shot's probabilities do not depend on the head: a re-score after a promotion needs the
    new head, the stored image embeddings and the captions' text embeddings, which a scoring
    worker records. With them recorded no encoder is loaded, and the predictions are exactly
    what the loaded encoder's judges give; without them the encoder is loaded once and they are
    recorded; other captions are not mistaken for them."""
    from dataclasses import replace as with_
    from store.schema import Prediction
    from workers import scoring

    url = loop["url"]
    out = retrain(settings, find_suspects=False)
    assert out.promoted
    scoring._scorers.clear()
    with session_scope(url) as s:
        assert scoring.recorded_judges(s, settings, KEY) is None  # no worker has recorded them
    worker = scoring.Scorer(settings, encoder=tiny_encoder)  # what a scoring worker holds
    with session_scope(url) as s:
        scoring.record_captions(s, worker.judges)
        assert scoring.recorded_judges(s, with_(settings, caption_road_and_field="a bridge"), KEY) is None

    report = scoring.rescore_open_tasks(settings)
    assert report["rescored"] == loop["n"]
    assert scoring.loaded_scorer(settings) is None  # the re-score loaded no encoder
    with session_scope(url) as s:
        rows = s.execute(select(Prediction.image_id, Prediction.zs_probs, Prediction.head_probs)
                         .where(Prediction.model_version_id == out.version_id)
                         .order_by(Prediction.image_id)).all()
        vectors = stored_embeddings(s, [r[0] for r in rows], KEY)
        head = scoring.load_head(head_checkpoint(s, out.version_id), KEY)
    assert len(rows) == loop["n"]
    X = np.stack([vectors[r[0]] for r in rows])
    zs3, head_probs = worker.zero_shot3.predict(X), head.predict(X)
    got_zs = np.array([[r[1][c] for c in CLASSES] for r in rows])
    got_head = np.array([[r[2][c] for c in CLASSES] for r in rows])
    np.testing.assert_allclose(got_zs, zs3, atol=1e-6)
    np.testing.assert_allclose(got_head, head_probs, atol=1e-6)


def test_rescore_loads_the_encoder_once_when_no_worker_recorded_captions(settings, loop):
    from workers import scoring

    out = retrain(settings, find_suspects=False)
    assert out.promoted
    scoring._scorers.clear()
    report = scoring.rescore_open_tasks(settings)
    assert report["rescored"] == loop["n"]
    assert scoring.loaded_scorer(settings) is not None  # loaded, as before this change
    with session_scope(loop["url"]) as s:
        judges = scoring.recorded_judges(s, settings, KEY)  # and recorded for the next re-score
    assert judges is not None
    np.testing.assert_allclose(judges.zero_shot3.text, scoring.loaded_scorer(settings).zero_shot3.text)
    scoring._scorers.clear()


def test_the_lock_keeps_two_retrains_apart_and_survives_a_crashed_holder(settings, loop):
    url = loop["url"]
    held = acquire(url, "retrain", ttl_s=60)  # someone else is retraining
    with pytest.raises(LockBusy):
        retrain(settings)
    with session_scope(url) as s:  # ... then that holder crashes: its lease runs out
        s.get(JobLock, "retrain").expires_at = utcnow() - dt.timedelta(seconds=1)
    out = retrain(settings, find_suspects=False)
    assert out.version_id is not None
    with session_scope(url) as s:
        assert s.get(JobLock, "retrain") is None  # released after the run
    assert held.owner


def test_export_round_trip(settings, loop):
    url = loop["url"]
    with session_scope(url) as s:
        buf = io.StringIO()
        n = write_export(s, buf, "jsonl")
        rows = [json.loads(line) for line in buf.getvalue().splitlines()]
        cbuf = io.StringIO()
        write_export(s, cbuf, "csv")
    assert n == len(rows) == 2 * loop["n"]
    by_id = {r["image_id"]: r for r in rows}
    flipped = by_id[loop["flipped"][0]]
    assert flipped["final_label"] == "road" and flipped["final_label_source"] == "training"
    tie = by_id[loop["ids"][loop["n"] - 1]]
    assert {h["reviewer"] for h in tie["human_labels"]} == {"alice", "bob"}
    both = next(r for r in rows if r["final_label"] == "road_and_field")
    assert both["final_label_source"] == "human" and both["human_labels"][0]["class"] == "road_and_field"
    table = list(csv.DictReader(io.StringIO(cbuf.getvalue())))
    assert len(table) == n
    assert {r["sha256"] for r in table} == {r["sha256"] for r in rows}
    assert next(r for r in table if r["image_id"] == str(tie["image_id"]))["human_labels"] == \
        "alice=road_and_field;alice=road;bob=field"


def test_not_enough_labels_is_said_plainly(settings):
    migrations.upgrade(settings.resolved_database_url)
    out = retrain(settings)
    assert out.version_id is None and "not enough labeled images" in out.reason


def test_a_retrain_killed_mid_way_leaves_no_half_written_version_and_frees_the_lock(settings, tiny_env, loop):
    import os
    import signal
    import subprocess
    import sys
    import time

    url = loop["url"]
    # enough labels for a real training run (its first epoch is where the kill lands)
    X, y = cluster_data(n_per_class=2000, seed=5)
    with session_scope(url) as s:
        ids = register_images(s, None, [(f"more-{i}.jpg", sha256_hex(f"more{i}".encode()), 1)
                                          for i in range(len(y))], queue=False).image_ids
        save_embeddings(s, KEY, dict(zip(ids, X)))
        replace_source_labels(s, "training:/more", {iid: CLASSES[c] for iid, c in zip(ids, y)})
    env = {**os.environ, **tiny_env, "VERGE_RETRAIN_LOCK_TTL": "3", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "verge", "retrain"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    # `verge retrain` prints a line per epoch and writes the version only after the last one (at
    # least 7: patience 6), so its first epoch line means "inside training" on any machine; a
    # fixed sleep after the lock was taken let a quiet machine finish training first
    lines = []
    for line in proc.stdout:  # one line at a time; ends when the process does
        lines.append(line)
        if line.startswith("epoch 1:"):
            break
    assert lines and lines[-1].startswith("epoch 1:"), "no epoch line from the retrain:\n" + "".join(lines)
    with session_scope(url) as s:
        assert s.get(JobLock, "retrain") is not None, "the retrain trains without its lock"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with session_scope(url) as s:
        versions = s.scalars(select(ModelVersion.id)).all()
        assert versions == [loop["binary"]]  # nothing half-written
        assert s.get(JobLock, "retrain") is not None  # the dead holder's lease is still there ...
    time.sleep(3.5)  # ... until its TTL runs out
    out = retrain(replace(settings, retrain_lock_ttl=3), find_suspects=False)
    assert out.version_id is not None


def test_a_jobs_only_worker_process_does_not_load_the_encoder(settings):
    """``verge worker --queues jobs`` selects the jobs queue only: its pool processes start without
    CLIP (they sweep, retrain and re-score from stored vectors); a scoring worker's load it."""
    from workers import scoring, tasks
    from workers.app import app, configure

    configure(settings)
    scoring._scorers.clear()
    queues = app.amqp.queues
    before = queues._consume_from
    try:
        queues.select([settings.resolved_jobs_queue])  # what the jobs worker's -Q selects
        tasks._warm_model()
        assert scoring.loaded_scorer(settings) is None
        queues.select([settings.queue])  # a scoring worker
        tasks._warm_model()
        assert scoring.loaded_scorer(settings) is not None
    finally:
        queues._consume_from = before
        scoring._scorers.clear()
