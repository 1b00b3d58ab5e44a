from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool, text

from wooflow.db.tables import metadata

config = context.config


def run_migrations_online() -> None:
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no sqlalchemy.url: run migrations through `wooflow migrate`")
    engine = create_engine(url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        # Several processes may run `wooflow migrate` at once (a Job and a test run):
        # serialise them with an advisory lock so only one applies each revision.
        connection.execute(text("SELECT pg_advisory_lock(74657301)"))
        try:
            context.configure(connection=connection, target_metadata=metadata)
            with context.begin_transaction():
                context.run_migrations()
        finally:
            connection.execute(text("SELECT pg_advisory_unlock(74657301)"))
            connection.commit()


if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=metadata,
                      literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations_online()
