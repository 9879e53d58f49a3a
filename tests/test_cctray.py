"""``GET /cctray.xml`` over real loopback HTTP on SQLite and PostgreSQL: the
cctray schema's values per branch, filters, and private projects behind
HTTP Basic."""

from __future__ import annotations

import base64
import json
import logging
import re
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta, timezone
from typing import Any

import treq
from sqlalchemy import text

from buildnotify.store import accounts
from tests.support import RunningHub, per_backend

#: The cctray schema's enumerations and required attributes.
ACTIVITIES = {"Sleeping", "Building", "CheckingModifications"}
STATUSES = {"Success", "Failure", "Exception", "Unknown"}
ATTRIBUTES = {"name", "activity", "lastBuildStatus", "lastBuildLabel", "lastBuildTime", "webUrl"}
#: xs:dateTime with a mandatory zone: what lastBuildTime must look like.
ISO_8601 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)")

#: A name that needs escaping, and a character XML cannot carry (a noncharacter:
#: ingest removes control characters, so one of those never reaches the feed).
ODD = 'odd & "quoted" <proj>\uffff'


def basic(name: str, token: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{name}:{token}".encode()).decode()}


class CCTrayTests:
    backend = "sqlite"

    async def start(self) -> RunningHub:
        self.hub = await RunningHub.start(self, self.backend)
        return self.hub

    async def fetch(
        self, query: str = "", headers: dict[str, str] | None = None, method: str = "GET"
    ) -> tuple[int, Any, bytes]:
        response = await treq.request(
            method, f"{self.hub.url}/cctray.xml{query}", headers=headers or {}, pool=self.hub.pool
        )
        body = await response.content()
        self.length = response.length  # Content-Length (not among the client's headers)
        return response.code, response.headers, body

    async def projects(self, query: str = "", headers: dict[str, str] | None = None) -> dict[str, dict]:
        """The feed's projects by name, each checked against the schema."""
        code, response_headers, body = await self.fetch(query, headers)
        self.assertEqual(code, 200, body)
        self.assertEqual(response_headers.getRawHeaders("content-type"), ["application/xml; charset=utf-8"])
        root = ET.fromstring(body)
        self.assertEqual(root.tag, "Projects")
        found = {}
        for element in root:
            self.assertEqual(element.tag, "Project")
            self.assertEqual(set(element.attrib), ATTRIBUTES)
            self.assertIn(element.get("activity"), ACTIVITIES)
            self.assertIn(element.get("lastBuildStatus"), STATUSES)
            self.assertRegex(element.get("lastBuildTime"), ISO_8601)
            self.assertIsNotNone(datetime.fromisoformat(element.get("lastBuildTime")).tzinfo)
            self.assertNotIn(element.get("name"), found)
            found[element.get("name")] = dict(element.attrib)
        return found

    async def developer(self, name: str, *member_of: str) -> str:
        """A developer with a token, member of the given projects; the token."""

        def create(conn: Any) -> str:
            accounts.add_developer(conn, name)
            for project in member_of:
                accounts.add_member(conn, project, name)
            return accounts.issue_token(conn, name)

        return await self.hub.hub.store.write(create)

    async def make_private(self, project: str) -> None:
        await self.hub.hub.store.write(lambda conn: accounts.set_private(conn, project, True))

    # -- the feed --------------------------------------------------------------------------

    async def test_each_branch_is_one_project_with_the_schemas_values(self) -> None:
        hub = await self.start()
        finished = "2024-05-14T03:41:12+02:00"
        url = "https://ci.acme.example/widget/5"
        await hub.build("acme/widget", 1, "success", finished_at="2024-05-14T00:00:00Z")
        await hub.build("acme/widget", 2, "running")  # main: green, building again
        await hub.build("acme/widget", 5, "failure", branch="red", url=url, finished_at=finished)
        await hub.build("acme/widget", 3, "error", branch="broken")
        await hub.build("acme/widget", 10, "failure", branch="stopped")
        await hub.build("acme/widget", 11, "cancelled", branch="stopped")
        await hub.build("acme/widget", 12, "skipped", branch="skipped")
        await hub.build("acme/widget", 13, "queued", branch="fresh", url="https://ci/q/13")
        await hub.build("acme/gadget", None, "success", pipeline="deploy", branch=None, build_id="d-7f3")
        await hub.build(ODD, 4, "success")
        stored = {(e.project, e.branch, e.build_id): e for e in await hub.events()}

        feed = await self.projects()

        def received(project: str, branch: str | None, build_id: str) -> str:
            moment = stored[(project, branch, build_id)].received_at
            return moment.astimezone(timezone.utc).isoformat(timespec="seconds")

        expected = {
            "acme/gadget :: deploy": (
                "Sleeping",
                "Success",
                "d-7f3",
                received("acme/gadget", None, "d-7f3"),
                "",
            ),
            "acme/widget :: ci :: broken": (
                "Sleeping",
                "Exception",
                "3",
                received("acme/widget", "broken", "3"),
                "",
            ),
            "acme/widget :: ci :: fresh": (
                "Building",
                "Unknown",
                "13",
                received("acme/widget", "fresh", "13"),
                "https://ci/q/13",
            ),
            "acme/widget :: ci :: main": ("Building", "Success", "1", "2024-05-14T00:00:00+00:00", ""),
            "acme/widget :: ci :: red": ("Sleeping", "Failure", "5", "2024-05-14T01:41:12+00:00", url),
            "acme/widget :: ci :: skipped": (
                "Sleeping",
                "Unknown",
                "12",
                received("acme/widget", "skipped", "12"),
                "",
            ),
            "acme/widget :: ci :: stopped": (  # cancelled #11 does not count: #10 failed
                "Sleeping",
                "Failure",
                "10",
                received("acme/widget", "stopped", "10"),
                "",
            ),
            'odd & "quoted" <proj>\ufffd :: ci :: main': (
                "Sleeping",
                "Success",
                "4",
                received(ODD, "main", "4"),
                "",
            ),
        }
        got = {
            name: (p["activity"], p["lastBuildStatus"], p["lastBuildLabel"], p["lastBuildTime"], p["webUrl"])
            for name, p in feed.items()
        }
        self.assertEqual(got, expected)
        # Times are the hub's own clock where the CI sent none: recent, in UTC.
        fresh = datetime.fromisoformat(feed["acme/widget :: ci :: fresh"]["lastBuildTime"])
        self.assertLess(abs(datetime.now(timezone.utc) - fresh), timedelta(minutes=5))
        self.assertEqual(fresh.utcoffset(), timedelta(0))

    async def test_a_build_that_finishes_updates_its_row(self) -> None:
        hub = await self.start()
        self.assertEqual(await self.projects(), {})
        await hub.build("acme/widget", 7, "running")
        [row] = (await self.projects()).values()
        self.assertEqual((row["activity"], row["lastBuildStatus"]), ("Building", "Unknown"))
        await hub.build("acme/widget", 7, "failure", finished_at="2024-05-14T10:00:00Z")
        [row] = (await self.projects()).values()
        self.assertEqual(
            (row["activity"], row["lastBuildStatus"], row["lastBuildLabel"], row["lastBuildTime"]),
            ("Sleeping", "Failure", "7", "2024-05-14T10:00:00+00:00"),
        )
        await hub.build("acme/widget", 8, "queued")
        [row] = (await self.projects()).values()
        self.assertEqual(
            (row["activity"], row["lastBuildStatus"], row["lastBuildLabel"]), ("Building", "Failure", "7")
        )

    async def test_a_cancelled_or_skipped_run_does_not_change_the_branchs_state(self) -> None:
        hub = await self.start()
        url = "https://ci.example.com/7"
        await hub.build("acme/widget", 7, "failure", url=url, finished_at="2024-05-14T10:00:00Z")
        await hub.build("acme/widget", 8, "running")
        await hub.build("acme/widget", 8, "cancelled")
        [row] = (await self.projects()).values()
        self.assertEqual(
            (row["activity"], row["lastBuildStatus"], row["lastBuildLabel"], row["webUrl"]),
            ("Sleeping", "Failure", "7", url),
            "a cancelled run after a failure must leave the branch failing",
        )
        await hub.build("acme/widget", 9, "success")
        await hub.build("acme/widget", 10, "skipped")
        [row] = (await self.projects()).values()
        self.assertEqual((row["lastBuildStatus"], row["lastBuildLabel"]), ("Success", "9"))

    async def test_filters_by_project_branch_and_pipeline(self) -> None:
        hub = await self.start()
        await hub.build("acme/widget", 1, "success")
        await hub.build("acme/widget", 2, "failure", branch="dev")
        await hub.build("acme/widget", 3, "success", pipeline="nightly")
        await hub.build("acme/gadget", 4, "success")
        await hub.build("acme/gizmo", 5, "error", branch=None)
        everything = set(await self.projects())
        self.assertEqual(
            everything,
            {
                "acme/gadget :: ci :: main",
                "acme/gizmo :: ci",
                "acme/widget :: ci :: dev",
                "acme/widget :: ci :: main",
                "acme/widget :: nightly :: main",
            },
        )
        cases = {
            "?project=acme/widget": {
                "acme/widget :: ci :: dev",
                "acme/widget :: ci :: main",
                "acme/widget :: nightly :: main",
            },
            "?project=acme/widget&project=acme/gizmo": {
                "acme/gizmo :: ci",
                "acme/widget :: ci :: dev",
                "acme/widget :: ci :: main",
                "acme/widget :: nightly :: main",
            },
            "?branch=main": {
                "acme/gadget :: ci :: main",
                "acme/widget :: ci :: main",
                "acme/widget :: nightly :: main",
            },
            "?pipeline=nightly": {"acme/widget :: nightly :: main"},
            "?project=acme/widget&branch=main&pipeline=ci": {"acme/widget :: ci :: main"},
            "?branch=dev&branch=main&pipeline=ci": {
                "acme/gadget :: ci :: main",
                "acme/widget :: ci :: dev",
                "acme/widget :: ci :: main",
            },
            "?project=acme/nothing": set(),
            "?project=acme%2Fwidget&branch=": everything - {"acme/gadget :: ci :: main", "acme/gizmo :: ci"},
        }
        for query, names in cases.items():
            self.assertEqual(set(await self.projects(query)), names, query)

    # -- private projects --------------------------------------------------------------------

    async def test_private_projects_are_for_their_members(self) -> None:
        hub = await self.start()
        await hub.build("acme/widget", 1, "success")
        await hub.build("secret/engine", 2, "failure")
        await self.make_private("secret/engine")
        ada = await self.developer("ada", "secret/engine")
        bob = await self.developer("bob")
        public = {"acme/widget :: ci :: main"}
        both = public | {"secret/engine :: ci :: main"}

        self.assertEqual(set(await self.projects()), public)
        self.assertEqual(set(await self.projects(headers=basic("ada", ada))), both)
        self.assertEqual(set(await self.projects(headers=basic("bob", bob))), public)
        self.assertEqual(
            set(await self.projects("?project=secret/engine", basic("ada", ada))),
            {"secret/engine :: ci :: main"},
        )
        self.assertEqual(set(await self.projects("?project=acme/widget", basic("bob", bob))), public)

        refused = {
            "anonymous, naming it": ("?project=secret/engine", {}),
            "anonymous, naming it among others": ("?project=acme/widget&project=secret/engine", {}),
            "a non-member naming it": ("?project=secret/engine", basic("bob", bob)),
            "a wrong token": ("", basic("ada", bob)),
            "an unknown developer": ("", basic("eve", ada)),
            "an empty token": ("", basic("ada", "")),
            "no colon": ("", {"Authorization": "Basic " + base64.b64encode(b"ada").decode()}),
            "not base64": ("", {"Authorization": "Basic !!!"}),
            "a bearer token": ("", {"Authorization": f"Bearer {ada}"}),
        }
        for case, (query, headers) in refused.items():
            code, response_headers, body = await self.fetch(query, headers)
            self.assertEqual(code, 401, case)
            self.assertEqual(
                response_headers.getRawHeaders("www-authenticate"), ['Basic realm="buildnotify"'], case
            )
            self.assertNotIn(b"secret/engine ::", body, case)
            self.assertNotIn(ada.encode(), body, case)

    async def test_the_token_is_never_logged(self) -> None:
        hub = await self.start()
        await hub.build("secret/engine", 1, "failure")
        await self.make_private("secret/engine")
        token = await self.developer("ada", "secret/engine")
        records: list[logging.LogRecord] = []
        handler = logging.Handler(logging.DEBUG)
        handler.emit = records.append  # type: ignore[method-assign]
        logger = logging.getLogger()
        logger.addHandler(handler)
        self.addCleanup(logger.removeHandler, handler)
        level = logger.level
        logger.setLevel(logging.DEBUG)
        self.addCleanup(logger.setLevel, level)

        self.assertEqual(len(await self.projects(headers=basic("ada", token))), 1)
        self.assertEqual((await self.fetch("", basic("ada", token[:-1])))[0], 401)
        self.assertEqual((await self.fetch("", basic(token, token)))[0], 401)  # pasted in both fields
        self.assertEqual((await self.fetch("", {"Authorization": "Basic !" + token}))[0], 401)
        self.assertTrue(records)
        logged = "\n".join(logging.Formatter().format(r) for r in records)
        self.assertNotIn(token, logged)
        self.assertNotIn(token[:-1], logged)

    # -- HTTP --------------------------------------------------------------------------------

    async def test_methods_paths_and_headers(self) -> None:
        hub = await self.start()
        await hub.build("acme/widget", 1, "success")
        code, headers, body = await self.fetch()
        self.assertEqual(code, 200)
        self.assertTrue(body.startswith(b"<?xml version='1.0' encoding='utf-8'?>"), body[:60])
        self.assertEqual(self.length, len(body))
        self.assertEqual(headers.getRawHeaders("cache-control"), ["no-store"])
        code, headers, body = await self.fetch(method="HEAD")
        self.assertEqual((code, body), (200, b""))
        self.assertEqual(headers.getRawHeaders("content-type"), ["application/xml; charset=utf-8"])
        code, headers, body = await self.fetch(method="POST")
        self.assertEqual(code, 405)
        self.assertEqual(headers.getRawHeaders("allow"), ["GET, HEAD"])
        code, _, body = await self.fetch("/more")
        self.assertEqual(code, 404)

    async def test_store_failure_is_503_and_the_feed_recovers(self) -> None:
        hub = await self.start()
        await hub.build("acme/widget", 1, "success")
        engine = hub.hub.store.engine
        with engine.begin() as conn:
            conn.execute(text("alter table builds rename to builds_away"))
        code, headers, body = await self.fetch()
        self.assertEqual(code, 503)
        self.assertEqual(headers.getRawHeaders("content-type"), ["application/json"])
        self.assertIn("retry", json.loads(body)["error"])
        with engine.begin() as conn:
            conn.execute(text("alter table builds_away rename to builds"))
        self.assertEqual(set(await self.projects()), {"acme/widget :: ci :: main"})


per_backend(CCTrayTests, globals())
