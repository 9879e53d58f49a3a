"""Kill -9 the hub in the middle of a burst of webhooks and start it again:
every delivery that was answered 2xx is in the database exactly once, and a
CI system retrying one of them is told it is a duplicate.

The hub is the real ``buildnotify-cli serve`` process; the load is plain
``http.client`` from threads (this test is about the process and the
database, not the reactor).
"""

from __future__ import annotations

import http.client
import json
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from sqlalchemy import func, select

from buildnotify.store import database
from buildnotify.store.schema import deliveries, events
from tests.hubprocess import HubProcess, cli_env, free_port, write_config
from tests.support import database_url, per_backend

WORKERS = 8
ACKED_BEFORE_KILL = 300
LOAD_TIMEOUT = 15.0  # seconds to reach ACKED_BEFORE_KILL
SOURCE = "ci"  # the token's name in the config; the generic provider scopes keys by it


class Load:
    """Threads POSTing generic events, each with a unique Idempotency-Key
    (and its own build), over keep-alive connections until stopped or the
    hub goes away. ``acked`` holds every delivery answered 2xx."""

    def __init__(self, port: int, token: str) -> None:
        self.port = port
        self.token = token
        self.run = secrets.token_hex(4)
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.killed = threading.Event()
        self.sent: dict[str, bytes] = {}  # key → body, for every request started
        self.acked: dict[str, bytes] = {}
        self.unexpected: list[str] = []  # answers and errors while the hub was up
        self.threads = [
            threading.Thread(target=self._worker, args=(n,), name=f"load-{n}", daemon=True)
            for n in range(WORKERS)
        ]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def join(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=15)
        alive = [t.name for t in self.threads if t.is_alive()]
        assert not alive, f"load threads did not stop: {alive}"

    def headers(self, key: str) -> dict[str, str]:
        return {
            "Content-Type": "application/json",
            "Authorization": f"Bearer {self.token}",
            "Idempotency-Key": key,
        }

    def _worker(self, n: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        number = 0
        try:
            while not self.stop.is_set():
                number += 1
                key = f"load-{self.run}-{n}-{number}"
                body = json.dumps(
                    {
                        "project": "acme/widget",
                        "pipeline": f"ci-{n}",
                        "build_id": key,
                        "number": number,
                        "status": "failure" if number % 3 else "success",
                        "branch": "main",
                        "sha": f"{number:040x}",
                    }
                ).encode()
                with self.lock:
                    self.sent[key] = body
                try:
                    conn.request("POST", "/hooks/generic", body, self.headers(key))
                    response = conn.getresponse()
                    answer = response.read()
                except (OSError, http.client.HTTPException) as e:
                    if not self.killed.is_set():
                        self._unexpected(f"{key}: {type(e).__name__}: {e}")
                    return
                if 200 <= response.status < 300:
                    with self.lock:
                        self.acked[key] = body
                    reply = json.loads(answer)
                    if (reply.get("stored"), reply.get("duplicate")) != (1, False):
                        self._unexpected(f"{key}: a new delivery answered {answer!r}")
                else:
                    self._unexpected(f"{key}: answered {response.status} {answer!r}")
        finally:
            conn.close()

    def _unexpected(self, what: str) -> None:
        with self.lock:
            self.unexpected.append(what)

    def wait_for_acks(self, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.acked) >= count or self.unexpected:
                    return
            time.sleep(0.01)


class DurabilityTests:
    backend = "sqlite"

    def setUp(self) -> None:
        # config and logs outside the working tree (trial's mktemp is under the cwd)
        self.dir = Path(tempfile.mkdtemp(prefix="buildnotify-durability-"))
        self.addCleanup(shutil.rmtree, self.dir, ignore_errors=True)
        self.url = database_url(self, self.backend)
        if "://" not in self.url:
            self.url = str(Path(self.url).resolve())  # the hub runs in another directory
        self.token = secrets.token_urlsafe(24)
        self.port = free_port()
        self.config = write_config(
            self.dir / "hub.toml", port=self.port, database=self.url, tokens={SOURCE: self.token}
        )
        self.env = cli_env(self.dir)
        self.hub = HubProcess(self.dir, ["--config", str(self.config)], self.port, self.env)
        self.addCleanup(self.hub.close)

    def stored(self) -> tuple[Counter, Counter, dict[str, int]]:
        """(deliveries per key, events per delivery key, event_count per key) of the generic provider."""
        engine = database.create(self.url)
        try:
            with engine.connect() as conn:
                rows = conn.execute(
                    select(deliveries.c.key, deliveries.c.event_count).where(
                        deliveries.c.provider == "generic"
                    )
                ).all()
                per_event = conn.execute(
                    select(events.c.delivery_key, func.count())
                    .where(events.c.provider == "generic")
                    .group_by(events.c.delivery_key)
                ).all()
        finally:
            engine.dispose()
        return Counter(key for key, _ in rows), Counter(dict(per_event)), dict(rows)

    def history(self, limit: int) -> list[dict]:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "buildnotify.cli",
                "history",
                "--json",
                "--limit",
                str(limit),
                "--config",
                str(self.config),
            ],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        return [json.loads(line) for line in result.stdout.splitlines()]

    def test_acknowledged_deliveries_survive_sigkill(self) -> None:
        began = time.monotonic()
        try:
            self._kill_and_restart()
        except BaseException:
            print(f"hub output ({self.backend}):\n{self.hub.output()}")
            raise
        finally:
            print(f"{self.backend}: kill-and-restart took {time.monotonic() - began:.1f}s")

    def _kill_and_restart(self) -> None:
        self.hub.start().wait_ready()
        load = Load(self.port, self.token)
        self.addCleanup(load.stop.set)
        load.start()
        load.wait_for_acks(ACKED_BEFORE_KILL, LOAD_TIMEOUT)
        self.assertEqual(load.unexpected, [], "the hub misbehaved under load, before any kill")
        self.assertGreaterEqual(
            len(load.acked), ACKED_BEFORE_KILL, f"under {ACKED_BEFORE_KILL} deliveries in {LOAD_TIMEOUT}s"
        )

        load.killed.set()
        self.assertEqual(self.hub.kill(), -signal.SIGKILL)
        load.join()
        self.assertEqual(load.unexpected, [])
        acked = {f"{SOURCE}:{key}": body for key, body in load.acked.items()}
        sent = {f"{SOURCE}:{key}" for key in load.sent}
        in_flight = sent - set(acked)
        # every worker was waiting on an answer when the hub died
        self.assertGreaterEqual(len(in_flight), 1, "the kill did not land mid-load")

        self.hub.start().wait_ready()

        per_delivery, per_event, event_count = self.stored()
        missing = sorted(set(acked) - set(per_delivery))
        self.assertEqual(missing, [], f"{len(missing)} of {len(acked)} acknowledged deliveries were lost")
        self.assertEqual(sorted(k for k in acked if per_event[k] != 1), [], "events per acknowledged key")
        self.assertLessEqual(set(per_delivery), sent, "a delivery nobody sent was stored")
        self.assertEqual(max(per_delivery.values()), 1)
        # all or nothing: no event without its delivery row, no delivery short of its events
        self.assertLessEqual(set(per_event), set(per_delivery))
        self.assertEqual({k: per_event[k] for k in per_delivery}, event_count)
        total = sum(per_event.values())
        self.assertEqual(total, len(per_delivery))

        # what the user sees: history lists each acknowledged delivery once, as sent
        listed = self.history(total + 100)
        self.assertEqual(len(listed), total)
        listed_keys = Counter(event["delivery_key"] for event in listed)
        self.assertEqual(sorted(k for k in acked if listed_keys[k] != 1), [])
        for event in listed:
            if event["delivery_key"] in acked:
                sent_body = json.loads(acked[event["delivery_key"]])
                self.assertEqual(
                    (event["project"], event["pipeline"], event["build_id"], event["status"], event["sha"]),
                    (
                        sent_body["project"],
                        sent_body["pipeline"],
                        sent_body["build_id"],
                        sent_body["status"],
                        sent_body["sha"],
                    ),
                )

        # a CI system retrying acknowledged deliveries is told they are duplicates
        retried = random.Random(0).sample(sorted(load.acked), 25)
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            for key in retried:
                conn.request("POST", "/hooks/generic", load.acked[key], load.headers(key))
                response = conn.getresponse()
                answer = json.loads(response.read())
                self.assertEqual(
                    (response.status, answer["duplicate"], answer["stored"]), (200, True, 0), (key, answer)
                )
        finally:
            conn.close()
        again, again_events, _ = self.stored()
        self.assertEqual(again, per_delivery, "a retried delivery was stored again")
        self.assertEqual(again_events, per_event)

        self.assertEqual(self.hub.terminate(), 0, "the restarted hub did not stop cleanly on SIGTERM")


per_backend(DurabilityTests, globals())
