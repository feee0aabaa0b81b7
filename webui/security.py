"""Secrets: password hashes, API tokens, the session-signing key, and the response headers that
keep browsers strict. Nothing here touches the database."""
from __future__ import annotations

import functools
import hashlib
import hmac
import os
import secrets
from pathlib import Path

from werkzeug.security import check_password_hash, generate_password_hash

TOKEN_PREFIX = "vrg_"
MIN_PASSWORD = 8


@functools.cache
def _dummy_hash() -> str:
    """A hash to compare against when the user does not exist, so both cases cost the same
    time. Made on first use: every `verge` command imports this module, few check a password."""
    return generate_password_hash("not a real password, only a timing guard")


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise ValueError(f"a password needs at least {MIN_PASSWORD} characters")
    return generate_password_hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    if not password_hash or password_hash.startswith("!"):  # no such user, or disabled
        check_password_hash(_dummy_hash(), password)
        return False
    return check_password_hash(password_hash, password)


def new_token() -> tuple[str, str]:
    """(token shown to the user once, its digest kept in the database)."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    return token, token_digest(token)


def token_digest(token: str) -> str:
    # Tokens carry 256 random bits, so a fast hash is enough: nobody can guess their way back.
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def load_secret_key(configured: str, data_dir: Path) -> str:
    """``VERGE_SECRET_KEY`` when set; else the key in ``<data_dir>/secret_key``, created once
    (mode 600) with a race-free link so several server processes end up with the same key."""
    if configured:
        return configured
    path = Path(data_dir) / "secret_key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".secret_key-{os.getpid()}-{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_hex(32))
            try:
                os.link(tmp, path)  # fails if another process won the race: use theirs
            except FileExistsError:
                pass
        finally:
            os.unlink(tmp)
    key = path.read_text().strip()
    if len(key) < 32:
        raise RuntimeError(f"{path} holds no usable secret key; delete it to make a new one "
                           f"or set VERGE_SECRET_KEY")
    return key


CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
       "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'")


def secure_headers(response):
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    return response
