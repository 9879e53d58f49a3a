"""The client library against a real hub on loopback: delivery, reconnect and
resume without loss or repetition, goodbyes, the resume file, and the
client config and token sources."""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path
from typing import Any

from twisted.application.internet import backoffPolicy
from twisted.internet import reactor, task
from twisted.internet.endpoints import serverFromString
from twisted.trial import unittest

from buildnotify.client import (
    ClientConfigError,
    Ending,
    Phase,
    ResumeFile,
    State,
    WatchClient,
    load_config,
    resolve_token,
)
from buildnotify.client.resume import state_file_name
from buildnotify.client.settings import (
    HUB_VARIABLE,
    add_connection_options,
    hub_list,
    resolve_connection,
)
from buildnotify.hub.settings import PBSettings
from buildnotify.store import accounts
from tests.pbclient import (
    EPSILON,
    Client,
    RecordingMind,
    add_developer,
    delivered,
    missing_events,
    wait_until,
)
from tests.support import RunningHub

WIDGET = "acme/widget"
AUTHOR = {"name": "Alice", "email": "alice@example.com", "login": "alice"}


SEED = 20261129  # every random choice in these tests comes from it


def fast_retries(seed: int = SEED) -> Any:
    """Short delays, for a client on the real reactor."""
    jitter = random.Random(seed)
    return backoffPolicy(initialDelay=0.05, maxDelay=0.3, factor=1.5, jitter=lambda: jitter.random() * 0.05)


def seeded_retries(seed: int = SEED) -> Any:
    """The client's default delays (1 s, growing by half, at most 60 s, plus up
    to 1 s of jitter), the jitter seeded: for a client on a task.Clock."""
    return backoffPolicy(initialDelay=1.0, maxDelay=60.0, factor=1.5, jitter=random.Random(seed).random)


class Recorder:
    """A front end that remembers every callback."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.alerts: list[dict[str, Any]] = []
        self.claims: list[dict[str, Any]] = []
        self.states: list[State] = []
        self.goodbyes: list[str] = []
        self.lost: list[list[str]] = []

    def on_event(self, event: dict[str, Any]) -> None:
        self.events.append(event)

    def on_alert(self, alert: dict[str, Any]) -> None:
        self.alerts.append(alert)

    def on_claim(self, claim: dict[str, Any]) -> None:
        self.claims.append(claim)

    def on_state(self, state: State) -> None:
        self.states.append(state)

    def on_goodbye(self, reason: str) -> None:
        self.goodbyes.append(reason)

    def on_access_lost(self, projects: list[str], reason: str) -> None:
        self.lost.append(projects)

    @property
    def ids(self) -> list[int]:
        return [e["id"] for e in self.events]

    @property
    def phases(self) -> list[Phase]:
        return [s.phase for s in self.states]


class ClientTestCase(unittest.TestCase):
    async def start_hub(self, clock: Any = None, **settings: Any) -> RunningHub:
        """``clock``: the hub's (None: real time)."""
        self.hub = await RunningHub.start(self, session=PBSettings(**settings), clock=clock)
        return self.hub

    def client(self, recorder: Recorder | None = None, **options: Any) -> tuple[Recorder, WatchClient]:
        recorder = recorder or Recorder()
        options.setdefault("projects", [WIDGET])
        options.setdefault("retry_policy", fast_retries())
        options.setdefault("reconnect_spread", 0.05)  # on the real reactor: short
        options.setdefault("random_source", random.Random(SEED).random)
        options.setdefault("hub", self.hub.hub.pb_address)
        client = WatchClient(recorder, **options)
        self.addCleanup(client.stop)
        return recorder, client

    async def live(self, client: WatchClient, timeout: float = 10.0) -> None:
        await wait_until(
            lambda: client.state is not None and client.state.phase == Phase.LIVE,
            timeout=timeout,
            what="the client to go live",
        )

    async def stop_pb_port(self) -> int:
        """Stop the hub's PB listener (connections made through it stay up)."""
        port = self.hub.hub.pb_port.getHost().port
        await self.hub.hub.pb_port.stopListening()
        self.addCleanup(self.listening_again, port)
        return port

    async def listening_again(self, port: int) -> None:
        """Listen again if a failed test did not: the hub's stop fails on a
        stopped listener, and then its writer thread keeps pytest from exiting."""
        if not self.hub.hub.pb_port.connected:
            await self.restart_pb_port(port)

    async def restart_pb_port(self, port: int) -> None:
        endpoint = serverFromString(reactor, f"tcp:{port}:interface=127.0.0.1")
        self.hub.hub.pb_port = await endpoint.listen(self.hub.hub.service.factory())

    async def stored_ids(self, project: str = WIDGET) -> list[int]:
        return [e.id for e in await self.hub.events(project)]


class DeliveryTests(ClientTestCase):
    async def test_events_reach_the_listener_in_order(self) -> None:
        await self.start_hub()
        recorder, client = self.client()
        client.start()
        await self.live(client)
        self.assertEqual(recorder.phases, [Phase.CONNECTING, Phase.CONNECTED, Phase.LIVE])
        self.assertEqual(recorder.states[-1].watch["watching"], [WIDGET])
        posted = [await self.hub.build(WIDGET, n, s) for n, s in ((1, "failure"), (2, "success"))]
        await self.hub.build("acme/gadget", 1, "failure")  # not watched
        await wait_until(lambda: len(recorder.events) == 2, what="two events")
        await delivered(client.perspective)  # a third would be here by now
        self.assertEqual(recorder.ids, posted)
        self.assertEqual([e["transition"] for e in recorder.events], ["failed", "fixed"])
        self.assertEqual(client.last_id, posted[-1])
        outcome = await client.stop()
        self.assertEqual(outcome.ending, Ending.STOPPED)
        self.assertEqual(recorder.phases[-1], Phase.STOPPED)

    async def test_a_developer_gets_alerts_once_and_claims(self) -> None:
        await self.start_hub()
        token = await add_developer(self.hub.hub.store, "alice", logins=["alice"])
        broke = await self.hub.build(WIDGET, 1, "failure", author=AUTHOR)  # pending before login
        recorder, client = self.client(user="alice", token=token)
        client.start()
        await self.live(client)
        await wait_until(lambda: recorder.alerts, what="the pending alert")
        self.assertEqual([a["event"]["id"] for a in recorder.alerts], [broke])
        claim = await client.call("claim", WIDGET, "ci", "main", "on it")
        self.assertEqual(claim["developer"], "alice")
        await wait_until(lambda: recorder.claims, what="the claim")
        self.assertEqual(recorder.claims[0]["state"], "claimed")
        client.reconnect()  # the hub sends the unacknowledged alert again on login ...
        await wait_until(lambda: recorder.phases.count(Phase.LIVE) == 2, what="the second session")
        await delivered(client.perspective)  # an alert shown twice would be here by now
        self.assertEqual(len(recorder.alerts), 1)  # ... and the client shows it once

    def test_a_catch_up_page_is_delivered_event_by_event_and_a_malformed_one_ignored(self) -> None:
        recorder = Recorder()
        client = WatchClient(recorder, projects=[WIDGET])  # never started: the pages come from here
        client._received_page(json.dumps([{"id": 3}, {"id": 4}, {"id": 4}, "no event"]).encode())
        self.assertEqual((recorder.ids, client.last_id, client.duplicates), ([3, 4], 4, 1))
        for page in (b"[{", b"17", b'{"id": 5}', 17, None):  # not JSON, not a list, not text
            client._received_page(page)
        self.assertEqual(recorder.ids, [3, 4])

    async def test_a_wrong_token_stops_the_client_without_retrying(self) -> None:
        await self.start_hub()
        await add_developer(self.hub.hub.store, "alice")
        recorder, client = self.client(user="alice", token="not-the-token")
        outcome = await client.start()
        self.assertEqual(outcome.ending, Ending.REFUSED)
        self.assertIn("wrong token", outcome.message)
        self.assertEqual(recorder.phases, [Phase.CONNECTING, Phase.STOPPED])

    async def test_a_private_project_stops_an_anonymous_client(self) -> None:
        await self.start_hub()
        from buildnotify.store import accounts

        await self.hub.hub.store.write(lambda conn: accounts.set_private(conn, "acme/secret", True))
        _, client = self.client(projects=["acme/secret"])
        outcome = await client.start()
        self.assertEqual(outcome.ending, Ending.REFUSED)
        self.assertIn("private", outcome.message)

    async def test_an_unreachable_hub_is_retried_with_growing_delays(self) -> None:
        await self.start_hub()
        clock = task.Clock()  # the client's waits; connecting stays real
        recorder, client = self.client(clock=clock, retry_policy=seeded_retries())
        policy = seeded_retries()  # the same seed: the same delays
        port = await self.stop_pb_port()
        client.start()
        for attempt in range(1, 5):
            await wait_until(
                lambda a=attempt: recorder.phases.count(Phase.DISCONNECTED) == a,
                what=f"failed attempt {attempt}",
            )
            wait = recorder.states[-1]
            self.assertEqual((wait.phase, wait.attempt), (Phase.DISCONNECTED, attempt))
            self.assertIn("connection refused", wait.message)
            self.assertIn("retrying in", wait.message)
            self.assertEqual(wait.retry_in, policy(attempt - 1))
            clock.advance(wait.retry_in - EPSILON)
            self.assertEqual(
                recorder.phases.count(Phase.CONNECTING), attempt, f"attempt {attempt + 1} came early"
            )
            clock.advance(2 * EPSILON)
            self.assertEqual(
                recorder.phases.count(Phase.CONNECTING),
                attempt + 1,
                f"no attempt {attempt + 1} after the wait",
            )
        delays = [s.retry_in for s in recorder.states if s.phase == Phase.DISCONNECTED]
        self.assertEqual(delays, sorted(delays))
        self.assertGreater(delays[-1], delays[0] + 1, "the delays do not grow beyond the jitter")
        await self.restart_pb_port(port)
        await wait_until(
            lambda: client.state.phase in (Phase.LIVE, Phase.DISCONNECTED), what="the fifth attempt to end"
        )
        if client.state.phase == Phase.DISCONNECTED:  # refused before the port came back
            clock.advance(client.state.retry_in)
        await self.live(client)


class ReconnectTests(ClientTestCase):
    def every_event(self, stored: list[int], recorder: Recorder, client: WatchClient) -> Any:
        return missing_events(stored, recorder.ids, lambda: client.position)

    async def test_a_connection_lost_before_any_event_was_read_loses_nothing(self) -> None:
        """The client starts on an empty hub, stops reading, events are
        committed and pushed into its socket, the connection drops unread:
        the reconnect must resume from where the stream stood, not go live."""
        await self.start_hub()
        recorder, client = self.client()
        client.start()
        await self.live(client)
        self.assertEqual(recorder.states[-1].watch["last_id"], 0, "an empty hub's stream stands at 0")
        self.assertEqual(client.position, 0)
        client.broker.transport.pauseProducing()  # the client stops reading
        posted = [await self.hub.build(WIDGET, n, "failure") for n in range(1, 6)]
        self.assertEqual(recorder.ids, [])  # nothing read yet
        client.broker.transport.abortConnection()  # what the hub pushed is lost with the socket
        await wait_until(lambda: recorder.ids == posted, what=self.every_event(posted, recorder, client))
        catching_up = [s for s in recorder.states if s.phase == Phase.CATCHING_UP]
        self.assertEqual([s.since for s in catching_up], [0])

    async def test_a_hub_without_a_position_in_its_answer_makes_the_client_catch_up_on_all(self) -> None:
        await self.start_hub()
        before = await self.hub.build(WIDGET, 1, "failure")
        recorder, client = self.client()
        real = client._watched
        self.patch(client, "_watched", lambda answer, since: real({**answer, "last_id": None}, since))
        client.start()
        await self.live(client)
        self.assertEqual(client.position, 0)  # not None: a reconnect must not start live
        client.broker.transport.pauseProducing()
        posted = [await self.hub.build(WIDGET, n, "failure") for n in (2, 3)]
        client.broker.transport.abortConnection()
        expected = [before, *posted]  # what the hub kept, once each
        await wait_until(lambda: recorder.ids == expected, what=self.every_event(expected, recorder, client))

    async def test_every_event_arrives_once_in_order_across_dropped_connections(self) -> None:
        await self.start_hub()
        recorder, client = self.client()
        client.start()
        await self.live(client)
        statuses = random.Random(SEED)
        for number in range(1, 41):
            await self.hub.build(WIDGET, number, statuses.choice(("success", "failure", "running")))
            if number in (8, 20, 21, 33):  # the network fails mid-stream, even during a catch-up
                await wait_until(lambda: client.broker is not None, what="a connection")
                client.broker.transport.abortConnection()
        stored = await self.stored_ids()
        self.assertEqual(len(stored), 40)
        await wait_until(
            lambda: recorder.ids == stored, timeout=20, what=self.every_event(stored, recorder, client)
        )
        await self.live(client)
        await delivered(client.perspective)  # a repeated event would be here by now
        self.assertEqual(recorder.ids, stored)
        self.assertEqual(client.duplicates, 0)  # resume, not the safety net, kept them single
        self.assertGreaterEqual(recorder.phases.count(Phase.CATCHING_UP), 3)

    async def test_the_hub_port_going_away_and_back_loses_nothing(self) -> None:
        await self.start_hub()
        recorder, client = self.client()
        client.start()
        await self.live(client)
        for number in range(1, 11):
            await self.hub.build(WIDGET, number, "failure")
        port = await self.stop_pb_port()
        client.broker.transport.abortConnection()
        for number in range(11, 21):  # posted while no client can connect
            await self.hub.build(WIDGET, number, "success")
        await wait_until(lambda: recorder.phases.count(Phase.DISCONNECTED) >= 2, what="failed retries")
        await self.restart_pb_port(port)
        for number in range(21, 31):  # posted while it comes back
            await self.hub.build(WIDGET, number, "running")
        stored = await self.stored_ids()
        await wait_until(
            lambda: recorder.ids == stored, timeout=20, what=self.every_event(stored, recorder, client)
        )
        self.assertEqual(client.duplicates, 0)
        waits = [s for s in recorder.states if s.phase == Phase.DISCONNECTED]
        self.assertTrue(all(s.retry_in is not None and "retrying in" in s.message for s in waits))
        catching_up = [s for s in recorder.states if s.phase == Phase.CATCHING_UP]
        self.assertTrue(catching_up)
        last_live = [s for s in recorder.states if s.phase == Phase.LIVE][-1]
        self.assertFalse(last_live.gap)

    async def test_too_slow_reconnects_and_resumes(self) -> None:
        await self.start_hub(queue_limit=5)
        recorder, client = self.client()
        client.start()
        await self.live(client)
        service = self.hub.hub.service
        client.broker.transport.pauseProducing()  # the client stops reading
        url = "https://ci.example.com/" + "x" * 256 * 1024
        for number in range(1, 300):
            await self.hub.build(WIDGET, number, "failure", url=url)
            if not service.sessions:
                break
        self.assertFalse(service.sessions, "the hub never dropped the slow client")
        for number in range(1000, 1003):
            await self.hub.build(WIDGET, number, "success")
        client.broker.transport.resumeProducing()
        stored = await self.stored_ids()
        await wait_until(
            lambda: recorder.ids == stored, timeout=30, what=self.every_event(stored, recorder, client)
        )
        # (the catch-up of big events can overflow a 5-message queue again: each
        # try gets further, and nothing is lost or repeated on the way)
        self.assertEqual(set(recorder.goodbyes), {"too slow"})
        self.assertEqual(client.duplicates, 0)
        self.assertIn("too slow", [s for s in recorder.states if s.phase == Phase.DISCONNECTED][0].message)
        self.assertIsNone(client.outcome)  # still running


DEAD = "tcp:127.0.0.1:1"  # nothing listens there: refused at once


class SeveralEndpointsTests(ClientTestCase):
    """A hub named by several endpoints (the nodes of one hub)."""

    def every_event(self, stored: list[int], recorder: Recorder, client: WatchClient) -> Any:
        return missing_events(stored, recorder.ids, lambda: client.position)

    async def second_listener(self) -> str:
        """The same hub on one more port: another node, as far as a client can tell."""
        endpoint = serverFromString(reactor, "tcp:0:interface=127.0.0.1")
        port = await endpoint.listen(self.hub.hub.service.factory())
        self.addCleanup(port.stopListening)
        return f"tcp:127.0.0.1:{port.getHost().port}"

    async def test_a_dead_endpoint_is_passed_over_at_once(self) -> None:
        await self.start_hub()
        live = self.hub.hub.pb_address
        clock = task.Clock()  # nothing may wait on it: the live endpoint is tried at once
        recorder, client = self.client(hub=[DEAD, live], clock=clock)
        client.start()
        await self.live(client)
        self.assertEqual(
            [(s.phase, s.hub) for s in recorder.states],
            [
                (Phase.CONNECTING, DEAD),
                (Phase.DISCONNECTED, DEAD),
                (Phase.CONNECTING, live),
                (Phase.CONNECTED, live),
                (Phase.LIVE, live),
            ],
        )
        refused = recorder.states[1]
        self.assertEqual(refused.retry_in, 0.0)
        self.assertIn(f"disconnected from {DEAD} (connection refused); trying {live} now", refused.message)
        self.assertIn(f"live on {live}", recorder.states[-1].message)
        posted = await self.hub.build(WIDGET, 1, "failure")
        await wait_until(lambda: recorder.ids == [posted], what="the event through the live endpoint")

    async def test_every_endpoint_failing_waits_the_backoff_then_starts_over(self) -> None:
        await self.start_hub()
        clock = task.Clock()
        recorder, client = self.client(
            hub=f"{DEAD},tcp:127.0.0.1:2", clock=clock, retry_policy=seeded_retries()
        )
        policy = seeded_retries()
        client.start()
        await wait_until(lambda: recorder.phases.count(Phase.DISCONNECTED) == 2, what="both refused")
        first, second = [s for s in recorder.states if s.phase == Phase.DISCONNECTED]
        self.assertEqual((first.hub, first.retry_in), (DEAD, 0.0))
        self.assertEqual((second.hub, second.retry_in), ("tcp:127.0.0.1:2", policy(0)))
        self.assertIn(f"trying {DEAD} in", second.message)
        clock.advance(second.retry_in)
        await wait_until(lambda: recorder.phases.count(Phase.DISCONNECTED) == 4, what="the second round")
        self.assertEqual(recorder.states[-1].retry_in, policy(1))
        self.assertEqual(recorder.states[-1].attempt, 4)

    async def test_a_lost_node_is_left_for_the_next_after_a_random_wait_and_nothing_is_lost(self) -> None:
        await self.start_hub()
        first, second = self.hub.hub.pb_address, await self.second_listener()
        clock = task.Clock()
        spread = 4.0
        draws = random.Random(SEED)
        recorder, client = self.client(
            hub=[first, second], clock=clock, reconnect_spread=spread, random_source=draws.random
        )
        expected_wait = spread * random.Random(SEED).random()  # the client's first draw
        client.start()
        await self.live(client)
        for number in range(1, 11):
            await self.hub.build(WIDGET, number, "failure")
        before = await self.stored_ids()
        await wait_until(lambda: recorder.ids == before, what=self.every_event(before, recorder, client))
        await self.stop_pb_port()  # the first node goes away, and its connections with it
        client.broker.transport.abortConnection()
        await wait_until(lambda: recorder.phases[-1] == Phase.DISCONNECTED, what="the loss noticed")
        lost = recorder.states[-1]
        self.assertEqual((lost.hub, lost.retry_in), (first, expected_wait))
        self.assertIn(f"disconnected from {first}", lost.message)
        self.assertIn(f"trying {second} in {expected_wait:.1f} s", lost.message)
        for number in range(11, 21):  # committed while this client is away
            await self.hub.build(WIDGET, number, "success")
        clock.advance(expected_wait - EPSILON)
        self.assertEqual(recorder.phases.count(Phase.CONNECTING), 1, "reconnected before the random wait")
        clock.advance(2 * EPSILON)
        await wait_until(lambda: recorder.phases.count(Phase.LIVE) == 2, what="live on the second node")
        self.assertEqual(recorder.states[-1].hub, second)
        catching_up = [s for s in recorder.states if s.phase == Phase.CATCHING_UP]
        self.assertEqual([(s.hub, s.since) for s in catching_up], [(second, before[-1])])
        for number in range(21, 26):
            await self.hub.build(WIDGET, number, "running")
        stored = await self.stored_ids()
        await wait_until(lambda: recorder.ids == stored, what=self.every_event(stored, recorder, client))
        await delivered(client.perspective)
        self.assertEqual(recorder.ids, stored)
        self.assertEqual(client.duplicates, 0)

    async def test_reconnect_skips_the_random_wait(self) -> None:
        await self.start_hub()
        clock = task.Clock()  # never advanced: a wait would never end
        recorder, client = self.client(clock=clock, reconnect_spread=60.0)
        client.start()
        await self.live(client)
        client.reconnect()
        await wait_until(lambda: recorder.phases.count(Phase.LIVE) == 2, what="live again at once")
        self.assertEqual([s.retry_in for s in recorder.states if s.phase == Phase.DISCONNECTED], [0.0])

    def test_the_resume_file_is_the_same_for_the_same_set_of_endpoints(self) -> None:
        a, b = "tcp:10.0.0.1:8787", "tls:hub-b.example.com:8787"
        name = state_file_name([a, b], "ada", [WIDGET])
        self.assertEqual(state_file_name([b, a], "ada", [WIDGET]), name)
        self.assertEqual(state_file_name(f"{b}, {a},{a}", "ada", [WIDGET]), name)
        self.assertNotEqual(state_file_name(a, "ada", [WIDGET]), name)
        self.assertNotEqual(state_file_name([a, "tcp:10.0.0.3:8787"], "ada", [WIDGET]), name)
        self.assertTrue(name.startswith("tcp_10.0.0.1_8787+1-"), name)
        self.assertEqual(state_file_name(a, "ada"), "tcp_10.0.0.1_8787-ada.json")  # one: as before
        self.assertEqual(state_file_name([a, a], "ada"), "tcp_10.0.0.1_8787-ada.json")


class GoodbyeTests(ClientTestCase):
    async def test_signed_in_elsewhere_stops_for_good(self) -> None:
        hub_clock, client_clock = task.Clock(), task.Clock()
        await self.start_hub(clock=hub_clock, grace=5.0)
        token = await add_developer(self.hub.hub.store, "alice")
        recorder, client = self.client(
            user="alice", token=token, clock=client_clock, retry_policy=seeded_retries()
        )
        done = client.start()
        await self.live(client)
        other_mind = RecordingMind()
        other = await (await Client.connect(self, self.hub.hub.pb_address)).login("alice", token, other_mind)
        await other.callRemote("watch", [WIDGET])
        await wait_until(
            lambda: done.called, what=f"the client to stop after the goodbye; it is {client.state}"
        )
        outcome = await done
        self.assertEqual(outcome.ending, Ending.SIGNED_IN_ELSEWHERE)
        self.assertIn("signed in elsewhere", outcome.message)
        self.assertEqual(recorder.goodbyes, ["signed in elsewhere"])
        self.assertEqual(client_clock.getDelayedCalls(), [], "the stopped client still waits for something")
        client_clock.advance(10 * 60)  # ten of the longest retry delays
        hub_clock.advance(5.0)  # and the hub's grace period
        service = self.hub.hub.service
        await wait_until(
            lambda: len(service.sessions) == 1,
            what=f"only the new session on the hub, not {service.sessions}",
        )
        self.assertEqual(recorder.phases.count(Phase.CONNECTING), 1)  # no reconnect fighting
        self.assertEqual(recorder.phases[-1], Phase.STOPPED)
        event_id = await self.hub.build(WIDGET, 1, "failure")
        await wait_until(lambda: other_mind.events, what="the new client's event")
        self.assertEqual(other_mind.event_ids, [event_id])
        self.assertEqual(other_mind.goodbyes, [])
        self.assertEqual(recorder.events, [])


class AccessLostTests(ClientTestCase):
    async def test_a_project_made_private_is_dropped_from_later_watches(self) -> None:
        clock = task.Clock()
        await self.start_hub(clock=clock)
        store, watch = self.hub.hub.store, self.hub.hub.service.access

        async def private(project: str) -> None:
            await store.write(lambda conn: accounts.set_private(conn, project, True))
            clock.advance(1.0)  # the hub's next look at access changes
            await wait_until(lambda: watch._polling is None, what="the hub to read the access change")

        recorder, client = self.client(projects=[WIDGET, "acme/secret"])
        done = client.start()
        await self.live(client)
        await private("acme/secret")
        await wait_until(lambda: recorder.lost, what="on_access_lost for acme/secret")
        self.assertEqual((recorder.lost, client.projects), ([["acme/secret"]], [WIDGET]))
        client.reconnect()  # the next watch names only what it may see: not refused
        await wait_until(lambda: recorder.phases.count(Phase.LIVE) == 2, what="live again")
        self.assertEqual(recorder.states[-1].watch["watching"], [WIDGET])
        await private(WIDGET)
        outcome = await done
        self.assertEqual(outcome.ending, Ending.REFUSED)
        self.assertIn("no project left to watch", outcome.message)


class ResumeFileTests(ClientTestCase):
    async def test_the_last_id_is_kept_on_disk_and_used_after_a_restart(self) -> None:
        await self.start_hub()
        state_dir = Path(self.mktemp())
        resume = ResumeFile.for_hub(self.hub.hub.pb_address, None, state_dir, projects=[WIDGET])
        self.assertIsNone(resume.load())
        before = await self.hub.build(WIDGET, 1, "failure")  # before the first run: not replayed
        first, client = self.client(resume=resume)
        client.start()
        await self.live(client)
        self.assertEqual(resume.load(), before)  # where the stream stood when watched
        seen = [await self.hub.build(WIDGET, n, "failure") for n in (2, 3)]
        await wait_until(lambda: first.ids == seen, what="the first run's events")
        await wait_until(lambda: resume.load() == seen[-1], what="the position on disk")
        await client.stop()
        saved = json.loads(resume.path.read_text())
        self.assertEqual((saved["last_id"], saved["hub"]), (seen[-1], self.hub.hub.pb_address))

        missed = [await self.hub.build(WIDGET, n, "success") for n in (4, 5)]  # while stopped
        second, again = self.client(
            resume=ResumeFile.for_hub(self.hub.hub.pb_address, None, state_dir, [WIDGET])
        )
        again.start()
        await self.live(again)
        self.assertEqual(second.ids, missed)
        self.assertIn(Phase.CATCHING_UP, second.phases)
        self.assertEqual(second.states[-1].since, seen[-1])
        self.assertIn("caught up on 2 events", second.states[-1].message)
        live = await self.hub.build(WIDGET, 6, "success")
        await wait_until(lambda: second.ids == [*missed, live], what="the live event")
        await again.stop()
        self.assertEqual(resume.load(), live)

    def test_a_damaged_file_means_no_position(self) -> None:
        path = Path(self.mktemp())
        path.parent.mkdir(parents=True, exist_ok=True)
        for text in ("", "{", "[]", '{"last_id": "7"}', '{"last_id": -1}', '{"last_id": true}'):
            path.write_text(text)
            self.assertIsNone(ResumeFile(path).load(), text)
        ResumeFile(path).save(42)
        self.assertEqual(ResumeFile(path).load(), 42)
        self.assertEqual([p.name for p in path.parent.iterdir()], [path.name])  # no temporary left

    def test_one_file_per_hub_user_and_project_set(self) -> None:
        self.assertEqual(state_file_name("tcp:127.0.0.1:8787", "ada"), "tcp_127.0.0.1_8787-ada.json")
        self.assertEqual(state_file_name("tcp:127.0.0.1:8787", None), "tcp_127.0.0.1_8787-anonymous.json")
        self.assertEqual(
            state_file_name("tls:hub.example.com:8787:trustRoots=/etc/ca/", "../x"),
            "tls_hub.example.com_8787_trustRoots_etc_ca-.._x.json",
        )
        one = state_file_name("tcp:127.0.0.1:8787", None, ["acme/widget", "acme/gadget"])
        self.assertRegex(one, r"^tcp_127.0.0.1_8787-anonymous-[0-9a-f]{12}\.json$")
        self.assertEqual(one, state_file_name("tcp:127.0.0.1:8787", None, ["acme/gadget", "acme/widget"]))
        self.assertNotEqual(one, state_file_name("tcp:127.0.0.1:8787", None, ["acme/widget"]))

    async def test_two_watches_of_different_projects_do_not_share_a_position(self) -> None:
        await self.start_hub()
        state_dir = Path(self.mktemp())
        hub = self.hub.hub.pb_address

        async def run(project: str, posts: list[tuple[str, int]]) -> list[int]:
            recorder, client = self.client(
                projects=[project], resume=ResumeFile.for_hub(hub, None, state_dir, projects=[project])
            )
            client.start()
            await self.live(client)
            ids = [await self.hub.build(p, n, "failure") for p, n in posts]
            mine = [i for i, (p, _) in zip(ids, posts, strict=True) if p == project]
            await wait_until(
                lambda: recorder.ids[-len(mine) :] == mine, what=missing_events(mine, recorder.ids)
            )
            await client.stop()
            return recorder.ids

        await run(WIDGET, [(WIDGET, 1)])
        missed = await self.hub.build(WIDGET, 2, "failure")  # while no widget watch runs
        await run("acme/gadget", [("acme/gadget", 1)])  # a later event of another stream
        again = await run(WIDGET, [(WIDGET, 3)])
        self.assertEqual(again[0], missed, "the widget watch skipped what it missed")


class SettingsTests(unittest.TestCase):
    def write(self, name: str, text: str, mode: int = 0o600) -> Path:
        directory = Path(self.mktemp()).resolve()
        directory.mkdir(parents=True)
        path = directory / name
        path.write_text(text)
        path.chmod(mode)
        return path

    def test_the_client_config_file(self) -> None:
        path = self.write(
            "client.toml",
            'hub = "tls:hub.example.com:8787"\nuser = "ada"\ntoken_file = "token"\nprojects = ["acme/widget"]\n',
        )
        config = load_config(path, environ={})
        self.assertEqual(
            (config.hub, config.user, config.projects), ("tls:hub.example.com:8787", "ada", ("acme/widget",))
        )
        self.assertEqual(config.token_file, path.parent / "token")  # relative to the config file
        missing = Path(self.mktemp()) / "client.toml"
        with self.assertRaises(ClientConfigError):
            load_config(missing, environ={})  # named explicitly: must exist
        for bad in ('hubb = "x"', "projects = 3", 'user = ""', "hub = ["):
            with self.assertRaises(ClientConfigError, msg=bad):
                load_config(self.write("client.toml", bad), environ={})

    def test_a_hub_of_several_nodes_from_options_environment_and_file(self) -> None:
        a, b, c = "tcp:10.0.0.1:8787", "tcp:10.0.0.2:8787", "tls:hub.example.com:8787"
        listed = self.write("client.toml", f'hub = ["{a}", "{b}"]\n')
        self.assertEqual(load_config(listed, environ={}).hub, f"{a},{b}")
        joined = self.write("client.toml", f'hub = "{a}, {b}"\n')
        self.assertEqual(hub_list(load_config(joined, environ={}).hub), (a, b))

        def resolve(*argv: str, environ: dict[str, str] | None = None) -> str:
            parser = argparse.ArgumentParser()
            add_connection_options(parser)
            args = parser.parse_args([*argv, "--client-config", str(joined)])
            return resolve_connection(args, environ=environ or {}).hub

        self.assertEqual(resolve(), f"{a},{b}")
        self.assertEqual(resolve(environ={HUB_VARIABLE: c}), c)  # the environment over the file
        self.assertEqual(resolve("--hub", b, "--hub", f"{c},{a}", environ={HUB_VARIABLE: c}), f"{b},{c},{a}")
        self.assertEqual(resolve("--hub", a), a)  # one endpoint: as it always was
        with self.assertRaises(ClientConfigError) as bad:
            resolve("--hub", a, "--hub", "tcp:nowhere")
        self.assertIn("--hub: not an endpoint: 'tcp:nowhere'", str(bad.exception))
        for wrong in ("hub = []", 'hub = [""]', "hub = [1]", 'hub = " , "'):
            with self.assertRaises(ClientConfigError, msg=wrong):
                load_config(self.write("client.toml", wrong), environ={})

    def test_where_the_token_comes_from(self) -> None:
        token_file = self.write("token", "from-file\n")
        open_file = self.write("token", "open-file\n", mode=0o644)
        config = load_config(self.write("client.toml", f'token_file = "{open_file}"\n'), environ={})
        env = {"BUILDNOTIFY_TOKEN": "from-env"}
        self.assertEqual(resolve_token("given", token_file, config, env), ("given", None))
        self.assertEqual(resolve_token(None, token_file, config, env), ("from-file", None))
        self.assertEqual(resolve_token(None, None, config, env), ("from-env", None))
        token, warning = resolve_token(None, None, config, {})
        self.assertEqual(token, "open-file")
        self.assertIn("chmod 600", warning)
        self.assertEqual(resolve_token(None, None, None, {}), (None, None))
        with self.assertRaises(ClientConfigError):
            resolve_token(None, Path(self.mktemp()), None, {})
        with self.assertRaises(ClientConfigError):
            resolve_token(None, self.write("token", "  \n"), None, {})

    def test_an_anonymous_client_must_name_projects(self) -> None:
        with self.assertRaises(ValueError):
            WatchClient(None, projects=None)
        with self.assertRaises(ValueError):
            WatchClient(None, user="ada", token=None, projects=["p"])
