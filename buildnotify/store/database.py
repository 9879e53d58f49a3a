"""Engines and migrations: SQLite (durable, WAL) by default, PostgreSQL by URL."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event, exc, text
from sqlalchemy.engine import make_url

from buildnotify.store import locks

log = logging.getLogger(__name__)
T = TypeVar("T")


class Unreachable(Exception):
    """The database cannot be connected to (a SQLite file: opened). The
    message is one line for people: where the database is, never its
    password, and the driver's reason without SQLAlchemy's boilerplate."""


def normalize_url(url_or_path: str) -> str:
    """Accept a SQLAlchemy URL or a plain file path (``--db hub.db``); plain
    ``postgresql://`` URLs get the psycopg 3 driver we install."""
    if "://" not in url_or_path:
        return "sqlite:///" + str(Path(url_or_path).expanduser().resolve())
    url = make_url(url_or_path)
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    return url.render_as_string(hide_password=False)


def display_url(url_or_path: str) -> str:
    """The database's address without its password, for logs and messages."""
    if "://" not in url_or_path:
        return url_or_path
    return make_url(url_or_path).render_as_string(hide_password=True)


def sqlite_file(url_or_path: str) -> Path | None:
    """The file behind a SQLite URL (None for other databases and :memory:)."""
    url = make_url(normalize_url(url_or_path))
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return Path(url.database)


def create(url_or_path: str, name: str = "buildnotify", **kwargs: object) -> Engine:
    """``name``: PostgreSQL's application_name for the connections, so an
    operator sees which hub node holds which connection."""
    url = make_url(normalize_url(url_or_path))
    if url.get_backend_name() == "sqlite":
        engine = create_engine(url, connect_args={"timeout": 30}, **kwargs)
        if url.database and url.database != ":memory:":
            path = Path(url.database)
            path.parent.mkdir(parents=True, exist_ok=True)
            event.listen(engine, "do_connect", lambda *_: _create_private(path))
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    # no pool_pre_ping: a round trip per checkout; the writer and the readers
    # retry once on a connection the database dropped instead
    # TCP keepalives: a connection cut by the network (no FIN, no RST) is
    # noticed within about a minute rather than hanging a LISTEN or a read
    alive = {"keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10, "keepalives_count": 3}
    return create_engine(url, connect_args={"application_name": name[:63], **alive}, **kwargs)


def once_more_if_dropped(attempt: Callable[[], T], who: str) -> T:
    """``attempt()``, and once more if it failed because the database
    dropped the connection (a restart, ``pg_terminate_backend``): SQLAlchemy
    has invalidated the pool by then, so the second try gets a new one, and
    nothing of the first was committed."""
    try:
        return attempt()
    except exc.DBAPIError as e:
        if not e.connection_invalidated:
            raise
        log.warning("the database dropped the %s's connection; once more on a new one", who)
        return attempt()


def reach(engine: Engine, url_or_path: str) -> None:
    """Connect once, so that a database that cannot be reached is reported,
    as :class:`Unreachable`, before any work starts."""
    try:
        with engine.connect():
            pass
    except exc.DBAPIError as e:
        verb = "open" if sqlite_file(url_or_path) else "reach"
        raise Unreachable(f"cannot {verb} the database at {display_url(url_or_path)}: {_reason(e)}") from None


def _reason(error: exc.DBAPIError) -> str:
    """The driver's first line, without what the message names already:
    psycopg's 'connection failed: connection to server at "HOST", port N
    failed: FATAL:  WHY' becomes 'WHY'."""
    lines = str(error.orig).strip().splitlines() or [type(error.orig).__name__]
    reason = lines[0].rsplit(" failed: ", 1)[-1].removeprefix("FATAL:").strip()
    return reason[:1].lower() + reason[1:]


def _create_private(path: Path) -> None:
    """Create the database file readable by its owner only, before SQLite
    would create it with the umask's mode: it holds developers' identities
    and token hashes. SQLite gives the -wal and -shm files it creates beside
    it the same mode. An existing file is left as it is."""
    with contextlib.suppress(OSError):  # there already, or SQLite will say why it cannot open it
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))


def _sqlite_pragmas(dbapi_connection: object, _record: object) -> None:
    # WAL lets readers run beside the writer; synchronous=FULL makes each
    # commit durable across power loss, not just across a process crash.
    cursor = dbapi_connection.cursor()  # type: ignore[attr-defined]
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def alembic_config(engine: Engine | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(resources.files("buildnotify.migrations")))
    config.attributes["engine"] = engine
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the database to ``revision``; a no-op when it is there already.
    On PostgreSQL under a lock: nodes that start together migrate once (the
    others wait, then find the database at ``revision``). Logs one line
    when it changed the schema (Alembic's own steps only with ``serve -v``)."""

    def migrate() -> None:
        before = current_revision(engine)
        command.upgrade(alembic_config(engine), revision)
        after = current_revision(engine)
        if after != before:
            log.info("database schema upgraded from %s to %s", before or "nothing", after)

    if engine.dialect.name != "postgresql":
        migrate()
        return
    with engine.connect() as conn:
        key = locks.key(locks.schema(conn), locks.MIGRATIONS)
        conn.execute(text("select pg_advisory_lock(:key)"), {"key": key})
        try:
            migrate()
        finally:
            conn.execute(text("select pg_advisory_unlock(:key)"), {"key": key})
            conn.commit()


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


@functools.cache
def head_revision() -> str | None:
    """The newest migration this installation ships (read once: it cannot
    change while the process runs)."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def not_ready(conn: Connection) -> str | None:
    """Why a hub on this database cannot store webhooks now (its schema is
    not the one this code writes), or None when it can."""
    from alembic.runtime.migration import MigrationContext

    current = MigrationContext.configure(conn).get_current_revision()
    head = head_revision()
    if current == head:
        return None
    if current is None:
        return f"the database has no schema yet (run: buildnotify-cli db upgrade; head is {head})"
    return f"the database is at migration {current}, this hub needs {head} (run: buildnotify-cli db upgrade)"


def describe(error: BaseException) -> str:
    """One line for people on why a database operation failed (the driver's
    reason, without SQLAlchemy's boilerplate or the URL)."""
    if isinstance(error, exc.DBAPIError):
        return _reason(error)
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
