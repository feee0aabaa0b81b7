"""Engines and sessions: SQLite (WAL, for the embedded default) or Postgres, from one URL."""
from __future__ import annotations

import contextlib
import threading
from pathlib import Path
from typing import Iterator

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

_engines: dict[str, Engine] = {}
_lock = threading.Lock()


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")      # readers never block the worker's writes
    cur.execute("PRAGMA synchronous=NORMAL")    # durable at checkpoints; safe with WAL
    cur.execute("PRAGMA busy_timeout=30000")    # wait for the other writer instead of failing
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def get_engine(url: str) -> Engine:
    """One engine per URL per process (an engine owns a connection pool; never make one per call)."""
    with _lock:
        if url not in _engines:
            if url.startswith("sqlite"):
                path = url.split("///", 1)[-1]
                if path and path != ":memory:":
                    Path(path).parent.mkdir(parents=True, exist_ok=True)
                engine = create_engine(url, connect_args={"timeout": 30})
                event.listen(engine, "connect", _sqlite_pragmas)
            else:
                # pool_size covers a web worker's threads (gunicorn -k gthread --threads 8, as
                # deployed): with fewer, busy moments open and close overflow connections, a new
                # Postgres backend each time; the pool only grows as far as it is used
                engine = create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=5)
            _engines[url] = engine
        return _engines[url]


@contextlib.contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """A session whose work commits as one transaction, or rolls back entirely on error."""
    with transaction(Session(get_engine(url), expire_on_commit=False)) as session:
        yield session


@contextlib.contextmanager
def transaction(session: Session) -> Iterator[Session]:
    """``session``'s work commits when the block ends, or rolls back entirely on error; the
    session is closed either way (``session_scope``, and the web UI's per-request connection)."""
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def dispose_engines() -> None:
    """Drop pooled connections: after a fork, and in tests between databases."""
    with _lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()
