"""Alembic environment: configured in code (no alembic.ini), run by ``DecisionLog.migrate()``.

``DecisionLog.migrate`` passes its open connection in ``config.attributes["connection"]``; the
``alembic`` command line can still be used with ``-x url=...`` for development.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from service.records.models import Base

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no database: pass -x url=... or run through DecisionLog.migrate()")
    return url


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things in place; batch mode rebuilds tables for later migrations.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )


def run_migrations_offline() -> None:
    from service.records.store import normalise_database_url

    context.configure(url=normalise_database_url(_url()), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    from service.records.store import create_records_engine

    engine = create_records_engine(_url())
    try:
        with engine.begin() as own_connection:
            _configure(own_connection)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
