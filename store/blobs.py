"""Content-addressed image storage: ``<root>/ab/abcdef...`` keyed by the bytes' sha256.

Keys are validated as hex before they touch the filesystem, so no key can name a path outside
the store; writes go to a temporary file and are renamed into place, so a reader never sees a
half-written blob and two writers of the same bytes cannot corrupt each other.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import re
import threading
from pathlib import Path

_KEY = re.compile(r"^[0-9a-f]{64}$")


class BlobNotFound(FileNotFoundError):
    pass


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class BlobStore:
    def __init__(self, root: Path | str):
        self.root = Path(root)
        self._dirs: set[Path] = set()  # fan-out folders known to exist

    def path_for(self, key: str) -> Path:
        if not _KEY.match(key or ""):
            raise BlobNotFound(f"not a blob key: {key!r}")
        return self.root / key[:2] / key

    def put(self, data: bytes) -> str:
        key = sha256_hex(data)
        path = self.path_for(key)
        try:
            if path.stat().st_size == len(data):
                return key
        except FileNotFoundError:
            pass
        if path.parent not in self._dirs:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._dirs.add(path.parent)
        # a name no other writer uses (process, thread, content): no mkstemp retry loop needed
        tmp = path.parent / f".incoming-{os.getpid()}-{threading.get_ident()}-{key[:16]}"
        try:
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return key

    def get(self, key: str) -> bytes:
        path = self.path_for(key)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise BlobNotFound(f"blob {key} is missing from {self.root}") from None

    def exists(self, key: str) -> bool:
        try:
            return self.path_for(key).exists()
        except BlobNotFound:
            return False
