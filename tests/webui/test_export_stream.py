"""The export streams page by page: memory and queries stay bounded whatever the row count, it
runs past Postgres' 65,535-parameter limit, and under gunicorn (as docker-compose serves it) a
download that outlasts the worker timeout still completes; when a response is cut anyway (a sync
worker killed mid-stream) the client is told: chunked framing never ends cleanly on a cut."""
from __future__ import annotations

import http.client
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from sqlalchemy import insert, select

from store.db import session_scope
from store.export import write_export
from store.schema import BatchImage, Image, Label, Prediction

from .conftest import PASSWORD

ROOT = Path(__file__).resolve().parents[2]


def _fill(url: str, n: int, batch: str = "big") -> dict:
    """``n`` scored images in one batch, each with a prediction that image.latest_prediction_id
    points at; every 10th has a reviewer's label, every 7th a training folder's."""
    from store import queries as q
    from store import users
    from store.schema import utcnow

    now = utcnow()
    with session_scope(url) as s:
        from store.schema import User

        uid = (s.scalar(select(User.id).where(User.name == "rev"))
               or users.create_user(s, "rev", "x", "reviewer").id)
        bid = q.get_or_create_batch(s, batch, "cli")
        first = (s.scalar(select(Image.id).order_by(Image.id.desc()).limit(1)) or 0) + 1
        ids = list(range(first, first + n))
        s.execute(insert(Image), [
            {"id": i, "sha256": f"{i:064x}", "storage_key": f"{i:064x}", "source_name": f"p{i}.jpg",
             "size_bytes": 10, "status": "scored", "attempts": 1, "created_at": now} for i in ids])
        s.execute(insert(BatchImage), [
            {"batch_id": bid, "image_id": i, "source_name": f"p{i}.jpg", "added_at": now} for i in ids])
        s.execute(insert(Prediction), [
            {"id": i, "image_id": i, "model_version_id": None, "encoder": "verge-tiny:none",
             "head_probs": None, "p_road": None, "zs_probs": {"field": 0.3, "road": 0.7},
             "zs_p_road": 0.7, "predicted_class": "road", "zs_class": "road", "routed": False,
             "reasons": "", "created_at": now} for i in ids])
        s.execute(Image.__table__.update().where(Image.id >= first)
                  .values(latest_prediction_id=Image.id))
        s.execute(insert(Label), [
            {"image_id": i, "user_id": uid, "source": "review", "cls": "field", "created_at": now}
            for i in ids[::10]])
        s.execute(insert(Label), [
            {"image_id": i, "user_id": None, "source": "training:x", "cls": "road_and_field",
             "created_at": now} for i in ids[::7]])
    return {"ids": ids, "batch_id": bid}


def _check_rows(lines: list[str], ids: list[int]) -> None:
    rows = [json.loads(x) for x in lines]
    assert [r["image_id"] for r in rows] == ids
    by = {r["image_id"]: r for r in rows}
    first = ids[0]
    assert by[first]["final_label"] == "field" and by[first]["final_label_source"] == "human"
    assert by[first]["human_labels"][0]["reviewer"] == "rev"
    assert by[first + 7]["final_label"] == "road_and_field"
    assert by[first + 7]["final_label_source"] == "training"
    assert by[first + 1]["final_label"] == "road" and by[first + 1]["final_label_source"] == "model"
    assert by[first + 1]["batches"] == ["big"] and by[first + 1]["zero_shot_probs"]["road"] == 0.7


def test_export_pages_past_65535_rows_on_postgres(pg_url, tmp_path):
    import migrations

    migrations.upgrade(pg_url)
    filled = _fill(pg_url, 66_000)
    out = tmp_path / "all.jsonl"
    with session_scope(pg_url) as s, open(out, "w") as fh:
        assert write_export(s, fh, "jsonl") == 66_000
    _check_rows(out.read_text().splitlines(), filled["ids"])
    with session_scope(pg_url) as s, open(out, "w") as fh:  # one batch: the same rows, by its key
        assert write_export(s, fh, "jsonl", filled["batch_id"]) == 66_000


def test_export_of_one_batch_reads_only_that_batch(web_settings):
    url = web_settings.resolved_database_url
    _fill(url, 3000, batch="a")
    b = _fill(url, 500, batch="b")
    with session_scope(url) as s:
        from store.labels import export_rows

        rows = list(export_rows(s, b["batch_id"], page=128))
    assert [r["image_id"] for r in rows] == b["ids"]
    assert all(r["batches"] == ["b"] for r in rows)


# ----------------------------------------------------------------------------- under gunicorn
def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _compose_web_command() -> list[str]:
    """gunicorn's arguments exactly as docker-compose.yml runs the web service."""
    cfg = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return list(cfg["services"]["web"]["command"])


def _gunicorn(args: list[str], env: dict, port: int, log: Path) -> subprocess.Popen:
    args = list(args)
    args[args.index("-b") + 1] = f"127.0.0.1:{port}"
    factory = args.pop()  # module:callable() stays last
    cmd = [str(Path(sys.executable).parent / "gunicorn"), *args, "--timeout", "1",
           "--graceful-timeout", "1", factory]
    proc = subprocess.Popen(cmd, env={**os.environ, **env}, cwd=os.getcwd(), stdout=log.open("w"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"gunicorn did not start:\n{log.read_text()}")
            time.sleep(0.2)


class _SlowConnection(http.client.HTTPConnection):
    """A client with a small receive window: once the server's send buffer (4 MiB at most on
    Linux) is full too, it blocks until the client reads."""

    def connect(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        self.sock.settimeout(60)
        self.sock.connect((self.host, self.port))


def _login(port: int) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/login")
    resp = conn.getresponse()
    html = resp.read().decode()
    cookie = resp.getheader("Set-Cookie").split(";", 1)[0]
    token = re.search(r'<meta name="csrf-token" content="([^"]+)"', html).group(1)
    from urllib.parse import urlencode

    conn.request("POST", "/login", body=urlencode({"name": "boss", "password": PASSWORD,
                                                   "csrf_token": token}),
                 headers={"Content-Type": "application/x-www-form-urlencoded", "Cookie": cookie})
    resp = conn.getresponse()
    resp.read()
    assert resp.status == 302, resp.status
    return resp.getheader("Set-Cookie").split(";", 1)[0]


def _slow_download(port: int, cookie: str) -> tuple[list[str], str | None]:
    """(lines received, None) for a response that ended properly; (lines, why) when cut."""
    conn = _SlowConnection("127.0.0.1", port)
    conn.request("GET", "/admin/export?format=jsonl", headers={"Cookie": cookie})
    resp = conn.getresponse()
    assert resp.status == 200
    assert resp.getheader("Transfer-Encoding") == "chunked"  # its end is marked: a cut shows
    body = bytearray()
    try:
        while True:
            piece = resp.read1(65536)
            if not piece:
                return body.decode().splitlines(), None
            if not body:  # a client that stalls: the server stays blocked past its timeout
                time.sleep(3)
            body += piece
    except (http.client.IncompleteRead, ConnectionError, OSError) as exc:
        return body.decode().splitlines(), type(exc).__name__


@pytest.mark.slow
@pytest.mark.parametrize("worker_class", ["compose", "sync"])
def test_web_export_under_gunicorn_completes_or_says_it_is_cut(web_settings, seed, tmp_path,
                                                               worker_class):
    """A download that takes several times gunicorn's timeout: with the compose command it
    completes; with a sync worker (killed at the timeout) the client sees the cut."""
    filled = _fill(web_settings.resolved_database_url, 20_000)  # ~9 MB
    seed.user("boss", "admin")
    args = _compose_web_command()
    if worker_class == "sync":
        # gunicorn turns sync into gthread when --threads > 1: drop both
        i = args.index("--threads")
        del args[i:i + 2]
        args = ["-k", "sync", *[a for a in args if a not in ("-k", "gthread")]]
    port = _free_port()
    proc = _gunicorn(args, {"VERGE_DATA_DIR": str(web_settings.data_dir)}, port,
                     tmp_path / "gunicorn.log")
    try:
        started = time.monotonic()
        lines, cut = _slow_download(port, _login(port))
        took = time.monotonic() - started
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)
    if worker_class == "compose":
        assert cut is None, f"the download was cut ({cut}) after {took:.1f} s"
        assert took > 2, "the download must outlast the 1 s timeout for this test to mean anything"
        _check_rows(lines, filled["ids"])
    elif cut is None:  # a sync worker that happened to finish in time: then it is all there
        _check_rows(lines, filled["ids"])
    else:
        assert len(lines) < len(filled["ids"])
