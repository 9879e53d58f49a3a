"""The tray against a real hub on loopback, offscreen: acting from the menu
(claim, release, acknowledge), a first run, projects the hub will not show,
an outage, a goodbye and signing in again, and the cancelled-run rule.

The reactor runs in the test's thread here (trial drives it), so the bridge
delivers directly; the app runs it in a thread of its own (see
test_tray_desktop.py for that, in a real window).
"""

from __future__ import annotations

from twisted.trial import unittest

from buildnotify.store import accounts
from buildnotify_tray.builds import BuildState
from buildnotify_tray.menu import PROJECTS, SIGN_IN_AGAIN
from buildnotify_tray.model import Colour, Link
from tests.pbclient import Client, RecordingMind, add_developer, wait_until
from tests.support import RunningHub
from traysupport import Tray, pb_outage

WIDGET = "acme/widget"
ALICE = {"name": "Alice", "email": "alice@example.com", "login": "alice"}


class TrayEndToEnd(unittest.TestCase):
    async def start_hub(self) -> RunningHub:
        self.hub = await RunningHub.start(self)
        return self.hub

    def tray(self, **options: object) -> Tray:
        tray = Tray(self.hub.hub.pb_address, **options)
        self.addCleanup(tray.close)
        tray.client.start()
        return tray

    async def live(self, tray: Tray, what: str = "the tray to go live") -> None:
        await wait_until(lambda: tray.model.link == Link.LIVE and tray.model.visible is not None, what=what)

    async def widget_tray(self) -> Tray:
        """An anonymous tray on acme/widget, live, the branch's state known."""
        tray = self.tray(projects=[WIDGET])
        await self.live(tray)
        await wait_until(lambda: tray.model.entries(), what="acme/widget's state in the tray")
        return tray

    async def test_claim_release_and_acknowledge_from_the_menu(self) -> None:
        hub = await self.start_hub()
        token = await add_developer(hub.hub.store, "alice", logins=["alice"])
        await hub.build(WIDGET, 1, "failure", author=ALICE, url="https://ci.example.com/1")
        tray = self.tray(user="alice", token=token, projects=[WIDGET])
        await self.live(tray)
        # the state from status(), the pending alert from alerts(): both there at start
        await wait_until(lambda: tray.model.alert_entries() and tray.model.entries(), what="the alert")
        self.assertEqual(tray.model.colour, Colour.RED)
        self.assertEqual(tray.texts()[0].split(",")[:2], ["acme/widget ci@main: new failure", " #1 by you"])

        tray.menu.find("Claim").trigger()
        await wait_until(lambda: tray.texts()[0].endswith('; you are on it: "looking"'), what="my claim")
        tray.menu.find("Release my claim").trigger()
        await wait_until(lambda: "on it" not in tray.texts()[0], what="the claim released")

        tray.menu.find("Your commit").menu().actions()[1].trigger()  # Acknowledge
        await wait_until(lambda: not tray.model.alert_entries(), what="the alert acknowledged")
        other = await Client.connect(self, hub.hub.pb_address)
        session = await other.login("alice", token)
        self.assertEqual(await session.callRemote("alerts"), [], "an acknowledged alert is not sent again")

        await hub.build(WIDGET, 2, "success", author=ALICE)
        await wait_until(lambda: tray.model.worst == BuildState.PASSING, what="the fix")
        tray.client.claim(("acme/widget", "ci", "main"), None)  # the menu would not offer it
        refusals = lambda: [n for n in tray.model.pending if n.kind == "refused"]  # noqa: E731
        await wait_until(refusals, what="the hub's refusal, notified")
        [refusal] = refusals()
        self.assertIn("could not claim acme/widget ci@main: acme/widget ci@main is not failing", refusal.body)

    async def test_a_first_run_watches_every_visible_project_and_the_choice_stays(self) -> None:
        hub = await self.start_hub()
        token = await add_developer(hub.hub.store, "alice")
        await hub.build(WIDGET, 1, "success")
        await hub.build("acme/gadget", 1, "failure")
        await hub.build("acme/secret", 1, "failure")
        await hub.hub.store.write(lambda conn: accounts.set_private(conn, "acme/secret", True))
        first = self.tray(user="alice", token=token)
        await self.live(first)
        await wait_until(lambda: len(first.model.entries()) == 2, what="both visible projects' builds")
        self.assertEqual(first.model.watching, ("acme/gadget", WIDGET))
        self.assertIn("Watching all 2 projects you can see (change in Projects)", first.model.header())
        gadget = next(a for a in first.menu.find(PROJECTS).menu().actions() if a.text() == "acme/gadget")
        gadget.trigger()  # unticked: no longer watched
        await wait_until(lambda: first.model.watching == (WIDGET,), what="acme/gadget unwatched")
        self.assertEqual([e.key[0] for e in first.model.entries()], [WIDGET])
        await first.close()

        again = self.tray(user="alice", token=token)
        await self.live(again)
        await wait_until(lambda: again.model.entries(), what="the builds")
        self.assertEqual(again.model.watching, (WIDGET,), "the hub remembers the choice")
        self.assertFalse(again.model.first_run)

    async def test_a_hidden_or_misspelled_project_is_named_and_the_rest_watched(self) -> None:
        hub = await self.start_hub()
        await hub.build(WIDGET, 1, "failure")
        await hub.hub.store.write(lambda conn: accounts.set_private(conn, "acme/secret", True))
        tray = self.tray(projects=[WIDGET, "acme/secret", "acme/widgit"])  # anonymous
        await self.live(tray, what="the tray to watch what it may")
        await wait_until(lambda: tray.model.entries(), what="acme/widget's build")
        self.assertEqual(tray.model.watching, (WIDGET, "acme/widgit"))
        self.assertEqual(tray.model.hidden, ("acme/secret",))
        header = tray.model.header()
        self.assertIn("Not visible: acme/secret (no such project, or private)", header)
        self.assertIn("No builds yet: acme/widgit (misspelled?)", header)
        self.assertEqual(tray.model.worst, BuildState.NEW_FAILURE)

    async def test_an_outage_keeps_the_last_state_marked_stale(self) -> None:
        hub = await self.start_hub()
        await hub.build(WIDGET, 1, "failure")
        tray = await self.widget_tray()
        restore = await pb_outage(hub.hub)
        await wait_until(lambda: tray.model.link == Link.STALE, what="the tray to notice the outage")
        self.assertEqual(tray.model.colour, Colour.RED, "red stays red")
        self.assertTrue(tray.menu.menu.actions()[0].text().startswith("Not live: builds as of "))
        await hub.build(WIDGET, 2, "failure")  # while the tray cannot hear
        await restore()
        await self.live(tray, what="the tray to come back")
        await wait_until(
            lambda: tray.model.worst == BuildState.STILL_FAILING, what="the build missed during the outage"
        )

    async def test_a_goodbye_greys_the_list_and_sign_in_again_takes_over(self) -> None:
        hub = await self.start_hub()
        token = await add_developer(hub.hub.store, "alice")
        await hub.build(WIDGET, 1, "failure", url="https://ci.example.com/1")
        tray = self.tray(user="alice", token=token, projects=[WIDGET])
        await self.live(tray)
        other = await Client.connect(self, hub.hub.pb_address)
        mind = RecordingMind()
        self.other_session = await other.login("alice", token, mind)  # kept: dropping it logs out
        await wait_until(lambda: tray.model.link == Link.SIGNED_OUT, what="the goodbye")
        self.assertEqual([a.isEnabled() for a in tray.menu.build_actions()], [False])
        await hub.build(WIDGET, 2, "success", url="https://ci.example.com/2")  # while signed out
        tray.menu.find(SIGN_IN_AGAIN).trigger()
        await self.live(tray, what="the tray signed in again")
        await wait_until(lambda: mind.goodbyes == ["signed in elsewhere"], what="the other client's goodbye")
        await wait_until(lambda: tray.model.worst == BuildState.PASSING, what="the build missed meanwhile")
        self.assertEqual([a.isEnabled() for a in tray.menu.build_actions()], [True])

    async def test_a_cancelled_run_after_a_failure_leaves_the_branch_failing(self) -> None:
        hub = await self.start_hub()
        await hub.build(WIDGET, 1, "failure")
        await hub.build(WIDGET, 2, "running")
        await hub.build(WIDGET, 2, "cancelled")
        tray = await self.widget_tray()
        [entry] = tray.model.entries()
        self.assertEqual(entry.state, BuildState.NEW_FAILURE)
        self.assertIn("#1 by", entry.text)

    async def test_a_build_running_when_the_tray_starts_shows_as_building(self) -> None:
        hub = await self.start_hub()
        await hub.build(WIDGET, 1, "success")
        await hub.build(WIDGET, 2, "running", url="https://ci.example.com/2")
        tray = await self.widget_tray()
        [entry] = tray.model.entries()
        self.assertEqual(entry.state, BuildState.BUILDING, "status() has finished builds only")
        self.assertTrue(entry.text.startswith("acme/widget ci@main: building #2 by"), entry.text)
        self.assertEqual(entry.url, "https://ci.example.com/2")
