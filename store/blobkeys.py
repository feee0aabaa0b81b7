"""What every blob store shares, the folder (``store.blobs``) and S3 (``store.s3``) alike:
a blob's key is the sha256 of its bytes in hex, and a missing blob is ``BlobNotFound``."""
from __future__ import annotations

import hashlib
import re

_KEY = re.compile(r"^[0-9a-f]{64}$")


class BlobNotFound(FileNotFoundError):
    pass


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def valid_key(key: str) -> bool:
    return bool(_KEY.match(key or ""))
