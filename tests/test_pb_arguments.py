"""Remote arguments are checked at the door: a wrong type, length or range
gets ``BadArgument`` naming the argument, nothing internal (a library's
exception, SQL, a path) reaches the client, the store never sees the value,
and the hub logs no traceback. Over real loopback TCP, on both databases."""

from __future__ import annotations

import datetime
import json
import logging
from typing import Any

from sqlalchemy.exc import OperationalError
from twisted.internet.defer import Deferred
from twisted.spread import jelly, pb

from buildnotify.hub import arguments
from buildnotify.store import accounts
from tests.pbclient import Client, RecordingMind, add_developer
from tests.support import per_backend
from tests.test_pb import AUTHOR, PBTestCase
from tests.test_pb_sessions import remote_type

WIDGET = "acme/widget"
BAD_ARGUMENT = "buildnotify.protocol.BadArgument"
#: what must never appear in an error a client gets
INTERNALS = ("sqlalchemy", "Traceback", "builtins", "/work/", ".py", "SELECT", "INSERT", "psycopg")


class BadArgumentsTests(PBTestCase):
    __test__ = False  # run per backend: per_backend below

    async def developer_session(self) -> pb.RemoteReference:
        await self.start()
        token = await add_developer(self.store, "alice", logins=["alice"])
        # Twisted's default jelly security: a client may send sets and datetimes
        client = await Client.connect(self, self.hub.hub.pb_address, security=jelly.globalSecurity)
        self.perspective = await client.login("alice", token, RecordingMind())
        await self.hub.build(WIDGET, 1, "failure", author=AUTHOR)
        return self.perspective

    async def refused(self, perspective: pb.RemoteReference, method: str, *args: Any, naming: str) -> str:
        try:
            await perspective.callRemote(method, *args)
        except pb.RemoteError as e:
            message = str(e)
            self.assertEqual(remote_type(e), BAD_ARGUMENT, f"{method}{args!r}: {message}")
            self.assertIn(naming, message, f"{method}{args!r} did not name {naming}")
            for internal in INTERNALS:
                self.assertNotIn(internal, message, f"{method}{args!r} leaked {internal!r}: {message}")
            return message
        raise AssertionError(f"{method}{args!r} was accepted")

    async def test_wrong_types_and_ranges_are_refused_naming_the_argument(self) -> None:
        perspective = await self.developer_session()
        records: list[logging.LogRecord] = []
        handler = _Collect(records)
        logging.getLogger("buildnotify").addHandler(handler)
        self.addCleanup(logging.getLogger("buildnotify").removeHandler, handler)
        cases: list[tuple[str, tuple[Any, ...], str]] = [
            ("ack", ("x",), "alert_ids"),
            ("ack", (["1"],), "alert_ids"),
            ("ack", ([0],), "alert_ids"),
            ("history", (None, None), "limit"),
            ("history", (None, 0), "limit"),
            ("history", (None, 10**30), "limit"),
            ("history", (None, True), "limit"),
            ("history", (["a"],), "project"),
            ("mute", (WIDGET, "x"), "minutes"),
            ("mute", (WIDGET, -5), "minutes"),
            ("mute", (WIDGET, float("nan")), "minutes"),
            ("mute", (WIDGET, 10**9), "minutes"),
            ("claim", (WIDGET, "ci", "main", b"bytes note"), "note"),
            ("claim", (WIDGET, "ci", "main", "n" * (arguments.MAX_NOTE + 1)), "note"),
            ("claim", (WIDGET, "ci", "main", "bell\x07"), "note"),
            ("claim", (WIDGET, {"pipeline": "ci"}), "pipeline"),
            ("claim", (WIDGET, "ci", ["main"]), "branch"),
            ("claim", ("p" * 256, "ci"), "project"),
            ("claim", ("nul\x00", "ci"), "project"),
            ("unclaim", (WIDGET, 7), "pipeline"),
            ("status", ({WIDGET},), "projects"),
            ("status", ((WIDGET, datetime.datetime(2026, 1, 1)),), "projects"),
            ("status", ([""],), "projects"),
            ("status", (["p"] * (arguments.MAX_PROJECTS + 1),), "projects"),
            ("watch", (WIDGET,), "projects"),
            ("watch", ([WIDGET], "7"), "since"),
            ("watch", ([WIDGET], -1), "since"),
            ("watch", ([WIDGET], 2**64), "since"),
            ("unwatch", (None,), "projects"),
            ("ping", (1, 2), "ping"),
            ("whoami", ("extra",), "whoami"),
        ]
        for method, args, naming in cases:
            await self.refused(perspective, method, *args, naming=naming)
        self.assertEqual(await perspective.callRemote("ping"), "pong")
        self.assertEqual(self.flushLoggedErrors(), [])
        loud = [r.getMessage() for r in records if r.levelno >= logging.ERROR]
        self.assertEqual(loud, [], "a bad call logged an error")

    async def test_text_that_is_not_utf8_is_refused(self) -> None:
        perspective = await self.developer_session()
        broker = perspective.broker
        request = broker.newRequestID()
        answer: Deferred[Any] = Deferred()
        broker.waitingForAnswers[request] = answer
        lone_surrogate = [b"unicode", "acme/\ud800".encode("utf-8", "surrogatepass")]
        net_args = [b"list", lone_surrogate, [b"unicode", b"ci"]]
        broker.sendCall(b"message", request, perspective.luid, b"claim", 1, net_args, [b"dictionary"])
        failures: list[Any] = []
        await answer.addCallbacks(lambda _: self.fail("a lone surrogate was accepted"), failures.append)
        [failure] = failures
        self.assertEqual(failure.type, BAD_ARGUMENT.encode())
        self.assertIn("UTF-8", failure.value)
        self.assertEqual(self.flushLoggedErrors(), [])

    async def test_a_refused_note_leaves_every_status_readable(self) -> None:
        perspective = await self.developer_session()
        await self.refused(perspective, "claim", WIDGET, "ci", "main", b"\xff\xfe", naming="note")
        claim = await perspective.callRemote("claim", WIDGET, "ci", "main", "on it\nline two")
        self.assertEqual(claim["note"], "on it\nline two")
        status = await perspective.callRemote("status", [WIDGET])
        json.dumps(status)  # what status --json prints: every value is plain JSON
        self.assertEqual(status[0]["claim"]["note"], "on it\nline two")

    async def test_login_arguments_are_checked_too(self) -> None:
        await self.start()
        root = await (await Client.connect(self, self.hub.hub.pb_address)).factory.getRootObject()
        for args, naming in (((b"alice", "t"), "name"), (("alice", 7), "token"), (("a" * 300, "t"), "name")):
            with self.assertRaises(pb.RemoteError) as refused:
                await root.callRemote("login", *args)
            self.assertEqual(remote_type(refused.exception), BAD_ARGUMENT)
            self.assertIn(naming, str(refused.exception))
        with self.assertRaises(pb.RemoteError) as refused:
            await root.callRemote("login", "alice", "t", "not a mind")
        self.assertIn("mind", str(refused.exception))

    async def test_a_database_failure_is_unavailable_without_its_sql(self) -> None:
        perspective = await self.developer_session()
        real_read = self.store.read

        def failing(query: Any, **kwargs: Any) -> Any:
            if query is accounts.private_projects or getattr(query, "__name__", "") == "_event_page":
                raise OperationalError("SELECT secret FROM events", {}, Exception("server closed"))
            return real_read(query, **kwargs)

        self.patch(self.store, "read", failing)
        with self.assertRaises(pb.RemoteError) as failed:
            await perspective.callRemote("history")
        self.assertEqual(remote_type(failed.exception), "buildnotify.protocol.Unavailable")
        self.assertNotIn("SELECT", str(failed.exception))
        self.assertEqual(self.flushLoggedErrors(), [])

    async def test_muting_a_project_one_cannot_see_is_refused(self) -> None:
        perspective = await self.developer_session()
        await self.store.write(lambda conn: accounts.set_private(conn, "acme/secret", True))
        with self.assertRaises(pb.RemoteError) as refused:
            await perspective.callRemote("mute", "acme/secret")
        self.assertEqual(remote_type(refused.exception), "buildnotify.protocol.NotAllowed")
        self.assertEqual(await perspective.callRemote("settings"), {})  # nothing was stored


class _Collect(logging.Handler):
    def __init__(self, records: list[logging.LogRecord]) -> None:
        super().__init__()
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


per_backend(BadArgumentsTests, globals())
