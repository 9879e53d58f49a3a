"""Which node holds each developer's attached client, when several hub
nodes share the database: a login on another node asks that one whether
its client is still alive (``refuse-new``), and a node that restarts
forgets the clients it held before."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, delete, select
from sqlalchemy.dialects import postgresql

from buildnotify.events import utcnow
from buildnotify.store.schema import developer_clients


def hold(conn: Connection, developer: str, node: str, nonce: str) -> None:
    """``node`` now holds ``developer``'s client (PostgreSQL only: several nodes)."""
    values = {"developer": developer, "node": node, "nonce": nonce, "attached_at": utcnow()}
    statement = postgresql.insert(developer_clients).values(**values)
    conn.execute(
        statement.on_conflict_do_update(
            index_elements=[developer_clients.c.developer],
            set_={k: statement.excluded[k] for k in ("node", "nonce", "attached_at")},
        )
    )


def release(conn: Connection, developer: str, nonce: str) -> None:
    conn.execute(
        delete(developer_clients).where(
            developer_clients.c.developer == developer, developer_clients.c.nonce == nonce
        )
    )


def holder(conn: Connection, developer: str) -> Any:
    """The row (node, nonce) of ``developer``'s attached client, or None."""
    query = select(developer_clients.c.node, developer_clients.c.nonce).where(
        developer_clients.c.developer == developer
    )
    return conn.execute(query).first()


def forget_node(conn: Connection, node: str) -> None:
    conn.execute(delete(developer_clients).where(developer_clients.c.node == node))
