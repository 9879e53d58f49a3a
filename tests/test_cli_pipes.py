"""``buildnotify-cli ... | head -1``: when the reader of the output goes away
the command stops at once, quietly, with status 141, and a watch gives its
developer's session back.

Real processes: a hub started with ``serve``, and the command under test
writing into a pipe that this test closes after reading one line. The pipe
holds one page, so a command with more to say is still writing when its
reader leaves.
"""

from __future__ import annotations

import dataclasses
import fcntl
import os
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from buildnotify.client import watch
from tests.hubprocess import HubProcess, cli_env, free_port, generic_event, post, run_cli, write_config

if not hasattr(fcntl, "F_SETPIPE_SZ") or os.sysconf("SC_PAGE_SIZE") != 4096:
    pytest.skip("needs Linux pipes that can hold a single 4 KiB page", allow_module_level=True)

WIDGET = "acme/widget"
BRANCHES = 60  # status rows of about 130 bytes: two pipe-fulls
EXIT_CLOSED_PIPE = 141  # docs/watch.md
EXIT_TIMEOUT = 30.0  # only a guard: a command that notices its reader gone exits at once
LINE_TIMEOUT = 30.0
TOKEN = re.compile(r"bn_[A-Za-z0-9_-]{43}")


@dataclasses.dataclass
class Hub:
    process: HubProcess
    config: Path
    pb: str
    env: dict[str, str]
    token_file: Path
    generic_token: str

    def build(self, number: int, **fields: str) -> None:
        body, headers = generic_event(f"build-{number}", project=WIDGET, number=number, **fields)
        status, answer = post(
            self.process.port,
            "/hooks/generic",
            body,
            {**headers, "Authorization": f"Bearer {self.generic_token}"},
        )
        assert status == 200, answer


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    """A hub that refuses a developer's second login, with alice and one
    failing build on each of BRANCHES long-named branches."""
    directory = tmp_path_factory.mktemp("pipes")
    env = cli_env(directory, XDG_STATE_HOME=str(directory / "xdg-state"))
    port, pb_port = free_port(), free_port()
    generic_token = os.urandom(8).hex()
    config = write_config(
        directory / "hub.toml",
        port=port,
        database=str(directory / "hub.db"),
        tokens={"ci": generic_token},
        pb_port=pb_port,
    )
    with config.open("a") as f:
        f.write('\n[pb]\nlogin_policy = "refuse-new"\n')
    added = run_cli(["users", "add", "alice", "--login", "alice", "--config", str(config)], env)
    assert added.returncode == 0, added
    token_file = directory / "alice.token"
    token_file.write_text(TOKEN.findall(added.stdout)[0] + "\n")
    token_file.chmod(0o600)

    process = HubProcess(directory, ["--config", str(config)], port, env)
    hub = Hub(process, config, f"tcp:127.0.0.1:{pb_port}", env, token_file, generic_token)
    try:
        process.start().wait_ready()
        for n in range(BRANCHES):
            hub.build(n + 1, status="failure", branch=f"feature/{n:03d}-{'x' * 80}")
        yield hub
    finally:
        process.close()
        print(process.output())  # shown by pytest when a test failed


class Piped:
    """``buildnotify-cli ARGS`` with stdout (and, with ``stderr_too``, stderr)
    into a one-page pipe that the test reads from and closes."""

    def __init__(self, hub: Hub, directory: Path, *args: str, stderr_too: bool = False) -> None:
        self.args = args
        self.stderr_path = directory / "stderr.txt"
        self.reader, writer = os.pipe()
        fcntl.fcntl(writer, fcntl.F_SETPIPE_SZ, 4096)
        with self.stderr_path.open("wb") as stderr:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "buildnotify.cli", *args],
                stdin=subprocess.DEVNULL,
                stdout=writer,
                stderr=writer if stderr_too else stderr,
                env=hub.env,
            )
        os.close(writer)

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def read_line(self) -> str:
        """One line, read a byte at a time so that nothing more leaves the pipe."""
        line = b""
        deadline = time.monotonic() + LINE_TIMEOUT
        while not line.endswith(b"\n"):
            ready, _, _ = select.select([self.reader], [], [], max(0.0, deadline - time.monotonic()))
            assert ready, f"{self.args[0]} wrote no line within {LINE_TIMEOUT:.0f}s (so far {line!r})"
            byte = os.read(self.reader, 1)
            assert byte, f"{self.args[0]} closed its output before a whole line: {line!r}\n{self.stderr}"
            line += byte
        return line.decode()

    def close_and_wait(self) -> int:
        """Close the reading end, as ``head -1`` does when it exits; the exit status."""
        os.close(self.reader)
        try:
            return self.proc.wait(timeout=EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(
                f"{self.args[0]} was still running {EXIT_TIMEOUT:.0f}s after its reader "
                f"closed the pipe:\n{self.stderr}"
            ) from None

    def wait_for_stderr(self, text: str) -> None:
        deadline = time.monotonic() + LINE_TIMEOUT
        while text not in self.stderr:
            assert self.proc.poll() is None, f"exited {self.proc.returncode} before {text!r}:\n{self.stderr}"
            assert time.monotonic() < deadline, (
                f"no {text!r} on stderr within {LINE_TIMEOUT:.0f}s:\n{self.stderr}"
            )
            time.sleep(0.05)


def assert_only_status_lines(stderr: str) -> None:
    """Nothing but the watch's connection status: no traceback, no "Exception ignored"."""
    assert stderr and all(line.startswith("buildnotify: ") for line in stderr.splitlines()), stderr
    assert "Traceback" not in stderr and "Exception" not in stderr, stderr


def test_status_stops_quietly_when_its_reader_goes(hub: Hub, tmp_path: Path) -> None:
    status = Piped(hub, tmp_path, "status", "--project", WIDGET, "--hub", hub.pb)
    assert status.read_line().split()[:4] == ["PROJECT", "PIPELINE", "BRANCH", "STATUS"]
    assert status.close_and_wait() == EXIT_CLOSED_PIPE, status.stderr
    assert status.stderr == ""


def test_status_with_stderr_in_the_same_pipe_exits(hub: Hub, tmp_path: Path) -> None:
    """``status 2>&1 | head -1`` used to hang: reporting the broken pipe on
    stderr broke again, inside the reactor, and nothing stopped it."""
    status = Piped(hub, tmp_path, "status", "--project", WIDGET, "--hub", hub.pb, stderr_too=True)
    assert status.read_line().startswith("PROJECT")
    assert status.close_and_wait() == EXIT_CLOSED_PIPE


def test_history_stops_quietly_when_its_reader_goes(hub: Hub, tmp_path: Path) -> None:
    history = Piped(hub, tmp_path, "history", "--json", "--limit", "1000", "--config", str(hub.config))
    assert history.read_line().startswith('{"id": ')
    assert history.close_and_wait() == EXIT_CLOSED_PIPE, history.stderr
    assert history.stderr == ""


def test_watch_ends_when_its_reader_goes_and_gives_the_session_back(hub: Hub, tmp_path: Path) -> None:
    """``watch --json | head -1`` as a developer: it exits as soon as head
    does, without waiting for another event, and the developer can sign in
    again on a hub that refuses a second login."""
    alice = ("--hub", hub.pb, "--user", "alice", "--token-file", str(hub.token_file), "--project", WIDGET)
    first_dir, again_dir = tmp_path / "first", tmp_path / "again"
    first_dir.mkdir()
    again_dir.mkdir()
    first = Piped(hub, first_dir, "watch", "--json", "--from-now", *alice)
    first.wait_for_stderr("live on")
    hub.build(1000, status="success", branch="main")
    assert '"type": "event"' in first.read_line()
    assert first.close_and_wait() == EXIT_CLOSED_PIPE, first.stderr
    assert_only_status_lines(first.stderr)

    again = Piped(hub, again_dir, "watch", "--json", "--from-now", *alice)
    try:
        again.wait_for_stderr("live on")
    finally:
        again.proc.send_signal(signal.SIGTERM)
        again.close_and_wait()


def test_a_watch_whose_output_write_fails_stops_once_and_quietly() -> None:
    """Where the reader's going is only found out by writing (stdout is not
    a pipe the reactor can watch, or the reader left an instant before an
    event), the failed write stops the watch the same way, once."""
    reader, writer = os.pipe()
    os.close(reader)
    stopped: list[bool] = []
    with os.fdopen(writer, "w") as stdout, open(os.devnull, "w") as stderr:
        terminal = watch.Terminal(
            json_lines=True,
            only="all",
            branch=None,
            until=None,
            stdout=stdout,
            status=watch.StatusLine(stderr),
        )
        terminal.on_reader_gone = lambda: stopped.append(True)
        terminal.on_event({"id": 1, "status": "failure", "project": WIDGET})
        terminal.on_event({"id": 2, "status": "success", "project": WIDGET})  # goes nowhere, quietly
    assert stopped == [True]
