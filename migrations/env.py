"""Alembic environment: runs against the engine buildnotify hands in
(``config.attributes["engine"]``), or ``BUILDNOTIFY_DB`` for the alembic CLI."""

import os

from alembic import context

from buildnotify.store import database
from buildnotify.store.schema import metadata

engine = context.config.attributes.get("engine")
if engine is None:
    engine = database.create(os.environ.get("BUILDNOTIFY_DB", "buildnotify.db"))

with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
