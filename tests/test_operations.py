"""What operators' tools read over HTTP: /healthz, /readyz and /metrics on a
real hub, scraped as Prometheus would while webhooks and PB clients come and go."""

from __future__ import annotations

import json
import os

import treq
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text
from twisted.internet.task import Clock
from twisted.trial import unittest

from buildnotify.ingest.base import ProviderConfig
from buildnotify.metrics import Metrics
from tests.pbclient import Client, RecordingMind, add_developer, wait_until
from tests.support import RunningHub, per_backend, provider_configs


async def get(hub: RunningHub, path: str) -> tuple[int, str, bytes]:
    response = await treq.get(hub.url + path, pool=hub.pool)
    content_type = (response.headers.getRawHeaders(b"content-type") or [b""])[0].decode()
    return response.code, content_type, await response.content()


async def scrape(hub: RunningHub) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of GET /metrics: (name, sorted labels) -> value."""
    code, content_type, body = await get(hub, "/metrics")
    assert code == 200 and content_type.startswith("text/plain"), (code, content_type)
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


class HealthTests:
    backend = "sqlite"

    async def test_healthz_says_the_process_is_up(self) -> None:
        hub = await RunningHub.start(self, self.backend)
        code, content_type, body = await get(hub, "/healthz")
        self.assertEqual((code, content_type, json.loads(body)), (200, "application/json", {"ok": True}))

    async def test_readyz_is_ready_with_the_schema_at_head_and_says_why_not_otherwise(self) -> None:
        hub = await RunningHub.start(self, self.backend)
        code, _, body = await get(hub, "/readyz")
        self.assertEqual((code, json.loads(body)), (200, {"ready": True}))

        await hub.hub.store.write(
            lambda conn: conn.execute(text("update alembic_version set version_num = '0001'"))
        )
        code, _, body = await get(hub, "/readyz")
        answer = json.loads(body)
        self.assertEqual((code, answer["ready"]), (503, False))
        self.assertIn("the database is at migration 0001", answer["reason"])
        self.assertIn("buildnotify-cli db upgrade", answer["reason"])
        code, _, _ = await get(hub, "/healthz")
        self.assertEqual(code, 200)  # up, but not ready: a balancer sends it nothing, nobody restarts it


per_backend(HealthTests, globals())


class ReadinessWithoutDatabaseTests(unittest.TestCase):
    async def test_a_database_that_fails_makes_the_hub_unready_with_the_reason(self) -> None:
        hub = await RunningHub.start(self)
        hub.hub.store.engine.dispose()
        database = hub.hub.config.database
        os.rename(database, database + ".gone")
        os.mkdir(database)  # SQLite cannot open a directory
        code, _, body = await get(hub, "/readyz")
        answer = json.loads(body)
        self.assertEqual(code, 503)
        self.assertIn("the database is unreachable", answer["reason"])

        os.rmdir(database)  # the database is back
        os.rename(database + ".gone", database)
        code, _, body = await get(hub, "/readyz")
        self.assertEqual((code, json.loads(body)), (200, {"ready": True}))

    async def test_a_postgresql_database_away_and_back(self) -> None:
        """The hub's schema vanishes (renamed away) and comes back: not
        ready, then ready again, without a restart."""
        hub = await RunningHub.start(self, "postgresql")
        schema = await hub.hub.store.read(lambda conn: conn.execute(text("select current_schema()")).scalar())

        async def rename(old: str, new: str) -> None:
            await hub.hub.store.write(lambda conn: conn.execute(text(f"alter schema {old} rename to {new}")))

        await rename(schema, f"{schema}_away")

        def back(conn: object) -> None:  # if the test failed half way: the schema is dropped by name
            away = f"{schema}_away"
            if conn.execute(text("select 1 from pg_namespace where nspname = :n"), {"n": away}).scalar():
                conn.execute(text(f"alter schema {away} rename to {schema}"))

        self.addCleanup(hub.hub.store.write, back)
        code, _, body = await get(hub, "/readyz")
        self.assertEqual(code, 503, body)
        await rename(f"{schema}_away", schema)
        code, _, body = await get(hub, "/readyz")
        self.assertEqual((code, json.loads(body)), (200, {"ready": True}))


class MetricsTests(unittest.TestCase):
    async def test_counters_move_as_webhooks_arrive_and_clients_attach(self) -> None:
        token = "s3cret-token"
        hub = await RunningHub.start(
            self, providers=provider_configs(generic=ProviderConfig(tokens={"ci": token})), max_body=4096
        )
        auth = {"Authorization": f"Bearer {token}"}
        before = await scrape(hub)
        self.assertEqual(value(before, "buildnotify_events_stored_total", provider="generic"), 0)
        for kind in ("anonymous", "clientless", "developer"):
            self.assertEqual(value(before, "buildnotify_sessions", kind=kind), 0)

        mind = RecordingMind()
        perspective = await (await Client.connect(self, hub.hub.pb_address)).anonymous(mind)
        await perspective.callRemote("watch", ["acme/widget"], None)

        build = {"project": "acme/widget", "pipeline": "ci", "number": 1, "status": "failure"}
        self.assertEqual((await hub.post("generic", build, auth))[0], 200)
        self.assertEqual((await hub.post("generic", build, auth))[0], 200)  # a redelivery
        self.assertEqual((await hub.post("generic", build, {"Authorization": "Bearer wrong"}))[0], 401)
        self.assertEqual(
            (await hub.post("generic", b"{not json", {"Content-Type": "application/json", **auth}))[0], 400
        )
        self.assertEqual((await hub.post("generic", b"x" * 5000, auth))[0], 413)
        self.assertEqual((await hub.post("github", {"zen": "hi"}, {"X-GitHub-Event": "ping"}))[0], 202)
        await wait_until(lambda: len(mind.events) == 1, what="the event pushed to the observer")

        after = await scrape(hub)

        def webhooks(provider: str, result: str, reason: str) -> float:
            return value(after, "buildnotify_webhooks_total", provider=provider, result=result, reason=reason)

        self.assertEqual(webhooks("generic", "accepted", "stored"), 1)
        self.assertEqual(webhooks("generic", "accepted", "duplicate"), 1)
        self.assertEqual(webhooks("generic", "rejected", "bad_signature"), 1)
        self.assertEqual(webhooks("generic", "rejected", "bad_request"), 1)
        self.assertEqual(webhooks("generic", "rejected", "too_large"), 1)
        self.assertEqual(webhooks("github", "accepted", "ignored"), 1)
        self.assertEqual(value(after, "buildnotify_events_stored_total", provider="generic"), 1)
        self.assertEqual(value(after, "buildnotify_ingest_seconds_count", provider="generic"), 4)
        self.assertEqual(value(after, "buildnotify_deliveries_total"), 1)
        self.assertEqual(value(after, "buildnotify_bus_lag_seconds_count"), 1)
        self.assertEqual(value(after, "buildnotify_sessions", kind="anonymous"), 1)

    async def test_an_evicted_session_is_counted_by_reason(self) -> None:
        clock = Clock()
        hub = await RunningHub.start(self, clock=clock)
        token = await add_developer(hub.hub.store, "ada")
        self.perspectives = [  # kept: a dropped reference logs its session out
            await (await Client.connect(self, hub.hub.pb_address)).login("ada", token, RecordingMind())
            for _ in range(2)
        ]
        samples = await scrape(hub)
        self.assertEqual(value(samples, "buildnotify_evictions_total", reason="replaced"), 1)
        self.assertEqual(
            value(samples, "buildnotify_sessions", kind="developer"), 2
        )  # the old one's grace period

    async def test_the_relay_counters_exist_for_the_relays_to_count(self) -> None:
        metrics = Metrics()
        for counter in (metrics.relay_sends, metrics.relay_retries, metrics.relay_dead):
            counter.labels(relay="chat").inc()
        exposition = metrics.exposition().decode()
        for name in ("relay_sends_total", "relay_retries_total", "relay_dead_total"):
            self.assertIn(f'buildnotify_{name}{{relay="chat"}} 1.0', exposition)

    async def test_two_hubs_in_one_process_count_apart(self) -> None:
        one, two = await RunningHub.start(self), await RunningHub.start(self)
        await one.build("acme/widget", 1, "failure")
        self.assertEqual(value(await scrape(one), "buildnotify_events_stored_total", provider="generic"), 1)
        self.assertEqual(value(await scrape(two), "buildnotify_events_stored_total", provider="generic"), 0)
