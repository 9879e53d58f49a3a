"""PostgreSQL advisory lock keys, one per purpose and database schema (the
tests give each test a schema of its own in one database)."""

from __future__ import annotations

import hashlib

from sqlalchemy import Connection, text

#: the stream's order (store/stream.py), migrations, the pruner
STREAM, MIGRATIONS, PRUNER = "stream", "migrations", "pruner"


def schema(conn: Connection) -> str:
    return conn.execute(text("select current_schema()")).scalar_one()


def key(schema_name: str, purpose: str) -> int:
    digest = hashlib.sha256(f"buildnotify.{schema_name}.{purpose}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def try_transaction_lock(conn: Connection, purpose: str) -> bool:
    """Take ``purpose``'s lock until the transaction ends, if no one holds it."""
    statement = text("select pg_try_advisory_xact_lock(:key)")
    return bool(conn.execute(statement, {"key": key(schema(conn), purpose)}).scalar_one())
