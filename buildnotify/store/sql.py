"""The SQL of recording deliveries, as DBAPI text for one dialect.

The hot statements go straight to the DBAPI cursor, inside the SQLAlchemy
transaction: SQLAlchemy's own work per statement cost more than SQLite's.
The same SQL serves SQLite and PostgreSQL, only the placeholders differ;
datetimes are adapted here exactly as :class:`UTCDateTime` adapts them, so
what is stored reads back the same.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Connection, Dialect, Insert, Table
from sqlalchemy.dialects import postgresql, sqlite

from buildnotify.store.schema import UTCDateTime

_EVENT_COLUMNS = (
    "id, provider, project, pipeline, branch, sha, author_name, author_email, author_login, build_id,"
    " build_number, attempt, status, transition, url, started_at, finished_at, received_at, delivery_key"
)
_RUN_VALUES = "branch, seq, attempt, phase, moment, status, result, event_id"
_RUN_KEY = "provider, project, pipeline, build_id"
_FINISHED = (
    "SELECT provider, build_id, seq, result FROM builds"
    " WHERE project = ? AND pipeline = ? AND branch {} AND result IS NOT NULL {} ORDER BY seq DESC LIMIT ?"
)


class Statements:
    """The hot statements as DBAPI text for one dialect, and the datetime
    conversions of :class:`UTCDateTime` (``to_db``, ``from_db``)."""

    def __init__(self, dialect: Dialect) -> None:
        self.sqlite = dialect.name == "sqlite"
        self.mark = "?" if dialect.paramstyle == "qmark" else "%s"
        self.to_db: Callable[[datetime | None], Any] = _sqlite_time if self.sqlite else _utc_naive
        utc = UTCDateTime().dialect_impl(dialect)
        self.from_db: Callable[[Any], datetime | None] = utc.result_processor(dialect, None) or _same
        self.insert_event = self._marks(f"INSERT INTO events ({_EVENT_COLUMNS}) VALUES ({_marks(19)})")
        self.insert_delivery = self._marks(
            f"INSERT INTO deliveries (provider, key, source, received_at, event_count) VALUES ({_marks(5)})"
        )
        self.insert_run = self._marks(f"INSERT INTO builds ({_RUN_KEY}, {_RUN_VALUES}) VALUES ({_marks(12)})")
        self.update_run = self._marks(
            "UPDATE builds SET branch = ?, seq = ?, attempt = ?, phase = ?, moment = ?, status = ?,"
            " result = ?, event_id = ? WHERE provider = ? AND project = ? AND pipeline = ? AND build_id = ?"
        )
        self.finished = {
            (null, before): self._marks(
                _FINISHED.format("IS NULL" if null else "= ?", "AND seq < ?" if before else "")
            )
            for null in (False, True)
            for before in (False, True)
        }
        self.clear_claims = self._marks(
            "DELETE FROM claims WHERE project = ? AND pipeline = ? AND branch = ?"
        )
        # On SQLite the writer numbers the rows itself, under the write lock
        # (one executemany instead of an INSERT ... RETURNING per row); on
        # PostgreSQL the ids come from the column's own sequence.
        self.next_ids = (
            "SELECT coalesce(max(id), 0) + 1 FROM events"
            if self.sqlite
            else self._marks(
                "SELECT nextval(pg_get_serial_sequence('events', 'id')) FROM generate_series(1, ?)"
            )
        )

    def _marks(self, sql: str) -> str:
        return sql if self.mark == "?" else sql.replace("?", self.mark)

    def developers(self, emails: int, logins: int) -> str:
        """Developers by identity: one IN list per kind (an index search each)."""
        return self._marks(
            "SELECT i.kind, i.value, d.id, d.name FROM identities AS i JOIN developers AS d"
            f" ON d.id = i.developer_id WHERE (i.kind = 'email' AND i.value IN ({_marks(emails) or 'NULL'}))"
            f" OR (i.kind = 'login' AND i.value IN ({_marks(logins) or 'NULL'}))"
        )

    def known(self, count: int) -> str:
        return self._marks(f"SELECT key FROM deliveries WHERE provider = ? AND key IN ({_marks(count)})")

    def runs(self, count: int) -> str:
        """Runs by key, joined to a VALUES list: an index search per key on
        both backends (SQLite scans the whole index for a row-value IN)."""
        values = ", ".join([f"({_marks(4)})"] * count)
        return self._marks(
            "SELECT b.provider, b.project, b.pipeline, b.build_id,"
            " b.branch, b.seq, b.attempt, b.phase, b.moment, b.status, b.result"
            f" FROM (VALUES {values}) AS v JOIN builds AS b ON b.provider = v.column1"
            " AND b.project = v.column2 AND b.pipeline = v.column3 AND b.build_id = v.column4"
        )


@functools.cache
def statements(dialect: Dialect) -> Statements:
    """The statements for ``dialect``, built once."""
    return Statements(dialect)


def insert_ignore(conn: Connection, table: Table) -> Insert:
    """An INSERT that skips rows whose key is there already."""
    dialect = conn.dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    if dialect == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing()
    raise NotImplementedError(f"no insert-or-ignore for {dialect}")


def _marks(count: int) -> str:
    return ", ".join(["?"] * count)


def _same(value: Any) -> Any:
    return value


def _utc_naive(value: datetime | None) -> datetime | None:
    """What :class:`UTCDateTime` stores: naive UTC; a naive input is an error."""
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError("naive datetime given to a UTC column")
    if value.utcoffset():
        value = value.astimezone(timezone.utc)
    return value.replace(tzinfo=None)


def _sqlite_time(value: datetime | None) -> str | None:
    """As SQLAlchemy stores a SQLite DATETIME: 'YYYY-MM-DD HH:MM:SS.ffffff'."""
    if value is not None and value.tzinfo is timezone.utc:  # the usual case, in one C call
        return value.isoformat(" ", "microseconds")[:26]
    naive = _utc_naive(value)
    return None if naive is None else naive.isoformat(" ", "microseconds")
