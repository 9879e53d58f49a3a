"""Catch-up speed: how long a client that missed N events waits for them.

The hub runs in this process (``buildnotify.server.Hub``, real store, real
PB listener on loopback). N events (default 10,000) of one project are stored
through the real store (``Store.record``, deliveries of 100 events); then a
real PB client logs in anonymously with a mind and calls
``watch([project], since=0)``. Timed from the call to the last event's arrival
at the client's mind (its answer comes after the events). The client runs in
this process too, so the figure includes the client's decoding: it is what a
user waits for on one core.

The client's mind takes both ``event`` (one event per call: how a hub replayed
before pages became one call) and ``events`` (one call per page), so the same
script measures an older hub too: ``python bench/replay.py --source
/path/to/old/checkout``.

    python bench/replay.py                   # 10,000 events, SQLite and PostgreSQL
    python bench/replay.py --events 2000 --backends sqlite
    python bench/replay.py --profile /tmp/replay.prof   # cProfile of one replay

PostgreSQL: ``$BUILDNOTIFY_TEST_POSTGRES`` (default
``postgresql+psycopg://postgres@127.0.0.1:5432/test``), a fresh schema per
run, dropped after; skipped (and said so) when unreachable.

The last line printed is one JSON object: ``replay_s_<backend>`` (the best of
``--rounds``), ``events_per_s_<backend>``, ``events``.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import logging
import os
import secrets
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import text
from twisted.internet import defer, reactor, task
from twisted.internet.endpoints import clientFromString
from twisted.spread import pb

PROJECT = "bench/replay"
POSTGRES_URL = os.environ.get(
    "BUILDNOTIFY_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
PER_DELIVERY = 100


def use_source(directory: Path) -> None:
    """Import ``buildnotify`` from ``directory`` (another checkout), not from
    the installed (maybe editable) package: the before-and-after figure."""
    sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
    sys.path.insert(0, str(directory))
    import buildnotify

    buildnotify.__path__.append(str(directory))  # a checkout's migrations/ as buildnotify.migrations
    print(f"buildnotify from {Path(buildnotify.__file__).parent}")


def make_event(n: int) -> Any:
    """A realistic event: a URL, a sha, an author, three timestamps."""
    from buildnotify.events import Author, BuildEvent, Status

    started = datetime(2026, 1, 1, tzinfo=timezone.utc) + timedelta(minutes=n)
    return BuildEvent(
        provider="generic",
        project=PROJECT,
        pipeline=f"ci-{n % 3}",
        build_id=str(n),
        status=Status.FAILURE if n % 2 else Status.SUCCESS,
        branch="main" if n % 5 else "release/2.x",
        sha=f"{n:040x}",
        author=Author("Bench Mark", "bench@example.invalid", "bench"),
        build_number=n,
        url=f"https://ci.example.invalid/acme/widget/builds/{n}",
        started_at=started,
        finished_at=started + timedelta(minutes=7),
        received_at=started + timedelta(minutes=7, seconds=1),
    )


class CountingMind(pb.Referenceable):
    """Counts what arrives, by either call; fires ``done`` at the last event."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.ids: list[int] = []
        self.calls = 0
        self.done: defer.Deferred[float] = defer.Deferred()

    def _got(self, events: list[dict[str, Any]]) -> None:
        self.calls += 1
        self.ids.extend(e["id"] for e in events)
        if len(self.ids) >= self.expected and not self.done.called:
            self.done.callback(time.perf_counter())

    def remote_event(self, event: dict[str, Any]) -> None:
        self._got([event])

    def remote_events(self, page: bytes) -> None:
        self._got(json.loads(page))

    def remote_ping(self) -> str:
        return "pong"


def database_url(backend: str, workdir: Path) -> tuple[str, Any] | None:
    """A fresh database and what drops it; None when PostgreSQL is away."""
    from buildnotify.store import database

    if backend == "sqlite":
        return f"sqlite:///{workdir / f'replay-{secrets.token_hex(4)}.db'}", lambda: None
    try:
        admin = database.create(POSTGRES_URL)
        schema = "bn_bench_" + secrets.token_hex(6)
        with admin.begin() as conn:
            conn.execute(text(f"create schema {schema}"))
    except Exception as e:
        print(f"postgresql: skipped, not reachable at {database.display_url(POSTGRES_URL)}: {e}")
        return None

    def drop() -> None:
        with admin.begin() as conn:
            conn.execute(text(f"drop schema {schema} cascade"))
        admin.dispose()

    separator = "&" if "?" in POSTGRES_URL else "?"
    return f"{POSTGRES_URL}{separator}options=-csearch_path%3D{schema}", drop


async def store_events(hub: Any, count: int) -> None:
    try:
        from buildnotify.delivery import Delivery
    except ImportError:  # --source: a checkout from before Delivery moved out of ingest
        from buildnotify.ingest.base import Delivery  # type: ignore[attr-defined,no-redef]

    deliveries = [
        Delivery(
            provider="generic",
            key=f"bench-{start}",
            events=tuple(make_event(n) for n in range(start, min(count, start + PER_DELIVERY))),
        )
        for start in range(0, count, PER_DELIVERY)
    ]
    await defer.gatherResults([hub.store.record(d) for d in deliveries])


async def replay_once(address: str, count: int, profile: cProfile.Profile | None) -> tuple[float, int]:
    """Seconds from watch(since=0) to the last event; and how many calls carried them."""
    factory = pb.PBClientFactory()  # plain data is all a watcher is sent
    broker = await clientFromString(reactor, address).connect(factory)
    try:
        root = await factory.getRootObject()
        mind = CountingMind(count)
        perspective = await root.callRemote("loginAnonymous", mind)
        if profile is not None:
            profile.enable()
        started = time.perf_counter()
        answer = perspective.callRemote("watch", [PROJECT], 0)
        answer.addErrback(lambda f: mind.done.called or mind.done.errback(f))  # a failed watch ends it
        finished = await mind.done
        await answer
        if profile is not None:
            profile.disable()
        if mind.ids != sorted(set(mind.ids)) or len(mind.ids) != count:
            raise SystemExit(f"the replay was wrong: {len(mind.ids)} events, {len(set(mind.ids))} distinct")
        return finished - started, mind.calls
    finally:
        broker.transport.loseConnection()


async def run_backend(backend: str, args: argparse.Namespace, workdir: Path) -> float | None:
    from buildnotify.config import HubConfig, PBSettings
    from buildnotify.server import Hub

    found = database_url(backend, workdir)
    if found is None:
        return None
    url, drop = found
    config = HubConfig(
        http="tcp:0:interface=127.0.0.1",
        pb="tcp:0:interface=127.0.0.1",
        database=url,
        session=PBSettings(),
    )
    hub = await Hub.start(config, reactor)
    try:
        started = time.perf_counter()
        await store_events(hub, args.events)
        print(f"{backend}: stored {args.events} events in {time.perf_counter() - started:.1f} s")
        best = None
        for round_ in range(args.rounds):
            profile = cProfile.Profile() if args.profile and round_ == args.rounds - 1 else None
            seconds, calls = await replay_once(hub.pb_address, args.events, profile)
            print(
                f"{backend}: round {round_ + 1}: {args.events} events in {seconds:.3f} s "
                f"({args.events / seconds:,.0f} events/s, {calls} calls)"
            )
            best = seconds if best is None else min(best, seconds)
            if profile is not None:
                path = args.profile.with_name(f"{args.profile.stem}-{backend}{args.profile.suffix}")
                profile.dump_stats(str(path))
                print(f"{backend}: profile of the last round in {path}")
        return best
    finally:
        await hub.stop()
        drop()


async def main(args: argparse.Namespace) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bn-replay-") as directory:
        for backend in args.backends:
            best = await run_backend(backend, args, Path(directory))
            if best is not None:
                figures[f"replay_s_{backend}"] = round(best, 3)
                figures[f"events_per_s_{backend}"] = round(args.events / best)
    figures["events"] = args.events
    return figures


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--events", type=int, default=10_000, help="events missed (default 10,000)")
    p.add_argument("--rounds", type=int, default=3, help="replays per backend; the best counts (default 3)")
    p.add_argument(
        "--backends",
        nargs="+",
        choices=("sqlite", "postgresql"),
        default=["sqlite", "postgresql"],
    )
    p.add_argument("--profile", type=Path, help="cProfile the last round to FILE-<backend>.prof")
    p.add_argument(
        "--source",
        type=Path,
        metavar="DIR",
        help="measure the buildnotify package in DIR (a checkout, e.g. of main) instead of the installed one",
    )
    return p.parse_args(argv)


def run(_reactor: Any, args: argparse.Namespace) -> defer.Deferred[None]:
    d = defer.Deferred.fromCoroutine(main(args))
    d.addCallback(lambda figures: print(json.dumps(figures)))
    return d


if __name__ == "__main__":
    logging.getLogger("buildnotify").setLevel(logging.ERROR)  # not the warnings of a bench config
    arguments = parse_args()
    if arguments.source:
        use_source(arguments.source)
    task.react(run, [arguments])
