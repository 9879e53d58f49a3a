"""``buildnotify-cli watch`` as a user runs it: a real process against a hub
on loopback in this test's reactor."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.protocol import ProcessProtocol
from twisted.trial import unittest

from buildnotify import cli
from buildnotify.client import watch
from buildnotify.client.resume import state_file_name
from tests.hubprocess import cli_env, run_cli
from tests.pbclient import add_developer, missing_events, wait_until
from tests.support import RunningHub

WIDGET = "acme/widget"
ROOT = Path(__file__).resolve().parent.parent
AUTHOR = {"name": "Alice", "email": "alice@example.com", "login": "alice"}


class WatchProcess(ProcessProtocol):
    """``python -m buildnotify.cli watch ARGS``, its output read as it comes."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.stderr = ""
        self.code: int | None = None
        self.ended: Deferred[int | None] = Deferred()
        self._partial = b""

    def outReceived(self, data: bytes) -> None:  # noqa: N802
        self._partial += data
        *complete, self._partial = self._partial.split(b"\n")
        self.lines += [line.decode() for line in complete]

    def errReceived(self, data: bytes) -> None:  # noqa: N802
        self.stderr += data.decode()

    def processEnded(self, reason: Any) -> None:  # noqa: N802
        self.code = reason.value.exitCode
        self.ended.callback(self.code)

    @property
    def json(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.lines]

    @property
    def running(self) -> bool:
        return self.code is None

    def signal(self, name: str) -> None:
        self.transport.signalProcess(name)


class WatchTestCase(unittest.TestCase):
    async def start_hub(self) -> RunningHub:
        self.hub = await RunningHub.start(self)
        self.home = Path(self.mktemp()).resolve()
        self.home.mkdir(parents=True)
        return self.hub

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BUILDNOTIFY_")}
        env.update(
            XDG_STATE_HOME=str(self.home / "state"),
            XDG_CONFIG_HOME=str(self.home / "config"),
            PYTHONUNBUFFERED="1",
        )
        return env

    def watch(self, *args: str) -> WatchProcess:
        process = WatchProcess()
        argv = [sys.executable, "-m", "buildnotify.cli", "watch", "--hub", self.hub.hub.pb_address, *args]
        reactor.spawnProcess(process, sys.executable, argv, env=self.env(), path=str(ROOT))

        async def kill() -> None:
            if process.running:
                process.signal("KILL")
                await process.ended
            print(process.stderr)  # shown by trial/pytest when the test failed

        self.addCleanup(lambda: Deferred.fromCoroutine(kill()))
        return process

    async def live(self, process: WatchProcess, times: int = 1) -> None:
        await wait_until(
            lambda: process.stderr.count("buildnotify: live on") >= times or not process.running,
            timeout=30,
            what="the watch process to go live",
        )
        self.assertTrue(process.running, process.stderr)

    async def token_file(self, name: str) -> Path:
        token = await add_developer(self.hub.hub.store, name, logins=[name])
        path = self.home / f"{name}.token"
        path.write_text(token + "\n")
        path.chmod(0o600)
        return path


class JsonTests(WatchTestCase):
    async def test_json_lines_carry_the_event_fields_and_ctrl_c_saves_the_position(self) -> None:
        await self.start_hub()
        process = self.watch("--json", "--project", WIDGET)
        await self.live(process)
        ids = [
            await self.hub.build(
                WIDGET, 1, "failure", sha="0123456789abcdef", author=AUTHOR, url="https://ci.example.com/1"
            ),
            await self.hub.build(WIDGET, 2, "success"),
        ]
        await self.hub.build("acme/gadget", 1, "failure")  # not watched
        await wait_until(lambda: len(process.lines) >= 2, timeout=20, what="two JSON lines")
        stored = {e.id: e.to_dict() for e in await self.hub.events(WIDGET)}
        lines = process.json
        self.assertEqual([line["id"] for line in lines], ids)
        for line in lines:
            self.assertEqual(line.pop("type"), "event")
            self.assertEqual(line, stored[line["id"]])
        self.assertEqual(lines[0]["transition"], "failed")
        self.assertEqual(lines[0]["author"]["login"], "alice")
        self.assertEqual(lines[0]["sha"], "0123456789abcdef")

        process.signal("INT")
        self.assertEqual(await process.ended, watch.EXIT_INTERRUPTED)
        saved = self.home / "state" / "buildnotify" / state_file_name(self.hub.hub.pb_address, None, [WIDGET])
        self.assertEqual(json.loads(saved.read_text())["last_id"], ids[-1])

        missed = await self.hub.build(WIDGET, 3, "failure")  # while no one watched
        again = self.watch("--json", "--project", WIDGET)
        await self.live(again)
        await wait_until(lambda: again.lines, timeout=20, what="the missed event")
        self.assertEqual([line["id"] for line in again.json], [missed])
        self.assertIn("catching up after event", again.stderr)


class HumanOutputTests(WatchTestCase):
    async def test_one_line_per_event_filtered_by_branch_and_kind(self) -> None:
        await self.start_hub()
        process = self.watch("--project", WIDGET, "--branch", "main", "--only", "failures")
        await self.live(process)
        await self.hub.build(WIDGET, 1, "success")  # not a failure
        await self.hub.build(WIDGET, 2, "failure", branch="dev")  # another branch
        shown = await self.hub.build(
            WIDGET, 3, "failure", sha="0123456789abcdef", author=AUTHOR, url="https://ci.example.com/3"
        )
        await wait_until(lambda: process.lines, timeout=20, what="a line")
        [line] = process.lines
        for part in (
            WIDGET,
            "ci@main",
            "01234567",
            "alice",
            "[failed]",
            "https://ci.example.com/3",
            "failure",
        ):
            self.assertIn(part, line)
        self.assertNotIn("\033", line)  # not a terminal: no colours
        self.assertNotIn("89abcdef", line)  # a short sha
        self.assertEqual([e.id for e in await self.hub.events(WIDGET)][-1], shown)

    async def test_alerts_and_claims_stand_out(self) -> None:
        await self.start_hub()
        token_file = await self.token_file("alice")
        process = self.watch("--user", "alice", "--token-file", str(token_file), "--project", WIDGET)
        await self.live(process)
        await self.hub.build(WIDGET, 1, "failure", author=AUTHOR)
        await wait_until(lambda: len(process.lines) >= 2, timeout=20, what="the event and the alert")
        self.assertTrue(any(line.startswith("!! YOUR COMMIT") and "BROKE" in line for line in process.lines))


class UntilFinishedTests(WatchTestCase):
    async def test_exit_status_follows_the_awaited_build(self) -> None:
        await self.start_hub()
        green = self.watch("--json", "--until-finished", f"{WIDGET}@main")
        red = self.watch("--until-finished", "acme/gadget")
        await self.live(green)
        await self.live(red)
        await self.hub.build(WIDGET, 1, "running")  # not finished
        await self.hub.build(WIDGET, 2, "failure", branch="dev")  # another branch
        await self.hub.build("acme/gadget", 1, "running")
        finished = await self.hub.build(WIDGET, 3, "success")
        self.assertEqual(await green.ended, watch.EXIT_OK)
        self.assertTrue(red.running)
        self.assertEqual(green.json[-1]["id"], finished)
        await self.hub.build("acme/gadget", 2, "error")
        self.assertEqual(await red.ended, watch.EXIT_BUILD_FAILED)
        self.assertIn("error", red.lines[-1])
        self.assertFalse((self.home / "state" / "buildnotify").exists())  # no resume file touched


class SignedInElsewhereTests(WatchTestCase):
    async def test_a_second_watch_of_the_same_user_ends_the_first(self) -> None:
        await self.start_hub()
        token_file = await self.token_file("alice")
        args = ("--user", "alice", "--token-file", str(token_file), "--project", WIDGET, "--json")
        first = self.watch(*args)
        await self.live(first)
        second = self.watch(*args)
        self.assertEqual(await first.ended, watch.EXIT_SIGNED_IN_ELSEWHERE)
        self.assertIn("signed in elsewhere", first.stderr.splitlines()[-1])
        self.assertEqual(first.stderr.count("connecting to"), 1)  # it did not reconnect
        await self.live(second)
        event_id = await self.hub.build(WIDGET, 1, "success")
        await wait_until(lambda: second.lines, timeout=20, what="the second watch's event")
        self.assertEqual(second.json[0]["id"], event_id)
        second.signal("TERM")
        self.assertEqual(await second.ended, 128 + signal.SIGTERM)


class UsageTests(unittest.TestCase):
    def config(self, text: str = "") -> str:
        path = Path(self.mktemp()).resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return str(path)

    def test_mistakes_exit_2_before_connecting(self) -> None:
        empty = self.config()
        hub = ("--hub", "tcp:127.0.0.1:1")
        for args in (
            [*hub, "--client-config", empty],  # anonymous needs projects
            [*hub, "--client-config", empty, "--user", "ada", "--project", "p"],  # no token
            [*hub, "--client-config", empty, "--token-file", empty, "--project", "p"],  # token without user
            [*hub, "--client-config", self.config("nonsense = 1\n"), "--project", "p"],
            [*hub, "--client-config", empty, "--until-finished", "@main"],
        ):
            self.patch(os, "environ", {k: v for k, v in os.environ.items() if k != "BUILDNOTIFY_TOKEN"})
            self.assertEqual(cli.main(["watch", *args]), watch.EXIT_USAGE, args)

    def test_a_bad_hub_endpoint_is_named_not_retried(self) -> None:
        home = Path(self.mktemp()).resolve()
        home.mkdir(parents=True)
        client_config = self.config('hub = "bogus:1"\n')
        for args, where, value in (
            (["--hub", "tcp:notaport"], "--hub", "tcp:notaport"),
            (["--client-config", client_config], f"hub in {client_config}", "bogus:1"),
        ):
            try:
                result = run_cli(
                    ["watch", "--project", WIDGET, *args],
                    cli_env(home, XDG_STATE_HOME=str(home / "state")),
                    timeout=30,
                )
            except subprocess.TimeoutExpired:
                self.fail(f"watch {' '.join(args)} was still running after 30 s instead of naming {where}")
            self.assertEqual(result.returncode, watch.EXIT_USAGE, result)
            self.assertTrue(
                result.stderr.startswith(f"buildnotify-cli watch: {where}: not an endpoint: {value!r} ("),
                result.stderr,
            )

    def test_event_filters(self) -> None:
        failed = {"branch": "main", "status": "failure", "transition": "failed"}
        still = {"branch": "main", "status": "failure", "transition": "still_failing"}
        passed = {"branch": "dev", "status": "success", "transition": "passed"}
        self.assertEqual(
            [watch.wanted(e, "changes", None) for e in (failed, still, passed)], [True, False, False]
        )
        self.assertEqual(
            [watch.wanted(e, "failures", None) for e in (failed, still, passed)], [True, True, False]
        )
        self.assertEqual(
            [watch.wanted(e, "all", "dev") for e in (failed, still, passed)], [False, False, True]
        )


class HubRestartTests(WatchTestCase):
    async def test_every_event_is_printed_once_across_a_hub_restart(self) -> None:
        """The PB side of the hub goes away mid-stream (listener closed, every
        connection dropped) while webhooks keep arriving, then comes back on
        the same port: watch reconnects and prints each event exactly once."""
        hub = await self.start_hub()
        process = self.watch("--json", "--project", WIDGET)
        await self.live(process)
        posted = [await hub.build(WIDGET, n, "failure" if n % 2 else "success") for n in range(1, 6)]
        await wait_until(lambda: len(process.lines) >= 5, timeout=30, what="the first events")

        service, address = hub.hub.service, hub.hub.pb_address
        await hub.hub.pb_port.stopListening()
        for session in service.sessions:
            service.drop(session, "the hub is restarting")
        posted += [await hub.build(WIDGET, n, "failure") for n in range(6, 11)]  # while it is down
        port = int(address.rsplit(":", 1)[1])
        hub.hub.pb_port = await serverFromString(reactor, f"tcp:{port}:interface=127.0.0.1").listen(
            service.factory()
        )
        await wait_until(lambda: "reconnected: live on" in process.stderr, timeout=30, what="the reconnect")
        posted += [await hub.build(WIDGET, n, "success") for n in range(11, 14)]

        # a marker: once it is printed, anything the hub sent before it (a
        # repeat, say) is printed too, since PB delivers in order
        posted.append(await hub.build(WIDGET, 14, "failure"))

        def printed() -> list[int]:
            return [line["id"] for line in process.json if line.get("type") == "event"]

        await wait_until(
            lambda: posted[-1] in printed(), timeout=30, what=lambda: missing_events(posted, printed())()
        )
        self.assertEqual(printed(), posted, missing_events(posted, printed())())
        self.assertTrue(process.running, process.stderr)
