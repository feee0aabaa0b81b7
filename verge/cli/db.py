"""``verge db``: the database schema (Alembic migrations)."""
from __future__ import annotations

import click

from verge.clikit import friendly, load_settings, redact


@click.group()
def db():
    """Database schema (Alembic migrations)."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
@friendly
def db_upgrade(revision):
    """Create or migrate the schema to the newest revision."""
    import migrations

    url = load_settings().resolved_database_url
    migrations.upgrade(url, revision)
    click.echo(f"database {redact(url)} is at revision {migrations.current_revision(url)}")


@db.command("current")
@friendly
def db_current():
    """Print the schema revision of the database."""
    import migrations

    click.echo(migrations.current_revision(load_settings().resolved_database_url) or "none (empty database)")
