"""Nothing lost in a race: each interleaving that once overwrote a label, ran two retrains,
stranded a chunk or re-activated a rolled-back head, forced with a pause point (tests/races.py)
against real Postgres, and SQLite where it applies.

Invariants checked throughout: every label survives and the task it closed stays closed; no task
is resolved by an inactive head; one promotion per retrain lock; every image ends scored or
failed."""
from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
from sqlalchemy import func, select, update

import migrations
from models.heads import THREE_CLASS, save_head
from models.training import train_binary, train_head
from store import review
from store.blobs import BlobStore, sha256_hex
from store.db import session_scope
from store.embeddings import save_embeddings
from store.images import images_by_id, register_images
from store.labels import replace_source_labels
from store.model_versions import activate_model, active_model
from store.review import open_review_tasks, reopen_resolved
from store.schema import Image, JobLock, Label, ModelVersion, Prediction, ReviewTask, User, utcnow
from tests.corpus import jpeg_bytes
from tests.races import interleave, together
from tests.test_learning import CLASSES, KEY, cluster_data
from workers.routing import NEAR_THRESHOLD

pytestmark = pytest.mark.services


@pytest.fixture
def pg_settings(tiny_env, pg_url):
    from verge.settings import Settings

    migrations.upgrade(pg_url)
    return Settings.from_env({**tiny_env, "VERGE_DATABASE_URL": pg_url, "VERGE_AUDIT_FRACTION": "0"})


@pytest.fixture(params=["sqlite", "postgres"])
def any_settings(request, tiny_env):
    from verge.settings import Settings

    env = {**tiny_env, "VERGE_AUDIT_FRACTION": "0"}
    if request.param == "postgres":
        env["VERGE_DATABASE_URL"] = request.getfixturevalue("pg_url")
    settings = Settings.from_env(env)
    migrations.upgrade(settings.resolved_database_url)
    return settings


def add_head(settings, kind: str, X, y, activate: bool = True, name: str = "") -> int:
    """Train a head on (X, y), record it as a model version and (by default) activate it."""
    if kind == THREE_CLASS:
        head = train_head(THREE_CLASS, X, y, KEY).head
        classes = list(CLASSES)
    else:
        keep = y < 2
        head = train_binary(X[keep], (y[keep] == 1).astype(np.float32), KEY).head
        classes = ["field", "road"]
    path = save_head(head, settings.model_dir / f"{kind}{name}.pt")
    with session_scope(settings.resolved_database_url) as s:
        mv = ModelVersion(kind=kind, classes=classes, encoder=KEY, path=str(path), metrics={})
        s.add(mv)
        s.flush()
        if activate:
            activate_model(s, mv.id)
        return mv.id


def queue_db(settings, n_per_class: int = 20, labels: bool = False) -> dict:
    """Images with stored embeddings (three clean clusters) waiting in the review queue; with
    ``labels``, as many again labeled by a training folder (what retraining learns from)."""
    url = settings.resolved_database_url
    X, y = cluster_data(n_per_class)
    n = len(y)
    with session_scope(url) as s:
        ids = register_images(s, None, [(f"img-{i}.jpg", sha256_hex(f"race-{i}".encode()), 100)
                                          for i in range(2 * n)], queue=False).image_ids
        save_embeddings(s, KEY, {ids[n + i]: X[i] for i in range(n)})
        open_review_tasks(s, {ids[n + i]: (NEAR_THRESHOLD, 0.5) for i in range(n)})
        if labels:
            save_embeddings(s, KEY, {ids[i]: X[i] for i in range(n)})
            replace_source_labels(s, "training:/photos", {ids[i]: CLASSES[y[i]] for i in range(n)})
    return {"url": url, "X": X, "y": y, "queued": ids[n:], "n": n}


def task_of(s, image_id: int) -> ReviewTask:
    return s.scalar(select(ReviewTask).where(ReviewTask.image_id == image_id)
                    .order_by(ReviewTask.id.desc()).limit(1))


def resolved_by_inactive(url) -> int:
    with session_scope(url) as s:
        active = active_model(s)
        return s.scalar(select(func.count()).select_from(ReviewTask).where(
            ReviewTask.state == "resolved",
            ReviewTask.resolved_by_version_id != (active.id if active else -1)))


def scorer(settings, tiny_encoder):
    from workers.scoring import Scorer

    return Scorer(settings, encoder=tiny_encoder)


def users(url, *names) -> list[int]:
    with session_scope(url) as s:
        made = [User(name=n, password_hash="x") for n in names]
        s.add_all(made)
        s.flush()
        return [u.id for u in made]


# --------------------------------------------------------------------------- 1. re-score vs reviewers
def test_a_rescore_never_overwrites_a_claim_or_a_label_that_lands_while_it_runs(pg_settings, tiny_encoder):
    url = pg_settings.resolved_database_url
    db = queue_db(pg_settings)
    add_head(pg_settings, "binary", db["X"], db["y"], name="-v1")
    v2 = add_head(pg_settings, THREE_CLASS, db["X"], db["y"], name="-v2")
    # the two tasks reviewers take first are ones the new head is sure about
    with session_scope(url) as s:
        s.execute(update(ReviewTask).where(ReviewTask.image_id.in_(db["queued"][:2])).values(priority=0.9))
    alice, bob = users(url, "alice", "bob")
    got = {}

    def reviewers_act():
        with session_scope(url) as s:
            got["bob"] = review.claim_next(s, bob, "bob", 600)
        with session_scope(url) as s:
            got["alice"] = review.claim_next(s, alice, "alice", 600)
        with session_scope(url) as s:
            got["alice_label"] = review.post_label(s, got["alice"], alice, "alice", "field", "review")

    report = interleave("rescore.before_write", scorer(pg_settings, tiny_encoder).rescore_open_tasks,
                        reviewers_act).get()
    assert report["resolved"] > 0
    assert got["alice_label"].closed
    with session_scope(url) as s:
        bobs, alices = s.get(ReviewTask, got["bob"]), s.get(ReviewTask, got["alice"])
        assert (bobs.state, bobs.lease_owner) == ("claimed", "bob")
        assert (alices.state, alices.resolved_by_version_id) == ("done", None)
    with session_scope(url) as s:  # bob's label still closes the task he holds
        assert review.post_label(s, got["bob"], bob, "bob", "road", "review").closed

    from workers.activation import rollback

    rollback(pg_settings)
    with session_scope(url) as s:
        assert s.get(ReviewTask, got["alice"]).state == "done"   # never reopened to be labeled again
        assert s.get(ReviewTask, got["bob"]).state == "done"
        assert s.scalar(select(func.count()).select_from(Label)) == 2
        stale = s.scalar(select(func.count()).select_from(ReviewTask).where(
            ReviewTask.state == "open", ReviewTask.lease_owner.is_not(None)))
        assert stale == 0
    assert resolved_by_inactive(url) == 0
    assert v2


# --------------------------------------------------------------------------- 4. rollback vs re-score
def test_a_rollback_during_a_rescore_leaves_nothing_resolved_by_the_inactive_head(pg_settings, tiny_encoder):
    from workers.activation import rollback

    url = pg_settings.resolved_database_url
    db = queue_db(pg_settings)
    v1 = add_head(pg_settings, "binary", db["X"], db["y"], name="-v1")
    v2 = add_head(pg_settings, THREE_CLASS, db["X"], db["y"], name="-v2")
    out = interleave("rescore.before_write", scorer(pg_settings, tiny_encoder).rescore_open_tasks,
                     lambda: rollback(pg_settings))
    out.get()
    with session_scope(url) as s:
        assert active_model(s).id == v1
        assert s.scalar(select(func.count()).select_from(ReviewTask).where(
            ReviewTask.resolved_by_version_id == v2, ReviewTask.state == "resolved")) == 0
    assert resolved_by_inactive(url) == 0


def test_a_second_rollback_goes_further_back_never_to_the_head_just_left(any_settings):
    from workers.activation import rollback

    db = queue_db(any_settings, n_per_class=5)
    v0 = add_head(any_settings, "binary", db["X"], db["y"], name="-v0")
    v1 = add_head(any_settings, "binary", db["X"], db["y"], name="-v1")
    v2 = add_head(any_settings, THREE_CLASS, db["X"], db["y"], name="-v2")
    assert rollback(any_settings)[:2] == (v2, v1)
    assert rollback(any_settings)[:2] == (v1, v0)
    with session_scope(any_settings.resolved_database_url) as s:
        assert active_model(s).id == v0


# --------------------------------------------------------------------------- 7. pointers after rollback
def test_rollback_restores_the_prediction_the_restored_head_made(any_settings, tiny_encoder):
    from store.labels import export_rows
    from workers.activation import rollback

    url = any_settings.resolved_database_url
    db = queue_db(any_settings, n_per_class=8)
    v1 = add_head(any_settings, "binary", db["X"], db["y"], name="-v1")
    sc = scorer(any_settings, tiny_encoder)
    sc.rescore_open_tasks()
    with session_scope(url) as s:
        v1_pred = {iid: pid for iid, pid in s.execute(select(Prediction.image_id, Prediction.id)
                                                       .where(Prediction.model_version_id == v1))}
    add_head(any_settings, THREE_CLASS, db["X"], db["y"], name="-v2")
    assert sc.rescore_open_tasks()["rescored"] > 0
    rollback(any_settings)
    again = sc.rescore_open_tasks()  # what rollback asks for: v1's own rows stand
    with session_scope(url) as s:
        for iid in v1_pred:
            assert s.get(Image, iid).latest_prediction_id == v1_pred[iid]
            task = task_of(s, iid)
            if task.state in ("open", "claimed"):
                assert task.prediction_id == v1_pred[iid]
        rows = {r["image_id"]: r for r in export_rows(s)}
    assert {rows[iid]["model_version"] for iid in v1_pred} == {v1}
    assert again["rescored"] == 0


# --------------------------------------------------------------------------- 3. the retrain lock
def _retrain(settings):
    from workers.retrain import retrain

    return retrain(settings, find_suspects=False)


def test_a_retrain_that_lost_its_lock_never_promotes(pg_settings):
    url = pg_settings.resolved_database_url
    db = queue_db(pg_settings, labels=True)
    add_head(pg_settings, "binary", db["X"], db["y"], name="-v1")

    def lease_runs_out_and_another_retrain_promotes():
        with session_scope(url) as s:  # A's lease runs out (its TTL passed without renewal) ...
            s.execute(update(JobLock).values(expires_at=func.now() - dt.timedelta(seconds=1)))
        assert _retrain(pg_settings).promoted  # ... and retrain B takes the lock and promotes

    late = interleave("retrain.before_promote", lambda: _retrain(pg_settings),
                      lease_runs_out_and_another_retrain_promotes)
    with session_scope(url) as s:
        promoted = s.scalar(select(func.count()).select_from(ModelVersion).where(
            ModelVersion.kind == THREE_CLASS, ModelVersion.activated_at.is_not(None)))
        assert promoted == 1  # one promotion per lock: B's
        assert s.get(JobLock, "retrain") is None
    with pytest.raises(Exception, match="lost the 'retrain' lock") as lost:
        late.get()
    assert type(lost.value).__name__ == "LeaseLost"


def test_a_manual_activation_during_a_retrain_is_not_overridden(pg_settings):
    from workers.activation import activate

    url = pg_settings.resolved_database_url
    db = queue_db(pg_settings, labels=True)
    add_head(pg_settings, "binary", db["X"], db["y"], name="-v1")
    chosen = add_head(pg_settings, "binary", db["X"], db["y"], activate=False, name="-chosen")
    out = interleave("retrain.before_promote", lambda: _retrain(pg_settings),
                     lambda: activate(pg_settings, chosen)).get()
    assert not out.promoted and out.version_id
    with session_scope(url) as s:
        assert active_model(s).id == chosen


# --------------------------------------------------------------------------- 5. chunk vs promotion
def _queued_images(settings, count: int, seed: int = 0) -> list[int]:
    blobs = BlobStore(settings.resolved_blob_dir)
    files = [(f"p{i}.jpg", blobs.put(jpeg_bytes(seed + i)), 1) for i in range(count)]
    with session_scope(settings.resolved_database_url) as s:
        return register_images(s, None, files).to_score


def test_a_chunk_that_straddles_a_promotion_records_and_routes_with_the_new_head(pg_settings, tiny_encoder):
    from workers.activation import activate

    url = pg_settings.resolved_database_url
    X, y = cluster_data(10)
    add_head(pg_settings, "binary", X, y, name="-v1")
    v2 = add_head(pg_settings, THREE_CLASS, X, y, activate=False, name="-v2")
    ids = _queued_images(pg_settings, 12)
    report = interleave("scoring.before_write", lambda: scorer(pg_settings, tiny_encoder).score_chunk(ids),
                        lambda: activate(pg_settings, v2)).get()
    assert report.scored == len(ids)
    with session_scope(url) as s:
        by = dict(s.execute(select(Prediction.image_id, Prediction.model_version_id)
                            .where(Prediction.image_id.in_(ids))).all())
        assert by == {iid: v2 for iid in ids}
        for t in s.scalars(select(ReviewTask).where(ReviewTask.image_id.in_(ids))):
            assert s.get(Prediction, t.prediction_id).model_version_id == v2
        assert {im.status for im in images_by_id(s, ids)} == {"scored"}


# --------------------------------------------------------------------------- 6. overlapping chunks
def test_overlapping_chunks_both_land_and_strand_nothing(pg_settings, tiny_encoder):
    url = pg_settings.resolved_database_url
    a, b, c = _queued_images(pg_settings, 3, seed=40)
    sc1, sc2 = scorer(pg_settings, tiny_encoder), scorer(pg_settings, tiny_encoder)
    outs = together("scoring.before_write", lambda: sc1.score_chunk([a, b]), lambda: sc2.score_chunk([b, c]))
    reports = [o.get() for o in outs]
    assert sum(r.scored for r in reports) == 3  # b once, by whichever wrote first
    with session_scope(url) as s:
        assert {im.id: im.status for im in images_by_id(s, [a, b, c])} == {a: "scored", b: "scored",
                                                                             c: "scored"}
        assert s.scalar(select(func.count()).select_from(Prediction)) == 3


def test_two_registrations_of_one_file_enqueue_it_once(pg_settings):
    url = pg_settings.resolved_database_url
    shared = ("shared.jpg", sha256_hex(b"shared"), 6)

    def register(own: str):
        def run():
            with session_scope(url) as s:
                return register_images(s, None, [shared, (own, sha256_hex(own.encode()), 3)])
        return run

    one, two = (o.get() for o in together("register.before_insert", register("a.jpg"), register("b.jpg")))
    with session_scope(url) as s:
        shared_id = s.scalar(select(Image.id).where(Image.sha256 == shared[1]))
    assert (one.to_score + two.to_score).count(shared_id) == 1
    assert len(one.to_score + two.to_score) == 3


# --------------------------------------------------------------------------- suspected: two re-scores
def test_two_rescores_at_once_both_finish(pg_settings, tiny_encoder):
    url = pg_settings.resolved_database_url
    db = queue_db(pg_settings, n_per_class=10)
    v = add_head(pg_settings, THREE_CLASS, db["X"], db["y"])
    outs = together("rescore.before_write", scorer(pg_settings, tiny_encoder).rescore_open_tasks,
                    scorer(pg_settings, tiny_encoder).rescore_open_tasks)
    for o in outs:
        o.get()
    with session_scope(url) as s:
        assert s.scalar(select(func.count()).select_from(Prediction).where(
            Prediction.model_version_id == v)) == db["n"]
        left = s.scalar(select(func.count()).select_from(ReviewTask).where(ReviewTask.state == "open"))
    assert scorer(pg_settings, tiny_encoder).rescore_open_tasks()["rescored"] == 0  # idempotent
    assert left < db["n"]


# --------------------------------------------------------------------------- 9. clocks
def test_a_host_whose_clock_runs_ahead_takes_no_live_claim_or_lock(pg_settings, monkeypatch):
    from store import locks

    url = pg_settings.resolved_database_url
    queue_db(pg_settings, n_per_class=1)
    alice, bob = users(url, "alice", "bob")
    with session_scope(url) as s:
        s.execute(update(ReviewTask).values(state="claimed", lease_owner="alice",
                                            lease_expires_at=func.now() + dt.timedelta(seconds=600)))
    holder = locks.acquire(url, "retrain", ttl_s=600)

    ahead = utcnow() + dt.timedelta(hours=1)
    import store.images
    import store.labels
    import store.predictions
    import store.review
    import store.schema
    for mod in (store.review, store.schema, locks, store.images, store.predictions, store.labels):
        monkeypatch.setattr(mod, "utcnow", lambda: ahead, raising=False)
    with session_scope(url) as s:
        assert review.claim_next(s, bob, "bob", 600) is None  # alice's claims are live
    with pytest.raises(locks.LockBusy):
        locks.acquire(url, "retrain", ttl_s=600)
    monkeypatch.undo()
    locks.release(holder)


# --------------------------------------------------------------------------- 8. re-score requested at once
def test_a_promotion_requests_its_rescore_even_if_the_suspect_pass_fails(pg_settings, monkeypatch):
    import workers.retrain
    from workers import tasks
    from workers.app import configure

    db = queue_db(pg_settings, labels=True)
    add_head(pg_settings, "binary", db["X"], db["y"], name="-v1")
    configure(pg_settings)
    sent = []
    monkeypatch.setattr(tasks.rescore_open, "apply_async", lambda *a, **kw: sent.append(kw))

    def suspect_pass_dies(*_a, **_kw):
        raise RuntimeError("the worker died in the suspect pass")

    monkeypatch.setattr(workers.retrain, "flag_suspects", suspect_pass_dies)
    with pytest.raises(RuntimeError):
        tasks.retrain("manual")
    with session_scope(pg_settings.resolved_database_url) as s:
        assert active_model(s).kind == THREE_CLASS  # the promotion stands ...
    assert len(sent) == 1                              # ... and its re-score was requested


# --------------------------------------------------------------------------- suspected: labels during a retrain
def test_labels_posted_while_a_retrain_trains_count_towards_the_next(any_settings):
    from workers.retrain import new_labels_since_last_model, retrain

    url = any_settings.resolved_database_url
    db = queue_db(any_settings, labels=True)
    (uid,) = users(url, "alice")

    def label_during_training(stats):
        if stats.epoch == 1:
            with session_scope(url) as s:
                s.add(Label(image_id=db["queued"][0], user_id=uid, source="review", cls="road"))

    retrain(any_settings, find_suspects=False, on_epoch=label_during_training)
    assert new_labels_since_last_model(any_settings) == 1


# --------------------------------------------------------------------------- suspected: one vote per person
def test_a_reviewer_who_labels_an_image_twice_votes_once(any_settings):
    from store.labels import consensus

    url = any_settings.resolved_database_url
    db = queue_db(any_settings, n_per_class=1)
    alice, bob = users(url, "alice", "bob")
    iid = db["queued"][0]
    with session_scope(url) as s:  # alice labeled it, the task was reopened, she labeled it again
        s.add_all([Label(image_id=iid, user_id=alice, source="review", cls="road"),
                   Label(image_id=iid, user_id=alice, source="review", cls="road"),
                   Label(image_id=iid, user_id=bob, source="review", cls="field")])
    with session_scope(url) as s:
        agreed = consensus(s)
    assert iid not in agreed.labels and agreed.ties[iid] == {"road": 1, "field": 1}


def test_reopened_tasks_carry_no_stale_lease(any_settings):
    url = any_settings.resolved_database_url
    db = queue_db(any_settings, n_per_class=1)
    v = add_head(any_settings, THREE_CLASS, db["X"], db["y"])
    with session_scope(url) as s:
        s.execute(update(ReviewTask).values(state="resolved", resolved_by_version_id=v, lease_owner="old",
                                            lease_expires_at=utcnow()))
        assert reopen_resolved(s, v) == db["n"]
    with session_scope(url) as s:
        assert s.scalar(select(func.count()).select_from(ReviewTask).where(
            ReviewTask.lease_owner.is_not(None) | ReviewTask.lease_expires_at.is_not(None))) == 0


# --------------------------------------------------------------------------- stress: the invariants
@pytest.mark.slow
def test_reviewers_against_promotions_rescores_and_rollbacks_lose_nothing(pg_settings, tiny_encoder):
    """Not a forced interleaving: a bounded loop of promotion -> re-score -> rollback while two
    reviewers claim and label, checking the invariants after every round."""
    import threading

    from workers.activation import activate, rollback

    url = pg_settings.resolved_database_url
    db = queue_db(pg_settings)
    add_head(pg_settings, "binary", db["X"], db["y"], name="-v1")
    v2 = add_head(pg_settings, THREE_CLASS, db["X"], db["y"], activate=False, name="-v2")
    uids = dict(zip(("alice", "bob"), users(url, "alice", "bob")))
    stop, problems, labeled = threading.Event(), [], []

    def reviewer(name: str):
        try:
            while not stop.is_set():
                with session_scope(url) as s:
                    tid = review.claim_next(s, uids[name], name, 600)
                if tid is None:
                    stop.wait(0.01)
                    continue
                with session_scope(url) as s:
                    out = review.post_label(s, tid, uids[name], name, "road", "review")
                if not out.closed:
                    problems.append(f"{name}'s label on task {tid} did not close it")
                labeled.append(tid)
        except Exception as exc:  # reported below
            problems.append(repr(exc))

    threads = [threading.Thread(target=reviewer, args=(n,), daemon=True) for n in uids]
    for t in threads:
        t.start()
    sc = scorer(pg_settings, tiny_encoder)
    try:
        for _ in range(12):
            activate(pg_settings, v2)
            sc.rescore_open_tasks()
            assert resolved_by_inactive(url) == 0
            rollback(pg_settings)
            assert resolved_by_inactive(url) == 0
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert not problems, problems[:5]
    assert labeled
    with session_scope(url) as s:
        assert s.scalar(select(func.count()).select_from(Label)) == len(labeled)
        states = {t.id: t.state for t in s.scalars(select(ReviewTask).where(ReviewTask.id.in_(labeled)))}
    assert set(states.values()) == {"done"}, states
