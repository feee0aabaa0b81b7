"""The labeling guidelines' text: one row, read by every web server (webui/guidelines.py)."""
from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from .schema import Guidelines, utcnow

ROW = 1


def text(session: Session) -> str:
    return session.scalar(select(Guidelines.text).where(Guidelines.id == ROW)) or ""


def save(session: Session, source: str, user_id: int | None) -> None:
    row = session.get(Guidelines, ROW)
    if row is None:
        session.add(Guidelines(id=ROW, text=source, updated_at=utcnow(), updated_by=user_id))
    else:
        row.text, row.updated_at, row.updated_by = source, utcnow(), user_id
    session.flush()
