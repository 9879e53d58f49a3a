"""The webhook endpoint over real loopback HTTP: answers, limits, and a hub
that keeps serving whatever it is sent."""

from __future__ import annotations

import json
import socket

import treq
from sqlalchemy import text
from twisted.internet.threads import deferToThread

from buildnotify.ingest.base import ProviderConfig
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


per_backend(IngestHTTPTests, globals())
