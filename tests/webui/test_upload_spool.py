"""Uploads spool to disk past a small threshold and hold no descriptor while they wait: a request
with a thousand files keeps its memory and its open files bounded."""
from __future__ import annotations

import io
import os

from werkzeug.test import EnvironBuilder

from webui.spool import MEMORY_BYTES, SpooledUpload, SpoolingRequest


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_thousand_uploaded_files_hold_neither_memory_nor_descriptors(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    n, size = 1100, 64 * 1024  # more files than a default `ulimit -n` of 1024
    payloads = [bytes([i % 251]) * size for i in range(n)]
    env = EnvironBuilder(method="POST", data={
        "files": [(io.BytesIO(p), f"{i}.jpg") for i, p in enumerate(payloads)]}).get_environ()
    before = _open_fds()
    req = SpoolingRequest(env)
    req.max_form_parts = 100_000  # as create_app configures it: a folder upload is a part per file
    files = req.files.getlist("files")
    assert len(files) == n
    assert _open_fds() - before < 5, "a descriptor stayed open per uploaded file"
    streams = [f.stream for f in files]
    assert all(isinstance(s, SpooledUpload) for s in streams)
    held = sum(len(s._mem.getvalue()) for s in streams if s._mem is not None)
    assert held <= n * MEMORY_BYTES and held == 0  # each part is past the threshold: all on disk
    assert len(list(tmp_path.glob("verge-upload-*"))) == n
    for f, p in zip(files, payloads):
        assert f.read() == p
    assert _open_fds() - before < 5
    req.close()
    assert not list(tmp_path.glob("verge-upload-*")), "spooled files outlived the request"


def test_small_parts_stay_in_memory_and_read_like_files():
    s = SpooledUpload()
    s.write(b"abc")
    s.seek(0)
    assert s.read() == b"abc" and s._path is None
    s.seek(0, io.SEEK_END)
    assert s.tell() == 3
    s.close()
    big = SpooledUpload()
    big.write(b"x" * (MEMORY_BYTES + 1))
    big.seek(0)
    assert big.read(2) == b"xx" and big.read() == b"x" * (MEMORY_BYTES - 1)
    path = big._path
    big.close()
    assert not os.path.exists(path)
