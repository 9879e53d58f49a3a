"""The webhook endpoint over real loopback HTTP: answers, limits, and a hub
that keeps serving whatever it is sent."""

from __future__ import annotations

import json
import socket
import sqlite3

import psycopg
import treq
from sqlalchemy import text
from sqlalchemy.exc import DataError, IntegrityError, OperationalError
from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail
from twisted.internet.threads import deferToThread
from twisted.trial import unittest
from twisted.web.client import HTTPConnectionPool

from buildnotify.delivery import Delivery
from buildnotify.ingest.base import HookRequest, ProviderConfig
from buildnotify.ingest.providers import PROVIDERS
from buildnotify.site import make_site
from tests.ingest_support import capture_logs
from tests.support import RunningHub, per_backend, provider_configs

TOKEN = "generic-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
EVENT = {"project": "acme/widget", "pipeline": "ci", "number": 7, "status": "failure", "branch": "main"}


def raw_http(port: int, data: bytes, read_limit: int = 65536) -> bytes:
    """Send raw bytes, return whatever the server answers before it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        chunks = []
        while sum(map(len, chunks)) < read_limit:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


class IngestHTTPTests:
    backend = "sqlite"

    async def start(self, max_body: int = 25 * 1024 * 1024) -> RunningHub:
        configs = provider_configs(generic=ProviderConfig(tokens={"script": TOKEN}))
        return await RunningHub.start(self, self.backend, providers=configs, max_body=max_body)

    async def test_accepted_event_is_committed_before_the_answer(self) -> None:
        hub = await self.start()
        code, body = await hub.post("generic", EVENT, AUTH)
        self.assertEqual(code, 200)
        self.assertEqual(body["stored"], 1)
        [stored] = await hub.events()
        self.assertEqual(body["ids"], [stored.id])
        self.assertEqual(
            (stored.project, stored.status.value, stored.transition.value),
            ("acme/widget", "failure", "failed"),
        )

    async def test_redelivery_is_answered_2xx_and_stored_once(self) -> None:
        hub = await self.start()
        headers = {**AUTH, "Idempotency-Key": "abc-123"}
        first = await hub.post("generic", EVENT, headers)
        again = await hub.post("generic", EVENT, headers)
        self.assertEqual((first[0], first[1]["duplicate"]), (200, False))
        self.assertEqual((again[0], again[1]["duplicate"], again[1]["stored"]), (200, True, 0))
        self.assertEqual(len(await hub.events()), 1)

    async def test_bad_input_gets_a_clear_4xx_and_the_hub_keeps_serving(self) -> None:
        hub = await self.start()
        cases = [
            (
                "malformed JSON",
                b"{not json",
                {"Content-Type": "application/json", **AUTH},
                400,
                "malformed JSON",
            ),
            ("wrong content type", b"<xml/>", {"Content-Type": "text/xml", **AUTH}, 415, "application/json"),
            (
                "missing field",
                json.dumps({"project": "acme/widget", "status": "failure"}).encode(),
                {"Content-Type": "application/json", **AUTH},
                400,
                "pipeline",
            ),
            ("no token", json.dumps(EVENT).encode(), {"Content-Type": "application/json"}, 401, ""),
            (
                "wrong token",
                json.dumps(EVENT).encode(),
                {"Content-Type": "application/json", "Authorization": "Bearer nope"},
                401,
                "",
            ),
        ]
        for label, body, headers, code, words in cases:
            got, answer = await hub.post("generic", body, headers)
            self.assertEqual(got, code, label)
            self.assertIn(words, answer["error"], label)
            self.assertNotIn(TOKEN, json.dumps(answer), label)
        self.assertEqual(await hub.events(), [])
        self.assertEqual((await hub.post("generic", EVENT, AUTH))[0], 200)

    async def test_unknown_provider_and_methods_get_json_errors(self) -> None:
        hub = await self.start()
        code, body = await hub.post("travis", EVENT)
        self.assertEqual(code, 404)
        self.assertIn("generic", body["error"])  # names the ones that exist
        response = await treq.get(f"{hub.url}/hooks/generic", pool=hub.pool)
        self.assertEqual(response.code, 405)
        self.assertEqual(response.headers.getRawHeaders("allow"), ["POST"])
        self.assertIn("POST", json.loads(await response.content())["error"])

    async def test_oversized_body_is_refused_before_it_is_read(self) -> None:
        hub = await self.start(max_body=1024)
        port = hub.hub.http_port.getHost().port
        head = (
            b"POST /hooks/generic HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + TOKEN.encode() + b"\r\nContent-Length: 10000000\r\n\r\n"
        )
        answer = await deferToThread(raw_http, port, head + b"{" * 512)
        self.assertTrue(answer.startswith(b"HTTP/1.1 413 "), answer[:100])
        self.assertIn(b'"error": "request body over the 1024-byte limit"', answer)
        # A chunked body with no declared length is cut off at the limit too.
        chunked = head.replace(b"Content-Length: 10000000", b"Transfer-Encoding: chunked")
        chunk = b"800\r\n" + b" " * 2048 + b"\r\n"
        answer = await deferToThread(raw_http, port, chunked + chunk)
        self.assertTrue(answer.startswith(b"HTTP/1.1 413 "), answer[:100])
        # Under the limit all is well, and the hub still serves.
        self.assertEqual((await hub.post("generic", EVENT, AUTH))[0], 200)

    async def test_unknown_event_type_is_acknowledged_not_stored(self) -> None:
        hub = await self.start()
        code, body = await hub.post(
            "github", {"zen": "Keep it logically awesome."}, {"X-GitHub-Event": "ping"}
        )
        self.assertEqual(code, 202)
        self.assertIn("ping", body["ignored"])
        code, body = await hub.post("github", {"action": "opened"}, {"X-GitHub-Event": "issues"})
        self.assertEqual(code, 202)
        self.assertIn("issues", body["ignored"])
        self.assertEqual(await hub.events(), [])

    async def test_store_failure_is_503_and_the_hub_recovers(self) -> None:
        hub = await self.start()
        engine = hub.hub.store.engine
        with engine.begin() as conn:
            conn.execute(text("alter table deliveries rename to deliveries_away"))
        code, body = await hub.post("generic", EVENT, AUTH)
        self.assertEqual(code, 503)
        self.assertIn("retry", body["error"])
        self.assertEqual(await hub.events(), [])  # nothing half-committed
        with engine.begin() as conn:
            conn.execute(text("alter table deliveries_away rename to deliveries"))
        code, body = await hub.post("generic", EVENT, AUTH)  # the CI's retry
        self.assertEqual((code, body["stored"]), (200, 1))

    async def test_odd_values_are_stored_normalized_the_same_on_every_database(self) -> None:
        hub = await self.start()
        body = json.dumps(
            {
                **EVENT,
                "project": "acme/\x00widget",
                "pipeline": "p" * 10_000,
                "branch": "main\r\n\x1b[0m",
                "sha": "\ud800" + "a" * 39,
                "author": {"name": "Ada\tLovelace", "login": "ada\x7f"},
            }
        ).encode()  # json.dumps sends the lone surrogate as the escape \ud800
        self.assertIn(b"\\ud800", body)
        code, answer = await hub.post("generic", body, {"Content-Type": "application/json", **AUTH})
        self.assertEqual((code, answer["stored"]), (200, 1), answer)
        [stored] = await hub.events()
        self.assertEqual(
            (stored.project, stored.pipeline, stored.branch, stored.sha),
            ("acme/widget", "p" * 255, "main [0m", "\ufffd" + "a" * 39),
        )
        self.assertEqual((stored.author.name, stored.author.login), ("Ada Lovelace", "ada"))

    async def test_wrong_types_and_huge_numbers_are_400_naming_the_field(self) -> None:
        hub = await self.start()
        cases = [
            ({"branch": {"name": "main"}}, "field branch has the wrong type: expected a string"),
            ({"pipeline": ["ci"]}, "field pipeline has the wrong type: expected a string"),
            ({"number": 2**64}, "field number is out of range"),
            ({"number": str(10**30)}, "field number is out of range"),
            ({"attempt": "twice"}, "field attempt has the wrong type: expected an integer"),
            ({"author": "ada"}, "field author has the wrong type: expected an object"),
        ]
        for change, error in cases:
            code, answer = await hub.post("generic", EVENT | change, AUTH)
            self.assertEqual(code, 400, change)
            self.assertIn(error, answer["error"], change)
        self.assertEqual(await hub.events(), [])
        code, answer = await hub.post("generic", EVENT | {"number": "9223372036854775807"}, AUTH)
        self.assertEqual((code, answer["stored"]), (200, 1))  # the largest the store holds


per_backend(IngestHTTPTests, globals())


class StoreFailureTests(unittest.TestCase):
    """What the CI is told when recording fails: 503 (retry) only when the
    database is unavailable; 400 when it refused a value of the delivery."""

    async def answer_when_the_store_raises(self, error: Exception) -> tuple[int, dict]:
        def record(delivery: Delivery) -> Deferred:
            return fail(error)

        site = make_site(PROVIDERS, provider_configs(), record, max_body=1 << 20)
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        pool = HTTPConnectionPool(reactor, persistent=False)
        response = await treq.post(
            f"http://127.0.0.1:{port.getHost().port}/hooks/generic", json=EVENT, pool=pool
        )
        return response.code, json.loads(await response.content())

    async def test_unavailable_database_is_503(self) -> None:
        for error in (
            OperationalError("INSERT ...", {}, sqlite3.OperationalError("database is locked")),
            psycopg.OperationalError("connection refused"),
            sqlite3.OperationalError("no such table: deliveries"),
            # clean values break no constraint: only a race with another node storing the
            # same delivery does, and the retry then finds it stored
            IntegrityError("INSERT ...", {}, psycopg.errors.UniqueViolation("duplicate key")),
        ):
            code, answer = await self.answer_when_the_store_raises(error)
            self.assertEqual((code, answer["error"]), (503, "the event store is unavailable; retry later"))

    async def test_a_value_the_database_refuses_is_400_not_503(self) -> None:
        for error in (
            DataError("INSERT ...", {}, psycopg.errors.StringDataRightTruncation("value too long")),
            psycopg.errors.CharacterNotInRepertoire("invalid byte sequence"),
            OverflowError("Python int too large to convert to SQLite INTEGER"),
            UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"),
        ):
            code, answer = await self.answer_when_the_store_raises(error)
            self.assertEqual(
                (code, answer["error"]), (400, "the event store refused a value of this delivery")
            )


class ParserFailureTests(unittest.TestCase):
    async def test_a_parser_failure_is_400_and_one_log_line_with_control_characters_escaped(self) -> None:
        def broken(request: HookRequest, config: ProviderConfig) -> Delivery:
            raise KeyError("build\x00\x1b[31m\nFORGED log line\u2028")

        logged = capture_logs(self)
        site = make_site({"broken": broken}, {}, lambda d: fail(AssertionError()), max_body=1 << 20)
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        pool = HTTPConnectionPool(reactor, persistent=False)
        for _ in range(2):
            response = await treq.post(
                f"http://127.0.0.1:{port.getHost().port}/hooks/broken", json={}, pool=pool
            )
            self.assertEqual(response.code, 400)
            self.assertEqual(
                json.loads(await response.content()), {"error": "could not read this broken payload"}
            )
        self.assertEqual(len(logged), 2)  # one line per request
        for record in logged:
            message = record.getMessage()
            self.assertIsNone(record.exc_info)  # no traceback
            self.assertTrue(message.isprintable(), message)
            self.assertIn(
                "KeyError: 'build\\x00\\x1b[31m\\nFORGED log line\\u2028' at test_http.py:", message
            )
