"""Ingest throughput: durable GitHub webhooks per second through the real hub,
beside the same load against a bare twisted.web endpoint that only checks the
HMAC and parses the JSON, measured in one run so the machine's noise hits both.

The ratio hub/baseline is the figure that matters (goal >= 0.8): it says how
much the hub's parsing, storing and group commit cost on top of the HTTP and
JSON work any webhook receiver must do. Every 2xx the hub gave must name a
delivery that is in its database after it stopped (``durable_missing`` = 0).

Everything runs on loopback: the baseline server and the hub are
subprocesses, the load generator is a forked process with hand-written
HTTP/1.1 keep-alive clients over asyncio streams, sending request bytes that
were built before timing started. Baseline and hub rounds alternate.

    python bench/ingest.py                      # ~1 minute, 2 rounds per side
    python bench/ingest.py --seconds 20 --rounds 3 --connections 64
    python bench/ingest.py --py-spy /tmp/hub.txt  # plus one profiled hub round

The last line printed is one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import hashlib
import hmac
import http.client
import json
import multiprocessing
import os
import random
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from array import array
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
PATH = "/hooks/github"
CLI = Path(sys.executable).with_name("buildnotify-cli")

# -- realistic GitHub workflow_run deliveries ---------------------------------------

ORGS = ("acme", "globex", "initech", "umbrella")
REPOS = ("widget", "gizmo", "api", "web", "infra", "docs")
WORKFLOWS = (("CI", "ci.yml"), ("Release", "release.yml"), ("Lint", "lint.yml"))
BRANCHES = ("main", "develop", "release/2.x", "feature/login-flow", "dependabot/pip/requests-2.32.3")
USERS = (
    ("octocat", "Mona Lisa Octocat", "mona@acme.example", 583231),
    ("hubot", "Hubot", "hubot@acme.example", 480938),
    ("dependabot[bot]", "dependabot[bot]", "49699333+dependabot[bot]@users.noreply.github.com", 49699333),
    ("jdoe", "Jane Doe", "jane.doe@globex.example", 1234567),
    ("rsmith", "Ray Smith", "ray@initech.example", 7654321),
)
#: conclusions of completed runs, weighted roughly like a busy CI
CONCLUSIONS = (("success", 70), ("failure", 20), ("cancelled", 5), ("timed_out", 2), ("skipped", 3))
BASE_TIME = datetime(2024, 5, 14, 9, 0, 0, tzinfo=timezone.utc)


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


@functools.cache
def _user(login: str, uid: int) -> dict[str, Any]:
    api = f"https://api.github.com/users/{login}"
    return {
        "login": login,
        "id": uid,
        "node_id": f"MDQ6VXNlcj{uid}",
        "avatar_url": f"https://avatars.githubusercontent.com/u/{uid}?v=4",
        "gravatar_id": "",
        "url": api,
        "html_url": f"https://github.com/{login}",
        "followers_url": f"{api}/followers",
        "repos_url": f"{api}/repos",
        "events_url": f"{api}/events{{/privacy}}",
        "type": "Bot" if login.endswith("[bot]") else "User",
        "site_admin": False,
    }


def _repository(org: str, name: str, rid: int) -> dict[str, Any]:
    full = f"{org}/{name}"
    api = f"https://api.github.com/repos/{full}"
    return {
        "id": rid,
        "node_id": f"R_kgDO{rid:08d}",
        "name": name,
        "full_name": full,
        "private": rid % 3 == 0,
        "owner": _user(org, 9900 + len(org)) | {"type": "Organization"},
        "html_url": f"https://github.com/{full}",
        "description": f"The {name} service of {org}",
        "fork": False,
        "url": api,
        "branches_url": f"{api}/branches{{/branch}}",
        "commits_url": f"{api}/commits{{/sha}}",
        "pulls_url": f"{api}/pulls{{/number}}",
        "issues_url": f"{api}/issues{{/number}}",
        "git_url": f"git://github.com/{full}.git",
        "ssh_url": f"git@github.com:{full}.git",
        "clone_url": f"https://github.com/{full}.git",
        "created_at": "2019-03-02T11:20:31Z",
        "updated_at": "2024-05-13T17:02:11Z",
        "pushed_at": "2024-05-14T08:59:40Z",
        "size": 18234,
        "language": "Python",
        "default_branch": "main",
        "visibility": "private" if rid % 3 == 0 else "public",
    }


class _Streams:
    """Runs of (repository, workflow, branch): run numbers go up per stream so
    the hub computes real transitions (failed, still failing, fixed)."""

    def __init__(self, rng: random.Random, first_run_number: int) -> None:
        self.rng = rng
        self.streams = []
        for o, org in enumerate(ORGS):
            for r, repo in enumerate(REPOS):
                repository = _repository(org, repo, 100000000 + 1000 * o + r)
                for w, workflow in enumerate(WORKFLOWS):
                    for branch in BRANCHES:
                        self.streams.append(
                            [repository, workflow, 56789000 + 10 * r + w, branch, first_run_number]
                        )

    def next_run(self, run_id: int, i: int) -> dict[str, Any]:
        stream = self.rng.choice(self.streams)
        stream[4] += 1
        repository, (wname, wfile), workflow_id, branch, run_number = stream
        login, author, email, uid = self.rng.choice(USERS)
        sha = hashlib.sha1(f"{run_id}".encode()).hexdigest()
        created = BASE_TIME + timedelta(seconds=i)
        message = self.rng.choice(("Fix flaky retry test", "Bump requests", "Add login flow", "Refactor"))
        return {
            "repository": repository,
            "workflow": (wname, wfile, workflow_id),
            "branch": branch,
            "run_number": run_number,
            "run_id": run_id,
            "actor": (login, uid),
            "author": (author, email),
            "sha": sha,
            "created": created,
            "message": message,
            "conclusion": self.rng.choices([c for c, _ in CONCLUSIONS], weights=[w for _, w in CONCLUSIONS])[
                0
            ],
        }


def _workflow_run(run: dict[str, Any], action: str) -> dict[str, Any]:
    """The part of the payload that differs per delivery."""
    repository = run["repository"]
    full = repository["full_name"]
    wname, wfile, workflow_id = run["workflow"]
    run_id, sha, created = run["run_id"], run["sha"], run["created"]
    login, uid = run["actor"]
    author, email = run["author"]
    completed = action == "completed"
    api = f"https://api.github.com/repos/{full}/actions/runs/{run_id}"
    head_commit = {
        "id": sha,
        "tree_id": hashlib.sha1(sha.encode()).hexdigest(),
        "message": run["message"],
        "timestamp": _iso(created - timedelta(seconds=5)),
        "author": {"name": author, "email": email},
        "committer": {"name": "GitHub", "email": "noreply@github.com"},
    }
    short_repo = {k: repository[k] for k in ("id", "node_id", "name", "full_name", "private", "url")}
    return {
        "id": run_id,
        "name": wname,
        "node_id": f"WFR_kwLO{run_id:012d}",
        "head_branch": run["branch"],
        "head_sha": sha,
        "path": f".github/workflows/{wfile}",
        "display_title": run["message"],
        "run_number": run["run_number"],
        "event": "push",
        "status": "completed" if completed else "in_progress",
        "conclusion": run["conclusion"] if completed else None,
        "workflow_id": workflow_id,
        "check_suite_id": run_id * 3,
        "check_suite_node_id": f"CS_kwDO{run_id * 3:012d}",
        "url": api,
        "html_url": f"https://github.com/{full}/actions/runs/{run_id}",
        "pull_requests": [],
        "created_at": _iso(created),
        "updated_at": _iso(created + timedelta(minutes=7 if completed else 1)),
        "actor": _user(login, uid),
        "run_attempt": 1,
        "referenced_workflows": [],
        "run_started_at": _iso(created + timedelta(seconds=20)),
        "triggering_actor": _user(login, uid),
        "jobs_url": f"{api}/jobs",
        "logs_url": f"{api}/logs",
        "check_suite_url": f"https://api.github.com/repos/{full}/check-suites/{run_id * 3}",
        "artifacts_url": f"{api}/artifacts",
        "cancel_url": f"{api}/cancel",
        "rerun_url": f"{api}/rerun",
        "previous_attempt_url": None,
        "workflow_url": f"https://api.github.com/repos/{full}/actions/workflows/{workflow_id}",
        "head_commit": head_commit,
        "repository": short_repo,
        "head_repository": short_repo,
    }


_TAILS: dict[tuple[str, str, str], str] = {}


def _tail(run: dict[str, Any]) -> str:
    """The rest of the payload, which depends only on repository, workflow and
    sender: encoded once each, so building requests is not dominated by JSON."""
    repository = run["repository"]
    full = repository["full_name"]
    wname, wfile, workflow_id = run["workflow"]
    login, uid = run["actor"]
    key = (full, wname, login)
    if key not in _TAILS:
        tail = {
            "workflow": {
                "id": workflow_id,
                "node_id": f"W_kwDO{workflow_id:010d}",
                "name": wname,
                "path": f".github/workflows/{wfile}",
                "state": "active",
                "created_at": "2021-01-12T10:00:00Z",
                "updated_at": "2024-04-01T10:00:00Z",
                "url": f"https://api.github.com/repos/{full}/actions/workflows/{workflow_id}",
                "html_url": f"https://github.com/{full}/blob/main/.github/workflows/{wfile}",
                "badge_url": f"https://github.com/{full}/workflows/{wname}/badge.svg",
            },
            "repository": repository,
            "organization": {"login": repository["owner"]["login"], "id": repository["owner"]["id"]},
            "sender": _user(login, uid),
        }
        _TAILS[key] = json.dumps(tail, separators=(",", ":"))[1:-1]
    return _TAILS[key]


def _body(run: dict[str, Any], action: str) -> bytes:
    """One workflow_run delivery body, compact JSON as GitHub sends it."""
    head = json.dumps(_workflow_run(run, action), separators=(",", ":"))
    return f'{{"action":"{action}","workflow_run":{head},{_tail(run)}}}'.encode()


def build_requests(
    count: int, secret: str, seed: int, first_part: int = 0
) -> tuple[list[bytes], list[str], int, int]:
    """``count`` requests built on every core, their delivery ids, the mean body
    size and the next free part number. Parts follow one another (later run
    numbers), so the hub still sees runs in order."""
    parts = max(1, min(os.cpu_count() or 1, count // 2000))
    sizes = [count // parts + (k < count % parts) for k in range(parts)]
    jobs = [(n, secret, seed, first_part + k) for k, n in enumerate(sizes)]
    if parts == 1:
        built = [_build_part(*jobs[0])]
    else:
        with multiprocessing.get_context("fork").Pool(parts) as pool:
            built = pool.starmap(_build_part, jobs)
    requests = [r for part in built for r in part[0]]
    ids = [i for part in built for i in part[1]]
    size = sum(part[2] * n for part, n in zip(built, sizes, strict=True)) // max(1, count)
    return requests, ids, size, first_part + parts


def _build_part(count: int, secret: str, seed: int, part: int) -> tuple[list[bytes], list[str], int]:
    """``count`` complete HTTP/1.1 requests (bytes), their delivery ids and the
    mean body size. About one run in six also reports in_progress a few
    deliveries before it completes, as GitHub does."""
    rng = random.Random(seed * 1000 + part)
    streams = _Streams(rng, 100 + part * 1_000_000)
    key = secret.encode()
    requests: list[bytes] = []
    ids: list[str] = []
    pending: list[tuple[int, dict[str, Any]]] = []  # (due index, run) of completions to send
    run_id = 10_000_000_000 + seed * 100_000_000 + part * 10_000_000
    body_bytes = 0
    i = 0
    while i < count:
        if pending and pending[0][0] <= i:
            run, action = pending.pop(0)[1], "completed"
        else:
            run_id += 1
            run = streams.next_run(run_id, i)
            action = "completed"
            if rng.random() < 0.17:
                action = "in_progress"
                pending.append((i + rng.randint(1, 40), run))
                pending.sort(key=lambda p: p[0])
        body = _body(run, action)
        delivery = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        sha1 = hmac.new(key, body, hashlib.sha1).hexdigest()
        sha256 = hmac.new(key, body, hashlib.sha256).hexdigest()
        head = (
            f"POST {PATH} HTTP/1.1\r\n"
            f"Host: {HOST}\r\n"
            "User-Agent: GitHub-Hookshot/6a2e3c1\r\n"
            "Accept: */*\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n"
            "X-GitHub-Event: workflow_run\r\n"
            f"X-GitHub-Delivery: {delivery}\r\n"
            "X-GitHub-Hook-ID: 471112233\r\n"
            "X-GitHub-Hook-Installation-Target-ID: 100000000\r\n"
            "X-GitHub-Hook-Installation-Target-Type: repository\r\n"
            f"X-Hub-Signature: sha1={sha1}\r\n"
            f"X-Hub-Signature-256: sha256={sha256}\r\n"
            "\r\n"
        )
        requests.append(head.encode() + body)
        ids.append(delivery)
        body_bytes += len(body)
        i += 1
    return requests, ids, body_bytes // max(count, 1)


# -- the baseline server ------------------------------------------------------------


def baseline_server(port: int, secret: str) -> None:
    """What any webhook receiver must do at least: read the body, check the
    HMAC in constant time, parse the JSON, answer JSON. No storage."""
    from twisted.internet import reactor
    from twisted.web import resource, server

    key = secret.encode()

    class Bare(resource.Resource):
        isLeaf = True

        def render_GET(self, request: server.Request) -> bytes:
            request.setHeader(b"content-type", b"application/json")
            return b'{"service": "baseline"}\n'

        def render_POST(self, request: server.Request) -> bytes:
            body = request.content.read()
            request.setHeader(b"content-type", b"application/json")
            presented = request.getHeader(b"x-hub-signature-256") or b""
            expected = b"sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest().encode()
            if not hmac.compare_digest(presented.strip(), expected):
                request.setResponseCode(401)
                return b'{"error": "bad signature"}\n'
            try:
                data = json.loads(body)
            except ValueError:
                request.setResponseCode(400)
                return b'{"error": "malformed JSON"}\n'
            answer = {"ok": True, "action": data.get("action"), "delivery": None}
            delivery = request.getHeader(b"x-github-delivery")
            answer["delivery"] = delivery.decode("latin-1") if delivery else None
            return json.dumps(answer).encode() + b"\n"

    class QuietSite(server.Site):
        def log(self, request: server.Request) -> None:
            """No access log, like the hub."""

    reactor.listenTCP(port, QuietSite(Bare()), interface=HOST)
    reactor.run()


# -- the load generator -------------------------------------------------------------


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Status code and whether the server will close; the body is read and dropped."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    lower = head.lower()
    close = b"\r\nconnection: close" in lower
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
    return status, close


def _cpu_seconds(pid: int) -> float | None:
    """utime+stime of a process and its live descendants, all threads, from
    /proc (Linux): a hub that moves work into child processes pays for it here."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    total = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            for child in (task / "children").read_text().split():
                total += _cpu_seconds(int(child)) or 0.0
    return total


async def _load(
    requests: list[bytes], port: int, connections: int, warmup: float, seconds: float, server_pid: int
) -> dict[str, Any]:
    accepted = array("I")
    latencies: list[float] = []
    codes: Counter[int] = Counter()
    state = {"next": 0, "exhausted": False, "errors": 0, "reconnects": 0, "ok_in_window": 0}
    window: dict[str, float | None] = {}
    conns = [await asyncio.open_connection(HOST, port) for _ in range(connections)]
    t0 = time.perf_counter()
    start, end = t0 + warmup, t0 + warmup + seconds

    async def mark_window() -> None:
        await asyncio.sleep(max(0.0, start - time.perf_counter()))
        window["cpu0"], window["self0"] = _cpu_seconds(server_pid), time.process_time()
        await asyncio.sleep(max(0.0, end - time.perf_counter()))
        window["cpu1"], window["self1"] = _cpu_seconds(server_pid), time.process_time()

    async def worker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        clock = time.perf_counter
        while True:
            sent_at = clock()
            if sent_at >= end:
                break
            i = state["next"] % len(requests)
            if i == 0 and state["next"]:
                state["exhausted"] = True  # resent deliveries are duplicates to the hub
            state["next"] += 1
            try:
                writer.write(requests[i])
                status, close = await _read_response(reader)
            except (OSError, asyncio.IncompleteReadError, ValueError):
                state["errors"] += 1
                status, close = 0, True
            done = clock()
            codes[status] += 1
            ok = 200 <= status < 300
            if ok:
                accepted.append(i)
            if start <= done < end:
                latencies.append(done - sent_at)
                state["ok_in_window"] += ok
            if close:
                writer.close()
                state["reconnects"] += 1
                try:
                    reader, writer = await asyncio.open_connection(HOST, port)
                except OSError:
                    state["errors"] += 1
                    return  # the server is gone; the codes tell
        writer.close()

    await asyncio.gather(mark_window(), *(worker(r, w) for r, w in conns))
    latencies.sort()
    server_cpu = None
    if window.get("cpu0") is not None and window.get("cpu1") is not None:
        server_cpu = (window["cpu1"] - window["cpu0"]) / seconds
    return {
        "accepted": accepted.tobytes(),
        "codes": dict(codes),
        "rate": state["ok_in_window"] / seconds,
        "p50_ms": 1000 * latencies[len(latencies) // 2] if latencies else None,
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
        if latencies
        else None,
        "sent": state["next"],
        "exhausted": state["exhausted"],
        "errors": state["errors"],
        "reconnects": state["reconnects"],
        "server_cpu": server_cpu,
        "client_cpu": (window["self1"] - window["self0"]) / seconds if "self1" in window else None,
    }


def _load_child(
    conn: Any, requests: list[bytes], port: int, args: argparse.Namespace, server_pid: int
) -> None:
    """Runs in a forked process: the requests are inherited, not copied in."""
    result = asyncio.run(_load(requests, port, args.connections, args.warmup, args.seconds, server_pid))
    conn.send(result)
    conn.close()


# -- orchestration ------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _wait_ready(port: int, proc: subprocess.Popen, log: Path, timeout: float = 60.0) -> None:
    """Until ``GET /`` gets an HTTP answer: any status, the point is that the
    server is listening (the hub's root currently answers 404)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None or "could not start" in log.read_text():
            proc.kill()
            raise SystemExit(f"server failed ({proc.wait()}):\n{log.read_text()[-4000:]}")
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
    proc.kill()
    raise SystemExit(f"server on port {port} not ready after {timeout}s:\n{log.read_text()[-4000:]}")


def _stop(proc: subprocess.Popen, timeout: float = 60.0) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise SystemExit("server did not stop within 60 s of SIGTERM") from None


def _run_load(
    requests: list[bytes], port: int, args: argparse.Namespace, server_pid: int, profile: Path | None = None
) -> dict[str, Any]:
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_load_child, args=(child, requests, port, args, server_pid))
    proc.start()
    child.close()
    spy = None
    if profile is not None:
        time.sleep(args.warmup + 0.5)  # connect + warm-up; profile the measured window only
        spy = _start_py_spy(server_pid, profile, args.seconds - 1)
    while not parent.poll(1.0):
        if not proc.is_alive():
            raise SystemExit(f"the load generator died (exit code {proc.exitcode})")
    result = parent.recv()
    proc.join()
    if spy is not None:
        spy.wait()
    result["accepted"] = array("I", result["accepted"])
    return result


def _start_py_spy(pid: int, output: Path, seconds: float) -> subprocess.Popen | None:
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        print("py-spy not found (pip install py-spy); no profile", file=sys.stderr)
        return None
    fmt = {".svg": "flamegraph", ".json": "speedscope"}.get(output.suffix, "raw")
    command = [spy, "record", "--pid", str(pid), "--duration", str(max(1, int(seconds)))]
    command += ["--rate", "250", "--nonblocking", "--threads", "--format", fmt, "--output", str(output)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


SITECUSTOMIZE = textwrap.dedent(
    '''
    """Bench-only: after the hub stops, write its group-commit counters."""
    import atexit, json, os
    _path = os.environ.get("BUILDNOTIFY_BENCH_STATS")
    if _path:
        try:
            from buildnotify import store as _store
        except Exception:
            _store = None
        if _store is not None:
            _stores = []
            _init = _store.Store.__init__

            def _recording_init(self, *args, **kwargs):
                _init(self, *args, **kwargs)
                _stores.append(self)

            _store.Store.__init__ = _recording_init

            @atexit.register
            def _dump():
                stats = getattr(_stores[-1], "writer_stats", None) if _stores else None
                if stats:
                    with open(_path, "w") as f:
                        json.dump({"batches": stats[0], "items": stats[1]}, f)
    '''
)


def _history_db(tmp: Path, count: int) -> Path:
    """A database with ``count`` past GitHub deliveries, as a hub that has run a
    while has: the dedupe lookup must stay cheap as that table grows."""
    db = tmp / f"history-{count}.db"
    if db.exists():
        return db
    subprocess.run([str(CLI), "db", "upgrade", "--db", str(db)], check=True, stdout=subprocess.DEVNULL)
    rng = random.Random(count)
    with contextlib.closing(sqlite3.connect(db)) as conn:
        for start in range(0, count, 50_000):
            rows = [
                ("github", str(uuid.UUID(int=rng.getrandbits(128), version=4)), "2024-01-01 00:00:00.000000")
                for _ in range(min(50_000, count - start))
            ]
            conn.executemany(
                "INSERT INTO deliveries (provider, key, received_at, event_count) VALUES (?, ?, ?, 1)", rows
            )
        conn.commit()
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return db


def _start_hub(
    tmp: Path, index: int, secret: str, history: int = 0
) -> tuple[subprocess.Popen, int, Path, Path, Path]:
    """A fresh hub and database per round (all rounds see the same requests)."""
    port = _free_port()
    work = tmp / f"hub{index}"
    work.mkdir()
    db = work / "hub.db"
    if history:
        shutil.copyfile(_history_db(tmp, history), db)
    config = work / "hub.toml"
    config.write_text(
        f'[hub]\nhttp = "tcp:{port}:interface={HOST}"\npb = "tcp:{_free_port()}:interface={HOST}"\n'
        f"database = {json.dumps(str(db))}\n"
        f'\n[github]\nsecret = "{secret}"\n'
    )
    (tmp / "site").mkdir(exist_ok=True)
    (tmp / "site" / "sitecustomize.py").write_text(SITECUSTOMIZE)
    stats = work / "writer.json"
    env = dict(os.environ, BUILDNOTIFY_BENCH_STATS=str(stats))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tmp / "site"), env.get("PYTHONPATH")]))
    log = work / "hub.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(CLI), "serve", "--config", str(config), "-q"], stdout=out, stderr=subprocess.STDOUT, env=env
        )
    _wait_ready(port, proc, log)
    return proc, port, db, stats, log


def _check_durable(db: Path, ids: list[str], accepted: array) -> tuple[int, dict[str, int], int]:
    """Missing 2xx deliveries, stored transitions and event count, read after the hub stopped."""
    with contextlib.closing(sqlite3.connect(db)) as conn:
        stored = {k for (k,) in conn.execute("SELECT key FROM deliveries WHERE provider = 'github'")}
        transitions = dict(
            conn.execute("SELECT coalesce(transition, '-'), count(*) FROM events GROUP BY 1").fetchall()
        )
        events = conn.execute("SELECT count(*) FROM events").fetchone()[0]
    missing = sum(1 for i in accepted if ids[i] not in stored)
    return missing, transitions, events


def _fmt(value: float | None, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def _cpu_us(r: dict[str, Any]) -> float | None:
    """Server CPU per answered request: steadier than the rate on a shared machine."""
    return 1e6 * r["server_cpu"] / r["rate"] if r.get("server_cpu") and r["rate"] else None


def _describe(side: str, n: int, r: dict[str, Any]) -> str:
    """One human-readable line per round."""
    line = (
        f"{side:8} round {n}: {r['rate']:8.1f} /s  p50 {_fmt(r['p50_ms'], '.2f')} ms"
        f"  p99 {_fmt(r['p99_ms'], '.2f')} ms  codes {r['codes']}"
        f"  server cpu {_fmt(r['server_cpu'] and 100 * r['server_cpu'], '.0f')}%"
        f" = {_fmt(_cpu_us(r), '.0f')} us/request"
        f"  client cpu {_fmt(r['client_cpu'] and 100 * r['client_cpu'], '.0f')}%"
    )
    if r.get("group"):
        line += f"  group commit {r['group']:.1f}/txn"
    if r["exhausted"]:
        line += "  (resent requests: harmless here)" if side == "baseline" else "  (resent: INVALID)"
    return line


def orchestrate(args: argparse.Namespace) -> int:
    secret = "bench-" + uuid.uuid4().hex
    count = int(args.max_rate * (args.warmup + args.seconds))
    t = time.perf_counter()
    requests, ids, body_size, next_part = build_requests(count, secret, args.seed)
    print(
        f"built {count} requests ({body_size} B bodies) in {time.perf_counter() - t:.1f} s; "
        f"{args.connections} connections, {args.warmup:g} s warm-up + {args.seconds:g} s per round",
        flush=True,
    )
    tmp = Path(tempfile.mkdtemp(prefix="buildnotify-bench-"))
    base: list[dict[str, Any]] = []
    hubs: list[dict[str, Any]] = []
    missing_total = 0
    try:
        rounds = [("baseline", n) for n in range(args.rounds)] + [("hub", n) for n in range(args.rounds)]
        rounds.sort(key=lambda s: (s[1], s[0] == "hub"))  # baseline, hub, baseline, hub, ...
        if args.py_spy:
            rounds.append(("hub", args.rounds))
        for side, n in rounds:
            profile = args.py_spy if side == "hub" and n == args.rounds else None
            if side == "baseline":
                port = _free_port()
                log = tmp / f"baseline{n}.log"
                with log.open("wb") as out:
                    proc = subprocess.Popen(
                        [sys.executable, __file__, "--baseline-server", str(port), "--secret", secret],
                        stdout=out,
                        stderr=subprocess.STDOUT,
                    )
                try:
                    _wait_ready(port, proc, log)
                    result = _run_load(requests, port, args, proc.pid)
                finally:
                    _stop(proc)
                base.append(result)
                print(_describe(side, n + 1, result), flush=True)
                # The baseline may resend requests; the hub must not (it would measure
                # duplicates), so build enough for a hub as fast as the baseline.
                needed = int(1.25 * result["rate"] * (args.warmup + args.seconds)) - len(requests)
                if needed > 0:
                    more, more_ids, _, next_part = build_requests(needed, secret, args.seed, next_part)
                    requests += more
                    ids += more_ids
                    print(f"built {needed} more requests for the hub rounds", flush=True)
                continue
            proc, port, db, stats, log = _start_hub(tmp, n, secret, args.history)
            try:
                result = _run_load(requests, port, args, proc.pid, profile)
            finally:
                code = _stop(proc)
            if code not in (0, -signal.SIGTERM):
                print(f"hub exited with {code}:\n{log.read_text()[-4000:]}", file=sys.stderr)
            if stats.exists():
                counters = json.loads(stats.read_text())
                result["group"] = counters["items"] / counters["batches"] if counters["batches"] else None
            missing, transitions, events = _check_durable(db, ids, result["accepted"])
            result.update(durable_missing=missing, transitions=transitions, events=events)
            missing_total += missing
            label = "hub" if profile is None else "hub*"
            print(_describe(label, n + 1, result), flush=True)
            print(
                f"         {len(result['accepted'])} answered 2xx, {missing} not in the database after "
                f"stop; {events} events stored, transitions {transitions}",
                flush=True,
            )
            if profile is not None:
                print(f"         (* profiled with py-spy, not counted; profile in {args.py_spy})")
            else:
                hubs.append(result)
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    rate = statistics.median(r["rate"] for r in hubs)
    baseline_rate = statistics.median(r["rate"] for r in base)
    best, best_base = max(r["rate"] for r in hubs), max(r["rate"] for r in base)
    groups = [r["group"] for r in hubs if r.get("group") is not None]
    summary = {
        "rate": round(rate, 1),
        "baseline_rate": round(baseline_rate, 1),
        "ratio": round(rate / baseline_rate, 3) if baseline_rate else None,
        "ratio_best": round(best / best_base, 3) if best_base else None,
        "durable_missing": missing_total,
        "accepted": sum(len(r["accepted"]) for r in hubs),
        "non_2xx": sum(n for r in hubs for c, n in r["codes"].items() if not 200 <= c < 300),
        "group_commit": round(statistics.median(groups), 2) if groups else None,
        "p50_ms": _median(hubs, "p50_ms"),
        "p99_ms": _median(hubs, "p99_ms"),
        "baseline_p50_ms": _median(base, "p50_ms"),
        "baseline_p99_ms": _median(base, "p99_ms"),
        "cpu_us": _median([r | {"cpu_us": _cpu_us(r)} for r in hubs], "cpu_us"),
        "baseline_cpu_us": _median([r | {"cpu_us": _cpu_us(r)} for r in base], "cpu_us"),
        "hub_rates": [round(r["rate"], 1) for r in hubs],
        "baseline_rates": [round(r["rate"], 1) for r in base],
        "connections": args.connections,
        "seconds": args.seconds,
        "rounds": args.rounds,
        "body_bytes": body_size,
        "history": args.history,
        "exhausted": any(r["exhausted"] for r in hubs),
    }
    print(
        f"hub {rate:.1f} durable webhooks/s vs baseline {baseline_rate:.1f}/s (median of {args.rounds}): "
        f"ratio {summary['ratio']} (best-vs-best {summary['ratio_best']}; goal >= 0.8); "
        f"p50/p99 {summary['p50_ms']}/{summary['p99_ms']} ms vs "
        f"{summary['baseline_p50_ms']}/{summary['baseline_p99_ms']} ms; "
        f"server CPU {summary['cpu_us']} vs {summary['baseline_cpu_us']} us/request; "
        f"group commit {summary['group_commit']} deliveries/txn; durable_missing {missing_total}"
    )
    print(json.dumps(summary))
    # A hub that got resent requests measured duplicates, not ingest: not a valid run.
    return 1 if missing_total or summary["exhausted"] else 0


def _median(results: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in results if r.get(key) is not None]
    return round(statistics.median(values), 2) if values else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per round (10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds first (2)")
    parser.add_argument("--connections", type=int, default=32, help="concurrent keep-alive clients (32)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds per side, alternating (2)")
    parser.add_argument(
        "--max-rate",
        type=float,
        default=1500,
        help="requests built first = this x (warm-up + seconds); more are built after a faster "
        "baseline round; the baseline may resend them (1500)",
    )
    parser.add_argument("--seed", type=int, default=1, help="payload mix seed (1)")
    parser.add_argument(
        "--history", type=int, default=0, metavar="N", help="start each hub with N past deliveries (0)"
    )
    parser.add_argument("--py-spy", type=Path, help="also profile one extra hub round into this file")
    parser.add_argument("--keep", action="store_true", help="keep the temporary databases and logs")
    parser.add_argument("--baseline-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--secret", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.baseline_server is not None:
        baseline_server(args.baseline_server, args.secret)
        return 0
    return orchestrate(args)


if __name__ == "__main__":
    sys.exit(main())
