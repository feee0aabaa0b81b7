"""Uploaded files spool to disk past a small threshold, holding no descriptor while they wait.

Werkzeug keeps every uploaded part under 500 KiB in memory (1,000 photos of 200 KiB: +200 MiB
per request) and one open descriptor per larger part (1,100 of them run into `ulimit -n 1024`).
``SpooledUpload`` keeps the first ``MEMORY_BYTES`` in memory, writes the rest to a temporary
file that it closes as soon as the part is parsed and reopens only while it is read: a request
with any number of files holds a bounded amount of memory and at most a few descriptors. The
file is removed when the part is closed (Flask closes a request's files at its end) or read to
its end by the submission."""
from __future__ import annotations

import io
import os
import tempfile

from flask import Request

MEMORY_BYTES = 16 * 1024


class SpooledUpload(io.RawIOBase):
    def __init__(self, directory: str | None = None):
        self._mem: io.BytesIO | None = io.BytesIO()
        self._dir = directory
        self._path: str | None = None
        self._fh = None          # open only while the part is written or read
        self._pos = 0
        self._size = 0

    # -- writing (werkzeug's form parser), then seek(0)
    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def write(self, data) -> int:
        if self._mem is not None and self._mem.tell() + len(data) <= MEMORY_BYTES:
            n = self._mem.write(data)
        else:
            if self._path is None:
                fd, self._path = tempfile.mkstemp(prefix="verge-upload-", dir=self._dir)
                self._fh = os.fdopen(fd, "wb")
                self._fh.write(self._mem.getvalue())
                self._mem = None
            n = self._fh.write(data)
        self._size += n
        self._pos = self._size
        return n

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        if self._fh is not None and "w" in self._fh.mode:
            self._fh.close()  # the part is parsed: no descriptor while it waits to be read
            self._fh = None
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + pos)
        if self._mem is not None:
            self._mem.seek(self._pos)
        elif self._fh is not None:
            self._fh.seek(self._pos)
        return self._pos

    def tell(self) -> int:
        return self._pos

    # -- reading (the submission's hashing threads)
    def read(self, n: int = -1) -> bytes:
        if self._mem is not None:
            data = self._mem.read() if n is None or n < 0 else self._mem.read(n)
        elif self._path is None:
            return b""
        else:
            if self._fh is None:
                self._fh = open(self._path, "rb")
                self._fh.seek(self._pos)
            data = self._fh.read() if n is None or n < 0 else self._fh.read(n)
        self._pos += len(data)
        if self._pos >= self._size and self._fh is not None:  # read to the end: let go of it
            self._fh.close()
            self._fh = None
        return data

    def readinto(self, b) -> int:
        data = self.read(len(b))
        b[:len(data)] = data
        return len(data)

    def close(self) -> None:
        if self.closed:
            return
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        if self._path is not None:
            try:
                os.unlink(self._path)
            except FileNotFoundError:
                pass
        self._mem = None
        super().close()


class SpoolingRequest(Request):
    """Flask's request with uploads spooled by ``SpooledUpload``."""

    def _get_file_stream(self, total_content_length, content_type, filename=None, content_length=None):
        return SpooledUpload()
