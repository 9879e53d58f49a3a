"""``GET /cctray.xml``: the hub's branches in the cctray format that CCMenu,
Nevergreen, BuildNotify and other build monitors poll.

One ``<Project>`` per (project, pipeline, branch), named
``"<project> :: <pipeline> :: <branch>"`` (``"<project> :: <pipeline>"`` for
builds without a branch). Private projects are shown only to their members,
who authenticate with HTTP Basic (developer name, token). The database is
read on the store's reader threads, never on the reactor thread. Documented
in ``docs/cctray.md``.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import logging
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone

from sqlalchemy import Connection, func, select
from twisted.python.failure import Failure
from twisted.web import resource, server

from buildnotify.events import BuildEvent, Status
from buildnotify.store import Store, accounts, personal
from buildnotify.store.rows import event_from_row
from buildnotify.store.schema import builds, events

log = logging.getLogger("buildnotify.feeds")

REALM = "buildnotify"
SEPARATOR = " :: "

#: The hub's counting statuses as cctray's ``lastBuildStatus``. Cancelled and
#: skipped runs say nothing about the code's health: the row shows the
#: branch's newest run that counts (``personal.latest_states``), and a branch
#: with none yet is Unknown.
LAST_BUILD_STATUS: dict[Status, str] = {
    Status.SUCCESS: "Success",
    Status.FAILURE: "Failure",
    Status.ERROR: "Exception",
}
UNKNOWN = "Unknown"
BUILDING, SLEEPING = "Building", "Sleeping"

#: Characters XML 1.0 cannot carry at all, even escaped.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


class Unauthorized(Exception):
    """The request gets 401 and a Basic challenge; the message is the answer's."""


@dataclasses.dataclass(frozen=True, slots=True)
class FeedProject:
    """One ``<Project>`` of the feed."""

    name: str
    activity: str
    last_build_status: str
    last_build_label: str
    last_build_time: str
    web_url: str

    def attributes(self) -> dict[str, str]:
        return {
            "name": self.name,
            "activity": self.activity,
            "lastBuildStatus": self.last_build_status,
            "lastBuildLabel": self.last_build_label,
            "lastBuildTime": self.last_build_time,
            "webUrl": self.web_url,
        }


Key = tuple[str, str, str | None]  # project, pipeline, branch


# -- reading (on a reader thread) -----------------------------------------------------


def feed(
    conn: Connection,
    credentials: tuple[str, str] | None = None,
    projects: Sequence[str] = (),
    pipelines: Sequence[str] = (),
    branches: Sequence[str] = (),
) -> list[FeedProject]:
    """The feed's projects, by project, pipeline and branch (no branch first).

    ``credentials`` is (developer name, token) or None (anonymous); empty
    filters keep everything. Raises :class:`Unauthorized` for credentials
    that do not check out, and when ``projects`` names a private project the
    requester may not see (rather than answering as if it had no builds).
    """
    developer_id = None
    if credentials is not None:
        developer_id = accounts.check_token(conn, *credentials)
        if developer_id is None:
            raise Unauthorized("invalid developer name or token")
    hidden = accounts.private_projects(conn)
    if hidden and developer_id is not None:
        hidden -= accounts.memberships(conn, developer_id)
    if projects:
        if hidden.intersection(projects):
            raise Unauthorized(
                "authentication required: send your developer name and token (HTTP Basic)"
                if developer_id is None
                else "not a member of every project asked for"
            )
        names = set(projects)
    else:
        names = set(conn.scalars(select(builds.c.project).distinct())) - hidden
    if not names:
        return []

    def wanted(key: Key) -> bool:
        _, pipeline, branch = key
        return (not pipelines or pipeline in pipelines) and (not branches or branch in branches)

    newest = _newest_runs(conn, names, pipelines, branches)
    finished = {key: event for event in personal.latest_states(conn, names) if wanted(key := _key(event))}
    # A branch without a run that counts yet shows its newest run (in progress,
    # cancelled or skipped).
    missing = [
        event_id for key, (_, event_id) in newest.items() if key not in finished and event_id is not None
    ]
    building = _events(conn, missing)
    found = []
    for key in sorted(newest.keys() | finished.keys(), key=_order):
        phase, event_id = newest.get(key, (2, None))
        event = finished.get(key) or building.get(event_id)
        if event is None:
            continue  # a run row without its event: nothing to show yet
        found.append(_project(key, phase < 2, event if key in finished else None, event))
    return found


def _newest_runs(
    conn: Connection, names: Iterable[str], pipelines: Sequence[str], branches: Sequence[str]
) -> dict[Key, tuple[int, int | None]]:
    """(phase, event id) of the newest run (highest ``seq``) of each branch."""
    rank = (
        func.row_number()
        .over(
            partition_by=(builds.c.project, builds.c.pipeline, builds.c.branch),
            order_by=(builds.c.seq.desc(), builds.c.id.desc()),
        )
        .label("rank")
    )
    ranked = select(
        builds.c.project, builds.c.pipeline, builds.c.branch, builds.c.phase, builds.c.event_id, rank
    ).where(builds.c.project.in_(sorted(names)))
    if pipelines:
        ranked = ranked.where(builds.c.pipeline.in_(sorted(set(pipelines))))
    if branches:
        ranked = ranked.where(builds.c.branch.in_(sorted(set(branches))))
    ranked = ranked.subquery()
    query = select(ranked).where(ranked.c.rank == 1)
    return {(row.project, row.pipeline, row.branch): (row.phase, row.event_id) for row in conn.execute(query)}


def _events(conn: Connection, ids: Sequence[int]) -> dict[int, BuildEvent]:
    if not ids:
        return {}
    rows = conn.execute(select(events).where(events.c.id.in_(sorted(set(ids)))))
    return {row.id: event_from_row(row._mapping) for row in rows}


def _key(event: BuildEvent) -> Key:
    return (event.project, event.pipeline, event.branch)


def _order(key: Key) -> tuple[str, str, bool, str]:
    project, pipeline, branch = key
    return (project, pipeline, branch is not None, branch or "")


def project_name(project: str, pipeline: str, branch: str | None) -> str:
    """``"acme/widget :: ci :: main"``; ``"acme/widget :: ci"`` without a branch."""
    return SEPARATOR.join(part for part in (project, pipeline, branch) if part is not None)


def _project(key: Key, building: bool, last: BuildEvent | None, shown: BuildEvent) -> FeedProject:
    """``last`` is the newest finished run that counts (None if there is none yet);
    ``shown`` gives the label, time and URL: ``last``, else the run in progress."""
    return FeedProject(
        name=project_name(*key),
        activity=BUILDING if building else SLEEPING,
        last_build_status=LAST_BUILD_STATUS.get(last.status, UNKNOWN) if last is not None else UNKNOWN,
        last_build_label=str(shown.build_number) if shown.build_number is not None else shown.build_id,
        last_build_time=_iso(
            (shown.finished_at if last is not None else shown.started_at) or shown.received_at
        ),
        web_url=shown.url or "",
    )


def _iso(moment: datetime | None) -> str:
    """ISO 8601 to the second, always with the UTC offset (``+00:00``)."""
    if moment is None:  # received_at is never empty; this is only a guard
        moment = datetime.fromtimestamp(0, timezone.utc)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).isoformat(timespec="seconds")


def to_xml(projects: Iterable[FeedProject]) -> bytes:
    """The ``<Projects>`` document, UTF-8 with an XML declaration."""
    root = ET.Element("Projects")
    for project in projects:
        attributes = {name: _NOT_XML.sub("\ufffd", value) for name, value in project.attributes().items()}
        ET.SubElement(root, "Project", attributes)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"


# -- HTTP (on the reactor thread) -----------------------------------------------------------


def basic_credentials(header: bytes | None) -> tuple[str, str] | None:
    """(name, token) from an ``Authorization: Basic`` header; None without
    the header; :class:`Unauthorized` for any other scheme or a malformed one."""
    if header is None:
        return None
    scheme, _, encoded = header.strip().partition(b" ")
    if scheme.lower() != b"basic":
        raise Unauthorized("only HTTP Basic authentication is accepted here")
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise Unauthorized("malformed Basic credentials") from None
    name, colon, token = decoded.partition(":")
    if not colon or not name or not token:
        raise Unauthorized("Basic credentials are the developer name and a token")
    return name, token


def _error(request: server.Request, code: int, message: str) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    if code == 401:
        request.setHeader(b"www-authenticate", f'Basic realm="{REALM}"'.encode())
    return json.dumps({"error": message}).encode() + b"\n"


class CCTrayResource(resource.Resource):
    """``/cctray.xml`` (``?project=``, ``?pipeline=``, ``?branch=``, each repeatable)."""

    isLeaf = True

    def __init__(self, store: Store) -> None:
        super().__init__()
        self.store = store

    def render(self, request: server.Request) -> bytes | int:
        if any(request.postpath):
            return _error(request, 404, "not found; the feed is /cctray.xml")
        if request.method not in (b"GET", b"HEAD"):
            request.setHeader(b"allow", b"GET, HEAD")
            return _error(request, 405, "the cctray feed is read with GET")
        try:
            credentials = basic_credentials(request.getHeader(b"authorization"))
        except Unauthorized as e:
            log.info("cctray: 401 %s", e)
            return _error(request, 401, str(e))
        d = self.store.read(
            feed,
            credentials=credentials,
            projects=self._args(request, b"project"),
            pipelines=self._args(request, b"pipeline"),
            branches=self._args(request, b"branch"),
        )
        finished = request.notifyFinish()
        finished.addErrback(lambda _: None)  # the poller hung up; nothing to answer
        d.addCallbacks(self._found, self._failed, callbackArgs=(request,), errbackArgs=(request,))
        return server.NOT_DONE_YET

    @staticmethod
    def _args(request: server.Request, name: bytes) -> list[str]:
        values = (v.decode("utf-8", "replace").strip() for v in request.args.get(name, []))
        return list(dict.fromkeys(v for v in values if v))

    def _found(self, projects: list[FeedProject], request: server.Request) -> None:
        body = to_xml(projects)
        request.setResponseCode(200)
        request.setHeader(b"content-type", b"application/xml; charset=utf-8")
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"content-length", b"%d" % len(body))
        self._finish(request, body)

    def _failed(self, failure: Failure, request: server.Request) -> None:
        if failure.check(Unauthorized):
            # Only the reason: never the credentials (a token pasted into the
            # name field would be a token in the log).
            log.info("cctray: 401 %s", failure.getErrorMessage())
            self._finish(request, _error(request, 401, failure.getErrorMessage()))
            return
        log.error("cctray: reading the store failed: %s", failure.getErrorMessage(), exc_info=failure.value)
        self._finish(request, _error(request, 503, "the event store is unavailable; retry later"))

    @staticmethod
    def _finish(request: server.Request, body: bytes) -> None:
        if not request._disconnected:
            request.write(body)
            request.finish()
