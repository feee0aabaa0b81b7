"""Object storage against a real S3 server process (moto_server): blobs in a bucket, images
registered in place and hashed by the worker that reads them, heads in the database, and every
bad input ending in one line with nothing registered."""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

import migrations
from store.db import session_scope
from store.schema import Batch, BatchImage, Image, Prediction
from tests.conftest import S3Server, verge
from tests.corpus import jpeg_bytes
from tests.services import free_port


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def hashes_under(*folders: Path) -> set[str]:
    """sha256 of every file under the folders: no data dir may hold a submitted image."""
    out = set()
    for folder in folders:
        for root, _, names in os.walk(folder):
            for name in names:
                out.add(sha(Path(root, name).read_bytes()))
    return out


def test_s3_blob_store_is_content_addressed(s3):
    from store.blobs import BlobNotFound, open_blobs

    bucket = s3.bucket()
    store = open_blobs(f"s3://{bucket}/team/blobs")
    store.check()
    data = jpeg_bytes(7)
    key = store.put(data)
    assert key == sha(data) and store.put(data) == key
    assert store.get(key) == data and store.exists(key) and not store.exists("0" * 64)
    names = [o["Key"] for o in s3.client().list_objects_v2(Bucket=bucket)["Contents"]]
    assert names == [f"team/blobs/{key[:2]}/{key}"]
    with pytest.raises(BlobNotFound):
        store.get("../../etc/passwd")
    with pytest.raises(BlobNotFound):
        store.get("f" * 64)


def test_submitting_a_folder_copies_into_the_bucket_not_the_data_dir(tmp_path, tiny_env, s3):
    bucket = s3.bucket()
    folder = tmp_path / "photos"
    folder.mkdir()
    files = {f"p{i}.jpg": jpeg_bytes(100 + i) for i in range(3)}
    for name, data in files.items():
        (folder / name).write_bytes(data)
    env = {**tiny_env, **s3.env, "VERGE_BLOB_URL": f"s3://{bucket}/blobs"}
    out = json.loads(verge(env, "submit", str(folder), "--json").stdout)
    assert out["submitted"] == 3 and out["new"] == 3
    stored = {o["Key"] for o in s3.client().list_objects_v2(Bucket=bucket)["Contents"]}
    assert stored == {f"blobs/{sha(d)[:2]}/{sha(d)}" for d in files.values()}
    assert not hashes_under(Path(tiny_env["VERGE_DATA_DIR"])) & {sha(d) for d in files.values()}


def _put(s3, bucket, key, data):
    return s3.client().put_object(Bucket=bucket, Key=key, Body=data)["ETag"]


@pytest.mark.slow
def test_registered_in_place_then_hashed_merged_and_failed_by_the_worker(tmp_path, tiny_env, s3,
                                                                           tiny_encoder):
    """The whole identity design on SQLite, scored in this process by the worker's own code."""
    from verge.settings import Settings
    from workers.scoring import Scorer

    bucket = s3.bucket()
    one, two = jpeg_bytes(1), jpeg_bytes(2)
    objects = {
        "shoot/a b/é 1.jpg": one,          # spaces and unicode in the key
        "shoot/x/2.JPG": two,              # same bytes as a file already submitted by copy
        "shoot/x/copy of 1.jpeg": one,     # same bytes as another object of this prefix
        "shoot/bad.jpg": b"<html>not an image</html>",
        "shoot/gone.jpg": jpeg_bytes(3),   # deleted after registration
        "shoot/replaced.jpg": jpeg_bytes(4),  # replaced after registration
        "shoot/notes.txt": b"not an image name",
        "shoot/sub/": b"",                 # a folder marker
        "elsewhere/z.jpg": jpeg_bytes(5),  # outside the prefix
    }
    for key, data in objects.items():
        _put(s3, bucket, key, data)
    local = tmp_path / "local"
    local.mkdir()
    (local / "two.jpg").write_bytes(two)
    env = {**tiny_env, **s3.env}
    verge(env, "submit", str(local), "--batch", "copied")
    out = json.loads(verge(env, "submit", f"s3://{bucket}/shoot/", "--batch", "shoot", "--json").stdout)
    assert out["submitted"] == 6 and out["new"] == 6 and out["enqueued"] == 6
    assert [s["path"] for s in out["skipped"]] == [f"s3://{bucket}/shoot/notes.txt"]
    # registering the prefix again links the same rows
    again = json.loads(verge(env, "submit", f"s3://{bucket}/shoot/", "--batch", "shoot-again",
                             "--json").stdout)
    assert again["submitted"] == 6 and again["new"] == 0

    settings = Settings.from_env(env)
    url = settings.resolved_database_url
    with session_scope(url) as s:
        shoot = s.scalar(select(Batch.id).where(Batch.name == "shoot"))
        ids = list(s.scalars(select(BatchImage.image_id).where(BatchImage.batch_id == shoot)))
        assert s.scalar(select(func.count()).select_from(Image).where(
            Image.id.in_(ids), Image.sha256.is_(None))) == 6  # nothing was read to register them
    # nothing was downloaded by the submitter (only the file submitted by copy is in its blobs)
    in_place = {sha(d) for d in objects.values() if d}
    assert hashes_under(settings.data_dir) & in_place == {sha(two)}

    s3.client().delete_object(Bucket=bucket, Key="shoot/gone.jpg")
    _put(s3, bucket, "shoot/replaced.jpg", jpeg_bytes(44))
    report = Scorer(settings, tiny_encoder).score_chunk(sorted(ids))
    assert report.linked == 2 and report.scored == 1 and report.failed == 3

    with session_scope(url) as s:
        rows = {im.source_name: im for im in s.scalars(select(Image))}
        by_sha = {im.sha256: im for im in rows.values() if im.sha256}
        # bytes seen before are one image: the copied file keeps its row, the two equal objects one
        assert set(by_sha) >= {sha(one), sha(two)}
        assert s.scalar(select(func.count()).select_from(Image).where(Image.sha256 == sha(one))) == 1
        assert by_sha[sha(two)].source_name.endswith("two.jpg")
        reasons = {name.rsplit("/", 1)[-1]: im.error for name, im in rows.items() if im.status == "failed"}
        assert "deleted from object storage after it was registered" in reasons["gone.jpg"]
        assert "replaced after it was registered" in reasons["replaced.jpg"]
        assert "HTML document" in reasons["bad.jpg"]
        # both batches still add up: distinct images, every one scored or failed
        for name in ("shoot", "shoot-again"):
            bid = s.scalar(select(Batch.id).where(Batch.name == name))
            statuses = list(s.scalars(select(Image.status).join(BatchImage, BatchImage.image_id == Image.id)
                                      .where(BatchImage.batch_id == bid)))
            assert len(statuses) == 5 and statuses.count("failed") == 3
            assert set(statuses) == {"scored", "failed"} or statuses.count("queued") == 1
        # the copied image (queued in its own chunk) was not scored twice by the merge
        assert s.scalar(select(func.count()).select_from(Prediction)) == 1
    st = json.loads(verge(env, "status", "shoot", "--json").stdout)
    assert st["total"] == st["scored"] + st["failed"] + st["queued"] == 5
    assert hashes_under(settings.data_dir) & in_place == {sha(two)}


def _no_batches(env) -> None:
    url = env.get("VERGE_DATABASE_URL") or f"sqlite:///{Path(env['VERGE_DATA_DIR']).resolve() / 'verge.db'}"
    migrations.upgrade(url)
    with session_scope(url) as s:
        assert s.scalar(select(func.count()).select_from(Batch)) == 0
        assert s.scalar(select(func.count()).select_from(Image)) == 0


def _one_error_line(proc, *words) -> str:
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("verge: error: "), proc.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def refusing_s3(tmp_path):
    """A second S3 server that authenticates every request: our keys do not exist there."""
    server = S3Server(tmp_path / "moto-auth.log", env={"INITIAL_NO_AUTH_ACTION_COUNT": "0"})
    yield server
    server.stop()


@pytest.mark.slow
def test_bad_object_storage_is_one_line_at_submit_and_worker_start(tmp_path, tiny_env, s3, refusing_s3):
    bucket = s3.bucket()
    _put(s3, bucket, "in/a.jpg", jpeg_bytes(9))
    local = tmp_path / "local"
    local.mkdir()
    (local / "a.jpg").write_bytes(jpeg_bytes(9))
    dead = {**s3.env, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}", "AWS_MAX_ATTEMPTS": "1"}
    cases = {
        "missing bucket": (s3.env, "s3://no-such-bucket-here/in/", "NoSuchBucket"),
        "wrong credentials": (refusing_s3.env, f"s3://{bucket}/in/", "InvalidAccessKeyId"),
        "unreachable endpoint": (dead, f"s3://{bucket}/in/", "cannot reach object storage"),
        "empty prefix": (s3.env, f"s3://{bucket}/nothing-here/", "no image objects"),
    }
    for what, (aws, url, word) in cases.items():
        env = {**tiny_env, **aws, "VERGE_DATA_DIR": str(tmp_path / what.replace(" ", "-"))}
        _one_error_line(verge(env, "submit", url, check=False, timeout=120), word)
        if what != "empty prefix":  # the copy path into a bucket, and a worker's start
            blob_env = {**env, "VERGE_BLOB_URL": url.replace("/in/", "/blobs")}
            _one_error_line(verge(blob_env, "submit", str(local), check=False, timeout=120), word)
            _one_error_line(verge(blob_env, "worker", check=False, timeout=120), word)
        _no_batches(env)


def test_blob_url_setting_and_the_old_blob_dir(tmp_path):
    from verge.settings import Settings, SettingsError

    assert Settings.from_env({"VERGE_DATA_DIR": str(tmp_path)}).resolved_blob_url == str(tmp_path / "blobs")
    assert Settings.from_env({"VERGE_BLOB_URL": "s3://b/p/x"}).resolved_blob_url == "s3://b/p/x"
    assert Settings.from_env({"VERGE_BLOB_URL": str(tmp_path / "f")}).resolved_blob_dir == tmp_path / "f"
    # the deprecated spelling still names a folder, and loses to VERGE_BLOB_URL
    assert Settings.from_env({"VERGE_BLOB_DIR": str(tmp_path / "old")}).resolved_blob_url == str(tmp_path / "old")
    assert Settings.from_env({"VERGE_BLOB_DIR": "x", "VERGE_BLOB_URL": "s3://b"}).resolved_blob_url == "s3://b"
    for bad in ("s3://", "s3:///prefix", "http://minio:9000/bucket"):
        with pytest.raises(SettingsError, match="VERGE_BLOB_URL"):
            Settings.from_env({"VERGE_BLOB_URL": bad})


@pytest.mark.services
def test_two_workers_hashing_equal_bytes_at_once_end_with_one_image(pg_url):
    """Two chunks learn the same hash for two objects at the same moment: the second waits on the
    unique index, fails, retries and merges into the first. Forced: the first transaction is held
    open until the second is blocked behind it."""
    import threading

    from sqlalchemy import text

    from store.identity import adopt_hashes
    from store.images import get_or_create_batch
    from store.s3 import Listed
    from workers.inplace import register_objects
    from workers.scoring import adopt_hashes_retrying

    migrations.upgrade(pg_url)
    with session_scope(pg_url) as s:
        b1, b2 = get_or_create_batch(s, "one", "cli"), get_or_create_batch(s, "two", "cli")
        x = register_objects(s, b1, "bk", [Listed("a/x.jpg", 10, '"1"')]).image_ids[0]
        y = register_objects(s, b2, "bk", [Listed("b/y.jpg", 10, '"2"')]).image_ids[0]
    h = "ab" * 32
    outcome = {}
    with session_scope(pg_url) as first:
        adopt_hashes(first, {x: h})  # x takes the hash; not committed yet
        second = threading.Thread(target=lambda: outcome.update(r=adopt_hashes_retrying(pg_url, {y: h})))
        second.start()
        deadline = time.monotonic() + 30
        while True:  # until the second transaction waits on our row lock of the unique index
            with session_scope(pg_url) as probe:
                waiting = probe.scalar(text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                            "AND datname = current_database()"))
            if waiting:
                break
            assert time.monotonic() < deadline, "the second adopt never blocked"
            time.sleep(0.05)
    second.join(30)
    assert outcome["r"].merged == {y: x}
    with session_scope(pg_url) as s:
        assert s.scalar(select(func.count()).select_from(Image).where(Image.sha256 == h)) == 1
        assert s.get(Image, y) is None
        assert sorted(s.scalars(select(BatchImage.batch_id).where(BatchImage.image_id == x))) == [b1, b2]
