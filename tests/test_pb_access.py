"""Access taken away takes effect at once, on both databases: the account
commands (here the real CLI in another process, and the same functions
through the store) change who may see what, and sessions already attached
learn of it at the hub's next look (``[pb] access_poll``, on a task.Clock)."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

from twisted.internet import task
from twisted.internet.threads import deferToThread
from twisted.spread import pb

from buildnotify.store import accounts
from tests.pbclient import RecordingMind, add_developer, delivered, wait_until
from tests.support import per_backend
from tests.test_pb import PBTestCase
from tests.test_pb_sessions import closed, remote_type

SECRET, OPEN = "acme/secret", "acme/open"
GOODBYE = "your sign-in is no longer valid: token replaced or account removed"


class UnwatchedMind(RecordingMind):
    def __init__(self) -> None:
        super().__init__()
        self.unwatched: list[tuple[list[str], str]] = []
        self.perspective: pb.RemoteReference | None = None  # the session it is the mind of

    def remote_unwatched(self, projects: list[str], reason: str) -> None:
        self.unwatched.append((projects, reason))


class AccessTests(PBTestCase):
    __test__ = False  # run per backend: per_backend below

    async def start_clocked(self) -> task.Clock:
        self.clock = task.Clock()
        await self.start(clock=self.clock, access_poll=1.0)
        return self.clock

    async def look(self) -> None:
        """The hub's next look at the access changes (the tests then wait for
        what the sessions are told)."""
        watch = self.hub.hub.service.access
        self.clock.advance(1.0)
        await wait_until(lambda: watch._polling is None, what="the hub to read the access changes")

    def cli(self, *args: str) -> Any:
        """The account command, as an operator runs it: another process."""
        command = [sys.executable, "-m", "buildnotify.cli", *args, "--db", self.hub.hub.config.database]
        return deferToThread(subprocess.run, command, capture_output=True, text=True, check=True)

    async def watcher(self, name: str | None, token: str | None, projects: list[str]) -> UnwatchedMind:
        mind = UnwatchedMind()
        client = await self.client()
        perspective = await (client.login(name, token, mind) if name else client.anonymous(mind))
        mind.perspective = perspective  # keep it: dropping it logs the session out
        self.kept = [*getattr(self, "kept", []), client]
        await perspective.callRemote("watch", projects)
        return mind

    async def test_a_project_made_private_stops_reaching_who_may_not_see_it(self) -> None:
        await self.start_clocked()
        token = await add_developer(self.store, "alice")
        await self.store.write(lambda conn: accounts.add_member(conn, SECRET, "alice"))
        stranger = await self.watcher(None, None, [SECRET, OPEN])
        alice = await self.watcher("alice", token, [SECRET])
        before = await self.hub.build(SECRET, 1, "failure")
        await wait_until(lambda: before in stranger.event_ids, what="the event while it was public")

        await self.cli("projects", "private", SECRET)
        await self.look()
        await wait_until(lambda: stranger.unwatched, what="unwatched on the stranger's client")
        self.assertEqual(stranger.unwatched, [([SECRET], "no such project, or it is private")])
        hidden = await self.hub.build(SECRET, 2, "failure")
        marker = await self.hub.build(OPEN, 1, "failure")
        await wait_until(lambda: marker in stranger.event_ids, what="the open project's event")
        await wait_until(lambda: hidden in alice.event_ids, what="the member's event")
        self.assertNotIn(hidden, stranger.event_ids, "a private event reached an anonymous client")
        self.assertEqual(alice.unwatched, [])

    async def test_a_member_removed_stops_receiving_the_project(self) -> None:
        await self.start_clocked()
        token = await add_developer(self.store, "alice")
        await self.store.write(lambda conn: accounts.add_member(conn, SECRET, "alice"))
        await self.store.write(lambda conn: accounts.set_private(conn, SECRET, True))
        alice = await self.watcher("alice", token, [SECRET])
        await self.cli("projects", "remove-member", SECRET, "alice")
        await self.look()
        await wait_until(lambda: alice.unwatched, what="unwatched on alice's client")
        after = await self.hub.build(SECRET, 1, "failure")
        await delivered(alice.perspective)  # the event would be here by now
        self.assertNotIn(
            after, alice.event_ids, f"event {after} of {SECRET} reached a member removed from it"
        )
        self.assertEqual(alice.goodbyes, [])  # the session itself goes on

    async def test_a_replaced_token_ends_every_session_signed_in_with_the_old_one(self) -> None:
        await self.start_clocked()
        old_token = await add_developer(self.store, "alice")
        mind = await self.watcher("alice", old_token, [OPEN])
        script_client = await self.client()
        script = await script_client.login("alice", old_token, None)  # clientless
        other = await add_developer(self.store, "bob")
        bob = await self.watcher("bob", other, [OPEN])

        done = await self.cli("users", "token", "alice")
        [new_token] = [w for w in done.stdout.split() if w.startswith(accounts.TOKEN_PREFIX)]
        await self.look()
        await wait_until(lambda: mind.goodbyes, what="goodbye on alice's client")
        self.assertEqual(mind.goodbyes, [GOODBYE])
        with self.assertRaises((pb.RemoteError, pb.DeadReferenceError, pb.PBConnectionLost)) as ended:
            await script.callRemote("ping")
        if isinstance(ended.exception, pb.RemoteError):
            self.assertEqual(remote_type(ended.exception), "buildnotify.protocol.SessionEnded")
        self.assertEqual(bob.goodbyes, [])
        again = await (await self.client()).login("alice", new_token, None)
        self.assertEqual(await again.callRemote("ping"), "pong")

    async def test_a_removed_developer_is_told_and_cut_off(self) -> None:
        await self.start_clocked()
        token = await add_developer(self.store, "alice")
        client = await self.client()
        mind = UnwatchedMind()
        perspective = await client.login("alice", token, mind)
        await perspective.callRemote("watch", [OPEN])
        await self.cli("users", "remove", "alice")
        await self.look()
        await wait_until(lambda: mind.goodbyes == [GOODBYE], what="goodbye on alice's client")
        await wait_until(lambda: closed(client), what="the hub to close alice's connection")

    async def test_a_watch_of_saved_projects_skips_one_that_became_invisible(self) -> None:
        await self.start_clocked()
        token = await add_developer(self.store, "alice")
        await self.watcher("alice", token, [SECRET, OPEN])  # remembered
        await self.store.write(lambda conn: accounts.set_private(conn, SECRET, True))
        mind = UnwatchedMind()
        later = await (await self.client()).login("alice", token, mind)
        answer = await later.callRemote("watch", None)
        self.assertEqual((answer["watching"], answer["skipped"]), ([OPEN], [SECRET]))
        for project in (OPEN, SECRET):
            await self.hub.build(project, 1, "failure")
        self.assertEqual([r["project"] for r in await later.callRemote("status")], [OPEN])


per_backend(AccessTests, globals())
