"""What commit order costs ingest on PostgreSQL (issue 11).

With several hub nodes, every transaction that appends events takes one
advisory lock before drawing ids and sends NOTIFY (``store/stream.py``), and
the writer trusts its cache of runs and branches only while no other node
appended since its last batch (one ``max(id)`` under the lock). This records
the same deliveries through the real store, in-process, three ways, in
alternating rounds on one PostgreSQL database:

- **single**: ``Store(shared=False)``: one writer, runs cached, no lock (the
  baseline: what a lone node could do);
- **uncached**: what a node of several did first: the lock and NOTIFY, and
  no cache at all;
- **shared**: what a node of several does: the lock, NOTIFY, and the cache
  checked under the lock (here nobody else writes, so it is always kept).

Deliveries are submitted ``--concurrency`` at a time (webhooks in flight),
so the writer's group commit batches them as it would under load.

    python bench/stream_lock.py                 # ~1 minute
    python bench/stream_lock.py --deliveries 2000 --rounds 3

The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import time
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import create_engine, text
from twisted.internet import defer, task

from buildnotify.delivery import Delivery
from buildnotify.events import Author, BuildEvent, Status
from buildnotify.store import Store, database

POSTGRES = os.environ.get("BUILDNOTIFY_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
T0 = datetime(2026, 11, 1, tzinfo=timezone.utc)


def deliveries(count: int, tag: str) -> list[Delivery]:
    """A mix like real traffic: 40 projects, runs that start, fail and pass."""
    out = []
    for n in range(count):
        status = (Status.RUNNING, Status.FAILURE, Status.SUCCESS)[n % 3]
        event = BuildEvent(
            provider="generic",
            project=f"bench/p{n % 40}",
            pipeline=f"ci-{tag}",  # each round its own branches: rounds stay comparable
            build_id=f"{tag}-{n // 3}",
            build_number=n // 3,
            status=status,
            branch="main",
            author=Author("Dev", f"dev{n % 10}@example.com", f"dev{n % 10}"),
            received_at=T0 + timedelta(seconds=n),
        )
        out.append(Delivery(provider="generic", key=f"{tag}-{n}", events=(event,)))
    return out


async def one_round(reactor: Any, url: str, mode: str, count: int, concurrency: int) -> float:
    """Deliveries per second through a fresh store in ``mode``."""
    engine = database.create(url)
    database.upgrade(engine)
    store = Store(engine, reactor, shared=mode != "single")
    if mode == "uncached":
        store._writer._apply.keywords["cache"] = None  # noqa: SLF001 - the bench's switch
    store.start()
    work = deliveries(count, f"{mode}-{secrets.token_hex(3)}")
    started = time.perf_counter()
    pending: list[Any] = []
    for item in work:
        pending.append(store.record(item))
        if len(pending) >= concurrency:
            await defer.gatherResults(pending)
            pending = []
    await defer.gatherResults(pending)
    elapsed = time.perf_counter() - started
    await store.stop()
    return count / elapsed


def analyze(admin: Any, schema: str) -> None:
    """Fresh planner statistics after a round: tables that grew from empty
    keep plans made for empty tables until autovacuum analyzes them (about a
    minute), which made each round slower than the one before."""
    with admin.connect() as conn:
        conn = conn.execution_options(isolation_level="AUTOCOMMIT")
        for table in ("events", "builds", "deliveries", "projects", "alerts"):
            conn.execute(text(f"analyze {schema}.{table}"))


async def run(reactor: Any, args: argparse.Namespace) -> None:
    schema = "bench_" + secrets.token_hex(4)
    admin = create_engine(POSTGRES)
    with admin.begin() as conn:
        conn.execute(text(f"create schema {schema}"))
    url = f"{POSTGRES}?options=-csearch_path%3D{schema}"
    rates: dict[str, list[float]] = {"single": [], "uncached": [], "shared": []}
    try:
        for round_number in range(args.rounds):
            for mode in rates:
                rate = await one_round(reactor, url, mode, args.deliveries, args.concurrency)
                rates[mode].append(rate)
                analyze(admin, schema)
                print(f"round {round_number + 1} {mode:>8}: {rate:8.0f} deliveries/s", flush=True)
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"drop schema {schema} cascade"))
        admin.dispose()
    median = {mode: statistics.median(values) for mode, values in rates.items()}
    figures = {
        "deliveries_per_s_single": round(median["single"]),
        "deliveries_per_s_uncached": round(median["uncached"]),
        "deliveries_per_s_shared": round(median["shared"]),
        "cache_ratio": round(median["shared"] / median["uncached"], 3),
        "shared_ratio": round(median["shared"] / median["single"], 3),
    }
    print(
        f"shared/uncached (the checked cache): {figures['cache_ratio']:.3f}; "
        f"shared/single (all a node of several pays): {figures['shared_ratio']:.3f}"
    )
    print(json.dumps(figures))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deliveries", type=int, default=3000, help="deliveries per round (3000)")
    parser.add_argument("--concurrency", type=int, default=64, help="deliveries in flight (64)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per mode, alternating (3)")
    args = parser.parse_args()
    task.react(lambda reactor: defer.Deferred.fromCoroutine(run(reactor, args)))


if __name__ == "__main__":
    main()
