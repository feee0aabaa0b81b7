"""Content-addressed image storage: ``<root>/ab/abcdef...`` keyed by the bytes' sha256, in a
folder (here) or in S3-compatible object storage (``store.s3``); ``open_blobs`` picks by URL. What
both share (keys, ``BlobNotFound``) is ``store.blobkeys``.
``read_image`` reads an image wherever it lives: a blob, or an object registered in place.

Keys are validated as hex before they touch the filesystem, so no key can name a path outside
the store; writes go to a temporary file and are renamed into place, so a reader never sees a
half-written blob and two writers of the same bytes cannot corrupt each other.
"""
from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

from .blob_keys import BlobNotFound, sha256_hex, valid_key


def open_blobs(url: str, pool: int = 10):
    """The blob store ``url`` names: ``s3://bucket/prefix`` or a folder. ``pool``: the S3
    connection pool size (the number of threads that read at once)."""
    if url.startswith("s3://"):
        from .s3 import S3BlobStore

        return S3BlobStore(url, pool)
    return BlobStore(url)


def is_in_place(storage_key: str) -> bool:
    """An image registered where it lives (``s3://...``) rather than copied into the blob store."""
    return storage_key.startswith("s3://")


def read_image(blobs, storage_key: str, etag: str | None = None, pool: int | None = None) -> bytes:
    """An image's bytes: from the blob store, or from its own object (only the version that was
    registered: a deleted or replaced object raises ``BlobNotFound`` with the reason)."""
    if is_in_place(storage_key):
        from .s3 import parse_s3_url, read_object

        bucket, key = parse_s3_url(storage_key)
        return read_object(bucket, key, etag, pool=pool or getattr(blobs, "pool", 10))
    return blobs.get(storage_key)


class BlobStore:
    def __init__(self, root: Path | str):
        self.root = Path(root)
        self._dirs: set[Path] = set()  # fan-out folders known to exist

    @property
    def url(self) -> str:
        return str(self.root)

    def check(self) -> None:
        """Nothing to reach: a folder is created on first write."""

    def path_for(self, key: str) -> Path:
        if not valid_key(key):
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
