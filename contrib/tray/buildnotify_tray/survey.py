"""What the hub lets the user see, asked without disturbing anyone.

- :func:`visible_projects`: every project the session may see (the hub's
  ``projects()``), with builds or not.
- :func:`recent_events`: the newest events, which tell which builds are
  running now (``status()`` has finished builds only).
- :func:`find_hidden`: which of the projects asked for the hub refuses to
  show (no such project, or private), and the visible ones, through a
  session without a mind, which replaces no client of the user's. The tray
  asks only after the hub refused to watch, so that one such project no
  longer stops it all.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from twisted.internet.endpoints import clientFromString
from twisted.spread import pb

from buildnotify.protocol import SECURITY, NotAllowed, raised_remotely

HISTORY_LIMIT = 1000  # the most the hub's history() returns
SURVEY_TIMEOUT = 30.0


async def recent_events(call: Callable[..., Awaitable[Any]]) -> list[dict[str, Any]]:
    """The newest events the session may see, newest first; ``call`` is
    ``WatchClient.call`` (or any ``callRemote``)."""
    events = await call("history", None, HISTORY_LIMIT)
    return [e for e in events or () if isinstance(e, dict) and e.get("project")]


async def visible_projects(call: Callable[..., Awaitable[Any]]) -> list[str]:
    """Every project the session may see; ``call`` as for :func:`recent_events`."""
    rows = await call("projects")
    return sorted(
        r["project"] for r in rows or () if isinstance(r, dict) and isinstance(r.get("project"), str)
    )


def refused(error: BaseException) -> bool:
    """Whether ``error`` is the hub saying no (rather than a lost connection)."""
    return raised_remotely(error, NotAllowed)


async def find_hidden(
    reactor: Any, hub: str, user: str | None, token: str | None, projects: Sequence[str] | None
) -> tuple[list[str], list[str], list[str]]:
    """(the projects asked for, those of them the hub refuses to show, the
    visible projects). ``projects`` None: a developer's watched ones. The
    caller bounds it in time (:data:`SURVEY_TIMEOUT`)."""
    factory = pb.PBClientFactory(security=SECURITY)
    broker = await clientFromString(reactor, hub).connect(factory)
    try:
        root = await factory.getRootObject()
        if user is None:
            perspective = await root.callRemote("loginAnonymous", None)
        else:
            perspective = await root.callRemote("login", user, token, None)
        if projects is None:
            saved = await perspective.callRemote("settings")
            projects = sorted(p for p, s in saved.items() if s.get("watching"))
        hidden = []
        for project in projects:
            try:
                await perspective.callRemote("status", [project])
            except pb.RemoteError as e:
                if not refused(e):
                    raise
                hidden.append(project)
        return list(projects), hidden, await visible_projects(perspective.callRemote)
    finally:
        if broker.transport is not None:
            broker.transport.loseConnection()
