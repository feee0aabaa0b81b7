"""Leased job locks in the database: work on SQLite and Postgres, survive a crashed holder.

Times are the database's (store/clock.py), so hosts with different clocks agree on who holds a
lease. A holder that lost its lease (it expired and somebody else took it) finds out at its
next ``renew()`` or ``confirm()``: both raise ``LeaseLost`` instead of carrying on."""
from __future__ import annotations

import contextlib
import datetime as dt
import os
import socket
import uuid

from sqlalchemy import delete, update
from sqlalchemy.orm import Session

from .clock import db_now
from .db import session_scope
from .schema import JobLock
from .sql import insert_ignore


class LockBusy(RuntimeError):
    """Another holder has the lock and its lease has not expired."""


class LeaseLost(RuntimeError):
    """This holder's lease expired and another holder took the lock."""


class Lease:
    def __init__(self, url: str, name: str, owner: str, ttl_s: float):
        self.url, self.name, self.owner, self.ttl_s = url, name, owner, ttl_s

    def confirm(self, session: Session) -> None:
        """Extend the lease inside the caller's transaction, or raise ``LeaseLost``. On Postgres
        the row stays locked until that transaction ends, so nobody can take the lock over
        between this check and the caller's commit (a promotion, say)."""
        now = db_now(session)
        renewed = session.execute(
            update(JobLock).where(JobLock.name == self.name, JobLock.owner == self.owner)
            .values(expires_at=now + dt.timedelta(seconds=self.ttl_s))).rowcount
        if renewed != 1:
            raise LeaseLost(f"lost the '{self.name}' lock: its lease expired and another holder took it")

    def renew(self) -> None:
        """Extend the lease; call it while working (a crashed holder simply stops calling)."""
        with session_scope(self.url) as s:
            self.confirm(s)


def acquire(url: str, name: str, ttl_s: float) -> Lease:
    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    with session_scope(url) as s:
        now = db_now(s)
        expires = now + dt.timedelta(seconds=ttl_s)
        insert_ignore(s, JobLock, [{"name": name, "owner": owner, "acquired_at": now, "expires_at": expires}])
        # take over an expired lease (its holder died); a live one stays with its holder
        s.execute(update(JobLock).where(JobLock.name == name, JobLock.expires_at < now)
                  .values(owner=owner, acquired_at=now, expires_at=expires))
        holder = s.get(JobLock, name, populate_existing=True)
        if holder.owner != owner:
            raise LockBusy(f"'{name}' is held by {holder.owner} until {holder.expires_at:%H:%M:%S} UTC")
    return Lease(url, name, owner, ttl_s)


def release(lease: Lease) -> None:
    with session_scope(lease.url) as s:
        s.execute(delete(JobLock).where(JobLock.name == lease.name, JobLock.owner == lease.owner))


@contextlib.contextmanager
def held(url: str, name: str, ttl_s: float):
    lease = acquire(url, name, ttl_s)
    try:
        yield lease
    finally:
        release(lease)
