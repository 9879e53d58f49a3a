"""PB fan-out: deliveries per second to many attached observers, beside a
naive per-observer ``callRemote`` baseline measured in the same run, and the
latency from webhook POST to observer receipt at a steady event rate.

- **hub**: ``buildnotify-cli serve`` (its own process) with a fresh SQLite
  database. Events are POSTed to the generic webhook; the hub stores each one
  and pushes it to every observer of ``bench/project``, jellied and encoded
  once per event (``buildnotify.hub.wire.OneWayCall``).
- **naive**: a bare PB server (same script, ``--naive-server``) that, for
  each POSTed event, does what the old Twisted howto's multiple-client example
  did: ``mind.callRemote("event", CopyableEvent(event))`` for each observer, so
  every call jellies and encodes the event again. No storage.

The observers live in ``--clients`` separate processes. Each observer is a
real PB connection: anonymous login with a mind, then ``watch(["bench/project"])``
(the naive server answers the same two calls). Every client process is
attached to both servers, so hub and naive rounds alternate on the same
connections. Decoding PB in Python costs 0.5-1 ms per message (banana is pure
Python), far more than either server spends per delivery, so after logging in
the client processes stop decoding: they read their sockets with their own
epoll loop and find each event in the byte stream by its URL
(``https://bench.invalid/e/<phase>/<seq>/<sent time_ns>/x``). During the
bursts one connection per client process and server (the *canary*) still
feeds its bytes to its PB broker, so real ``remote_event`` calls prove the
bytes are valid PB messages (it stops before the latency phase, where it
would cost 0.2 cores). The naive server's calls expect answers, which these
clients never send: that spares it the answers' decoding, so the ratio is if
anything in its favour.

(a) **rate**: ``--events`` events POSTed at once (``--post-connections``
keep-alive connections), timed from the first POST to the last observer's
receipt of the last event: deliveries/s = events x observers / elapsed. The
naive rounds use ``--naive-events`` (fewer: each of its deliveries costs a
jelly). Server CPU per delivery is printed beside it; it is the steadier figure.

(b) **latency**: ``--rate`` events/s for ``--seconds`` s to the hub (open loop,
one POST every 1/rate s). Latency per (event, observer): receipt time minus the
time the POST was written, both ``time.time_ns()`` on this machine. The time
until the hub answered the POST is printed too (it answers after the fan-out).

(c) **send lag**, the hub's own part of that latency: from the commit of an
event (the writer's ``conn.commit()`` returned) to the end of the reactor
turn whose flush wrote it to the last observer connection (straight to the
socket, or to Twisted's buffer if the socket was full). It is measured inside
the hub process by a bench-only ``sitecustomize.py`` put on its
``PYTHONPATH``, which wraps, once per group commit and once per reactor turn
(never per connection or per delivery): ``GroupCommitWriter._transaction``
(commit times by event id), ``PBService.committed`` (the events pushed this
turn) and ``Flusher.flush`` (the turn's writes). Latency minus send lag is
what the webhook's path to the commit and the observers add (on 2 cores the
observer processes compete with the hub for CPU).

CPU is printed in cores for the hub, the observers, the naive server, this
process and *others* (the rest of the machine: other users). On a small
shared machine the hub's latency depends on the CPU it gets: read the
latency beside those figures.

    python bench/fanout.py                     # 1,000 observers, ~1-2 minutes
    python bench/fanout.py --observers 200 --events 50 --seconds 3
    python bench/fanout.py --py-spy /tmp/hub.svg   # plus one profiled hub burst

The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from array import array
from pathlib import Path
from typing import Any

from twisted.spread import pb

HOST = "127.0.0.1"
PROJECT = "bench/project"
CLI = Path(sys.executable).with_name("buildnotify-cli")
#: an event in a byte stream: the URL the poster put in it, ending in "/x" so a
#: match cut short by a read boundary is never taken for a shorter number
EVENT_URL = re.compile(rb"https://bench\.invalid/e/(\d+)/(\d+)/(\d+)/x")
#: bytes kept from the end of a read in case an URL straddles two reads
CARRY = 96


# -- what both servers push ---------------------------------------------------------


class CopyableEvent(pb.Copyable):
    """The naive baseline's event: a Copyable, jellied anew for each observer."""

    def __init__(self, state: dict[str, Any]) -> None:
        self.state = state

    def getStateToCopy(self) -> dict[str, Any]:  # noqa: N802 - Twisted's name
        return self.state


class RemoteEvent(pb.RemoteCopy):
    """What an observer of the naive server gets (its state becomes __dict__)."""


pb.setUnjellyableForClass(CopyableEvent, RemoteEvent)


def event_body(phase: int, seq: int, project: str = PROJECT) -> bytes:
    """A generic-webhook event whose URL says which phase and event it is and
    when it was sent; statuses alternate so the hub computes real transitions."""
    return json.dumps(
        {
            "project": project,
            "pipeline": "ci",
            "build_id": f"{phase}-{seq}",
            "number": seq + 1,
            "status": "failure" if seq % 2 == 0 else "success",
            "branch": "main",
            "sha": f"{seq:040x}",
            "author": {"name": "Bench Mark", "email": "bench@example.invalid", "login": "bench"},
            "url": f"https://bench.invalid/e/{phase}/{seq}/{time.time_ns()}/x",
        }
    ).encode()


def http_request(path: str, body: bytes, token: str, key: str) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {token}\r\nIdempotency-Key: {key}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


#: put on the hub's PYTHONPATH as sitecustomize.py: the send lag, measured inside the hub
SEND_LAG_PROBE = textwrap.dedent(
    '''
    """Bench-only (bench/fanout.py): the hub's send lag, from an event's commit
    to the end of the reactor turn that wrote it to every observer connection.
    Written at exit to $BUILDNOTIFY_BENCH_SEND_LAG as int64 pairs
    (time.time_ns() of the write, lag in ns)."""
    import atexit, os, time
    from array import array

    _path = os.environ.get("BUILDNOTIFY_BENCH_SEND_LAG")
    if _path:
        from buildnotify.hub.outbox import Flusher
        from buildnotify.hub.service import PBService
        from buildnotify.store.writer import GroupCommitWriter

        _committed_at = {}  # event id -> time.time_ns() just after its commit (writer thread)
        _pushed = []  # ids pushed to observers this reactor turn
        _lags = array("q")
        _transaction, _committed, _flush = GroupCommitWriter._transaction, PBService.committed, Flusher.flush

        def _timed_transaction(self, conn, items):
            results = _transaction(self, conn, items)
            now = time.time_ns()
            for result in results:
                for event in getattr(result, "events", ()):
                    _committed_at[event.id] = now
            return results

        def _noted_committed(self, events, alerts):
            _committed(self, events, alerts)
            for event in events:
                room = self.rooms.get(event.project)
                if room is not None and room.observers:
                    _pushed.append(event.id)

        def _timed_flush(self):
            _flush(self)
            if _pushed:
                now = time.time_ns()
                for event_id in _pushed:
                    committed = _committed_at.pop(event_id, None)
                    if committed is not None:
                        _lags.extend((now, now - committed))
                _pushed.clear()

        GroupCommitWriter._transaction = _timed_transaction
        PBService.committed = _noted_committed
        Flusher.flush = _timed_flush

        @atexit.register
        def _dump():
            with open(_path, "wb") as f:
                _lags.tofile(f)
    '''
)


# -- the naive baseline server --------------------------------------------------------


def naive_server(pb_port: int, http_port: int) -> None:
    """PB root with loginAnonymous(mind) -> perspective with watch(); HTTP
    ``POST /event`` (a generic-webhook body) -> one callRemote per observer."""
    from twisted.internet import reactor
    from twisted.web import resource, server

    from buildnotify.events import utcnow
    from buildnotify.ingest import generic
    from buildnotify.ingest.base import HookRequest, ProviderConfig

    observers: list[pb.RemoteReference] = []
    ids = iter(range(1, 1 << 62))

    class Perspective(pb.Referenceable):
        def remote_watch(self, projects: list[str], since: int | None = None) -> dict[str, Any]:
            return {"watching": projects, "replayed": 0}

    class Root(pb.Root):
        def remote_loginAnonymous(self, mind: pb.RemoteReference) -> Perspective:  # noqa: N802
            observers.append(mind)
            mind.notifyOnDisconnect(observers.remove)
            return Perspective()

    class Events(resource.Resource):
        isLeaf = True

        def render_GET(self, request: server.Request) -> bytes:  # noqa: N802
            return b"naive fan-out server\n"

        def render_POST(self, request: server.Request) -> bytes:  # noqa: N802
            hook = HookRequest(
                body=request.content.read(),
                headers={"content-type": "application/json"},
                query={},
                path="",
                received_at=utcnow(),
            )
            event = generic.parse(hook, ProviderConfig()).events[0].replace(id=next(ids)).to_dict()
            for mind in list(observers):
                mind.callRemote("event", CopyableEvent(event)).addErrback(lambda _: None)
            request.setHeader(b"content-type", b"application/json")
            return json.dumps({"observers": len(observers)}).encode()

    class QuietSite(server.Site):
        def log(self, request: server.Request) -> None:
            pass

    _raise_nofile()
    reactor.listenTCP(pb_port, pb.PBServerFactory(Root()), backlog=1024, interface=HOST)
    reactor.listenTCP(http_port, QuietSite(Events()), interface=HOST)
    reactor.run()


# -- the observers' processes ---------------------------------------------------------


class Mind(pb.Referenceable):
    """An observer's client object. Only the canary's is ever called: the
    others' bytes are counted, not decoded."""

    def __init__(self) -> None:
        self.urls: list[str] = []

    def remote_event(self, event: Any) -> None:
        self.urls.append(event["url"] if isinstance(event, dict) else event.url)

    def remote_ping(self) -> str:
        return "pong"

    def remote_goodbye(self, reason: str) -> None:
        self.urls.append(f"goodbye: {reason}")


def client_process(targets: list[tuple[str, int]], count: int, index: int, tmp: Path) -> None:
    """Attach ``count`` observers to each (name, PB port), say ``ready``, then
    count events in the raw byte streams, driven by commands on stdin."""
    from twisted.internet import reactor
    from twisted.internet.defer import Deferred, DeferredSemaphore, gatherResults

    from buildnotify.protocol import SECURITY, StrictSecurity

    _raise_nofile()
    naive_security = StrictSecurity(CopyableEvent.__module__ + "." + CopyableEvent.__qualname__)
    conns: list[dict[str, Any]] = []
    gate = DeferredSemaphore(32)  # a listen backlog is finite: do not SYN-flood it

    async def attach(name: str, port: int) -> None:
        factory = pb.PBClientFactory(security=SECURITY if name == "hub" else naive_security)
        reactor.connectTCP(HOST, port, factory, timeout=30)
        root = await factory.getRootObject()
        mind = Mind()
        perspective = await root.callRemote("loginAnonymous", mind)
        await perspective.callRemote("watch", [PROJECT])
        # keep the perspective referenced: dropping it logs the session out
        conns.append({"name": name, "broker": root.broker, "perspective": perspective, "mind": mind})

    def raw() -> None:
        _say(f"ready {len(conns)}")
        _RawLoop(conns, tmp, index).run()  # never returns to the reactor
        os._exit(0)

    def attached(_: object) -> None:
        # Not from here: this runs inside a broker's dataReceived (the last
        # answer), whose unparsed bytes the canary would then never see.
        reactor.callLater(0, raw)

    def failed(failure: Any) -> None:
        _say(f"failed {failure.getErrorMessage()}")
        os._exit(1)

    def start() -> None:
        work = [
            gate.run(lambda n=name, p=port: Deferred.fromCoroutine(attach(n, p)))
            for name, port in targets
            for _ in range(count)
        ]
        gatherResults(work, consumeErrors=True).addCallbacks(attached, failed)

    reactor.callWhenRunning(start)
    reactor.run()


def _say(line: str) -> None:
    os.write(1, line.encode() + b"\n")


class _RawLoop:
    """Reads every observer's socket directly and finds the events in the
    bytes. Commands (one per line on stdin):

    ``phase ID TARGET N``  count phase ID's events on TARGET's connections,
                           expecting N each; answers ``ok ID``
    ``wait ID SECONDS``    answers ``done {json}`` once every connection of
                           the phase's target has N events, or the time is up
    ``quit``
    """

    def __init__(self, conns: list[dict[str, Any]], tmp: Path, index: int) -> None:
        self.conns = conns
        self.tmp = tmp
        self.index = index
        self.by_fd: dict[int, int] = {}
        self.carry: list[bytes] = [b""] * len(conns)
        self.counts = [0] * len(conns)
        self.closed: set[int] = set()
        self.canaries: dict[int, Any] = {}
        for i, conn in enumerate(conns):
            transport = conn["broker"].transport
            transport.stopReading()
            self.by_fd[transport.fileno()] = i
            if not any(self.conns[j]["name"] == conn["name"] for j in self.canaries):
                self.canaries[i] = conn["broker"]
        self.phase = b""
        self.phase_id = ""
        self.target = ""
        self.expected = 0
        self.waiting = 0
        self.stray = 0
        self.first_ns = 0
        self.last_ns = 0
        self.latencies = array("d")
        self.deadline: float | None = None

    def run(self) -> None:
        poller = select.epoll()
        for fd in self.by_fd:
            poller.register(fd, select.EPOLLIN)
        poller.register(0, select.EPOLLIN)
        commands = b""
        find = EVENT_URL.finditer
        while True:
            timeout = -1.0 if self.deadline is None else max(0.0, self.deadline - time.monotonic())
            for fd, _ in poller.poll(min(timeout, 0.2) if timeout >= 0 else 0.2):
                if fd == 0:
                    chunk = os.read(0, 65536)
                    if not chunk:
                        return
                    commands += chunk
                    while b"\n" in commands:
                        line, commands = commands.split(b"\n", 1)
                        if self._command(line.decode().split()) == "quit":
                            return
                    continue
                i = self.by_fd[fd]
                try:
                    data = os.read(fd, 65536)  # under the mmap threshold: 256 KiB reads cost ~20 us each
                except OSError:
                    data = b""
                now = time.time_ns()
                if not data:
                    poller.unregister(fd)
                    self.closed.add(i)
                    continue
                if i in self.canaries:
                    self._canary(i, data)
                buf = self.carry[i] + data
                end = 0
                for match in find(buf):
                    end = match.end()
                    if match[1] != self.phase or self.conns[i]["name"] != self.target:
                        self.stray += 1
                        continue
                    self.latencies.append((now - int(match[3])) / 1e6)
                    self.counts[i] += 1
                    if self.counts[i] == self.expected:
                        self.waiting -= 1
                    if not self.first_ns:
                        self.first_ns = now
                    self.last_ns = now
                self.carry[i] = buf[max(end, len(buf) - CARRY) :]
            if self.deadline is not None and (self.waiting <= 0 or time.monotonic() >= self.deadline):
                self._report()

    def _canary(self, i: int, data: bytes) -> None:
        """Decode like a real client: the broker calls the mind's remote_event."""
        try:
            self.canaries[i].dataReceived(data)
        except Exception as e:  # reported as a problem: the canary then misses events
            print(f"canary {self.conns[i]['name']}: {e!r}", file=sys.stderr, flush=True)
            self.conns[i]["mind"].urls.append(f"error: {e!r}")

    def _command(self, words: list[str]) -> str:
        if not words:
            return ""
        if words[0] == "phase":
            self.phase_id, self.target, self.expected = words[1], words[2], int(words[3])
            self.phase = words[1].encode()
            mine = [i for i, c in enumerate(self.conns) if c["name"] == self.target]
            for i in mine:
                self.counts[i] = 0
            self.waiting = sum(1 for i in mine if i not in self.closed)
            self.stray = self.first_ns = self.last_ns = 0
            self.latencies = array("d")
            if words[4:] == ["nocanary"]:
                self.canaries.clear()  # for good: the decoder cannot pick up mid-stream
            _say(f"ok {self.phase_id}")
        elif words[0] == "wait":
            self.deadline = time.monotonic() + float(words[2])
        return words[0]

    def _report(self) -> None:
        self.deadline = None
        mine = [self.counts[i] for i, c in enumerate(self.conns) if c["name"] == self.target]
        path = self.tmp / f"latency-{self.index}-{self.phase_id}.bin"
        with path.open("wb") as f:
            self.latencies.tofile(f)
        canary = [
            url
            for i in self.canaries
            if self.conns[i]["name"] == self.target
            for url in self.conns[i]["mind"].urls
        ]
        decoded = [u for u in canary if f"/e/{self.phase_id}/" in u]
        report = {
            "received": sum(mine),
            "min": min(mine, default=0),
            "max": max(mine, default=0),
            "connections": len(mine),
            "closed": sum(1 for i in self.closed if self.conns[i]["name"] == self.target),
            "stray": self.stray,
            "first_ns": self.first_ns,
            "last_ns": self.last_ns,
            "latencies": str(path),
            "canary_decoded": len(decoded) if self.canaries else None,
            "canary_other": [u for u in canary if "/e/" not in u][-3:],
        }
        _say("done " + json.dumps(report))


# -- the load side (this process) ---------------------------------------------------


async def _read_response(reader: asyncio.StreamReader) -> int:
    """The status code; the body (chunked or not) is read and dropped."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    lower = head.lower()
    if b"\r\ntransfer-encoding: chunked" in lower:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    else:
        at = lower.find(b"\r\ncontent-length:")
        if at >= 0:
            end = lower.index(b"\r\n", at + 2)
            await reader.readexactly(int(lower[at + 17 : end]))
    return status


class Poster:
    """Keep-alive HTTP connections that POST bench events to one server."""

    def __init__(self, port: int, path: str, token: str, run: str) -> None:
        self.port, self.path, self.token, self.run = port, path, token, run
        self.idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
        self.codes: dict[int, int] = {}
        self.answers: list[float] = []  # seconds from POST to the server's answer
        self.last_answer_ns = 0  # time.time_ns() of the latest answer

    async def open(self, connections: int) -> None:
        for _ in range(connections):
            self.idle.put_nowait(await asyncio.open_connection(HOST, self.port))

    def close(self) -> None:
        while not self.idle.empty():
            self.idle.get_nowait()[1].close()

    async def post(self, phase: int, seq: int, project: str = PROJECT) -> None:
        reader, writer = await self.idle.get()
        body = event_body(phase, seq, project)  # stamps the send time: build it last
        sent = time.perf_counter()
        writer.write(http_request(self.path, body, self.token, f"{self.run}-{phase}-{seq}"))
        try:
            status = await _read_response(reader)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            status = 0
            writer.close()
            reader, writer = await asyncio.open_connection(HOST, self.port)
        self.answers.append(time.perf_counter() - sent)
        self.last_answer_ns = time.time_ns()
        self.codes[status] = self.codes.get(status, 0) + 1
        self.idle.put_nowait((reader, writer))


class Observers:
    """The client processes, driven over their stdin/stdout."""

    def __init__(self, procs: list[asyncio.subprocess.Process], logs: list[Path]) -> None:
        self.procs = procs
        self.logs = logs

    def _logs(self) -> str:
        return "".join(f"--- {log.name} ---\n{log.read_text(errors='replace')[-2000:]}" for log in self.logs)

    async def _line(self, proc: asyncio.subprocess.Process, timeout: float) -> str:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), timeout)
        if not line:
            raise SystemExit(f"an observer process exited ({await proc.wait()}):\n{self._logs()}")
        return line.decode().strip()

    async def ready(self, timeout: float) -> int:
        total = 0
        for proc in self.procs:
            line = await self._line(proc, timeout)
            if not line.startswith("ready "):
                raise SystemExit(f"an observer process could not attach: {line}\n{self._logs()}")
            total += int(line.split()[1])
        return total

    async def _send(self, line: str) -> None:
        for proc in self.procs:
            assert proc.stdin is not None
            proc.stdin.write(line.encode() + b"\n")
            await proc.stdin.drain()

    async def phase(self, phase: int, target: str, expected: int, canary: bool = True) -> None:
        await self._send(f"phase {phase} {target} {expected}{'' if canary else ' nocanary'}")
        for proc in self.procs:
            await self._line(proc, 30)

    async def wait(self, phase: int, timeout: float) -> list[dict[str, Any]]:
        await self._send(f"wait {phase} {timeout}")
        reports = []
        for proc in self.procs:
            line = await self._line(proc, timeout + 30)
            reports.append(json.loads(line.split(" ", 1)[1]))
        return reports

    async def quit(self) -> None:
        await quit_processes(self.procs)


async def quit_processes(procs: list[asyncio.subprocess.Process]) -> None:
    """Say ``quit`` to each client process; kill those not gone in 10 s."""
    for proc in procs:
        if proc.returncode is None and proc.stdin is not None:
            with contextlib.suppress(OSError, ConnectionError):
                proc.stdin.write(b"quit\n")
                await proc.stdin.drain()
    for proc in procs:
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()


def _cpu_seconds(pid: int) -> float:
    """utime+stime of a process, all its threads (Linux /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _machine_busy() -> float:
    """CPU seconds all CPUs spent busy since boot (Linux /proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def _canary(reports: list[dict[str, Any]]) -> int | None:
    decoded = [r["canary_decoded"] for r in reports]
    return None if None in decoded else sum(decoded)


def _percentile(ordered: list[float], q: float) -> float | None:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else None


def _latencies(reports: list[dict[str, Any]]) -> list[float]:
    values = array("d")
    for report in reports:
        path = Path(report["latencies"])
        values.frombytes(path.read_bytes())
        path.unlink()
    return sorted(values)


class Bench:
    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        self.args = args
        self.tmp = tmp
        self.token = "bench-" + uuid.uuid4().hex
        self.run = uuid.uuid4().hex[:8]
        self.phases = 0
        self.servers: dict[str, tuple[subprocess.Popen, int, int, str]] = {}  # name -> proc, http, pb, path
        self.observers: Observers | None = None
        self.problems: list[str] = []
        self.send_lag_file = tmp / "send-lag.bin"  # written by the hub at exit (SEND_LAG_PROBE)

    # -- processes ------------------------------------------------------------------

    def start_servers(self) -> None:
        hub_http, hub_pb, naive_http, naive_pb = _free_ports(4)
        work = self.tmp / "hub"
        work.mkdir()
        config = work / "hub.toml"
        config.write_text(
            f'[hub]\nhttp = "tcp:{hub_http}:interface={HOST}"\npb = "tcp:{hub_pb}:interface={HOST}"\n'
            f"database = {json.dumps(str(work / 'hub.db'))}\n"
            f'\n[generic.tokens]\nbench = "{self.token}"\n'
            f"\n[pb]\nqueue_limit = 100000\nqueue_bytes = 1073741824\nheartbeat = 3600\n"
            f"connections_per_address = 1000000\n"
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("BUILDNOTIFY_")}
        if self.args.no_direct_send:  # every batch through transport.write, as without Twisted's internals
            env["BUILDNOTIFY_DIRECT_SEND"] = "0"
        env.update(XDG_CONFIG_HOME=str(self.tmp / "xdg"), XDG_DATA_HOME=str(self.tmp / "xdg"))
        naive_env = dict(env)
        site = self.tmp / "site"
        site.mkdir()
        (site / "sitecustomize.py").write_text(SEND_LAG_PROBE)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH")]))
        env["BUILDNOTIFY_BENCH_SEND_LAG"] = str(self.send_lag_file)
        hub = _spawn([str(CLI), "serve", "--config", str(config), "-q"], work / "hub.log", env)
        self.servers["hub"] = (hub, hub_http, hub_pb, "/hooks/generic")
        naive = _spawn(
            [sys.executable, __file__, "--naive-server", str(naive_pb), str(naive_http)],
            self.tmp / "naive.log",
            naive_env,
        )
        self.servers["naive"] = (naive, naive_http, naive_pb, "/event")
        for name, (proc, port, _, _) in self.servers.items():
            _wait_ready(port, proc, self.tmp / ("hub/hub.log" if name == "hub" else "naive.log"))

    async def start_observers(self) -> int:
        args = self.args
        clients = max(1, min(args.clients, args.observers))
        shares = [args.observers // clients + (i < args.observers % clients) for i in range(clients)]
        procs = []
        logs = [self.tmp / f"observers-{i}.log" for i in range(clients)]
        for i, share in enumerate(shares):
            with logs[i].open("wb") as log:
                procs.append(
                    await asyncio.create_subprocess_exec(
                        sys.executable,
                        __file__,
                        "--observer-process",
                        json.dumps(
                            {
                                "targets": [[n, s[2]] for n, s in self.servers.items()],
                                "count": share,
                                "index": i,
                                "tmp": str(self.tmp),
                            }
                        ),
                        stdin=asyncio.subprocess.PIPE,
                        stdout=asyncio.subprocess.PIPE,
                        stderr=log,
                        preexec_fn=_die_with_parent,
                    )
                )
        self.observers = Observers(procs, logs)
        return await self.observers.ready(timeout=300)

    def stop(self) -> None:
        for proc, *_ in self.servers.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for name, (proc, *_) in self.servers.items():
            try:
                code = proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
            if code not in (0, -signal.SIGTERM):
                log = self.tmp / ("hub/hub.log" if name == "hub" else "naive.log")
                print(f"{name} exited with {code}:\n{log.read_text()[-3000:]}", file=sys.stderr)

    # -- measurements ---------------------------------------------------------------

    async def burst(self, target: str, events: int, label: str | None) -> dict[str, Any]:
        """POST ``events`` at once; until every observer has every one."""
        assert self.observers is not None
        _, port, _, path = self.servers[target]
        self.phases += 1
        phase = self.phases
        await self.observers.phase(phase, target, events)
        poster = Poster(port, path, self.token, self.run)
        await poster.open(min(self.args.post_connections, events))
        usage0 = self._usage()
        t0 = time.time_ns()
        await asyncio.gather(*(poster.post(phase, seq) for seq in range(events)))
        posted = time.time_ns()
        reports = await self.observers.wait(phase, timeout=max(60.0, events * self.args.observers / 2000))
        usage = {k: v - usage0[k] for k, v in self._usage().items()}
        poster.close()
        last = max(r["last_ns"] for r in reports)
        elapsed = max(last - t0, 1) / 1e9
        received = sum(r["received"] for r in reports)
        result = {
            "target": target,
            "events": events,
            "received": received,
            "expected": events * sum(r["connections"] for r in reports),
            "elapsed": elapsed,
            "posting": (posted - t0) / 1e9,
            "rate": received / elapsed,
            "server_cpu": usage[target],
            "clients_cpu": usage["observers"],
            "others_cpu": usage["others"],
            "codes": poster.codes,
            "min": min(r["min"] for r in reports),
            "max": max(r["max"] for r in reports),
            "canary": _canary(reports),
            "canary_expected": events * len(reports),
        }
        latencies = _latencies(reports)
        result["p50_ms"] = _percentile(latencies, 0.5)
        result["p99_ms"] = _percentile(latencies, 0.99)
        if label is not None:
            print(self._describe_burst(label, result), flush=True)
            self._check(label, result, reports)
        return result

    async def steady(self) -> dict[str, Any]:
        """``--rate`` events/s for ``--seconds`` s to the hub, open loop."""
        assert self.observers is not None
        args = self.args
        _, port, _, path = self.servers["hub"]
        self.phases += 1
        phase = self.phases
        events = max(1, int(args.rate * args.seconds))
        # Decoding costs the canaries ~1 ms per event: 0.2 cores at 100 events/s,
        # taken from the hub on a small machine. The bursts have checked the bytes.
        await self.observers.phase(phase, "hub", events, canary=False)
        poster = Poster(port, path, self.token, self.run)
        await poster.open(args.post_connections)
        usage0 = self._usage()
        window_start = time.time_ns()
        loop = asyncio.get_running_loop()
        start = loop.time() + 0.05
        lag = 0.0
        tasks = []
        for seq in range(events):
            due = start + seq / args.rate
            await asyncio.sleep(max(0.0, due - loop.time()))
            lag = max(lag, loop.time() - due)
            tasks.append(asyncio.ensure_future(poster.post(phase, seq)))
        await asyncio.gather(*tasks)
        reports = await self.observers.wait(phase, timeout=30)
        window = (window_start, time.time_ns())
        wall = loop.time() - start
        usage = {k: (v - usage0[k]) / wall for k, v in self._usage().items()}
        poster.close()
        latencies = _latencies(reports)
        answers = sorted(poster.answers)
        result = {
            "target": "hub",
            "events": events,
            "received": sum(r["received"] for r in reports),
            "expected": events * sum(r["connections"] for r in reports),
            "min": min(r["min"] for r in reports),
            "max": max(r["max"] for r in reports),
            "codes": poster.codes,
            "p50_ms": _percentile(latencies, 0.5),
            "p99_ms": _percentile(latencies, 0.99),
            "p999_ms": _percentile(latencies, 0.999),
            "max_ms": latencies[-1] if latencies else None,
            "answer_p50_ms": 1000 * (_percentile(answers, 0.5) or 0),
            "answer_p99_ms": 1000 * (_percentile(answers, 0.99) or 0),
            "post_lag_ms": 1000 * lag,  # how late this process's POSTs went out, at most
            "window_ns": window,  # for the hub's send lag, read after it stopped
            "usage": usage,  # cores, over the phase
            "canary": _canary(reports),
            "canary_expected": events * len(reports),
        }
        self._check("steady", result, reports)
        return result

    def send_lags(self, window: tuple[int, int]) -> list[float]:
        """The hub's send lags (ms) of the events it wrote within ``window``
        (``time.time_ns()``), sorted; the hub writes them when it exits."""
        pairs = array("q")
        with contextlib.suppress(OSError):
            pairs.frombytes(self.send_lag_file.read_bytes())
        start, end = window
        return sorted(pairs[i + 1] / 1e6 for i in range(0, len(pairs) - 1, 2) if start <= pairs[i] <= end)

    def _usage(self) -> dict[str, float]:
        """CPU seconds so far: the hub, the observers, the naive server, this
        process, and everything else on the machine (other users included)."""
        assert self.observers is not None
        times = os.times()
        usage = {
            "hub": _cpu_seconds(self.servers["hub"][0].pid),
            "observers": sum(_cpu_seconds(p.pid) for p in self.observers.procs),
            "naive": _cpu_seconds(self.servers["naive"][0].pid),
            "bench": times.user + times.system,
        }
        usage["others"] = _machine_busy() - sum(usage.values())
        return usage

    def _check(self, label: str, result: dict[str, Any], reports: list[dict[str, Any]]) -> None:
        bad = {c: n for c, n in result["codes"].items() if not 200 <= c < 300}
        if result["received"] != result["expected"] or result["max"] > result["events"]:
            self.problems.append(
                f"{label}: {result['received']} of {result['expected']} deliveries "
                f"(per observer {result['min']}..{result['max']} of {result['events']})"
            )
        if bad:
            self.problems.append(f"{label}: non-2xx answers {bad}")
        if result["canary"] is not None and result["canary"] != result["canary_expected"]:
            other = [u for r in reports for u in r["canary_other"]]
            self.problems.append(
                f"{label}: canaries decoded {result['canary']} of {result['canary_expected']} events {other}"
            )
        closed = sum(r["closed"] for r in reports)
        if closed:
            self.problems.append(f"{label}: {closed} observer connections were closed")

    @staticmethod
    def _describe_burst(label: str, r: dict[str, Any]) -> str:
        per = r["received"] or 1
        return (
            f"{label:13} {r['events']:4d} events -> {r['received']:7d} deliveries in {r['elapsed']:6.2f} s"
            f" = {r['rate']:9,.0f}/s  (posting took {r['posting']:.2f} s)"
            f"  server cpu {r['server_cpu']:.2f} s = {1e6 * r['server_cpu'] / per:6.1f} us/delivery"
            f"  observers' cpu {r['clients_cpu']:.2f} s, other users' {r['others_cpu']:.2f} s"
        )


def _spawn(command: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen:
    with log.open("wb") as out:
        return subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            preexec_fn=_die_with_parent,
        )


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when this bench dies (Linux)."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _free_ports(count: int) -> list[int]:
    import socket

    socks = [socket.socket() for _ in range(count)]
    try:
        for s in socks:
            s.bind((HOST, 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _wait_ready(port: int, proc: subprocess.Popen, log: Path, timeout: float = 60.0) -> None:
    import http.client

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server failed ({proc.returncode}):\n{log.read_text()[-4000:]}")
        conn = http.client.HTTPConnection(HOST, port, timeout=1)
        try:
            conn.request("GET", "/")
            conn.getresponse().read()
            return
        except OSError:
            pass
        finally:
            conn.close()
        time.sleep(0.05)
    raise SystemExit(f"server on port {port} not ready after {timeout}s:\n{log.read_text()[-4000:]}")


def _raise_nofile() -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65536 if hard == resource.RLIM_INFINITY else hard
    if soft < want:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def _start_py_spy(pid: int, output: Path) -> subprocess.Popen | None:
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        print("py-spy not found (pip install py-spy); no profile", file=sys.stderr)
        return None
    fmt = {".svg": "flamegraph", ".json": "speedscope"}.get(output.suffix, "raw")
    command = [spy, "record", "--pid", str(pid), "--rate", "250", "--nonblocking", "--threads"]
    command += ["--format", fmt, "--output", str(output)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def orchestrate(args: argparse.Namespace) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="buildnotify-fanout-"))
    bench = Bench(args, tmp)
    hubs: list[dict[str, Any]] = []
    naives: list[dict[str, Any]] = []
    steady: dict[str, Any] = {}
    try:
        bench.start_servers()
        t = time.perf_counter()
        attached = await bench.start_observers()
        print(
            f"{args.observers} observers in {len(bench.observers.procs)} processes attached to the hub "
            f"and to the naive server ({attached} PB connections) in {time.perf_counter() - t:.1f} s",
            flush=True,
        )
        await bench.burst("hub", max(1, args.events // 10), None)  # warm-up: caches, TCP windows
        await bench.burst("naive", max(1, args.naive_events // 10), None)
        for n in range(1, args.rounds + 1):
            hubs.append(await bench.burst("hub", args.events, f"hub   round {n}"))
            naives.append(await bench.burst("naive", args.naive_events, f"naive round {n}"))
        if args.py_spy:
            spy = _start_py_spy(bench.servers["hub"][0].pid, args.py_spy)
            await asyncio.sleep(1.0)
            await bench.burst("hub", args.events, "hub*")
            if spy is not None:
                spy.send_signal(signal.SIGINT)
                spy.wait(30)
                print(f"              (* profiled with py-spy, not counted: {args.py_spy})", flush=True)
        steady = await bench.steady()
    finally:
        if bench.observers is not None:
            await bench.observers.quit()
        bench.stop()
        send_lags = bench.send_lags(steady["window_ns"]) if steady else []
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    rate = statistics.median(r["rate"] for r in hubs)
    naive_rate = statistics.median(r["rate"] for r in naives)
    hub_us = statistics.median(1e6 * r["server_cpu"] / max(1, r["received"]) for r in hubs)
    naive_us = statistics.median(1e6 * r["server_cpu"] / max(1, r["received"]) for r in naives)
    ratio = rate / naive_rate if naive_rate else None
    send_lag_p50, send_lag_p99 = _percentile(send_lags, 0.5), _percentile(send_lags, 0.99)
    if len(send_lags) != steady["events"]:
        bench.problems.append(f"send lag measured for {len(send_lags)} of {steady['events']} steady events")
    cpu_ratio = naive_us / hub_us if hub_us else None  # CPU is counted in 10 ms ticks
    print(
        f"steady        {args.rate:g} events/s x {args.seconds:g} s -> {steady['received']} of "
        f"{steady['expected']} deliveries: p50 {steady['p50_ms']:.1f} ms  p99 {steady['p99_ms']:.1f} ms"
        f"  p99.9 {steady['p999_ms']:.1f} ms  max {steady['max_ms']:.1f} ms"
        f"  (webhook answered p50 {steady['answer_p50_ms']:.1f} / p99 {steady['answer_p99_ms']:.1f} ms;"
        f" posts up to {steady['post_lag_ms']:.1f} ms late)\n"
        f"              hub send lag, commit -> written to the last observer's socket: "
        + (
            f"p50 {send_lag_p50:.2f} ms  p99 {send_lag_p99:.2f} ms  max {send_lags[-1]:.2f} ms"
            f" ({len(send_lags)} events; the rest of the latency is the webhook's way to the commit"
            " and the observers)"
            if send_lags
            else "not measured (the hub wrote no figures)"
        )
        + "\n"
        f"              cpu in cores ({os.cpu_count()} here): "
        + ", ".join(f"{k} {v:.2f}" for k, v in steady["usage"].items()),
        flush=True,
    )
    print(
        f"fan-out {rate:,.0f} deliveries/s vs naive {naive_rate:,.0f}/s (median of {args.rounds}): "
        f"ratio {_fmt(ratio)} (goal >= 10: {'met' if ratio and ratio >= 10 else 'MISSED'}); "
        f"server cpu {hub_us:.1f} vs {naive_us:.1f} us/delivery (ratio {_fmt(cpu_ratio)}); "
        f"latency p50 {steady['p50_ms']:.1f} ms p99 {steady['p99_ms']:.1f} ms "
        f"(goal p99 < 50 ms: {'met' if steady['p99_ms'] < 50 else 'MISSED'})",
        flush=True,
    )
    for problem in bench.problems:
        print(f"PROBLEM: {problem}", flush=True)
    summary = {
        "rate": round(rate),
        "naive_rate": round(naive_rate),
        "ratio": round(ratio, 2) if ratio else None,
        "p50_ms": round(steady["p50_ms"], 2),
        "p99_ms": round(steady["p99_ms"], 2),
        "p999_ms": round(steady["p999_ms"], 2),
        "max_ms": round(steady["max_ms"], 2),
        "observers": args.observers,
        "hub_cpu_us": round(hub_us, 2),
        "naive_cpu_us": round(naive_us, 2),
        "cpu_ratio": round(cpu_ratio, 2) if cpu_ratio else None,
        "hub_rates": [round(r["rate"]) for r in hubs],
        "naive_rates": [round(r["rate"]) for r in naives],
        "events": args.events,
        "naive_events": args.naive_events,
        "steady_rate": args.rate,
        "seconds": args.seconds,
        "steady_cpu": {k: round(v, 3) for k, v in steady["usage"].items()},
        "answer_p50_ms": round(steady["answer_p50_ms"], 2),
        "answer_p99_ms": round(steady["answer_p99_ms"], 2),
        "send_lag_p50_ms": round(send_lag_p50, 3) if send_lag_p50 is not None else None,
        "send_lag_p99_ms": round(send_lag_p99, 3) if send_lag_p99 is not None else None,
        "send_lag_max_ms": round(send_lags[-1], 3) if send_lags else None,
        "post_lag_ms": round(steady["post_lag_ms"], 2),
        "missing": sum(r["expected"] - r["received"] for r in [*hubs, *naives, steady]),
        "problems": len(bench.problems),
    }
    print(json.dumps(summary))
    return 1 if bench.problems else 0


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--observers", type=int, default=1000, help="attached observers (1000)")
    parser.add_argument("--clients", type=int, default=2, help="observer processes (2)")
    parser.add_argument("--events", type=int, default=200, help="events per hub burst (200)")
    parser.add_argument(
        "--naive-events", type=int, default=20, help="events per naive burst: each costs a jelly (20)"
    )
    parser.add_argument("--rounds", type=int, default=2, help="bursts per side, alternating (2)")
    parser.add_argument("--rate", type=float, default=100.0, help="steady events/s for latency (100)")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds of steady load (10)")
    parser.add_argument("--post-connections", type=int, default=16, help="keep-alive POST connections (16)")
    parser.add_argument("--py-spy", type=Path, help="also profile one extra hub burst into this file")
    parser.add_argument("--keep", action="store_true", help="keep the temporary database and logs")
    parser.add_argument(
        "--no-direct-send",
        action="store_true",
        help="the hub writes every batch with transport.write, never straight to the socket",
    )
    parser.add_argument("--naive-server", nargs=2, type=int, metavar=("PB", "HTTP"), help=argparse.SUPPRESS)
    parser.add_argument("--observer-process", metavar="JSON", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.naive_server:
        naive_server(*args.naive_server)
        return 0
    if args.observer_process:
        spec = json.loads(args.observer_process)
        client_process([tuple(t) for t in spec["targets"]], spec["count"], spec["index"], Path(spec["tmp"]))
        return 0
    _raise_nofile()
    return asyncio.run(orchestrate(args))


if __name__ == "__main__":
    sys.exit(main())
