"""The store, on SQLite and PostgreSQL: dedupe, ordering, transitions, group
commit, and that migrations build exactly the schema the code uses."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text
from twisted.internet import reactor
from twisted.internet.defer import gatherResults
from twisted.internet.threads import deferToThread
from twisted.trial import unittest

from buildnotify.delivery import Delivery
from buildnotify.events import Author, BuildEvent, Status, Transition
from buildnotify.store import Recorded, Store, database, queries
from buildnotify.store.batch import record_batch
from buildnotify.store.cache import RecordCache
from buildnotify.store.schema import metadata
from tests.support import database_url, per_backend

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=timezone.utc)


def build(
    number: int, status: Status, *, branch: str = "main", attempt: int = 1, **extra: object
) -> BuildEvent:
    return BuildEvent(
        provider="generic",
        project=str(extra.pop("project", "acme/widget")),
        pipeline=str(extra.pop("pipeline", "ci")),
        build_id=str(extra.pop("build_id", number)),
        build_number=number,
        attempt=attempt,
        status=status,
        branch=branch,
        received_at=T0 + timedelta(minutes=number),
        **extra,  # type: ignore[arg-type]
    )


def every_field() -> BuildEvent:
    """Build 7 of acme/widget, failed, with every optional field set."""
    return build(
        7,
        Status.FAILURE,
        sha="0123456789abcdef0123456789abcdef01234567",
        author=Author("Ada Lovelace", "ada@example.com", "ada"),
        url="https://ci.example.com/acme/widget/7",
        started_at=T0,
        finished_at=T0 + timedelta(minutes=3),
    )


_keys = iter(range(1_000_000))


def delivery(*events: BuildEvent, key: str | None = None) -> Delivery:
    return Delivery(provider="generic", key=key or f"k{next(_keys)}", events=events)


class StoreTests:
    backend = "sqlite"
    shared = False  # the writer caches runs and branches across transactions

    def setUp(self) -> None:
        self.url = database_url(self, self.backend)
        self.store = Store.open(self.url, reactor, shared=self.shared)
        self.addCleanup(lambda: self.store.stop())  # the current store: a test may restart it

    async def record(self, *events: BuildEvent, key: str | None = None):
        return await self.store.record(delivery(*events, key=key))

    async def transitions(self, *events: BuildEvent) -> list[str | None]:
        out = []
        for event in events:
            recorded = await self.record(event)
            out.append(recorded.events[0].transition.value if recorded.events[0].transition else None)
        return out

    async def test_stored_fields_round_trip(self) -> None:
        event = every_field()
        recorded = await self.record(event, key="delivery-7")
        self.assertFalse(recorded.duplicate)
        [stored] = await self.store.history(after_id=0)
        self.assertEqual(stored, recorded.events[0])
        self.assertEqual(stored.id, recorded.events[0].id)
        self.assertEqual(stored.author, Author("Ada Lovelace", "ada@example.com", "ada"))
        self.assertEqual(stored.finished_at, T0 + timedelta(minutes=3))
        self.assertEqual(stored.finished_at.tzinfo, timezone.utc)
        self.assertEqual(stored.delivery_key, "delivery-7")
        self.assertEqual(stored.transition, Transition.FAILED)
        self.assertEqual(stored.replace(id=None, transition=None, delivery_key=None), event)

    async def test_the_wire_dicts_read_for_a_catch_up_are_the_events_dicts(self) -> None:
        await self.record(
            every_field(),
            build(8, Status.CANCELLED, branch=None, author=Author(None, None, None)),  # no transition
            build(9, Status.RUNNING, project="acme/gadget"),
        )
        for query in ({"after_id": 0}, {"after_id": 1, "projects": ["acme/widget"]}, {"limit": 2}):
            events = await self.store.read(queries.history, **query)
            wire = await self.store.read(queries.history_wire, **query)
            self.assertEqual(wire, [e.to_dict() for e in events], query)
            self.assertTrue(wire, query)

    async def test_times_are_stored_as_sqlalchemy_stores_them(self) -> None:
        """Rows go in through the DBAPI; their times must match the rows
        SQLAlchemy writes (the project row), or SQL comparisons would not."""
        await self.record(build(1, Status.SUCCESS, started_at=T0, finished_at=T0 + timedelta(seconds=1.5)))
        with self.store.engine.connect() as conn:
            raw = conn.execute(
                text(
                    "select e.received_at, p.created_at, d.received_at, e.started_at, b.moment"
                    " from events e, projects p, deliveries d, builds b"
                )
            ).one()
        self.assertEqual(len(set(raw[:3])), 1, raw)
        if self.backend == "sqlite":
            for value in raw:
                self.assertRegex(value, r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{6}$")

    async def test_ids_are_monotonic(self) -> None:
        ids = []
        for n in range(5):
            ids += [e.id for e in (await self.record(build(n, Status.SUCCESS))).events]
        self.assertEqual(ids, sorted(ids))
        self.assertEqual(len(set(ids)), 5)

    async def test_redelivery_is_stored_once(self) -> None:
        first = await self.record(build(1, Status.FAILURE), key="same")
        again = await self.record(build(1, Status.FAILURE), key="same")
        self.assertEqual(len(first.events), 1)
        self.assertTrue(again.duplicate)
        self.assertEqual(again.events, ())
        self.assertEqual(len(await self.store.history(after_id=0)), 1)

    async def test_redeliveries_in_one_group_are_stored_once(self) -> None:
        same = [self.store.record(delivery(build(1, Status.FAILURE), key="burst")) for _ in range(5)]
        results = await gatherResults(same)
        self.assertEqual(sorted(r.duplicate for r in results), [False, True, True, True, True])
        self.assertEqual(len(await self.store.history(after_id=0)), 1)

    async def test_transitions_follow_the_branch(self) -> None:
        got = await self.transitions(
            build(1, Status.SUCCESS),
            build(2, Status.FAILURE),
            build(3, Status.ERROR),
            build(4, Status.SUCCESS),
            build(5, Status.SUCCESS),
            build(6, Status.RUNNING),
            build(7, Status.QUEUED),
        )
        self.assertEqual(got, ["passed", "failed", "still_failing", "fixed", "passed", "started", None])

    async def test_first_red_build_is_failed(self) -> None:
        self.assertEqual(await self.transitions(build(1, Status.FAILURE)), ["failed"])

    async def test_cancelled_and_skipped_builds_do_not_count(self) -> None:
        got = await self.transitions(
            build(1, Status.FAILURE),
            build(2, Status.CANCELLED),
            build(3, Status.SKIPPED),
            build(4, Status.SUCCESS),
        )
        self.assertEqual(got, ["failed", None, None, "fixed"])

    async def test_branches_and_pipelines_are_separate(self) -> None:
        got = await self.transitions(
            build(1, Status.FAILURE, branch="main"),
            build(2, Status.SUCCESS, branch="feature"),
            build(3, Status.SUCCESS, branch="main", pipeline="lint"),
            build(4, Status.SUCCESS, branch="main"),
        )
        self.assertEqual(got, ["failed", "passed", "passed", "fixed"])

    async def test_an_older_update_of_a_run_never_overwrites_a_newer_one(self) -> None:
        finished = await self.record(build(1, Status.FAILURE))
        late_running = await self.record(build(1, Status.RUNNING))
        late_queued = await self.record(build(1, Status.QUEUED))
        repeated = await self.record(build(1, Status.SUCCESS))  # same attempt, finished twice
        self.assertEqual(len(finished.events), 1)
        for late in (late_running, late_queued, repeated):
            self.assertFalse(late.duplicate)
            self.assertEqual((late.events, late.stale), ((), 1))
        # The run still counts as failed: the next green build is a fix.
        self.assertEqual(await self.transitions(build(2, Status.SUCCESS)), ["fixed"])

    async def test_a_retry_under_the_same_attempt_is_newer_by_its_timestamps(self) -> None:
        """GitLab and Buildkite retry a pipeline under the same id and attempt;
        only the CI's timestamps say which update is newer."""
        at = T0 + timedelta(hours=1)
        failed = build(1, Status.FAILURE, started_at=T0, finished_at=T0 + timedelta(minutes=5))
        late_running = build(1, Status.RUNNING, started_at=T0)
        retried = build(1, Status.SUCCESS, started_at=at, finished_at=at + timedelta(minutes=5))
        old_again = build(1, Status.FAILURE, started_at=T0, finished_at=T0 + timedelta(minutes=5))
        self.assertEqual((await self.record(failed)).events[0].transition, Transition.FAILED)
        self.assertEqual((await self.record(late_running)).stale, 1)
        self.assertEqual((await self.record(retried)).events[0].transition, Transition.FIXED)
        self.assertEqual((await self.record(old_again)).stale, 1)
        self.assertEqual(await self.transitions(build(2, Status.SUCCESS)), ["passed"])

    async def test_a_late_older_build_is_classified_against_its_own_predecessor(self) -> None:
        got = await self.transitions(
            build(10, Status.SUCCESS),
            build(12, Status.FAILURE),
            build(11, Status.FAILURE),  # arrives late: compared with #10, not #12
            build(13, Status.FAILURE),  # compared with #12, the newest before it
        )
        self.assertEqual(got, ["passed", "failed", "failed", "still_failing"])

    async def test_a_rerun_compares_against_its_own_last_attempt(self) -> None:
        got = await self.transitions(
            build(1, Status.SUCCESS),
            build(2, Status.FAILURE),
            build(2, Status.RUNNING, attempt=2),
            build(2, Status.SUCCESS, attempt=2),
        )
        self.assertEqual(got, ["passed", "failed", "started", "fixed"])

    async def test_transitions_within_one_group_commit(self) -> None:
        pending = [
            self.store.record(delivery(build(n, s)))
            for n, s in enumerate([Status.SUCCESS, Status.FAILURE, Status.FAILURE, Status.SUCCESS])
        ]
        results = await gatherResults(pending)
        self.assertEqual(
            [r.events[0].transition for r in results],
            [Transition.PASSED, Transition.FAILED, Transition.STILL_FAILING, Transition.FIXED],
        )

    async def test_group_commit_shares_transactions_under_load(self) -> None:
        results = await gatherResults(
            [self.store.record(delivery(build(n, Status.SUCCESS, build_id=f"b{n}"))) for n in range(300)]
        )
        self.assertEqual(sum(len(r.events) for r in results), 300)
        batches, items = self.store.writer_stats
        self.assertEqual(items, 300)
        self.assertLess(batches, 300)  # several deliveries per commit

    async def test_one_bad_delivery_fails_alone(self) -> None:
        naive = build(2, Status.FAILURE).replace(started_at=datetime(2026, 1, 1))  # no time zone: rejected
        pending = [
            self.store.record(delivery(build(1, Status.SUCCESS))),
            self.store.record(delivery(naive)),
            self.store.record(delivery(build(3, Status.FAILURE))),
        ]
        outcomes = []
        for d in pending:
            try:
                outcomes.append(len((await d).events))
            except Exception as e:
                outcomes.append(type(e).__name__)
        self.assertEqual(outcomes[0], 1)
        self.assertIsInstance(outcomes[1], str)
        self.assertEqual(outcomes[2], 1)
        self.assertEqual([e.build_number for e in await self.store.history(after_id=0)], [1, 3])

    async def test_history_filters_and_orders(self) -> None:
        await self.record(build(1, Status.SUCCESS, project="acme/widget"))
        await self.record(build(2, Status.FAILURE, project="acme/gadget"))
        await self.record(build(3, Status.FAILURE, project="acme/widget"))
        newest = await self.store.history(project="acme/widget")
        self.assertEqual([e.build_number for e in newest], [3, 1])
        after = await self.store.history(after_id=newest[-1].id)
        self.assertEqual([e.build_number for e in after], [2, 3])

    async def test_transitions_beyond_what_the_writer_keeps_of_a_branch(self) -> None:
        numbers = range(10, 310, 10)  # 30 finished runs on one branch: more than the cache keeps
        got = await self.transitions(
            *(build(n, Status.FAILURE if n == 50 else Status.SUCCESS) for n in numbers)
        )
        self.assertEqual(got.count("failed"), 1)
        late = await self.transitions(
            build(55, Status.SUCCESS),  # after the red #50: fixed
            build(45, Status.FAILURE),  # after the green #40: failed
            build(305, Status.FAILURE),  # after the green #300: failed
            build(5, Status.FAILURE),  # the first run of the branch
            build(7, Status.FAILURE),  # after the red #5
        )
        self.assertEqual(late, ["fixed", "failed", "failed", "failed", "still_failing"])

    def test_a_small_cache_forgets_and_reads_back(self) -> None:
        cache = RecordCache(max_runs=2, max_branches=1)
        got: dict[str, list[Transition | None]] = {"main": [], "dev": []}
        with self.store.engine.connect() as conn:

            def record(event: BuildEvent) -> Recorded:
                [recorded] = record_batch(conn, [delivery(event)], cache)
                conn.commit()
                return recorded

            for n, status in enumerate([Status.SUCCESS, Status.FAILURE, Status.FAILURE, Status.SUCCESS], 1):
                for branch in got:
                    record(build(n, Status.RUNNING, branch=branch, build_id=f"{branch}{n}"))
                for branch in got:
                    [event] = record(build(n, status, branch=branch, build_id=f"{branch}{n}")).events
                    got[branch].append(event.transition)
            self.assertLessEqual(len(cache.runs), 2)
            late = record(build(1, Status.RUNNING, branch="main", build_id="main1"))
        expected = [Transition.PASSED, Transition.FAILED, Transition.STILL_FAILING, Transition.FIXED]
        self.assertEqual(got, {"main": expected, "dev": expected})
        self.assertEqual((late.events, late.stale), ((), 1))

    async def test_a_restarted_store_continues_where_it_stopped(self) -> None:
        await self.transitions(build(1, Status.SUCCESS), build(2, Status.FAILURE))
        await self.record(build(3, Status.RUNNING), key="running-3")
        await self.store.stop()
        self.store = Store.open(self.url, reactor, shared=self.shared)
        again = await self.record(build(3, Status.RUNNING), key="running-3")
        self.assertTrue(again.duplicate)
        self.assertEqual((await self.record(build(3, Status.RUNNING))).stale, 1)
        self.assertEqual(await self.transitions(build(3, Status.FAILURE)), ["still_failing"])
        self.assertEqual(await self.transitions(build(4, Status.SUCCESS)), ["fixed"])
        ids = [e.id for e in await self.store.history(after_id=0)]
        self.assertEqual(ids, sorted(set(ids)))

    async def test_a_failed_group_commit_leaves_nothing_behind(self) -> None:
        """The batch is retried item by item: what the writer learnt in the
        rolled-back transaction must not make the retry see the run as known."""

        def broken(_conn: object) -> None:
            raise RuntimeError("a write that fails")

        await self.record(build(1, Status.SUCCESS))
        gate = threading.Event()
        blocked = self.store.write(lambda _conn: gate.wait(10))  # so that the rest makes one batch
        pending = [
            self.store.record(delivery(build(2, Status.FAILURE), key="two")),
            self.store.write(broken),
            self.store.record(delivery(build(3, Status.FAILURE))),
        ]
        await deferToThread(gate.set)
        self.assertTrue(await blocked)
        first, failed, third = [await d.addErrback(lambda f: f.value) for d in pending]
        self.assertIsInstance(failed, RuntimeError)
        self.assertEqual(
            [e.transition for e in first.events + third.events], [Transition.FAILED, Transition.STILL_FAILING]
        )
        self.assertEqual([e.build_number for e in await self.store.history(after_id=0)], [1, 2, 3])
        self.assertEqual(await self.transitions(build(4, Status.SUCCESS)), ["fixed"])
        self.flushLoggedErrors(RuntimeError)

    def test_migrations_match_the_schema(self) -> None:
        with self.store.engine.connect() as conn:
            diffs = compare_metadata(MigrationContext.configure(conn), metadata)
        self.assertEqual(diffs, [])

    def test_upgrade_is_idempotent(self) -> None:
        before = database.current_revision(self.store.engine)
        database.upgrade(self.store.engine)
        self.assertEqual(database.current_revision(self.store.engine), before)
        self.assertIsNotNone(before)


per_backend(StoreTests, globals())


class UncachedStoreTests(StoreTests):
    """The same, with nothing kept across transactions (several hubs, one database)."""

    shared = True


per_backend(UncachedStoreTests, globals())


def test_times_are_adapted_as_sqlalchemy_adapts_them() -> None:
    """The writer adapts datetimes itself, for speed; SQLAlchemy reads them back."""
    from sqlalchemy.dialects import postgresql, sqlite

    from buildnotify.store.schema import UTCDateTime
    from buildnotify.store.sql import statements

    plus_two = timezone(timedelta(hours=2))
    values = [None, T0, T0.replace(microsecond=123456), datetime(999, 1, 2, 3, 4, 5, 6, tzinfo=plus_two)]
    for dialect in (sqlite.dialect(), postgresql.dialect()):
        expected = UTCDateTime().dialect_impl(dialect).bind_processor(dialect)
        ours = statements(dialect)
        for value in values:
            assert ours.to_db(value) == expected(value), (dialect.name, value)
            assert ours.from_db(ours.to_db(value)) == value
        try:
            ours.to_db(datetime(2026, 1, 1))
        except ValueError:
            pass
        else:
            raise AssertionError("a naive datetime must be refused")


def test_sqlite_commits_are_durable(tmp_path) -> None:
    """WAL for concurrent readers; synchronous=FULL so a commit survives power loss."""
    engine = database.create(str(tmp_path / "hub.db"))
    with engine.connect() as conn:
        self_mode = conn.execute(text("pragma journal_mode")).scalar()
        sync = conn.execute(text("pragma synchronous")).scalar()
    engine.dispose()
    assert self_mode == "wal"
    assert sync == 2  # FULL


class TwoWritersTests(unittest.TestCase):
    """Two hub nodes' stores on one PostgreSQL database, taking turns on one
    branch: each keeps its cache only while the other wrote nothing since,
    so every transition is the one the whole history says."""

    async def test_transitions_are_right_when_two_writers_take_turns(self) -> None:
        url = database_url(self, "postgresql")
        one, two = Store.open(url, reactor), Store.open(url, reactor)
        self.addCleanup(one.stop)
        self.addCleanup(two.stop)
        turns = [
            (one, Status.FAILURE, "failed"),
            (two, Status.SUCCESS, "fixed"),
            (one, Status.FAILURE, "failed"),  # a stale cache on one would say still_failing
            (one, Status.FAILURE, "still_failing"),
            (two, Status.FAILURE, "still_failing"),  # ... and on two, failed
            (two, Status.SUCCESS, "fixed"),
            (one, Status.SUCCESS, "passed"),
        ]
        got = []
        for number, (store, status, _) in enumerate(turns, start=1):
            [event] = (await store.record(delivery(build(number, status)))).events
            got.append(event.transition.value if event.transition else None)
        self.assertEqual(got, [expected for _, _, expected in turns])
