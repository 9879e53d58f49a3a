"""Relays, end to end over real sockets: a hub on SQLite or PostgreSQL sends
through a twisted.web receiver that fails, rate-limits and recovers, and a
local ESMTP server. Time is the hub's task.Clock; the sender's passes are
awaited (``sender.tick()``), never slept for."""

from __future__ import annotations

import json
import logging
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from twisted.trial import unittest

from buildnotify import cli
from buildnotify.config import HubConfig, parse
from buildnotify.events import Status, utcnow
from buildnotify.hub.settings import PBSettings
from buildnotify.relays import outbox
from buildnotify.relays.outcome import BACKOFF_BASE, RETRY_AFTER_CAP, backoff, retry_after
from buildnotify.relays.settings import RelaySettingsError, parse_relay, parse_relays
from buildnotify.relays.signing import signature
from tests.ingest_support import capture_logs
from tests.pbclient import wait_until
from tests.relay_receivers import MailServer, Receiver
from tests.support import RunningHub, clock_at, database_url, per_backend, provider_configs
from tests.test_operations import scrape, value

ROOT = Path(__file__).resolve().parent.parent
#: past any first backoff (jitter draws from its upper half)
FIRST_BACKOFF = BACKOFF_BASE + 1


def documented_verify() -> Any:
    """The ``verify`` function of docs/relays.md, as a receiver would copy it."""
    text = (ROOT / "docs" / "relays.md").read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    namespace: dict[str, Any] = {}
    exec(code, namespace)
    return namespace["verify"]


class RelayHubTests:
    backend = "sqlite"

    async def start(self, relays: dict[str, dict[str, Any]], database: str | None = None, clock: Any = None):
        self.clock = clock or clock_at(utcnow())
        self.running = await RunningHub.start(
            self,
            self.backend,
            clock=self.clock,
            database=database,
            relays=relays,
            session=PBSettings(heartbeat=100_000.0),
        )
        return self.running

    @property
    def sender(self):
        return self.running.hub.relays.sender

    async def messages(self) -> list[dict[str, Any]]:
        return await self.running.hub.store.read(outbox.every)

    async def settle(self, advance: float = 0.0) -> None:
        """Move the hub's clock on, then wait for a whole pass of the sender."""
        self.clock.advance(advance)
        await self.sender.tick()

    async def test_every_message_is_sent_once_after_500s_then_429_then_200(self) -> None:
        receiver = Receiver.listen(self)
        receiver.answer = (500, {})
        await self.start({"chat": {"kind": "slack", "url": receiver.url}})
        first = await self.running.build("acme/widget", 1, "failure")
        second = await self.running.build("acme/gadget", 1, "failure")
        await self.running.build("acme/widget", 2, "failure")  # still failing: not selected by default
        await self.settle()
        rows = await self.messages()
        self.assertEqual([r["event_id"] for r in rows], [first, second])
        self.assertEqual({(r["state"], r["attempts"]) for r in rows}, {("pending", 1)})
        self.assertEqual(rows[0]["last_error"], "HTTP 500: nope")
        self.assertEqual(
            json.loads(rows[0]["body"])["text"].splitlines()[0], "acme/widget ci (main) #1 failed"
        )

        receiver.answer = (429, {"Retry-After": "120"})
        await self.settle(FIRST_BACKOFF)
        self.assertEqual({(r["state"], r["attempts"]) for r in await self.messages()}, {("pending", 2)})

        receiver.answer = (200, {})
        await self.settle(60)  # Retry-After: 120 is not over yet
        self.assertEqual(len(receiver.deliveries(200)), 0)
        await self.settle(61)
        rows = await self.messages()
        self.assertEqual({(r["state"], r["attempts"]) for r in rows}, {("sent", 3)})
        ids = [str(r["id"]) for r in rows]
        self.assertEqual(sorted(receiver.deliveries(200)), ids)  # each once
        self.assertEqual(sorted(receiver.deliveries()), sorted(ids * 3))
        await self.settle(3600)
        self.assertEqual(len(receiver.requests), 6)  # nothing sent again
        samples = await scrape(self.running)  # what an operator's Prometheus sees
        self.assertEqual(value(samples, "buildnotify_relay_retries_total", relay="chat"), 4)
        self.assertEqual(value(samples, "buildnotify_relay_sends_total", relay="chat"), 2)
        self.assertEqual(value(samples, "buildnotify_relay_dead_total", relay="chat"), 0)

    async def test_pending_messages_are_sent_by_the_next_hub_on_the_same_database(self) -> None:
        from buildnotify.server import Hub

        receiver = Receiver.listen(self)
        receiver.answer = (503, {})
        url = database_url(self, self.backend)
        relays = {"chat": {"kind": "discord", "url": receiver.url}}
        clock = clock_at(utcnow())
        config = HubConfig(
            http="tcp:0:interface=127.0.0.1",
            pb="tcp:0:interface=127.0.0.1",
            database=url,
            providers=provider_configs(),
            relays=relays,
        )
        hub = await Hub.start(config, self.reactor(), clock)
        try:
            self.running = RunningHub(hub, self.pool())
            await self.running.build("acme/widget", 1, "failure")
            await hub.relays.sender.tick()
        finally:
            await hub.stop()
        self.assertEqual(receiver.deliveries(503), ["1"])

        receiver.answer = (200, {})
        clock.advance(FIRST_BACKOFF)
        await self.start(relays, database=url, clock=clock)
        await wait_until(lambda: receiver.deliveries(200), what="the pending message, sent by the new hub")
        await self.settle(3600)
        self.assertEqual(receiver.deliveries(200), ["1"])
        [row] = await self.messages()
        self.assertEqual(
            (row["state"], row["attempts"], json.loads(row["body"])["content"][:11]),
            ("sent", 2, "acme/widget"),
        )

    async def test_a_message_dies_after_give_up_after_and_relays_retry_sends_it(self) -> None:
        receiver = Receiver.listen(self)
        receiver.answer = (502, {})
        await self.start({"chat": {"kind": "slack", "url": receiver.url, "give_up_after": 60}})
        await self.running.build("acme/widget", 1, "failure")
        await self.settle()
        await self.settle(61)
        [row] = await self.messages()
        self.assertEqual((row["state"], row["attempts"], row["last_error"]), ("dead", 2, "HTTP 502: nope"))
        await self.settle(3600)
        self.assertEqual(len(receiver.requests), 2)

        status = self.cli(["relays", "status", "--json"])
        self.assertEqual(status["relays"], {"chat": {"pending": 0, "sent": 0, "dead": 1}})
        self.assertEqual(
            [(d["id"], d["last_error"]) for d in status["dead"]], [(row["id"], "HTTP 502: nope")]
        )

        receiver.answer = (200, {})
        self.assertEqual(cli.main(["relays", "retry", str(row["id"]), "--db", self.database]), 0)
        await self.settle()
        [row] = await self.messages()
        self.assertEqual((row["state"], receiver.deliveries(200)), ("sent", [str(row["id"])]))
        self.assertEqual(cli.main(["relays", "retry", str(row["id"]), "--db", self.database]), 1)  # not dead

    async def test_a_4xx_is_dead_at_once_and_no_secret_reaches_the_log(self) -> None:
        receiver = Receiver.listen(self)
        receiver.answer = (404, {})
        await self.start({"hooks": {"kind": "webhook", "url": receiver.url, "secret": "hush-hush"}})
        logged = capture_logs(self, level=logging.DEBUG)
        await self.running.build("acme/widget", 1, "failure")
        await self.settle()
        [row] = await self.messages()
        self.assertEqual((row["state"], row["attempts"], row["last_error"]), ("dead", 1, "HTTP 404: nope"))
        text = "\n".join(r.getMessage() for r in logged)
        self.assertIn("relay hooks: message 1 is dead after 1 attempts: HTTP 404: nope", text)
        self.assertNotIn("SECRET-PATH", text)
        self.assertNotIn("hush-hush", text)

    async def test_the_webhook_signature_verifies_with_the_documented_snippet(self) -> None:
        receiver = Receiver.listen(self)
        await self.start({"hooks": {"kind": "webhook", "url": receiver.url, "secret": "s3cret"}})
        event_id = await self.running.build("acme/widget", 1, "failure", sha="abc123", url="https://ci/1")
        await self.settle()
        [request] = receiver.requests
        verify = documented_verify()
        delivery, signed = (
            request.headers["x-buildnotify-delivery"],
            request.headers["x-buildnotify-signature"],
        )
        self.assertTrue(verify("s3cret", delivery, request.body, signed))
        self.assertFalse(verify("other", delivery, request.body, signed))
        self.assertFalse(verify("s3cret", delivery, request.body + b" ", signed))
        self.assertFalse(verify("s3cret", delivery + "0", request.body, signed))  # replayed under another id
        body = json.loads(request.body)
        self.assertEqual(
            (body["kind"], body["event"]["id"], body["event"]["transition"]), ("event", event_id, "failed")
        )
        self.assertEqual(request.headers["x-buildnotify-delivery"], "1")

    async def test_filters_choose_project_branch_and_transition(self) -> None:
        receiver = Receiver.listen(self)
        relay = {"kind": "slack", "url": receiver.url, "projects": ["acme/*"], "branches": ["main"]}
        await self.start({"chat": relay | {"transitions": ["failed", "fixed", "still_failing"]}})
        selected = [
            await self.running.build("acme/widget", 1, "failure"),
            await self.running.build("acme/widget", 2, "failure"),
            await self.running.build("acme/widget", 3, "success"),
        ]
        await self.running.build("other/widget", 1, "failure")
        await self.running.build("acme/widget", 4, "failure", branch="dev")
        await self.settle()
        self.assertEqual([r["event_id"] for r in await self.messages()], selected)

    async def test_mail_reaches_the_local_server_addressed_to_the_author(self) -> None:
        server = MailServer.listen(self)
        relay = {"kind": "smtp", "host": "127.0.0.1", "port": server.port, "from": "hub@example.com"}
        await self.start({"mail": relay | {"to": "author"}, "team": relay | {"to": ["team@example.com"]}})
        await self.running.build(
            "acme/widget", 1, "failure", author={"email": "ada@example.com", "name": "Ada"}
        )
        await self.settle()
        self.assertEqual(sorted(r for r, _ in server.mails), ["ada@example.com", "team@example.com"])
        mail = dict(server.mails)["ada@example.com"]
        self.assertEqual(mail["Subject"], "[buildnotify] acme/widget ci (main) #1 failed")
        self.assertEqual(mail["From"], "hub@example.com")
        self.assertIn("by Ada", mail.get_payload())
        self.assertEqual({r["state"] for r in await self.messages()}, {"sent"})

    async def test_an_author_email_that_is_not_one_plain_address_is_not_mailed(self) -> None:
        server = MailServer.listen(self)
        relay = {"kind": "smtp", "host": "127.0.0.1", "port": server.port, "from": "hub@example.com"}
        await self.start({"mail": relay | {"to": "author"}, "team": relay | {"to": ["team@example.com"]}})
        for number, email in enumerate(
            ("ada@example.com, boss@example.com", "Ada <ada@example.com>", "ada@example.com\nBcc: x@y"), 1
        ):
            await self.running.build("acme/widget", number * 2 - 1, "failure", author={"email": email})
            await self.running.build("acme/widget", number * 2, "success", author={"email": email})
        await self.settle()
        self.assertEqual({r for r, _ in server.mails}, {"team@example.com"})
        self.assertEqual({r["relay"] for r in await self.messages()}, {"team"})

    async def test_a_refused_recipient_is_dead(self) -> None:
        server = MailServer.listen(self)
        relay = {"kind": "smtp", "host": "127.0.0.1", "port": server.port, "to": ["nobody@example.com"]}
        await self.start({"mail": relay})
        await self.running.build("acme/widget", 1, "failure")
        await self.settle()
        [row] = await self.messages()
        self.assertEqual(row["state"], "dead")
        self.assertIn("mail server", row["last_error"])
        self.assertEqual(server.mails, [])

    # -- helpers -------------------------------------------------------------------------

    @property
    def database(self) -> str:
        return self.running.hub.config.database

    def cli(self, argv: list[str]) -> Any:
        from io import StringIO
        from unittest import mock

        out = StringIO()
        with mock.patch("sys.stdout", out):
            self.assertEqual(cli.main([*argv, "--db", self.database]), 0)
        return json.loads(out.getvalue())

    def reactor(self) -> Any:
        from twisted.internet import reactor

        return reactor

    def pool(self) -> Any:
        from twisted.internet import reactor
        from twisted.web.client import HTTPConnectionPool

        pool = HTTPConnectionPool(reactor, persistent=False)
        self.addCleanup(pool.closeCachedConnections)
        return pool


per_backend(RelayHubTests, globals())


class SettingsTests(unittest.SynchronousTestCase):
    def test_urls_secrets_and_passwords_come_from_the_environment_and_stay_out_of_repr(self) -> None:
        data = {
            "relays": {
                "ops-chat": {"kind": "webhook", "url": "https://file.example/hook"},
                "mail": {"kind": "smtp", "to": "author", "password": "in-file"},
            }
        }
        environ = {
            "BUILDNOTIFY_RELAY_OPS_CHAT_URL": "https://env.example/hook",
            "BUILDNOTIFY_RELAY_OPS_CHAT_SECRET": "from-env",
            "BUILDNOTIFY_RELAY_MAIL_PASSWORD": "mail-pw",
        }
        relays = parse_relays(parse(data, environ).relays)
        self.assertEqual(relays["ops-chat"].url, "https://env.example/hook")
        self.assertEqual(relays["ops-chat"].secret, "from-env")
        self.assertEqual(relays["mail"].password, "mail-pw")
        self.assertTrue(relays["mail"].to_author)
        for shown in (*relays.values(), parse(data | {"generic": {"tokens": {"ci": "tok-en"}}}, environ)):
            for secret in ("env.example", "from-env", "mail-pw", "tok-en"):
                self.assertNotIn(secret, repr(shown))

    def test_mistakes_are_named(self) -> None:
        for table, words in (
            ({"kind": "telegram"}, "kind must be one of"),
            ({"kind": "slack"}, "BUILDNOTIFY_RELAY_X_URL"),
            ({"kind": "smtp"}, "an smtp relay needs to"),
            ({"kind": "smtp", "to": ["not-an-address"]}, "to must be"),
            ({"kind": "slack", "url": "https://x", "transitions": ["broke"]}, "transitions must be"),
            ({"kind": "slack", "url": "https://x", "give_up_after": 0}, "give_up_after must be"),
            ({"kind": "slack", "url": "https://x", "timeout": 600}, "timeout must be at most 120"),
            ({"kind": "slack", "url": "https://x", "colour": "red"}, "unknown key"),
        ):
            with self.assertRaises(RelaySettingsError) as raised:
                parse_relay("x", table, "hub.toml [relays.x]")
            self.assertIn(words, str(raised.exception))
            self.assertIn("hub.toml [relays.x]", str(raised.exception))

    def test_serve_refuses_a_broken_relay_before_starting(self) -> None:
        path = Path(self.mktemp())
        path.write_text('[relays.chat]\nkind = "slack"\n')
        from io import StringIO
        from unittest import mock

        err = StringIO()
        with mock.patch("sys.stderr", err):
            self.assertEqual(cli.main(["serve", "--config", str(path)]), cli.EXIT_USAGE)
        self.assertIn("[relays.chat]: a slack relay needs url", err.getvalue())

    def test_relays_status_lists_a_configured_relay_that_has_no_messages_yet(self) -> None:
        from io import StringIO
        from unittest import mock

        directory = Path(self.mktemp())
        directory.mkdir()
        config, db = directory / "hub.toml", str(directory / "hub.db")
        config.write_text('[relays.chat]\nkind = "slack"\nurl = "https://chat.example/hook"\n')
        out = StringIO()
        with mock.patch("sys.stdout", out):
            self.assertEqual(cli.main(["db", "upgrade", "--db", db]), 0)
            out.seek(0)
            out.truncate()
            self.assertEqual(cli.main(["relays", "status", "--json", "--config", str(config), "--db", db]), 0)
        self.assertEqual(
            json.loads(out.getvalue()), {"relays": {"chat": {"pending": 0, "sent": 0, "dead": 0}}, "dead": []}
        )


class OutcomeTests(unittest.SynchronousTestCase):
    def test_retry_after_in_seconds_or_as_an_http_date(self) -> None:
        now = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)
        self.assertEqual(retry_after("120", now), 120.0)
        self.assertEqual(retry_after("Tue, 01 Dec 2026 12:02:30 GMT", now), 150.0)
        self.assertEqual(retry_after("Tue, 01 Dec 2026 11:00:00 GMT", now), 0.0)
        self.assertIsNone(retry_after("soon", now))
        self.assertIsNone(retry_after("\u00b2", now))  # a digit to str.isdigit, not a number
        self.assertEqual(retry_after("9" * 40, now), RETRY_AFTER_CAP)  # now + it must stay a date
        self.assertIsNone(retry_after(None, now))

    def test_backoff_doubles_with_jitter_up_to_the_cap(self) -> None:
        self.assertEqual([backoff(n, lambda: 1.0) for n in (1, 2, 3)], [10.0, 20.0, 40.0])
        self.assertEqual(backoff(1, lambda: 0.0), 5.0)
        self.assertEqual(backoff(30, lambda: 1.0), 3600.0)

    def test_signature_is_hmac_sha256_of_the_body(self) -> None:
        verify = documented_verify()
        self.assertTrue(verify("k", "7", b'{"a":1}', signature("k", "7", b'{"a":1}')))
        self.assertFalse(verify("k", "8", b'{"a":1}', signature("k", "7", b'{"a":1}')))
        self.assertEqual(signature("k", "7", b"")[:7], "sha256=")
        self.assertFalse(verify("k", "7", b"{}", "sha256=\u00e9"))  # refused, not a TypeError
        self.assertFalse(verify("k", "7", b"{}", ""))


class ReceiverTestsDoNotLeak(unittest.TestCase):
    """Guards the receivers themselves: a listening port is closed at cleanup."""

    def test_receiver_listens_on_loopback(self) -> None:
        receiver = Receiver.listen(self)
        self.assertTrue(receiver.url.startswith("http://127.0.0.1:"))


class OutboxHookTests:
    """The store's after_record hooks run in the transaction that stores events."""

    backend = "sqlite"

    def setUp(self) -> None:
        from twisted.internet import reactor

        from buildnotify.store import Store

        self.store = Store.open(database_url(self, self.backend), reactor)
        self.addCleanup(self.store.stop)

    async def test_a_message_commits_with_its_event_or_not_at_all(self) -> None:
        from tests.test_store import T0, build, delivery

        def enqueue(conn: Any, stored: Any) -> None:
            outbox.enqueue(conn, [{"relay": "r", "event_id": e.id, "body": "{}"} for e in stored], T0)

        self.store.after_record.append(enqueue)
        recorded = await self.store.record(delivery(build(1, Status.FAILURE)))
        rows = await self.store.read(outbox.every)
        self.assertEqual([r["event_id"] for r in rows], [recorded.events[0].id])

        def broken(conn: Any, stored: Any) -> None:
            raise RuntimeError("the hook failed")

        self.store.after_record.append(broken)
        with self.assertRaises(RuntimeError):
            await self.store.record(delivery(build(2, Status.FAILURE)))
        self.assertEqual(len(await self.store.read(outbox.every)), 1)
        self.assertEqual(len(await self.store.history(after_id=0)), 1)  # nor the event


per_backend(OutboxHookTests, globals())


class MailErrorTests(unittest.TestCase):
    async def test_a_refused_login_keeps_the_password_out_of_the_error(self) -> None:
        import base64

        from twisted.internet import reactor

        from buildnotify.relays import mail
        from buildnotify.relays.outcome import DEAD
        from tests.relay_receivers import RefusingAuthServer

        server = RefusingAuthServer.listen(self)
        relay = parse_relay(
            "mail",
            {
                "kind": "smtp",
                "host": "127.0.0.1",
                "port": server.port,
                "to": ["team@example.com"],
                "username": "hub",
                "password": "pa55word",
                "timeout": 5,
            },
            "test",
        )
        body = json.dumps({"to": ["team@example.com"], "subject": "s", "text": "t"})
        message = outbox.Claimed(1, "mail", body, 0, utcnow())
        outcome = await mail.send(relay, message, utcnow(), reactor)
        self.assertEqual(outcome.kind, DEAD)
        self.assertIn("535", outcome.error)
        self.assertTrue(any(b"AUTH" in line for line in server.lines))  # the password did go out
        for form in (b"pa55word", base64.b64encode(b"hub\0hub\0pa55word")):
            self.assertNotIn(form.decode(), outcome.error)
        self.assertNotIn("AUTH", outcome.error)


class RenderTests(unittest.SynchronousTestCase):
    """Event fields come from webhooks: in a chat message they ping no one."""

    def event(self, **fields: Any) -> Any:
        from buildnotify.events import Author, BuildEvent, Transition

        values: dict[str, Any] = {
            "provider": "generic",
            "project": "acme/widget",
            "pipeline": "ci",
            "build_id": "1",
            "status": Status.FAILURE,
            "branch": "<!channel> @here",
            "author": Author(name="@everyone <@123> <@&456>"),
            "build_number": 1,
            "url": "https://ci.example.com/1?a=1&b=<2>",
            "transition": Transition.FAILED,
            "id": 7,
        }
        return BuildEvent(**values | fields)

    def body(self, kind: str, event: Any) -> dict[str, Any]:
        from buildnotify.relays import render

        relay = parse_relay("r", {"kind": kind, "url": "https://x.example/hook"}, "test")
        return json.loads(render.body(relay, event, []))

    def test_slack_text_cannot_ping(self) -> None:
        text = self.body("slack", self.event())["text"]
        self.assertNotIn("<", text)
        self.assertNotRegex(text, r"@\w")
        self.assertIn("&lt;!channel&gt; @\u200bhere", text)
        self.assertIn("https://ci.example.com/1?a=1&amp;b=&lt;2&gt;", text)  # the link unbroken

    def test_discord_content_cannot_ping(self) -> None:
        body = self.body("discord", self.event())
        self.assertEqual(body["allowed_mentions"], {"parse": []})
        self.assertNotRegex(body["content"], r"@\w")
        self.assertIn("https://ci.example.com/1?a=1&b=<2>", body["content"])

    def test_a_huge_link_is_left_out(self) -> None:
        from buildnotify.relays import render

        event = self.event(url="https://ci.example.com/" + "x" * 100_000)
        for kind in ("slack", "discord", "webhook"):
            body = self.body(kind, event)
            self.assertLess(len(json.dumps(body)), 5000, kind)
        self.assertIsNone(self.body("webhook", event)["event"]["url"])
        self.assertEqual(render.link(self.event()), "https://ci.example.com/1?a=1&b=<2>")


class HttpErrorTests(unittest.TestCase):
    async def test_a_url_treq_cannot_parse_is_not_quoted_in_the_error(self) -> None:
        from treq.client import HTTPClient
        from twisted.internet import reactor
        from twisted.web.client import Agent, HTTPConnectionPool

        from buildnotify.relays import http

        pool = HTTPConnectionPool(reactor, persistent=False)
        self.addCleanup(pool.closeCachedConnections)
        client = HTTPClient(Agent(reactor, pool=pool))
        message = outbox.Claimed(1, "chat", "{}", 0, utcnow())
        for url in ("https://[::1/services/T0/B0/TOKEN", "https://hooks.example:x/services/T0/B0/TOKEN"):
            relay = parse_relay("chat", {"kind": "slack", "url": url, "timeout": 5}, "test")
            outcome = await http.post(client, relay, message, utcnow(), reactor)
            self.assertEqual(outcome.kind, "retry")
            self.assertNotIn("TOKEN", outcome.error)
