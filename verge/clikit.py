"""What every ``verge`` command is built with, whichever module defines it (``verge/cli/``,
``webui/cli.py``): ``UserError``, the ``friendly`` error mapping, the ``with_database``
decorator (settings read and the database migrated, in the manner of Flask's
``with_appcontext``), ``redact`` and ``progress_bar``.

Errors a user can cause end in one line on stderr (``verge: error: ...``) and exit status 1,
never a traceback.

This module sits beside the ``verge/cli/`` package rather than inside it: importing a module
of that package runs its ``__init__``, which imports every command module (``webui.cli``
among them), so a command module outside the package that imported its helpers from inside
it would import itself back. It imports nothing of verge's but the settings.
"""
from __future__ import annotations

import functools
import sys

import click

from .settings import Settings, SettingsError


class UserError(click.ClickException):
    """A mistake the user can fix: shown as one ``verge: error: ...`` line, exit status 1."""

    def show(self, file=None):
        click.echo(f"verge: error: {self.message}", err=True)


def friendly(fn):
    """Turn the errors people cause into one clear line (and a non-zero exit)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from sqlalchemy.exc import OperationalError

        from models.errors import HeadMismatch, UnknownEncoder, WeightsUnavailable
        from store.s3 import ObjectStoreError
        from workers.errors import BrokerUnavailable, TrainingDataError

        try:
            return fn(*args, **kwargs)
        except ObjectStoreError as exc:
            raise UserError(str(exc)) from None
        except WeightsUnavailable as exc:
            raise UserError(f"{exc}; set VERGE_PRETRAINED to a local weights file, to a cached tag, "
                            f"or to 'none' for random weights") from None
        except (SettingsError, UnknownEncoder, HeadMismatch, BrokerUnavailable, TrainingDataError) as exc:
            raise UserError(str(exc)) from None
        except OperationalError as exc:
            url = load_settings().resolved_database_url
            raise UserError(f"cannot use the database at {redact(url)} (VERGE_DATABASE_URL): "
                            f"{str(exc.orig).strip().splitlines()[0][:200]}") from None
    return wrapper


def with_database(fn):
    """``friendly``, and ``fn`` is called with ``settings=`` the settings, once the database
    they name is at the newest schema revision (``migrated_settings``)."""
    @friendly
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return fn(*args, settings=migrated_settings(), **kwargs)
    return wrapper


def redact(url: str) -> str:
    """A database URL without its password."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


@functools.lru_cache(maxsize=1)
def load_settings() -> Settings:
    """The settings from the environment, read once per process."""
    try:
        return Settings.from_env()
    except SettingsError as exc:
        raise UserError(str(exc)) from None


def ensure_migrated(settings: Settings) -> None:
    """Embedded SQLite migrates itself; a shared database is migrated on purpose (verge db upgrade)."""
    import migrations

    url = settings.resolved_database_url
    current = migrations.current_revision(url)
    if current == migrations.head_revision():
        return
    if url.startswith("sqlite"):
        migrations.upgrade(url)
        return
    raise UserError(f"the database at {redact(url)} is at revision {current or 'none'}, "
                    f"not {migrations.head_revision()}; run `verge db upgrade`")


def migrated_settings() -> Settings:
    """The settings, once their database is at the newest revision: for a command that checks
    its arguments first (``with_database`` does it before the command's body runs)."""
    settings = load_settings()
    ensure_migrated(settings)
    return settings


def find_batch_id(session, ref) -> int:
    """The id of the batch named or numbered ``ref``; an unknown one is the user's error."""
    from store.images import find_batch

    found = find_batch(session, ref)
    if found is None:
        raise UserError(f"no batch named or numbered {ref!r}")
    return found.id


def progress_bar(desc: str, unit: str = "img"):
    """A factory of tqdm bars on stderr (off when stderr is not a terminal): ``bar(total)``."""
    from tqdm import tqdm

    return lambda total: tqdm(total=total, desc=desc, unit=unit, disable=None, file=sys.stderr)
