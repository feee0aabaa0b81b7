"""S3-compatible object storage through boto3: content-addressed blobs under ``s3://BUCKET/PREFIX``,
and objects registered in place (read where they are, never copied).

Endpoint and credentials come the standard AWS way (``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``, profiles, instance roles): verge keeps no copy
of them, so MinIO, Ceph RGW, Cloudflare R2 and AWS all work. botocore's *standard* retry mode
retries 5xx answers, throttling and timeouts with backoff; past it an error is one line.
"""
from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass
from typing import Iterator

from .blobkeys import BlobNotFound, sha256_hex, valid_key

# Which failures are the store being away (wait and retry the chunk) rather than the object
_UNAVAILABLE_CODES = {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout",
                      "Throttling", "ThrottlingException", "RequestTimeTooSkewed"}


class ObjectStoreError(Exception):
    """Object storage refused or could not be reached; ``str()`` is one line naming what."""


class ObjectStoreUnavailable(ObjectStoreError):
    """The endpoint did not answer (after botocore's retries): a reason to retry later."""


class ObjectChanged(BlobNotFound):
    """An object registered in place was deleted or replaced since: that image fails, with this."""


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> ("bucket", "some/prefix")."""
    if not url.startswith("s3://"):
        raise ValueError(f"not an s3:// URL: {url!r}")
    bucket, _, prefix = url[5:].partition("/")
    if not bucket:
        raise ValueError(f"{url!r} names no bucket (s3://BUCKET/PREFIX)")
    return bucket, prefix


_clients: dict = {}
_clients_lock = threading.Lock()


def client(pool: int = 10):
    """This process's S3 client with a connection pool of ``pool`` (one per decode thread, so
    they never queue for a connection). Clients are thread-safe but not fork-safe: one per pid."""
    key = (os.getpid(), pool)
    with _clients_lock:
        if key not in _clients:
            import boto3
            from botocore.config import Config

            _clients[key] = boto3.session.Session().client("s3", config=Config(
                retries={"mode": "standard"},  # 3 attempts unless AWS_MAX_ATTEMPTS says
                max_pool_connections=max(10, pool), connect_timeout=5, read_timeout=60))
        return _clients[key]


def describe(exc: Exception, where: str) -> ObjectStoreError:
    """One line for any boto3/botocore failure, as ObjectStoreError (or ...Unavailable)."""
    from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        code = err.get("Code") or str(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "?"))
        message = err.get("Message") or {"404": "not found", "403": "access denied"}.get(code, "")
        cls = ObjectStoreUnavailable if code in _UNAVAILABLE_CODES else ObjectStoreError
        return cls(f"object storage refused {where}: {code} {message}".strip())
    if isinstance(exc, NoCredentialsError):
        return ObjectStoreError(f"no credentials for {where}: set AWS_ACCESS_KEY_ID and "
                                f"AWS_SECRET_ACCESS_KEY (or an AWS profile)")
    if isinstance(exc, EndpointConnectionError) or "Connect" in type(exc).__name__ \
            or "Timeout" in type(exc).__name__:
        endpoint = os.environ.get("AWS_ENDPOINT_URL") or "the AWS endpoint"
        return ObjectStoreUnavailable(f"cannot reach object storage at {endpoint} for {where} "
                                      f"(AWS_ENDPOINT_URL): {str(exc).splitlines()[0][:200]}")
    return ObjectStoreError(f"object storage failed on {where}: {str(exc).splitlines()[0][:200]}")


def _calls(where: str):
    """Decorator-free wrapper: run ``fn`` and turn botocore's exceptions into one-line errors."""
    from botocore.exceptions import BotoCoreError, ClientError

    class _Guard:
        def __enter__(self):
            return self

        def __exit__(self, kind, exc, tb):
            if exc is not None and isinstance(exc, (BotoCoreError, ClientError)):
                raise describe(exc, where) from None
            return False
    return _Guard()


def check_bucket(bucket: str, pool: int = 10) -> None:
    """Raise ObjectStoreError (one line) unless the bucket exists and these credentials may read it."""
    with _calls(f"bucket {bucket!r}"):  # a listing, not HEAD: its errors carry a code and message
        client(pool).list_objects_v2(Bucket=bucket, MaxKeys=1)


@dataclass(frozen=True)
class Listed:
    key: str
    size: int
    etag: str

    def url(self, bucket: str) -> str:
        return f"s3://{bucket}/{self.key}"


def list_objects(bucket: str, prefix: str, pool: int = 10) -> Iterator[Listed]:
    """Every object under ``prefix`` (recursively: S3 has no folders), in key order, 1,000 a page."""
    with _calls(f"listing s3://{bucket}/{prefix}"):
        for page in client(pool).get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", ()):
                yield Listed(obj["Key"], int(obj["Size"]), obj.get("ETag", ""))


def read_object(bucket: str, key: str, etag: str | None = None, pool: int = 10) -> bytes:
    """The object's bytes; with ``etag``, only if it is still the version registered (If-Match),
    else ObjectChanged saying whether it was deleted or replaced."""
    from botocore.exceptions import BotoCoreError, ClientError

    where = f"s3://{bucket}/{key}"
    try:
        kwargs = {"IfMatch": etag} if etag else {}
        return client(pool).get_object(Bucket=bucket, Key=key, **kwargs)["Body"].read()
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in ("NoSuchKey", "404"):
            raise ObjectChanged(f"{where} was deleted from object storage after it was registered") from None
        if code in ("PreconditionFailed", "412"):
            raise ObjectChanged(f"{where} was replaced after it was registered (its ETag changed); "
                                f"submit it again to score the new version") from None
        raise describe(exc, where) from None
    except BotoCoreError as exc:
        raise describe(exc, where) from None


class S3BlobStore:
    """Content-addressed blobs at ``s3://bucket/prefix/ab/abcdef...``: the folder store's layout."""

    def __init__(self, url: str, pool: int = 10):
        self.url = url.rstrip("/")
        self.bucket, prefix = parse_s3_url(self.url)
        self.prefix = prefix.strip("/")
        self.pool = pool

    def object_key(self, key: str) -> str:
        if not valid_key(key):
            raise BlobNotFound(f"not a blob key: {key!r}")
        return f"{self.prefix}/{key[:2]}/{key}" if self.prefix else f"{key[:2]}/{key}"

    def check(self) -> None:
        check_bucket(self.bucket, self.pool)

    def put(self, data: bytes) -> str:
        key = sha256_hex(data)
        name = self.object_key(key)
        with _calls(f"storing s3://{self.bucket}/{name}"):
            c = client(self.pool)
            try:
                if c.head_object(Bucket=self.bucket, Key=name)["ContentLength"] == len(data):
                    return key  # content-addressed: the same bytes are there already
            except Exception as exc:  # 404: not there yet; anything else surfaces on the put
                if "404" not in str(exc) and "Not Found" not in str(exc):
                    raise
            # a checksum the server verifies: a corrupted upload is refused, never stored
            c.put_object(Bucket=self.bucket, Key=name, Body=data,
                         ChecksumSHA256=_b64(hashlib.sha256(data).digest()))
        return key

    def get(self, key: str) -> bytes:
        try:
            return read_object(self.bucket, self.object_key(key), pool=self.pool)
        except ObjectChanged:
            raise BlobNotFound(f"blob {key} is missing from {self.url}") from None

    def exists(self, key: str) -> bool:
        try:
            with _calls(f"blob {key}"):
                client(self.pool).head_object(Bucket=self.bucket, Key=self.object_key(key))
            return True
        except (BlobNotFound, ObjectStoreError):
            return False


def _b64(raw: bytes) -> str:
    import base64

    return base64.b64encode(raw).decode("ascii")
