"""What a blob is called: the sha256 of its bytes as 64 lowercase hex digits (so no key can name a
path outside the store), and the error for one that is not there. Shared by the folder store
(store/blobs.py) and the S3 one (store/s3.py) without either importing the other at load time."""
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
