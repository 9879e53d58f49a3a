"""The one-shot commands (``status``, ``claim``, ``unclaim``, ``ack``,
``mute``, ``unmute``) as a user runs them: real processes against a hub on
loopback in this test's reactor."""

from __future__ import annotations

import io
import json
import os
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial import unittest

from buildnotify import cli
from buildnotify.client import commands
from tests.pbclient import Client, add_developer
from tests.support import RunningHub, clock_at

WIDGET = "acme/widget"
GADGET = "acme/gadget"
ROOT = Path(__file__).resolve().parent.parent
AUTHOR = {"name": "Alice", "email": "alice@example.com", "login": "alice"}


class Result:
    def __init__(self, out: bytes, err: bytes, code: int) -> None:
        self.out = out.decode()
        self.err = err.decode()
        self.code = code

    @property
    def lines(self) -> list[str]:
        return self.out.splitlines()

    def __repr__(self) -> str:
        return f"exit {self.code}\nstdout:\n{self.out}\nstderr:\n{self.err}"


class CommandTestCase(unittest.TestCase):
    async def start_hub(self, clock: Any = None) -> RunningHub:
        """``clock``: the hub's (None: real time)."""
        self.hub = await RunningHub.start(self, clock=clock)
        self.home = Path(self.mktemp()).resolve()
        self.home.mkdir(parents=True)
        self.token = await add_developer(self.hub.hub.store, "alice", logins=["alice"])
        self.token_file = self.home / "alice.token"
        self.token_file.write_text(self.token + "\n")
        self.token_file.chmod(0o600)
        return self.hub

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BUILDNOTIFY_")}
        env.update(
            XDG_STATE_HOME=str(self.home / "state"),
            XDG_CONFIG_HOME=str(self.home / "config"),  # no client config
            PYTHONUNBUFFERED="1",
        )
        env.pop("NO_COLOR", None)
        return env

    async def run_cli(self, *args: str, hub: str | None = None) -> Result:
        argv = ["-m", "buildnotify.cli", *args, "--hub", hub or self.hub.hub.pb_address]
        out, err, code = await getProcessOutputAndValue(sys.executable, argv, env=self.env(), path=str(ROOT))
        return Result(out, err, code)

    async def as_alice(self, *args: str) -> Result:
        return await self.run_cli(*args, "--user", "alice", "--token-file", str(self.token_file))

    async def settings(self) -> dict:
        client = await Client.connect(self, self.hub.hub.pb_address)
        perspective = await client.login("alice", self.token)
        return await perspective.callRemote("settings")


class StatusTests(CommandTestCase):
    async def test_a_table_of_the_latest_builds_and_json_lines(self) -> None:
        await self.start_hub()
        await self.hub.build(WIDGET, 1, "success")
        failed = await self.hub.build(WIDGET, 2, "failure", sha="0123456789abcdef", author=AUTHOR)
        dev = await self.hub.build(WIDGET, 3, "failure", branch="dev")
        dev = await self.hub.build(WIDGET, 4, "failure", branch="dev")
        green = await self.hub.build(GADGET, 1, "success")
        await self.hub.build("acme/other", 1, "failure")  # not asked for

        result = await self.run_cli("status", "--project", WIDGET, "--project", GADGET)
        self.assertEqual(result.code, commands.EXIT_OK, result)
        header, *rows = result.lines
        self.assertEqual(header.split(), list(commands.STATUS_HEADER))
        self.assertEqual(len(rows), 3, result)
        self.assertEqual([r.split()[:4] for r in rows][0], [GADGET, "ci", "main", "success"])
        widget_main = rows[2]
        for part in (WIDGET, "main", "failure", "failed", "01234567", "alice"):
            self.assertIn(part, widget_main)
        self.assertNotIn("89abcdef", widget_main)  # a short sha
        self.assertIn("dev", rows[1])
        self.assertIn("still failing", rows[1])  # in words, as watch prints it
        self.assertNotIn("\033", result.out)  # not a terminal: no colours
        self.assertNotIn("acme/other", result.out)

        result = await self.run_cli("status", "--project", WIDGET, "--project", GADGET, "--json")
        self.assertEqual(result.code, commands.EXIT_OK, result)
        found = {line["id"]: line for line in map(json.loads, result.lines)}
        self.assertEqual(set(found), {failed, dev, green})
        stored = {e.id: e.to_dict() for e in await self.hub.events()}
        for event_id, line in found.items():
            self.assertIsNone(line.pop("claim"))
            self.assertEqual(line, stored[event_id])

    async def test_a_developer_without_watched_projects_is_told_how_to_name_some(self) -> None:
        await self.start_hub()
        await self.hub.build(WIDGET, 1, "failure")
        result = await self.as_alice("status")
        self.assertEqual(result.code, commands.EXIT_OK, result)
        self.assertIn("--project", result.out)
        result = await self.as_alice("status", "--project", WIDGET)
        self.assertEqual(len(result.lines), 2, result)


class ClaimTests(CommandTestCase):
    async def test_claim_a_failing_build_see_it_in_status_and_release_it(self) -> None:
        await self.start_hub()
        await self.hub.build(WIDGET, 1, "failure")
        await self.hub.build(GADGET, 1, "success")

        result = await self.as_alice("claim", WIDGET, "ci", "--note", "flaky test, looking")
        self.assertEqual(result.code, commands.EXIT_OK, result)
        self.assertIn(f"{WIDGET} ci@main", result.out)  # the only failing branch, found for us
        result = await self.run_cli("status", "--project", WIDGET)
        self.assertIn("alice: flaky test, looking", result.lines[1])
        [line] = (await self.run_cli("status", "--project", WIDGET, "--json")).lines
        claim = json.loads(line)["claim"]
        self.assertEqual((claim["developer"], claim["branch"]), ("alice", "main"))

        result = await self.as_alice("claim", GADGET, "ci", "--branch", "main")
        self.assertEqual(result.code, commands.EXIT_NO, result)
        self.assertEqual(
            result.err.strip(),
            f"buildnotify-cli: {GADGET} ci@main is not failing; only a broken build can be claimed",
        )

        result = await self.as_alice("unclaim", WIDGET, "ci")
        self.assertEqual(result.code, commands.EXIT_OK, result)
        self.assertIn(f"released your claim on {WIDGET} ci@main", result.out)
        self.assertNotIn("alice", (await self.run_cli("status", "--project", WIDGET)).out)
        result = await self.as_alice("unclaim", WIDGET, "ci", "--branch", "main")
        self.assertEqual(result.code, commands.EXIT_NO, result)
        self.assertIn("you have no claim on", result.err)

    async def test_several_failing_branches_need_a_branch(self) -> None:
        await self.start_hub()
        await self.hub.build(WIDGET, 1, "failure")
        await self.hub.build(WIDGET, 2, "failure", branch="dev")
        result = await self.as_alice("claim", WIDGET, "ci")
        self.assertEqual(result.code, commands.EXIT_USAGE, result)
        self.assertIn("several branches (dev, main)", result.err)
        result = await self.as_alice("claim", WIDGET, "ci", "--branch", "dev")
        self.assertEqual(result.code, commands.EXIT_OK, result)
        self.assertIn(f"{WIDGET} ci@dev", result.out)


class AlertTests(CommandTestCase):
    async def test_ack_lists_then_acknowledges(self) -> None:
        await self.start_hub()
        await self.hub.build(WIDGET, 1, "failure", author=AUTHOR, url="https://ci.example.com/1")
        await self.hub.build(GADGET, 1, "failure", author=AUTHOR)

        result = await self.as_alice("ack", "--json")
        alerts = [json.loads(line) for line in result.lines]
        self.assertEqual(len(alerts), 2, result)
        first = alerts[0]["alert_id"]

        result = await self.as_alice("ack")
        self.assertEqual(result.code, commands.EXIT_OK, result)
        self.assertEqual(result.lines[0].split(), ["ID", "AGE", "TRANSITION", "BUILD", "SHA", "URL"])
        self.assertTrue(result.lines[1].startswith(str(first)), result)
        self.assertIn("failed", result.lines[1])
        self.assertIn("https://ci.example.com/1", result.lines[1])

        result = await self.as_alice("ack", str(first))
        self.assertEqual(result.code, commands.EXIT_OK, result)
        self.assertIn("acknowledged 1 alert", result.out)
        result = await self.as_alice("ack", str(first))
        self.assertEqual(result.code, commands.EXIT_NO, result)

        result = await self.as_alice("ack", "--all")
        self.assertEqual(result.code, commands.EXIT_OK, result)
        self.assertIn("acknowledged 1 alert", result.out)
        result = await self.as_alice("ack")
        self.assertEqual((result.code, result.out.strip()), (commands.EXIT_OK, "no pending alerts"))
        result = await self.as_alice("ack", "--all")
        self.assertEqual(result.code, commands.EXIT_NO, result)
        self.assertIn("no pending alerts", result.err)


class MuteTests(CommandTestCase):
    async def test_mute_and_unmute_show_in_the_settings(self) -> None:
        # the hub's clock reads the wall clock's second: the command compares
        # what the hub says with its own time (unmute: "was not muted")
        now = datetime.now(timezone.utc).replace(microsecond=0)
        await self.start_hub(clock=clock_at(now))
        result = await self.as_alice("mute", WIDGET, "--minutes", "30")
        self.assertEqual(result.code, commands.EXIT_OK, result)
        self.assertIn(f"muted {WIDGET} until", result.out)
        until = datetime.fromisoformat((await self.settings())[WIDGET]["muted_until"])
        self.assertEqual(until, now + timedelta(minutes=30))  # by the hub's clock

        result = await self.as_alice("mute", GADGET)
        self.assertIn(f"muted {GADGET} until you unmute it", result.out)

        result = await self.as_alice("unmute", WIDGET)
        self.assertEqual((result.code, result.out.strip()), (commands.EXIT_OK, f"unmuted {WIDGET}"))
        settings = await self.settings()
        self.assertIsNone(settings[WIDGET]["muted_until"])
        self.assertIsNotNone(settings[GADGET]["muted_until"])
        result = await self.as_alice("unmute", WIDGET)
        self.assertEqual(result.code, commands.EXIT_NO, result)
        self.assertIn(f"{WIDGET} was not muted", result.err)


class ErrorTests(CommandTestCase):
    async def test_an_unreachable_hub_and_a_refused_login(self) -> None:
        await self.start_hub()
        result = await self.run_cli("status", "--project", WIDGET, hub="tcp:127.0.0.1:1")
        self.assertEqual(result.code, commands.EXIT_UNREACHABLE, result)
        self.assertEqual(
            result.err.strip(), "buildnotify-cli: cannot reach the hub at tcp:127.0.0.1:1: connection refused"
        )

        self.token_file.write_text("not-the-token\n")
        result = await self.as_alice("ack")
        self.assertEqual(result.code, commands.EXIT_REFUSED, result)
        self.assertIn("the hub refused the login: unknown developer or wrong token", result.err)

    async def test_a_hub_of_several_endpoints_is_reached_through_the_first_that_answers(self) -> None:
        await self.start_hub()
        posted = await self.hub.build(WIDGET, 1, "failure")
        dead = "tcp:127.0.0.1:1"
        result = await self.run_cli("status", "--project", WIDGET, "--json", "--hub", dead)
        self.assertEqual(result.code, commands.EXIT_OK, result)
        self.assertEqual([json.loads(line)["id"] for line in result.lines], [posted])
        result = await self.run_cli("status", "--project", WIDGET, "--hub", dead, hub="tcp:127.0.0.1:2")
        self.assertEqual(result.code, commands.EXIT_UNREACHABLE, result)
        self.assertEqual(
            result.err.strip(),
            "buildnotify-cli: cannot reach the hub at any of "
            f"{dead} (connection refused); tcp:127.0.0.1:2 (connection refused)",
        )

    async def test_anonymous_sessions_cannot_see_private_projects(self) -> None:
        await self.start_hub()
        await self.hub.build(WIDGET, 1, "failure")
        await self.hub.hub.store.write(lambda conn: _make_private(conn, WIDGET))
        result = await self.run_cli("status", "--project", WIDGET)
        self.assertEqual(result.code, commands.EXIT_NO, result)
        self.assertEqual(result.err.strip(), f"buildnotify-cli: no such project, or it is private: {WIDGET}")


def _make_private(conn: object, project: str) -> None:
    from buildnotify.store import accounts

    accounts.set_private(conn, project, True)


class UsageTests(unittest.TestCase):
    def client_files(self, config_text: str) -> tuple[Path, Path]:
        """A client config with ``config_text`` and a private token file beside it."""
        config = Path(self.mktemp()).resolve()
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(config_text)
        token = config.with_name("token")
        token.write_text("a-token\n")
        token.chmod(0o600)
        return config, token

    def test_mistakes_exit_2_before_connecting(self) -> None:
        empty, token = self.client_files("")
        base = ("--hub", "tcp:127.0.0.1:1", "--client-config", str(empty))
        for args in (
            ["status", *base],  # anonymous needs projects
            ["claim", WIDGET, "ci", *base],  # a developer command without a user
            ["claim", WIDGET, "ci", *base, "--user", "ada"],  # no token
            ["status", *base, "--token-file", str(empty), "--project", WIDGET],  # a token without a user
            ["claim", WIDGET, "ci", *base, "--user", "ada", "--token-file", str(empty)],  # empty token
            ["ack", "1", "--all", *base, "--user", "ada", "--token-file", str(token)],
            ["mute", WIDGET, "--minutes", "0", *base, "--user", "ada", "--token-file", str(token)],
            ["status", "--project", WIDGET, "--hub", "nonsense:1", "--client-config", str(empty)],
        ):
            self.patch(os, "environ", {k: v for k, v in os.environ.items() if k != "BUILDNOTIFY_TOKEN"})
            self.assertEqual(cli.main(args), commands.EXIT_USAGE, args)

    def test_a_bad_hub_endpoint_is_named(self) -> None:
        config, token = self.client_files('hub = "bogus:1"\n')
        alice = ("--user", "alice", "--token-file", str(token))
        for args, where, value in (
            (["status", "--project", WIDGET, "--hub", "tcp:notaport"], "--hub", "tcp:notaport"),
            (["claim", WIDGET, "ci", *alice, "--hub", "bogus:1"], "--hub", "bogus:1"),
            (["ack", *alice, "--client-config", str(config)], f"hub in {config}", "bogus:1"),
        ):
            stderr = io.StringIO()
            self.patch(sys, "stderr", stderr)
            self.assertEqual(cli.main(args), commands.EXIT_USAGE, args)
            self.assertTrue(
                stderr.getvalue().startswith(f"buildnotify-cli: {where}: not an endpoint: {value!r} ("),
                stderr.getvalue(),
            )

    def test_age_and_claim_text(self) -> None:
        now = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)
        for seconds, shown in ((5, "5s"), (125, "2m"), (3 * 3600 + 5, "3h"), (2 * 86400, "2d")):
            stamp = (now - timedelta(seconds=seconds)).isoformat()
            self.assertEqual(commands.age({"finished_at": stamp}, now), shown)
        self.assertEqual(commands.age({}, now), "?")
        self.assertEqual(commands.claim_text({"developer": "bob", "note": "on it"}), "bob: on it")
        self.assertEqual(commands.claim_text({"developer": "bob", "note": None}), "bob")
        self.assertEqual(commands.claim_text(None), "")

    def test_status_is_coloured_only_when_asked(self) -> None:
        row = ("acme/widget", "ci", "main", "failure", "failed", "", "", "1m", "")
        plain = commands.table(commands.STATUS_HEADER, [row])
        coloured = commands.table(commands.STATUS_HEADER, [row], colour_column=3)
        self.assertNotIn("\033", "".join(plain))
        self.assertIn("\033[31mfailure", coloured[1])
        self.assertEqual(coloured[1].replace("\033[31m", "").replace("\033[0m", ""), plain[1])
