"""People who use the web UI and the API: reviewers and admins.

Passwords and API tokens arrive here already hashed (``webui/security.py`` hashes them); the
store never sees a secret in the clear.
"""
from __future__ import annotations

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from . import sessions
from .schema import Label, User, utcnow

ROLES = ("reviewer", "admin")
# A disabled account keeps its password hash behind this prefix (as /etc/shadow locks with "!"):
# no password matches it, and enabling the account again restores the old password.
DISABLED = "!"


class UserExists(ValueError):
    pass


def create_user(session: Session, name: str, password_hash: str, role: str = "reviewer") -> User:
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    if user_by_name(session, name) is not None:
        raise UserExists(f"a user named {name!r} already exists")
    user = User(name=name, password_hash=password_hash, role=role, created_at=utcnow())
    session.add(user)
    session.flush()
    return user


def user_by_name(session: Session, name: str) -> User | None:
    return session.scalar(select(User).where(User.name == name))


def user_by_id(session: Session, user_id: int) -> User | None:
    return session.get(User, user_id)


def user_by_token_hash(session: Session, token_hash: str) -> User | None:
    return session.scalar(select(User).where(User.token_hash == token_hash))


def set_token_hash(session: Session, user_id: int, token_hash: str | None) -> None:
    """One token per user: a new one replaces (and so revokes) the old."""
    session.execute(update(User).where(User.id == user_id).values(token_hash=token_hash))


def set_password_hash(session: Session, user_id: int, password_hash: str) -> None:
    """A new password signs the user out everywhere."""
    session.execute(update(User).where(User.id == user_id).values(password_hash=password_hash))
    sessions.end_all(session, user_id)


def set_role(session: Session, user_id: int, role: str) -> None:
    """A new role signs the user out everywhere: their next session is made under it."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    session.execute(update(User).where(User.id == user_id).values(role=role))
    sessions.end_all(session, user_id)


def list_users(session: Session) -> list[tuple[User, int]]:
    """Every user with the number of labels they gave, by name."""
    counts = (select(Label.user_id, func.count().label("n")).where(Label.user_id.is_not(None))
              .group_by(Label.user_id).subquery())
    return [(u, n or 0) for u, n in session.execute(
        select(User, counts.c.n).outerjoin(counts, counts.c.user_id == User.id).order_by(User.name))]


def is_disabled(user: User) -> bool:
    return user.password_hash.startswith(DISABLED)


def set_disabled(session: Session, user_id: int, disabled: bool) -> bool:
    """Disable (or enable again) an account; a disabled one is signed out everywhere and loses
    its API token.
    Returns False when it was already in that state."""
    user = session.get(User, user_id)
    if user is None:
        raise LookupError(f"no user {user_id}")
    if is_disabled(user) == disabled:
        return False
    if disabled:
        user.password_hash = DISABLED + user.password_hash
        user.token_hash = None
        sessions.end_all(session, user_id)
    else:
        user.password_hash = user.password_hash[len(DISABLED):]
    session.flush()
    return True
