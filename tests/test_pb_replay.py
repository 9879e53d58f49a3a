"""Catching up after an absence (``watch(since=...)``), on SQLite and
PostgreSQL: pages of events in one ``events`` call each, every event once and
in order, pages bounded in bytes, older clients served event by event, and a
client that stops reading during a catch-up dropped as too slow."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet import task
from twisted.spread.flavors import NoSuchMethod

from buildnotify.hub import sessions
from tests.pbclient import RecordingMind, wait_until
from tests.support import per_backend
from tests.test_pb import PBTestCase

WIDGET, GADGET = "acme/widget", "acme/gadget"


class PageSizes(RecordingMind):
    """Remembers the size in bytes and events of every page."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[tuple[int, int]] = []

    def remote_events(self, page: bytes) -> None:
        self.sizes.append((len(page), len(json.loads(page))))
        super().remote_events(page)


class OlderClient(RecordingMind):
    """A client from before ``events``: it has ``event`` only."""

    remote_events = None  # type: ignore[assignment]  # PB finds no such method


class ReplayTests(PBTestCase):
    __test__ = False

    async def post(self, count: int, **fields: Any) -> list[int]:
        """``count`` builds, two of three of the widget; its ids."""
        widget = []
        for number in range(1, count + 1):
            project = GADGET if number % 3 == 0 else WIDGET
            event_id = await self.hub.build(project, number, "failure" if number % 2 else "success", **fields)
            if project == WIDGET:
                widget.append(event_id)
        return widget

    async def catch_up(self, mind: RecordingMind, since: int = 0) -> dict[str, Any]:
        perspective = await (await self.client()).anonymous(mind)
        self.addCleanup(lambda: perspective)  # keep the session
        return await perspective.callRemote("watch", [WIDGET], since)

    async def test_a_long_absence_arrives_in_pages_every_event_once_in_order(self) -> None:
        self.patch(sessions, "CATCH_UP_PAGE", 7)
        await self.start()
        widget = await self.post(60)
        mind = RecordingMind()
        answer = await self.catch_up(mind)
        self.assertEqual(mind.event_ids, widget)  # all of them before the answer
        self.assertEqual(answer["replayed"], len(widget))
        self.assertGreaterEqual(answer["last_id"], widget[-1])
        self.assertEqual(mind.pages, -(-len(widget) // 7))
        live = await self.hub.build(WIDGET, 100, "failure")
        await wait_until(lambda: mind.event_ids == [*widget, live], what="the live event after the catch-up")
        resumed = RecordingMind()
        await self.catch_up(resumed, since=widget[20])
        self.assertEqual(resumed.event_ids, [*widget[21:], live])

    async def test_pages_are_bounded_in_bytes(self) -> None:
        await self.start(queue_bytes=16 * 1024)  # pages of at most 8 KiB
        widget = await self.post(30, url="https://ci.example.com/" + "x" * 1500)
        mind = PageSizes()
        await self.catch_up(mind)
        self.assertEqual(mind.event_ids, widget)
        self.assertGreater(len(mind.sizes), 3)
        self.assertTrue(all(size <= 8 * 1024 for size, _ in mind.sizes), mind.sizes)

    async def test_an_older_client_gets_the_catch_up_event_by_event(self) -> None:
        self.patch(sessions, "CATCH_UP_PAGE", 7)
        await self.start()
        widget = await self.post(30)
        mind = OlderClient()
        answer = await self.catch_up(mind)
        self.assertEqual(mind.event_ids, widget)
        self.assertEqual((answer["replayed"], mind.pages), (len(widget), 0))
        live = await self.hub.build(WIDGET, 100, "failure")
        await wait_until(lambda: mind.event_ids == [*widget, live], what="the live event")
        # the client's PB logs the call it had no method for, once
        self.assertEqual(len(self.flushLoggedErrors(NoSuchMethod)), 1)

    async def test_a_client_that_stops_reading_during_a_catch_up_is_dropped_as_too_slow(self) -> None:
        clock = task.Clock()
        await self.start(clock=clock)
        widget = await self.post(45, url="https://ci.example.com/" + "x" * 20_000)  # 600 KB: pages
        mind = RecordingMind()
        client = await self.client()
        perspective = await client.anonymous(mind)
        service = self.hub.hub.service
        [session] = service.sessions
        client.broker.transport.pauseProducing()  # stops reading before the first page
        watch = perspective.callRemote("watch", [WIDGET], 0)
        watch.addErrback(lambda _: None)  # it is never answered

        def waiting_for_an_answer() -> bool:
            deadline = clock.seconds() + sessions.PAGE_TIMEOUT
            return any(call.getTime() == deadline for call in clock.getDelayedCalls())

        await wait_until(waiting_for_an_answer, what="the hub to wait for the first page's answer")
        for number in range(100, 103):  # live events meanwhile
            await self.hub.build(WIDGET, number, "failure")
        clock.advance(sessions.PAGE_TIMEOUT)
        self.assertEqual(session.ended, "too slow")
        limit = service.settings.queue_bytes
        self.assertLessEqual(session.outbox.peak_bytes, limit // 2, "the hub queued more than a page")
        client.broker.transport.resumeProducing()
        await wait_until(lambda: mind.goodbyes == ["too slow"], what="the goodbye behind the first page")
        self.assertEqual(mind.event_ids, widget[: len(mind.event_ids)])  # a first part, in order
        self.assertLess(len(mind.event_ids), len(widget))


per_backend(ReplayTests, globals())
