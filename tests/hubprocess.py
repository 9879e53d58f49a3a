"""The hub as a real process: configs, a ``buildnotify-cli serve`` that is
started, waited for and killed, and plain-socket clients for it. Shared by
the CLI and durability tests."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).parent / "fixtures"
START_TIMEOUT = 20.0  # seconds for a hub process to answer GET /
STOP_TIMEOUT = 10.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def toml_string(value: str) -> str:
    return json.dumps(value)  # a JSON string of printable text is a TOML basic string


def write_config(
    path: Path,
    *,
    port: int,
    database: str,
    tokens: Mapping[str, str] | None = None,
    secrets: Mapping[str, str] | None = None,
    pb_port: int | None = None,
) -> Path:
    lines = ["[hub]", f"http = {toml_string(f'tcp:{port}:interface=127.0.0.1')}"]
    lines.append(f"pb = {toml_string(f'tcp:{pb_port or free_port()}:interface=127.0.0.1')}")
    lines.append(f"database = {toml_string(database)}")
    for provider, secret in (secrets or {}).items():
        lines += ["", f"[{provider}]", f"secret = {toml_string(secret)}"]
    if tokens:
        lines += ["", "[generic.tokens]"]
        lines += [f"{name} = {toml_string(token)}" for name, token in tokens.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def cli_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment for a CLI process: no BUILDNOTIFY_* overrides from the
    caller, and platformdirs pointed into ``home`` so no real user dir is touched."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BUILDNOTIFY_")}
    env.update(
        XDG_CONFIG_HOME=str(home / "xdg-config"),
        XDG_DATA_HOME=str(home / "xdg-data"),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def run_cli(args: Sequence[str], env: Mapping[str, str], timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "buildnotify.cli", *args],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class HubProcess:
    """``buildnotify-cli serve`` in a child process, its output in a file.

    :meth:`close` (register it as a cleanup) kills it if it still runs.
    """

    def __init__(self, directory: Path, args: Sequence[str], port: int, env: Mapping[str, str]) -> None:
        self.directory = directory
        self.args = list(args)
        self.port = port
        self.env = dict(env)
        self.proc: subprocess.Popen | None = None
        self.runs = 0
        self.logs: list[Path] = []
        self.root: tuple[int, bytes] | None = None  # the answer to GET / when it came up

    def start(self) -> HubProcess:
        assert self.proc is None or self.proc.poll() is not None, "the hub is already running"
        self.runs += 1
        log = self.directory / f"hub-{self.runs}.log"
        self.logs.append(log)
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "buildnotify.cli", "serve", *self.args],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                cwd=self.directory,
            )
        return self

    def output(self) -> str:
        """Everything every run printed so far (stdout and stderr)."""
        return "".join(
            f"--- {log.name} ---\n" + log.read_text(errors="replace") for log in self.logs if log.exists()
        )

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        last: object = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"the hub exited with {self.proc.returncode} before answering on port {self.port}:\n"
                    + self.output()
                )
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                try:
                    conn.request("GET", "/")
                    response = conn.getresponse()
                    body = response.read()
                finally:
                    conn.close()
                self.root = (response.status, body)
                if response.status == 200:
                    return
                last = self.root
            except (OSError, http.client.HTTPException, ValueError) as e:
                last = e
            time.sleep(0.05)
        raise AssertionError(
            f"the hub did not answer GET / on port {self.port} within {timeout:.0f}s "
            f"(last: {last!r}):\n{self.output()}"
        )

    def kill(self) -> int:
        """SIGKILL, as the OOM killer or a power cut would."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        return self.proc.wait(timeout=STOP_TIMEOUT)

    def terminate(self) -> int:
        """SIGTERM and wait for a clean exit; the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.close()
            raise AssertionError(
                f"the hub did not exit within {STOP_TIMEOUT:.0f}s of SIGTERM:\n{self.output()}"
            ) from None

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=STOP_TIMEOUT)


def post(
    port: int, path: str, body: bytes, headers: Mapping[str, str], timeout: float = 10
) -> tuple[int, dict[str, Any]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", path, body, dict(headers))
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def generic_event(key: str, **fields: Any) -> tuple[bytes, dict[str, str]]:
    body = {
        "project": "acme/widget",
        "pipeline": "ci",
        "build_id": key,
        "number": 123,
        "status": "failure",
        "branch": "main",
        **fields,
    }
    return json.dumps(body).encode(), {"Content-Type": "application/json", "Idempotency-Key": key}
