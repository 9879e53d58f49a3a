"""A newcomer's first five minutes, with real processes: ``serve`` on a fresh
machine says what to do next and logs only what an operator needs (Twisted's
factory lines and Alembic's steps only with -v); ``send`` posts an event with
the token from the config ``serve`` generated, and ``send --curl`` prints a
command that does the same."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.hubprocess import HubProcess, cli_env, free_port, run_cli, write_config

SEND = ["send", "--project", "acme/widget", "--pipeline", "ci", "--number", "1", "--status", "failure"]


@pytest.fixture
def fresh(tmp_path: Path) -> tuple[Path, dict[str, str], int]:
    """A machine with no config yet: the hub listens where the environment says."""
    port = free_port()
    env = cli_env(
        tmp_path,
        BUILDNOTIFY_HTTP=f"tcp:{port}:interface=127.0.0.1",
        BUILDNOTIFY_PB=f"tcp:{free_port()}:interface=127.0.0.1",
    )
    return tmp_path, env, port


def serve(directory: Path, env: dict[str, str], port: int, *args: str) -> HubProcess:
    hub = HubProcess(directory, list(args), port, env)
    hub.start()
    try:
        hub.wait_ready()
    except BaseException:
        hub.close()
        raise
    return hub


def stopped_output(hub: HubProcess) -> str:
    assert hub.terminate() == 0, hub.output()
    return hub.output()


def test_serve_says_what_to_do_next_and_keeps_the_chatter_out(
    fresh: tuple[Path, dict[str, str], int],
) -> None:
    directory, env, port = fresh
    output = stopped_output(serve(directory, env, port))
    config = directory / "xdg-config" / "buildnotify" / "hub.toml"
    for provider in ("github", "gitlab", "buildkite", "circleci", "generic"):
        assert f"http://127.0.0.1:{port}/hooks/{provider}\n" in output, output
    assert f"http://127.0.0.1:{port}/hooks/jenkins/<token>" in output
    assert f"Their secrets and tokens are in {config}" in output
    assert "buildnotify-cli send --project acme/widget" in output and "--curl" in output
    assert "database schema upgraded from nothing to" in output
    assert "stopping: node" in output
    for chatter in ("Starting factory", "Stopping factory", "starting on", "alembic", "Context impl"):
        assert chatter not in output, f"{chatter!r} without -v:\n{output}"


def test_serve_verbose_shows_twisted_and_alembic_lines(fresh: tuple[Path, dict[str, str], int]) -> None:
    directory, env, port = fresh
    output = stopped_output(serve(directory, env, port, "-v"))
    assert "Starting factory" in output and "Stopping factory" in output, output
    assert "alembic.runtime.migration" in output and "Running upgrade" in output, output


def test_the_readme_quick_try_works_as_written(fresh: tuple[Path, dict[str, str], int]) -> None:
    """serve generates a config; send, in another process, finds the hub and
    its generic token there; history shows the event."""
    directory, env, port = fresh
    hub = serve(directory, env, port)
    try:
        sent = run_cli([*SEND, "--branch", "main"], env)
        assert sent.returncode == 0, sent.stderr
        assert sent.stdout.startswith("stored acme/widget ci #1 failure as event "), sent.stdout
        again = run_cli([*SEND, "--branch", "main"], env)
        assert (again.returncode, again.stdout) == (
            0,
            "already stored: acme/widget ci #1 failure (a resend of the same build)\n",
        )
        history = run_cli(["history", "--json"], env)
        [event] = [json.loads(line) for line in history.stdout.splitlines()]
        assert (event["project"], event["status"], event["branch"]) == ("acme/widget", "failure", "main")
    finally:
        hub.terminate()


def test_send_with_the_curl_flag_prints_a_command_that_posts_the_same_event(tmp_path: Path) -> None:
    port = free_port()
    config = write_config(
        tmp_path / "hub.toml", port=port, database=str(tmp_path / "hub.db"), tokens={"ci": "tok-123"}
    )
    env = cli_env(tmp_path)
    hub = serve(tmp_path, env, port, "--config", str(config))
    try:
        printed = run_cli(
            [
                *SEND,
                "--config",
                str(config),
                "--sha",
                "abc123",
                "--author-email",
                "ada@example.com",
                "--curl",
            ],
            env,
        )
        assert printed.returncode == 0, printed.stderr
        [line] = printed.stdout.splitlines()
        words = shlex.split(line)
        assert words[0] == "curl" and f"http://127.0.0.1:{port}/hooks/generic" in words
        assert "Authorization: Bearer tok-123" in words  # the point: paste it and it works
        body = json.loads(words[words.index("--data-binary") + 1])
        assert body == {
            "project": "acme/widget",
            "pipeline": "ci",
            "status": "failure",
            "number": 1,
            "sha": "abc123",
            "author": {"email": "ada@example.com"},
        }
        if shutil.which("curl") is None:
            return  # parsed above: a valid command line for a shell
        ran = subprocess.run(["sh", "-c", line], capture_output=True, text=True, timeout=30)
        assert ran.returncode == 0, ran.stderr
        assert json.loads(ran.stdout)["stored"] == 1
        history = run_cli(["history", "--json", "--config", str(config)], env)
        [event] = [json.loads(line) for line in history.stdout.splitlines()]
        assert (event["sha"], event["author"]["email"]) == ("abc123", "ada@example.com")
    finally:
        hub.terminate()


def test_send_says_why_it_failed_in_one_line_and_exits_non_zero(tmp_path: Path) -> None:
    port = free_port()
    config = write_config(
        tmp_path / "hub.toml", port=port, database=str(tmp_path / "hub.db"), tokens={"ci": "right"}
    )
    env = cli_env(tmp_path)

    down = run_cli([*SEND, "--config", str(config)], env)
    assert down.returncode == 5
    assert down.stderr.startswith(
        f"buildnotify-cli send: cannot reach the hub at http://127.0.0.1:{port}/hooks/generic"
    )

    hub = serve(tmp_path, env, port, "--config", str(config))
    try:
        wrong = run_cli([*SEND, "--config", str(config), "--token", "wrong"], env)
        assert (wrong.returncode, wrong.stderr) == (
            1,
            "buildnotify-cli send: the hub answered 401: invalid bearer token\n",
        )
        bad = run_cli([*SEND[:-1], "broken", "--config", str(config)], env)
        assert bad.returncode == 2 and "--status must be one of" in bad.stderr
        by_env = run_cli(
            SEND,
            {**env, "BUILDNOTIFY_SEND_URL": f"http://127.0.0.1:{port}", "BUILDNOTIFY_SEND_TOKEN": "right"},
        )
        assert by_env.returncode == 0, by_env.stderr
    finally:
        hub.terminate()
