"""Per-developer state on SQLite and PostgreSQL: pending alerts and acks,
watch and mute settings, claims, and the newest finished state per branch."""

from __future__ import annotations

from datetime import timedelta, timezone

from sqlalchemy import insert, select

from buildnotify.events import BuildEvent, Status
from buildnotify.store import accounts, database, personal
from buildnotify.store.batch import record_batch
from buildnotify.store.schema import alerts, claims
from tests.support import database_url, per_backend
from tests.test_store import T0, build, delivery


class PersonalTests:
    backend = "sqlite"

    def setUp(self) -> None:
        self.engine = database.create(database_url(self, self.backend))
        self.addCleanup(self.engine.dispose)
        database.upgrade(self.engine)
        self.ada = self.do(accounts.add_developer, "ada")
        self.bob = self.do(accounts.add_developer, "bob")

    def do(self, function, *args, **kwargs):
        """Run one store function in its own transaction."""
        with self.engine.begin() as conn:
            return function(conn, *args, **kwargs)

    def record(self, *events: BuildEvent) -> list[BuildEvent]:
        recorded = self.do(record_batch, [delivery(event) for event in events])
        return [event for r in recorded for event in r.events]

    def alert(self, developer_id: int, event: BuildEvent) -> int:
        with self.engine.begin() as conn:
            return conn.execute(
                insert(alerts)
                .values(developer_id=developer_id, event_id=event.id, created_at=T0)
                .returning(alerts.c.id)
            ).scalar_one()

    # -- alerts --------------------------------------------------------------------------

    def test_pending_alerts_are_the_developers_own_oldest_first(self) -> None:
        first, second, third = self.record(
            build(1, Status.FAILURE), build(2, Status.FAILURE), build(3, Status.SUCCESS)
        )
        ada_second = self.alert(self.ada, second)  # created out of event order
        ada_first = self.alert(self.ada, first)
        self.alert(self.bob, third)
        self.assertEqual(
            self.do(personal.pending_alerts, self.ada), [(ada_first, first), (ada_second, second)]
        )
        [(_, bobs)] = self.do(personal.pending_alerts, self.bob)
        self.assertEqual(bobs, third)
        self.assertEqual(bobs.finished_at, third.finished_at)
        self.assertEqual(bobs.received_at.tzinfo, timezone.utc)

    def test_acks_count_only_new_acks_of_ones_own_alerts(self) -> None:
        first, second = self.record(build(1, Status.FAILURE), build(2, Status.FAILURE))
        ada_first = self.alert(self.ada, first)
        ada_second = self.alert(self.ada, second)
        bob_first = self.alert(self.bob, first)

        self.assertEqual(self.do(personal.ack_alerts, self.ada, [ada_first, bob_first, 999_999]), 1)
        self.assertEqual(self.do(personal.pending_alerts, self.ada), [(ada_second, second)])
        self.assertEqual([a for a, _ in self.do(personal.pending_alerts, self.bob)], [bob_first])

        self.assertEqual(self.do(personal.ack_alerts, self.ada, [ada_first]), 0)  # acked already
        self.assertEqual(self.do(personal.ack_alerts, self.ada, []), 0)
        self.assertEqual(self.do(personal.ack_alerts, self.ada, iter([ada_second, ada_second])), 1)
        self.assertEqual(self.do(personal.pending_alerts, self.ada), [])
        with self.engine.connect() as conn:
            acked = dict(conn.execute(select(alerts.c.id, alerts.c.acked_at)).all())
        self.assertIsNotNone(acked[ada_first])
        self.assertIsNone(acked[bob_first])

    # -- settings --------------------------------------------------------------------------

    def test_settings(self) -> None:
        until = T0 + timedelta(hours=2)
        self.assertEqual(self.do(personal.settings, self.ada), {})

        self.do(personal.set_watching, self.ada, "acme/widget", False)
        self.do(personal.set_muted, self.ada, "acme/widget", until)
        self.do(personal.set_muted, self.ada, "acme/gadget", until)  # new row: watching by default
        self.do(personal.set_watching, self.bob, "acme/widget", True)
        self.assertEqual(
            self.do(personal.settings, self.ada),
            {
                "acme/gadget": {"watching": True, "muted_until": until},
                "acme/widget": {"watching": False, "muted_until": until},
            },
        )
        self.assertEqual(
            self.do(personal.settings, self.bob), {"acme/widget": {"watching": True, "muted_until": None}}
        )

        self.do(personal.set_muted, self.ada, "acme/widget", None)
        self.do(personal.set_watching, self.ada, "acme/widget", True)
        settings = self.do(personal.settings, self.ada)
        self.assertEqual(settings["acme/widget"], {"watching": True, "muted_until": None})
        self.assertEqual(settings["acme/gadget"]["muted_until"].tzinfo, timezone.utc)

    # -- claims ------------------------------------------------------------------------------

    def test_claim_and_list(self) -> None:
        got = self.do(personal.claim, "acme/widget", "ci", "main", "ada", "looking", T0)
        self.assertEqual(
            got,
            {
                "project": "acme/widget",
                "pipeline": "ci",
                "branch": "main",
                "developer": "ada",
                "note": "looking",
                "claimed_at": T0,
                "replaced": None,
            },
        )
        self.do(personal.claim, "acme/widget", "lint", None, "bob", None, T0)
        self.do(personal.claim, "acme/other", "ci", "main", "bob", None, T0)
        listed = self.do(personal.claims_for, ["acme/widget"])
        self.assertEqual(
            listed,
            [
                {k: v for k, v in got.items() if k != "replaced"},
                {
                    "project": "acme/widget",
                    "pipeline": "lint",
                    "branch": None,
                    "developer": "bob",
                    "note": None,
                    "claimed_at": T0,
                },
            ],
        )
        self.assertEqual(len(self.do(personal.claims_for, {"acme/widget", "acme/other"})), 3)
        self.assertEqual(self.do(personal.claims_for, []), [])
        with self.engine.connect() as conn:  # no branch is stored as ""
            self.assertEqual(conn.scalar(select(claims.c.branch).where(claims.c.pipeline == "lint")), "")

    def test_a_second_claim_replaces_the_first_and_says_whose_it_was(self) -> None:
        later = T0 + timedelta(minutes=5)
        self.do(personal.claim, "acme/widget", "ci", "main", "ada", "first", T0)
        again = self.do(personal.claim, "acme/widget", "ci", "main", "ada", "still me", later)
        self.assertIsNone(again["replaced"])  # one's own claim is just updated
        taken = self.do(personal.claim, "acme/widget", "ci", "main", "bob", "mine now", later)
        self.assertEqual(
            taken["replaced"],
            {
                "project": "acme/widget",
                "pipeline": "ci",
                "branch": "main",
                "developer": "ada",
                "note": "still me",
                "claimed_at": later,
            },
        )
        [current] = self.do(personal.claims_for, ["acme/widget"])
        self.assertEqual((current["developer"], current["note"]), ("bob", "mine now"))

    def test_unclaim(self) -> None:
        self.do(personal.claim, "acme/widget", "ci", None, "ada", None, T0)
        self.assertFalse(self.do(personal.unclaim, "acme/widget", "ci", None, "bob"))
        self.assertFalse(self.do(personal.unclaim, "acme/widget", "ci", "main", "ada"))
        self.assertEqual(len(self.do(personal.claims_for, ["acme/widget"])), 1)
        self.assertTrue(self.do(personal.unclaim, "acme/widget", "ci", None, "ada"))
        self.assertFalse(self.do(personal.unclaim, "acme/widget", "ci", None))
        self.do(personal.claim, "acme/widget", "ci", "main", "ada", None, T0)
        self.assertTrue(self.do(personal.unclaim, "acme/widget", "ci", "main"))  # anyone's
        self.assertEqual(self.do(personal.claims_for, ["acme/widget"]), [])

    def test_clear_claims_returns_what_it_cleared(self) -> None:
        self.do(personal.claim, "acme/widget", "ci", "main", "ada", "on it", T0)
        self.do(personal.claim, "acme/widget", "ci", "feature", "bob", None, T0)
        cleared = self.do(personal.clear_claims, "acme/widget", "ci", "main")
        self.assertEqual(
            [(c["developer"], c["note"], c["branch"]) for c in cleared], [("ada", "on it", "main")]
        )
        self.assertEqual(self.do(personal.clear_claims, "acme/widget", "ci", "main"), [])
        self.assertEqual([c["branch"] for c in self.do(personal.claims_for, ["acme/widget"])], ["feature"])

    # -- status ----------------------------------------------------------------------------

    def test_latest_states_pick_the_newest_finished_run_per_branch(self) -> None:
        stored = self.record(
            build(1, Status.FAILURE, branch="main"),
            build(2, Status.SUCCESS, branch="main"),
            build(3, Status.RUNNING, branch="main"),  # not finished: not a state yet
            build(9, Status.FAILURE, branch="feature"),
            build(4, Status.SUCCESS, branch="main", pipeline="lint"),
            build(5, Status.ERROR, branch="main", project="acme/other"),
            build(6, Status.QUEUED, branch="queued-only"),
        )
        by_number = {(e.pipeline, e.build_number): e for e in stored}
        # A run with a lower number finishing later does not displace a newer run.
        [late] = self.record(build(8, Status.SUCCESS, branch="feature"))

        states = self.do(personal.latest_states, ["acme/widget"])
        self.assertEqual(
            [(e.pipeline, e.branch, e.build_number, e.status) for e in states],
            [
                ("ci", "feature", 9, Status.FAILURE),
                ("ci", "main", 2, Status.SUCCESS),
                ("lint", "main", 4, Status.SUCCESS),
            ],
        )
        self.assertEqual(states[1], by_number["ci", 2])  # the stored event itself
        self.assertNotIn(late, states)
        self.assertEqual(self.do(personal.latest_states, []), [])
        self.assertEqual(self.do(personal.latest_states, ["acme/nothing"]), [])
        both = self.do(personal.latest_states, ("acme/widget", "acme/other"))
        self.assertEqual([e.project for e in both], ["acme/other", *["acme/widget"] * 3])

    def test_latest_states_use_a_runs_newest_update(self) -> None:
        self.record(build(1, Status.RUNNING), build(1, Status.FAILURE))
        [retried] = self.record(build(1, Status.SUCCESS, attempt=2))
        self.record(build(1, Status.RUNNING))  # late: older than what is stored
        [state] = self.do(personal.latest_states, ["acme/widget"])
        self.assertEqual(state, retried)

    def test_latest_states_skip_cancelled_and_skipped_runs(self) -> None:
        failed, *_ = self.record(
            build(1, Status.FAILURE), build(2, Status.RUNNING), build(2, Status.CANCELLED)
        )
        self.record(build(1, Status.SKIPPED, branch="only-skipped"))
        [state] = self.do(personal.latest_states, ["acme/widget"])
        self.assertEqual(state, failed, "a cancelled run must not replace the failure before it")
        [passed] = self.record(build(3, Status.SUCCESS))
        self.record(build(4, Status.SKIPPED))
        self.assertEqual(self.do(personal.latest_states, ["acme/widget"]), [passed])

    def test_latest_states_without_a_branch(self) -> None:
        stored = self.record(
            build(1, Status.FAILURE, branch=None),
            build(2, Status.SUCCESS, branch=None),  # type: ignore[arg-type]
        )
        [state] = self.do(personal.latest_states, ["acme/widget"])
        self.assertEqual(state, stored[1])
        self.assertIsNone(state.branch)


per_backend(PersonalTests, globals())
