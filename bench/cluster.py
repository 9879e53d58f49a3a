"""Two hub nodes on one PostgreSQL schema: what an observer on the other node
pays, what a node's death costs its observers, whether a second node adds
fan-out, and how long a full replay takes.

Two ``buildnotify-cli serve`` processes (nodes **A** and **B**) share a fresh
schema of one PostgreSQL database (``--postgres``; the schema is dropped at
the end). Observers are real PB connections (anonymous login with a mind,
then ``watch``) in ``--clients`` separate processes. Events are POSTed to
node A's generic webhook over keep-alive connections. Each group of
observers watches a project of its own, so every phase's observers are
attached up front and see only their phase's events:

(a) **latency**: ``--latency-observers`` on A and as many on B; ``--rate``
    events/s for ``--seconds`` s to A. Latency = receipt time minus the time
    the POST was written (both ``time.time_ns()``). ``single`` = observers on
    A, ``cross`` = observers on B (PostgreSQL NOTIFY, then B reads the events
    by id); ``ratio`` = cross p99 / single p99 (goal <= 2).
(b) **scale**: a burst of ``--events`` to A for ``--scale-observers``
    observers all on A, then the same burst for as many observers half on A,
    half on B; deliveries/s = events x observers / time from the first POST
    until the last observer got the last event. ``scale`` = two/one. The
    nodes, the observers and this process share the machine's cores: the CPU
    seconds of each are printed beside the rates.
(c) **replay**: ``--replay-events`` events stored through ``buildnotify.store``
    in a helper process (``Store.open`` + ``Store.record``, group commit), then
    one observer on A calls ``watch(since=0)``; seconds until the last arrives.
(d) **storm**: ``--observers`` on B; ``--storm-rate`` events/s to A; after
    ``--before`` s node B gets SIGKILL; each observer reconnects to A after a
    random delay (uniform in [0, ``--spread``] s) and resumes with
    ``watch(since=<last id it saw>)``; posting goes on ``--after`` s past the
    spread, then stops. ``storm_s`` = seconds from the kill until every
    observer has every event posted; ``lost``/``duplicates`` = (observer,
    event) pairs never received / received more than once (goal 0/0). Each
    client process checks its own observers against the stored ids and
    reports counts only.

Decoding PB in Python costs 0.5-1 ms per message, far more than a node spends
per delivery, so (as in bench/fanout.py) the client processes decode only
the login and the watch (with the catch-up it answers: ``events`` pages of
JSON, one decode per page, which the hub waits to see answered), then read
each socket's bytes themselves and find every live event's id and URL in
them (a regex over the banana encoding). One *canary* observer per client process
and group decodes everything through PB; it is checked like the others, so
a scanner that missed or invented events would show up as lost events.

    python bench/cluster.py                 # ~2-3 minutes
    python bench/cluster.py --quick         # small smoke run, ~30 s
    python bench/cluster.py --observers 500 --spread 2

The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import random
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from array import array
from pathlib import Path
from typing import Any

# bench/ is this script's directory, so its sibling is importable: the
# process, port, CPU, posting and latency helpers are the fan-out bench's
from fanout import (
    HOST,
    Poster,
    _cpu_seconds,
    _die_with_parent,
    _free_ports,
    _latencies,
    _machine_busy,
    _percentile,
    _raise_nofile,
    _spawn,
    _wait_ready,
    event_body,
    quit_processes,
)

CLI = Path(sys.executable).with_name("buildnotify-cli")
POSTGRES = os.environ.get("BUILDNOTIFY_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
#: one event in the byte stream: its id (the first key of the event dict,
#: a banana INT: base-128 digits then 0x81) and, further on, its URL, which
#: says when it was sent; "/x" ends the URL so a cut-short number never matches
EVENT = re.compile(
    rb"\x02\x82id([\x00-\x7f]{1,9})\x81.{0,2000}?https://bench\.invalid/e/(\d+)/(\d+)/(\d+)/x", re.DOTALL
)
#: bytes kept from the end of a read: more than one whole event message
CARRY = 2600
PROJECTS = {
    "lat": "bench/latency",
    "scale1": "bench/scale-one",
    "scale2": "bench/scale-two",
    "replay": "bench/replay",
    "storm": "bench/storm",
}


def _banana_int(digits: bytes) -> int:
    return sum(b << (7 * i) for i, b in enumerate(digits))


# -- the observers' processes ---------------------------------------------------------


class Group:
    """Observers of one project on one node, in one client process."""

    def __init__(self, name: str, project: str) -> None:
        self.name = name
        self.project = project
        self.observers: list[Observer] = []
        self.latencies = array("d")
        self.reconnect: tuple[int, float] | None = None  # (port, spread) once armed
        self.watch_ns = 0  # when the first watch of this group was sent
        self.resumed_ns = 0  # when the last reconnected observer logged in again
        self.reconnects = 0
        self.retries = 0
        self.errors: list[str] = []
        self.retry_error = ""  # the last reason a reconnect was retried


class Observer:
    """One PB connection and what it received: first receipt time per event
    id, and how many receipts were repeats."""

    __slots__ = ("broker", "canary", "carry", "connected", "dups", "group", "last_id", "perspective", "seen")

    def __init__(self, group: Group, canary: bool) -> None:
        self.group = group
        self.canary = canary
        self.seen: dict[int, int] = {}
        self.dups = 0
        self.last_id = 0
        self.broker: Any = None
        self.perspective: Any = None  # kept: dropping it makes PB log the session out
        self.carry = b""
        self.connected = False

    def got(self, event_id: int, sent_ns: int, now: int) -> None:
        if event_id in self.seen:
            self.dups += 1
            return
        self.seen[event_id] = now
        if event_id > self.last_id:
            self.last_id = event_id
        self.group.latencies.append((now - sent_ns) / 1e6)

    def scan(self, data: bytes) -> None:
        """The broker's ``dataReceived`` once decoding stops: find the events."""
        now = time.time_ns()
        buf = self.carry + data if self.carry else data
        end = 0
        for match in EVENT.finditer(buf):
            end = match.end()
            self.got(_banana_int(match[1]), int(match[4]), now)
        self.carry = buf[max(end, len(buf) - CARRY) :]


def client_process(index: int) -> None:
    """Serve the orchestrator's commands (one per line on stdin, one JSON
    answer per line on stdout) with a Twisted reactor."""
    from twisted.internet import reactor, stdio
    from twisted.internet.defer import Deferred, DeferredSemaphore, gatherResults
    from twisted.internet.task import deferLater
    from twisted.protocols.basic import LineReceiver
    from twisted.spread import pb

    from buildnotify.protocol import SECURITY

    _raise_nofile()
    groups: dict[str, Group] = {}
    gate = DeferredSemaphore(48)  # a listen backlog is finite: do not SYN-flood it
    stopping = False

    class Mind(pb.Referenceable):
        """A canary's mind decodes every call; the others' are never called."""

        def __init__(self, observer: Observer) -> None:
            self.observer = observer

        def remote_event(self, event: dict[str, Any]) -> None:
            sent = int(event["url"].rsplit("/", 2)[1])
            self.observer.got(event["id"], sent, time.time_ns())

        def remote_events(self, page: bytes) -> None:
            """A catch-up page (JSON of event dicts): the hub waits for this answer."""
            now = time.time_ns()
            for event in json.loads(page):
                self.observer.got(event["id"], int(event["url"].rsplit("/", 2)[1]), now)

        def remote_ping(self) -> str:
            return "pong"

        def remote_goodbye(self, reason: str) -> None:
            self.observer.group.errors.append(f"goodbye: {reason}")

        def remote_unwatched(self, projects: list[str], reason: str) -> None:
            self.observer.group.errors.append(f"unwatched: {reason}")

        def remote_alert(self, *args: Any) -> None:
            pass

        def remote_claim(self, *args: Any) -> None:
            pass

    def raw(observer: Observer) -> None:
        broker = observer.broker
        if broker.listStack:  # cannot happen while no events flow; say so if it does
            observer.group.errors.append("switched to scanning in the middle of a message")
        observer.carry = bytes(broker.buffer)
        broker.dataReceived = observer.scan  # the transport calls this from now on

    async def connect(observer: Observer, port: int, since: int | None) -> None:
        """Log in and watch, decoding through PB until the watch's answer (a
        catch-up comes as ``events`` pages the hub waits to see answered),
        then scan the bytes of what is pushed live."""
        group = observer.group
        factory = pb.PBClientFactory(security=SECURITY)
        reactor.connectTCP(HOST, port, factory, timeout=30)
        root = await factory.getRootObject()
        perspective = await root.callRemote("loginAnonymous", Mind(observer))
        observer.broker, observer.perspective, observer.connected = root.broker, perspective, True
        root.broker.notifyOnDisconnect(functools.partial(lost, observer))
        group.watch_ns = group.watch_ns or time.time_ns()
        if group.reconnect is not None:  # logged in again (a canary's watch answer may come much later)
            group.reconnects += 1
            group.resumed_ns = max(group.resumed_ns, time.time_ns())
        answer = await perspective.callRemote("watch", [group.project], since)
        observer.last_id = max(observer.last_id, answer["last_id"])
        if not observer.canary:
            raw(observer)

    def lost(observer: Observer) -> None:
        observer.connected = False
        group = observer.group
        if group.reconnect is not None and not stopping:
            delay = random.uniform(0, group.reconnect[1])
            reactor.callLater(delay, lambda: Deferred.fromCoroutine(resume(observer)))

    async def resume(observer: Observer) -> None:
        group = observer.group
        assert group.reconnect is not None
        while not stopping:
            try:
                await gate.run(
                    lambda: Deferred.fromCoroutine(connect(observer, group.reconnect[0], observer.last_id))
                )
            except Exception as e:  # refused, reset, timed out: try again shortly
                group.retries += 1
                group.retry_error = f"{e!r}"[:200]
                await deferLater(reactor, 0.1 + random.random() * 0.1)
                continue
            return

    async def attach(
        name: str, project: str, port: int, count: int, canaries: int, since: int | None
    ) -> dict:
        group = groups.setdefault(name, Group(name, project))
        new = [Observer(group, canary=i < canaries) for i in range(count)]
        group.observers += new
        work = [gate.run(lambda o=o: Deferred.fromCoroutine(connect(o, port, since))) for o in new]
        await gatherResults(work, consumeErrors=True)
        return {"attached": len(new)}

    async def expect(names: list[str], timeout: float, ids: list[int]) -> dict:
        """Wait until every observer of ``names`` has every id (or the time is
        up), then count what is missing or repeated, and forget it all."""
        observers = [o for n in names for o in groups[n].observers]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(len(o.seen) < len(ids) for o in observers):
            await deferLater(reactor, 0.05)
        expected = set(ids)
        lost = dups = stray = complete = 0
        done_ns = 0
        for o in observers:
            missing = expected.difference(o.seen)
            lost += len(missing)
            dups += o.dups
            stray += len(o.seen) - (len(expected) - len(missing))
            complete += not missing
            times = [t for i, t in o.seen.items() if i in expected]
            done_ns = max(done_ns, max(times, default=0))
        path = Path(tempfile.gettempdir()) / f"cluster-latency-{os.getpid()}-{uuid.uuid4().hex[:6]}.bin"
        with path.open("wb") as f:
            for n in names:
                groups[n].latencies.tofile(f)
        report = {
            "observers": len(observers),
            "canaries": sum(o.canary for o in observers),
            "complete": complete,
            "connected": sum(o.connected for o in observers),
            "lost": lost,
            "duplicates": dups,
            "stray": stray,
            "done_ns": done_ns,
            "watch_ns": min((groups[n].watch_ns for n in names if groups[n].watch_ns), default=0),
            "resumed_ns": max(groups[n].resumed_ns for n in names),
            "reconnects": sum(groups[n].reconnects for n in names),
            "retries": sum(groups[n].retries for n in names),
            "errors": [e for n in names for e in groups[n].errors][:5],
            "retry_error": next((groups[n].retry_error for n in names if groups[n].retry_error), ""),
            "latencies": str(path),
        }
        for n in names:
            groups[n].latencies = array("d")
            for o in groups[n].observers:
                o.seen.clear()
                o.dups = 0
        return report

    async def command(words: list[str]) -> dict:
        nonlocal stopping
        if words[0] == "attach":  # attach NAME PROJECT PORT COUNT CANARIES SINCE|-
            since = None if words[6] == "-" else int(words[6])
            return await attach(words[1], words[2], int(words[3]), int(words[4]), int(words[5]), since)
        if words[0] == "resume":  # resume NAME PORT SPREAD: reconnect there once disconnected
            groups[words[1]].reconnect = (int(words[2]), float(words[3]))
            return {"armed": len(groups[words[1]].observers)}
        if words[0] == "expect":  # expect NAME[,NAME] TIMEOUT ID,ID,...
            ids = [int(i) for i in words[3].split(",")] if len(words) > 3 and words[3] != "-" else []
            return await expect(words[1].split(","), float(words[2]), ids)
        if words[0] == "quit":
            stopping = True
            reactor.callLater(0, reactor.stop)
            return {"bye": True}
        raise ValueError(f"unknown command {words[0]!r}")

    class Commands(LineReceiver):
        delimiter = b"\n"
        MAX_LENGTH = 1 << 26

        def lineReceived(self, line: bytes) -> None:  # noqa: N802 - Twisted's name
            d = Deferred.fromCoroutine(command(line.decode().split()))
            d.addCallbacks(self._answer, lambda f: self._answer({"error": f.getErrorMessage()}))

        def _answer(self, answer: dict) -> None:
            self.sendLine(json.dumps(answer).encode())

        def connectionLost(self, reason: Any = None) -> None:  # noqa: N802 - the orchestrator went away
            nonlocal stopping
            stopping = True
            if reactor.running:
                reactor.stop()

    stdio.StandardIO(Commands())
    reactor.run()


# -- the helper that stores the replay's events -----------------------------------------


def store_events(url: str, project: str, count: int) -> None:
    """Record ``count`` generic events through ``buildnotify.store`` (group
    commit, the stream's ordering and NOTIFY included), 500 in flight."""
    from twisted.internet import defer, task

    from buildnotify.events import utcnow
    from buildnotify.ingest import generic
    from buildnotify.ingest.base import HookRequest, ProviderConfig
    from buildnotify.store import Store

    async def run(reactor: Any) -> None:
        store = Store.open(url, reactor)
        t0 = time.perf_counter()
        headers = {"content-type": "application/json"}
        for start in range(0, count, 500):
            pending = []
            for seq in range(start, min(count, start + 500)):
                hook = HookRequest(
                    body=event_body(0, seq, project), headers=headers, query={}, path="", received_at=utcnow()
                )
                pending.append(store.record(generic.parse(hook, ProviderConfig())))
            await defer.gatherResults(pending, consumeErrors=True)
        seconds = time.perf_counter() - t0
        await store.stop()
        print(json.dumps({"stored": count, "seconds": seconds}), flush=True)

    task.react(lambda reactor: defer.Deferred.fromCoroutine(run(reactor)))


# -- the load side (this process) -----------------------------------------------------


class NodeAPoster(Poster):
    """Keep-alive HTTP connections that POST bench events to node A."""

    def __init__(self, port: int, token: str, run: str) -> None:
        super().__init__(port, "/hooks/generic", token, run)

    async def steady(self, project: str, phase: int, rate: float, seconds: float) -> int:
        """``rate`` events/s for ``seconds`` s, open loop; returns how many."""
        loop = asyncio.get_running_loop()
        events = max(1, int(rate * seconds))
        start = loop.time() + 0.02
        tasks = []
        for seq in range(events):
            await asyncio.sleep(max(0.0, start + seq / rate - loop.time()))
            tasks.append(asyncio.ensure_future(self.post(phase, seq, project)))
        await asyncio.gather(*tasks)
        return events

    def bad(self) -> dict[int, int]:
        return {c: n for c, n in self.codes.items() if not 200 <= c < 300}


class Clients:
    """The observer processes, driven over their stdin/stdout."""

    def __init__(self, procs: list[asyncio.subprocess.Process], logs: list[Path]) -> None:
        self.procs = procs
        self.logs = logs

    async def ask(self, lines: list[str], timeout: float) -> list[dict[str, Any]]:
        """Send ``lines[i]`` to process i; their answers."""
        for proc, line in zip(self.procs, lines, strict=True):
            assert proc.stdin is not None
            proc.stdin.write(line.encode() + b"\n")
            await proc.stdin.drain()
        answers = []
        for proc in self.procs:
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), timeout)
            if not line:
                tail = "".join(log.read_text(errors="replace")[-2000:] for log in self.logs)
                raise SystemExit(f"an observer process exited ({await proc.wait()}):\n{tail}")
            answer = json.loads(line)
            if "error" in answer:
                raise SystemExit(f"an observer process failed: {answer['error']}")
            answers.append(answer)
        return answers

    async def all(self, line: str, timeout: float) -> list[dict[str, Any]]:
        return await self.ask([line] * len(self.procs), timeout)

    async def quit(self) -> None:
        await quit_processes(self.procs)


def _shares(total: int, parts: int) -> list[int]:
    return [total // parts + (i < total % parts) for i in range(parts)]


def _merge(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """One phase's figures over all client processes (latencies read and sorted)."""
    latencies = _latencies(reports)
    merged: dict[str, Any] = {
        k: sum(r[k] for r in reports)
        for k in ("observers", "canaries", "complete", "connected", "lost", "duplicates", "stray")
    }
    merged.update(
        reconnects=sum(r["reconnects"] for r in reports), retries=sum(r["retries"] for r in reports)
    )
    merged["done_ns"] = max(r["done_ns"] for r in reports)
    merged["watch_ns"] = min((r["watch_ns"] for r in reports if r["watch_ns"]), default=0)
    merged["resumed_ns"] = max(r["resumed_ns"] for r in reports)
    merged["errors"] = [e for r in reports for e in r["errors"]][:5]
    merged["retry_error"] = next((r["retry_error"] for r in reports if r["retry_error"]), "")
    merged["latencies"] = latencies
    return merged


class Cluster:
    """The schema, the two nodes, the client processes and the figures."""

    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args = args
        self.tmp = tmp
        self.token = "bench-" + uuid.uuid4().hex
        self.run = uuid.uuid4().hex[:8]
        self.schema = "bench_" + secrets.token_hex(6)
        separator = "&" if "?" in args.postgres else "?"
        self.url = f"{args.postgres}{separator}options=-csearch_path%3D{self.schema}"
        self.admin: Any = None
        self.nodes: dict[str, tuple[subprocess.Popen, int, int]] = {}  # name -> proc, http, pb
        self.node_cpu: dict[str, float] = {}  # last CPU seen per node (B's ends at the kill)
        self.clients: Clients | None = None
        self.phase = 0
        self.problems: list[str] = []

    # -- processes ------------------------------------------------------------------

    def create_schema(self) -> None:
        from sqlalchemy import text

        from buildnotify.store import database

        self.admin = database.create(self.args.postgres)
        try:
            with self.admin.begin() as conn:
                conn.execute(text(f"create schema {self.schema}"))
        except Exception as e:
            raise SystemExit(f"no PostgreSQL at {database.display_url(self.args.postgres)}: {e}") from None

    def drop_schema(self) -> None:
        from sqlalchemy import text

        if self.admin is None:
            return
        try:
            with self.admin.begin() as conn:
                conn.execute(text(f"drop schema if exists {self.schema} cascade"))
        except Exception as e:
            print(f"could not drop schema {self.schema}: {e}", file=sys.stderr)
        self.admin.dispose()

    def start_nodes(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BUILDNOTIFY_")}
        env.update(XDG_CONFIG_HOME=str(self.tmp / "xdg"), XDG_DATA_HOME=str(self.tmp / "xdg"))
        for name in ("A", "B"):  # one after the other: A brings the schema to head
            http, pbport = _free_ports(2)
            work = self.tmp / name
            work.mkdir()
            config = work / "hub.toml"
            config.write_text(
                f'[hub]\nhttp = "tcp:{http}:interface={HOST}"\n'
                f'pb = "tcp:{pbport}:interface={HOST}:backlog=1024"\n'
                f"database = {json.dumps(self.url)}\n"
                f'\n[generic.tokens]\nbench = "{self.token}"\n'
                f"\n[pb]\nqueue_limit = 100000\nqueue_bytes = 1073741824\nheartbeat = 3600\n"
                f"connections_per_address = 1000000\n"
            )
            proc = _spawn([str(CLI), "serve", "--config", str(config), "-q"], work / "hub.log", env)
            self.nodes[name] = (proc, http, pbport)
            _wait_ready(http, proc, work / "hub.log")

    async def start_clients(self) -> None:
        procs, logs = [], []
        for i in range(self.args.clients):
            logs.append(self.tmp / f"client-{i}.log")
            with logs[-1].open("wb") as log:
                procs.append(
                    await asyncio.create_subprocess_exec(
                        sys.executable,
                        __file__,
                        "--client-process",
                        str(i),
                        stdin=asyncio.subprocess.PIPE,
                        stdout=asyncio.subprocess.PIPE,
                        stderr=log,
                        preexec_fn=_die_with_parent,
                        limit=1 << 24,
                    )
                )
        self.clients = Clients(procs, logs)

    async def attach(
        self, name: str, project: str, node: str, count: int, since: int | None = None, canaries: int = 1
    ) -> None:
        """``count`` observers spread over the client processes, with
        ``canaries`` decoding observers in each (the others scan)."""
        assert self.clients is not None
        port = self.nodes[node][2]
        shares = _shares(count, len(self.clients.procs))
        lines = [
            f"attach {name} {project} {port} {n} {min(canaries, n)} {'-' if since is None else since}"
            for n in shares
        ]
        await self.clients.ask(lines, timeout=300)

    def stop(self) -> None:
        for proc, *_ in self.nodes.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for name, (proc, *_) in self.nodes.items():
            try:
                code = proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
            if code not in (0, -signal.SIGTERM, -signal.SIGKILL):
                log = self.tmp / name / "hub.log"
                print(f"node {name} exited with {code}:\n{log.read_text()[-3000:]}", file=sys.stderr)

    # -- figures --------------------------------------------------------------------

    def usage(self) -> dict[str, float]:
        """CPU seconds so far: each node, the observers, this process, the rest."""
        assert self.clients is not None
        for name, (proc, *_) in self.nodes.items():
            seconds = _cpu_seconds(proc.pid)
            if seconds == seconds:  # not NaN: the node is alive
                self.node_cpu[name] = seconds
        times = os.times()
        usage = {
            "node_a": self.node_cpu.get("A", 0.0),
            "node_b": self.node_cpu.get("B", 0.0),
            "observers": sum(_cpu_seconds(p.pid) for p in self.clients.procs),
            "bench": times.user + times.system,
        }
        usage["others"] = _machine_busy() - sum(usage.values())
        return usage

    @staticmethod
    def since(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
        return {k: after[k] - before[k] for k in after}

    @staticmethod
    def describe_cpu(usage: dict[str, float]) -> str:
        return "cpu s: " + ", ".join(f"{k} {v:.2f}" for k, v in usage.items())

    async def ids(self, project: str, phase: int) -> list[int]:
        """The stored events of one phase (build ids ``<phase>-<seq>``): every
        event posted in it, by id. Earlier rounds on the project are not."""
        from sqlalchemy import text

        def query() -> list[int]:
            with self.admin.connect() as conn:
                rows = conn.execute(
                    text(
                        f"select id from {self.schema}.events where project = :p and build_id like :b order by id"
                    ),
                    {"p": project, "b": f"{phase}-%"},
                )
                return [row[0] for row in rows]

        return await asyncio.to_thread(query)

    async def expect(self, names: list[str], ids: list[int], timeout: float) -> dict[str, Any]:
        assert self.clients is not None
        line = f"expect {','.join(names)} {timeout} {','.join(map(str, ids)) or '-'}"
        return _merge(await self.clients.all(line, timeout + 60))

    def check(
        self, label: str, result: dict[str, Any], posted: int, poster: NodeAPoster, ids: list[int]
    ) -> None:
        if poster.bad():
            self.problems.append(f"{label}: non-2xx answers {poster.bad()}")
        if len(ids) != posted:
            self.problems.append(f"{label}: {posted} events posted, {len(ids)} stored")
        if result["lost"] or result["duplicates"] or result["stray"]:
            self.problems.append(
                f"{label}: {result['lost']} lost, {result['duplicates']} duplicate, {result['stray']} stray "
                f"(observer, event) pairs; {result['complete']} of {result['observers']} observers complete"
            )
        if result["errors"]:
            self.problems.append(f"{label}: {result['errors']}")

    async def poster(self) -> NodeAPoster:
        poster = NodeAPoster(self.nodes["A"][1], self.token, self.run)
        await poster.open(self.args.post_connections)
        return poster

    async def settle(self, limit: float = 10.0) -> None:
        """Until the nodes are idle (after attaching, or a bulk store)."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            before = self.usage()
            await asyncio.sleep(0.3)
            spent = self.since(before, self.usage())
            if spent["node_a"] + spent["node_b"] < 0.03:
                return

    async def latency(self) -> dict[str, Any]:
        args = self.args
        self.phase += 1
        poster = await self.poster()
        before = self.usage()
        posted = await poster.steady(PROJECTS["lat"], self.phase, args.rate, args.seconds)
        ids = await self.ids(PROJECTS["lat"], self.phase)
        single = await self.expect(["latA"], ids, 30)
        cross = await self.expect(["latB"], ids, 30)
        cpu = self.since(before, self.usage())
        poster.close()
        self.check("latency (single)", single, posted, poster, ids)
        self.check("latency (cross)", cross, posted, poster, ids)
        figures = {}
        for label, r in (("single", single), ("cross", cross)):
            lat = r["latencies"]
            figures[label] = {
                "p50_ms": _percentile(lat, 0.5),
                "p99_ms": _percentile(lat, 0.99),
                "max_ms": lat[-1] if lat else None,
            }
        ratio = (figures["cross"]["p99_ms"] or 0) / (figures["single"]["p99_ms"] or 1)
        print(
            f"latency   {args.rate:g} events/s x {args.seconds:g} s to A, {args.latency_observers} observers "
            f"on each node: single (on A) p50 {figures['single']['p50_ms']:.1f} / p99 "
            f"{figures['single']['p99_ms']:.1f} ms; cross (on B) p50 {figures['cross']['p50_ms']:.1f} / p99 "
            f"{figures['cross']['p99_ms']:.1f} ms; ratio {ratio:.2f} (goal <= 2: "
            f"{'met' if ratio <= 2 else 'MISSED'})\n          {self.describe_cpu(cpu)}",
            flush=True,
        )
        return {"figures": figures, "ratio": ratio, "cpu": cpu}

    async def burst(self, label: str, project: str, names: list[str], observers: int) -> dict[str, Any]:
        """``--events`` at once to A; until every observer of ``names`` has all."""
        args = self.args
        self.phase += 1
        phase = self.phase
        poster = await self.poster()
        before = self.usage()
        t0 = time.time_ns()
        await asyncio.gather(*(poster.post(phase, seq, project) for seq in range(args.events)))
        ids = await self.ids(project, phase)
        result = await self.expect(names, ids, max(60.0, args.events * observers / 1000))
        cpu = self.since(before, self.usage())
        poster.close()
        self.check(label, result, args.events, poster, ids)
        elapsed = max(result["done_ns"] - t0, 1) / 1e9
        rate = args.events * observers / elapsed
        print(
            f"{label:9} {args.events} events x {observers} observers in {elapsed:.2f} s = {rate:,.0f} "
            f"deliveries/s\n          {self.describe_cpu(cpu)}",
            flush=True,
        )
        return {"rate": rate, "elapsed": elapsed, "cpu": cpu}

    async def replay(self) -> dict[str, Any]:
        args = self.args
        project = PROJECTS["replay"]
        log = self.tmp / "store.log"
        with log.open("wb") as err:
            helper = await asyncio.create_subprocess_exec(
                sys.executable,
                __file__,
                "--store-events",
                self.url,
                project,
                str(args.replay_events),
                stdout=asyncio.subprocess.PIPE,
                stderr=err,
                preexec_fn=_die_with_parent,
            )
            try:
                out, _ = await helper.communicate()
            finally:
                if helper.returncode is None:  # interrupted: do not leave it writing
                    helper.kill()
                    await helper.wait()
        if helper.returncode != 0:
            raise SystemExit(f"storing the replay's events failed:\n{log.read_text()[-3000:]}")
        stored = json.loads(out.decode().strip().splitlines()[-1])
        await self.settle()  # both nodes read the new events off the bus first
        ids = await self.ids(project, 0)  # the helper stores phase 0
        assert self.clients is not None
        before = self.usage()
        await self.attach("replay", project, "A", 1, since=0, canaries=0)  # pages decoded, one JSON each
        result = await self.expect(["replay"], ids, 120)
        cpu = self.since(before, self.usage())
        seconds = max(result["done_ns"] - result["watch_ns"], 0) / 1e9
        if result["lost"] or result["duplicates"] or result["stray"] or len(ids) != args.replay_events:
            self.problems.append(
                f"replay: {len(ids)} stored, {result['lost']} lost, {result['duplicates']} duplicate, "
                f"{result['stray']} stray"
            )
        print(
            f"replay    {len(ids)} stored events (through buildnotify.store in a helper process, "
            f"{stored['seconds']:.1f} s) to one watch(since=0) on A in {seconds:.2f} s = "
            f"{len(ids) / max(seconds, 1e-9):,.0f} events/s\n          {self.describe_cpu(cpu)}",
            flush=True,
        )
        return {"seconds": seconds, "events": len(ids), "store_seconds": stored["seconds"], "cpu": cpu}

    async def storm(self) -> dict[str, Any]:
        args = self.args
        assert self.clients is not None
        project = PROJECTS["storm"]
        await self.clients.all(f"resume storm {self.nodes['A'][2]} {args.spread}", 30)
        self.phase += 1
        poster = await self.poster()
        before = self.usage()
        seconds = args.before + args.spread + args.after
        posting = asyncio.ensure_future(poster.steady(project, self.phase, args.storm_rate, seconds))
        await asyncio.sleep(args.before)
        killed = time.time_ns()
        self.nodes["B"][0].send_signal(signal.SIGKILL)
        posted = await posting
        ids = await self.ids(project, self.phase)
        result = await self.expect(["storm"], ids, args.storm_timeout)
        cpu = self.since(before, self.usage())
        poster.close()
        self.check("storm", result, posted, poster, ids)
        storm_s = (result["done_ns"] - killed) / 1e9 if result["complete"] == result["observers"] else None
        resumed_s = (result["resumed_ns"] - killed) / 1e9 if result["resumed_ns"] else None
        posting_s = (poster.last_answer_ns - killed) / 1e9
        print(
            f"storm     {args.observers} observers on B, {args.storm_rate:g} events/s to A; B killed after "
            f"{args.before:g} s; reconnects spread over {args.spread:g} s: every observer had all {len(ids)} "
            f"events {_fmt(storm_s, '.2f')} s after the kill (the last POST was answered at "
            f"{posting_s:.2f} s, the last observer logged in again at {_fmt(resumed_s, '.2f')} s); "
            f"{result['reconnects']} reconnects ({result['retries']} retries"
            f"{'; last because ' + result['retry_error'] if result['retry_error'] else ''}); lost {result['lost']}, "
            f"duplicates {result['duplicates']} (goal 0/0)\n          {self.describe_cpu(cpu)}",
            flush=True,
        )
        return {
            "storm_s": storm_s,
            "resumed_s": resumed_s,
            "posting_s": posting_s,
            "events": len(ids),
            "lost": result["lost"],
            "duplicates": result["duplicates"],
            "reconnects": result["reconnects"],
            "retries": result["retries"],
            "complete": result["complete"],
            "cpu": cpu,
        }


def _fmt(value: float | None, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


async def orchestrate(args: argparse.Namespace) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="buildnotify-cluster-"))
    cluster = Cluster(args, tmp)
    # SIGTERM ends the run as Ctrl-C does (asyncio.run cancels this task): the
    # finally below stops every process and drops the schema
    main_task = asyncio.current_task()
    assert main_task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, main_task.cancel)
    try:
        cluster.create_schema()
        t = time.perf_counter()
        cluster.start_nodes()
        await cluster.start_clients()
        half = args.scale_observers // 2
        await cluster.attach("latA", PROJECTS["lat"], "A", args.latency_observers)
        await cluster.attach("latB", PROJECTS["lat"], "B", args.latency_observers)
        await cluster.attach("scale1", PROJECTS["scale1"], "A", args.scale_observers)
        await cluster.attach("scale2A", PROJECTS["scale2"], "A", half)
        await cluster.attach("scale2B", PROJECTS["scale2"], "B", args.scale_observers - half)
        await cluster.attach("storm", PROJECTS["storm"], "B", args.observers)
        total = 2 * args.latency_observers + 2 * args.scale_observers + args.observers
        print(
            f"2 nodes on schema {cluster.schema}; {total} observers in {args.clients} processes attached in "
            f"{time.perf_counter() - t:.1f} s; {os.cpu_count()} cores shared by the nodes, the observers, "
            f"this process and other users (cpu s per phase below)",
            flush=True,
        )
        await cluster.settle()
        latency = await cluster.latency()
        ones, twos = [], []
        for n in range(1, args.rounds + 1):
            ones.append(
                await cluster.burst(f"one  #{n}", PROJECTS["scale1"], ["scale1"], args.scale_observers)
            )
            twos.append(
                await cluster.burst(
                    f"two  #{n}", PROJECTS["scale2"], ["scale2A", "scale2B"], args.scale_observers
                )
            )
        replay = await cluster.replay()
        storm = await cluster.storm()
    finally:
        if cluster.clients is not None:
            await cluster.clients.quit()
        cluster.stop()
        cluster.drop_schema()
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    one = statistics.median(r["rate"] for r in ones)
    two = statistics.median(r["rate"] for r in twos)
    scale = two / one if one else None
    print(
        f"scale     {two:,.0f} deliveries/s with two nodes vs {one:,.0f} with one (median of {args.rounds}): "
        f"x{_fmt(scale, '.2f')}; the observers' processes compete with the nodes for the same cores",
        flush=True,
    )
    for problem in cluster.problems:
        print(f"PROBLEM: {problem}", flush=True)
    figures = latency["figures"]
    summary = {
        "single_p99_ms": _round(figures["single"]["p99_ms"]),
        "cross_p99_ms": _round(figures["cross"]["p99_ms"]),
        "ratio": _round(latency["ratio"]),
        "single_p50_ms": _round(figures["single"]["p50_ms"]),
        "cross_p50_ms": _round(figures["cross"]["p50_ms"]),
        "storm_s": _round(storm["storm_s"]),
        "lost": storm["lost"],
        "duplicates": storm["duplicates"],
        "storm_resumed_s": _round(storm["resumed_s"]),
        "storm_posting_s": _round(storm["posting_s"]),
        "storm_events": storm["events"],
        "storm_retries": storm["retries"],
        "deliveries_per_s_one": round(one),
        "deliveries_per_s_two": round(two),
        "scale": _round(scale),
        "scale_rates_one": [round(r["rate"]) for r in ones],
        "scale_rates_two": [round(r["rate"]) for r in twos],
        "scale_cpu_one": {k: round(v, 2) for k, v in ones[-1]["cpu"].items()},
        "scale_cpu_two": {k: round(v, 2) for k, v in twos[-1]["cpu"].items()},
        "replay_s": _round(replay["seconds"]),
        "replay_events": replay["events"],
        "replay_stored_with": "buildnotify.store (Store.record, in a helper process)",
        "observers": args.observers,
        "scale_observers": args.scale_observers,
        "latency_observers": args.latency_observers,
        "events": args.events,
        "spread": args.spread,
        "cores": os.cpu_count(),
        "problems": len(cluster.problems),
    }
    print(json.dumps(summary))
    return 1 if cluster.problems else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--observers", type=int, default=1000, help="observers in the storm, on B (1000)")
    parser.add_argument(
        "--scale-observers", type=int, default=400, help="observers in the scale bursts (400)"
    )
    parser.add_argument("--latency-observers", type=int, default=50, help="latency observers per node (50)")
    parser.add_argument("--events", type=int, default=200, help="events per scale burst (200)")
    parser.add_argument("--rounds", type=int, default=2, help="scale bursts per side, alternating (2)")
    parser.add_argument("--rate", type=float, default=10.0, help="events/s in the latency phase (10)")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds of the latency phase (5)")
    parser.add_argument("--replay-events", type=int, default=10_000, help="stored events replayed (10000)")
    parser.add_argument("--storm-rate", type=float, default=20.0, help="events/s during the storm (20)")
    parser.add_argument("--before", type=float, default=1.0, help="seconds of posting before the kill (1)")
    parser.add_argument("--spread", type=float, default=1.0, help="reconnect delays: uniform in [0, s] (1)")
    parser.add_argument("--after", type=float, default=1.0, help="seconds of posting past the spread (1)")
    parser.add_argument(
        "--storm-timeout", type=float, default=120.0, help="seconds to wait for the storm (120)"
    )
    parser.add_argument("--clients", type=int, default=4, help="observer processes (4)")
    parser.add_argument("--post-connections", type=int, default=8, help="keep-alive POST connections (8)")
    parser.add_argument(
        "--postgres", default=POSTGRES, help="PostgreSQL URL; a schema is made in it and dropped"
    )
    parser.add_argument("--quick", action="store_true", help="a small smoke run (~30 s)")
    parser.add_argument("--keep", action="store_true", help="keep the logs")
    parser.add_argument("--client-process", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--store-events", nargs=3, metavar=("URL", "PROJECT", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.client_process is not None:
        client_process(args.client_process)
        return 0
    if args.store_events:
        url, project, count = args.store_events
        store_events(url, project, int(count))
        return 0
    if args.quick:
        args.observers, args.scale_observers, args.latency_observers = 100, 40, 10
        args.events, args.rounds, args.seconds, args.replay_events = 30, 1, 2.0, 1000
        args.clients = min(args.clients, 2)
    _raise_nofile()
    try:
        return asyncio.run(orchestrate(args))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted: nodes and observers stopped, schema dropped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
