"""Registering an object-storage prefix in place from the web UI and the API (admins): the same
``workers.inplace.register_prefix`` as ``verge submit s3://...``, with its errors as HTTP answers
(400 for what the admin can fix, 503 for a service that is down) and nothing registered."""
from __future__ import annotations

from werkzeug.exceptions import BadRequest, ServiceUnavailable

from .context import settings

MAX_URL = 1100


def object_url(raw) -> str:
    if raw is not None and not isinstance(raw, str):
        raise BadRequest("'url' must be a string: s3://BUCKET/PREFIX")
    url = (raw or "").strip()
    if not url:
        raise BadRequest("'url' is required: s3://BUCKET/PREFIX")
    if not url.startswith("s3://") or len(url) > MAX_URL or not url[5:].split("/", 1)[0]:
        raise BadRequest(f"'url' must be s3://BUCKET/PREFIX (at most {MAX_URL} characters)")
    return url


def register(raw_url, name: str | None, source: str):
    from store.s3 import ObjectStoreError, ObjectStoreUnavailable
    from workers.errors import BrokerUnavailable
    from workers.inplace import register_prefix

    url = object_url(raw_url)
    try:
        return register_prefix(settings(), url, name, source=source)
    except (ObjectStoreUnavailable, BrokerUnavailable) as exc:
        raise ServiceUnavailable(f"{exc}; nothing was registered") from None
    except ObjectStoreError as exc:
        raise BadRequest(f"{exc}; nothing was registered") from None
