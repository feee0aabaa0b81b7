"""Alembic environment: runs migrations on the URL verge passes in (see ``migrations.upgrade``).

SQLite needs two things Alembic's batch mode does not do by itself, or a migration that rebuilds
a table (copy, DROP, rename) loses rows or fails on real data:

* foreign keys OFF while it runs: with them on (store/db.py turns them on for every connection)
  dropping the old table deletes its rows first, cascading into every table that refers to it,
  or fails outright on a reference without a cascade. ``PRAGMA foreign_key_check`` runs before
  the commit instead, and a violation rolls the whole migration back.
* one real transaction around everything, DDL included: Python's sqlite3 module would otherwise
  commit each CREATE/DROP on its own, and a failure half-way would leave a half-migrated file.
"""
from pathlib import Path

from alembic import context
from sqlalchemy import create_engine, event
from sqlalchemy.pool import NullPool

from store.db import get_engine
from store.schema import Base

config = context.config
target_metadata = Base.metadata


def _sqlite_migration_engine(url: str):
    path = url.split("///", 1)[-1]
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, poolclass=NullPool, connect_args={"timeout": 30})

    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn, _record):
        dbapi_conn.isolation_level = None  # verge issues BEGIN itself (below), so DDL is inside
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA foreign_keys=OFF")  # a no-op inside a transaction: set before BEGIN
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn):
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def _check_foreign_keys(connection) -> None:
    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
    if broken:
        sample = ", ".join(f"{table} row {rowid} -> {parent}" for table, rowid, parent, _ in broken[:5])
        raise RuntimeError(f"migration rolled back: {len(broken)} rows break a foreign key ({sample})")


def run_migrations_online() -> None:
    url = config.get_main_option("sqlalchemy.url")
    sqlite = url.startswith("sqlite")
    engine = _sqlite_migration_engine(url) if sqlite else get_engine(url)
    try:
        with engine.connect() as connection:
            context.configure(connection=connection, target_metadata=target_metadata,
                              render_as_batch=sqlite,
                              # Alembic's SQLite default commits each migration on its own
                              transactional_ddl=True if sqlite else None)
            with context.begin_transaction():
                context.run_migrations()
                if sqlite:
                    _check_foreign_keys(connection)
            connection.commit()
    finally:
        if sqlite:
            engine.dispose()


if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata,
                      literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations_online()
