"""The bulk-statement helpers every store module shares: ids in bounded pieces, ``column IN ids``
as few statements as the driver allows, and INSERT ... ON CONFLICT DO NOTHING (with or without
RETURNING) on SQLite and Postgres. One round trip per table per call; no per-row queries in loops.
"""
from __future__ import annotations

from typing import Sequence

from sqlalchemy import Integer, any_, bindparam
from sqlalchemy.dialects.postgresql import ARRAY as PG_ARRAY
from sqlalchemy.orm import Session

IN_CHUNK = 900  # keeps IN lists and multi-row VALUES under every driver's parameter limits


def chunks(seq: Sequence, n: int = IN_CHUNK):
    for i in range(0, len(seq), n):
        yield seq[i:i + n]


def id_in(session: Session, column, ids: Sequence[int]):
    """WHERE clauses that together mean ``column IN ids``: one ``= ANY(array)`` on Postgres (one
    statement with one parameter, whatever the number of ids: 100k embeddings read in half the
    time of 112 statements of 900 parameters), IN lists under SQLite's parameter limit there."""
    ids = list(ids)
    if not ids:
        return
    if session.get_bind().dialect.name == "postgresql":
        yield column == any_(bindparam(None, ids, type_=PG_ARRAY(Integer)))
    else:
        for part in chunks(ids):
            yield column.in_(part)


def dialect_insert(session: Session):
    """The session's dialect's ``insert`` (the one with ``on_conflict_do_nothing/do_update``)."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:  # pragma: no cover - verge supports the two
        raise RuntimeError(f"unsupported database dialect {dialect}")
    return insert


def insert_ignore(session: Session, model, rows: list[dict]) -> None:
    """INSERT ... ON CONFLICT DO NOTHING on SQLite and Postgres: concurrent writers of the same
    row (two submitters of one file, a redelivered chunk) both succeed, and one row remains."""
    if not rows:
        return
    insert = dialect_insert(session)
    # Core executemany: one cached statement (SQLAlchemy batches the rows into multi-row
    # INSERTs on Postgres), instead of compiling a new VALUES list for every call
    session.connection().execute(insert(model.__table__).on_conflict_do_nothing(), rows)


def insert_new(session: Session, model, rows: list[dict], *returning) -> list:
    """INSERT ... ON CONFLICT DO NOTHING ... RETURNING ``returning``: the rows this call actually
    wrote (a concurrent writer's rows are not among them), so that only those get their follow-up
    writes. Rows come back in no particular order: key them by a unique column."""
    if not rows:
        return []
    stmt = dialect_insert(session)(model.__table__).on_conflict_do_nothing().returning(*returning)
    return [row for part in chunks(rows) for row in session.connection().execute(stmt, part)]
