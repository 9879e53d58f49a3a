"""A real haproxy in front of hubs, configured by deploy/haproxy.cfg (the file
docker-compose.yml mounts), with every address passed in its environment.

Without an ``haproxy`` binary a test using it skips and names the Debian
package; under ``CI=true`` it fails instead (``.ci/run`` installs it).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
import unittest
from collections.abc import Sequence
from pathlib import Path

from tests.hubprocess import STOP_TIMEOUT, free_port

HAPROXY_CFG = Path(__file__).resolve().parent.parent / "deploy" / "haproxy.cfg"
START_TIMEOUT = 20.0  # seconds for haproxy to accept on both frontends


def haproxy_binary() -> str:
    """The path of haproxy; a skip (a failure under CI=true) when it is missing."""
    found = shutil.which("haproxy") or next(
        (p for p in ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy") if os.access(p, os.X_OK)), None
    )
    if found:
        return found
    problem = "haproxy is not installed (Debian package: haproxy)"
    if os.environ.get("CI") == "true":
        raise AssertionError(f"{problem}; CI=true: the balancer tests may not skip")
    raise unittest.SkipTest(problem)


def max_nodes(config: Path = HAPROXY_CFG) -> int:
    """How many hub nodes the config can name (NODE<n>_HTTP variables)."""
    return max(int(n) for n in re.findall(r"\$\{NODE(\d+)_HTTP\}", config.read_text()))


class Balancer:
    """haproxy with deploy/haproxy.cfg, in front of hub nodes given as
    ``(http_address, pb_address)`` pairs of ``host:port``. ``http_port`` and
    ``pb_port`` are its frontends on 127.0.0.1. :meth:`close` stops it."""

    def __init__(self, directory: Path, nodes: Sequence[tuple[str, str]], config: Path = HAPROXY_CFG) -> None:
        if not 2 <= len(nodes) <= max_nodes(config):
            raise ValueError(f"{config.name} balances 2 to {max_nodes(config)} nodes, not {len(nodes)}")
        self.directory = directory
        self.nodes = list(nodes)
        self.config = config
        self.http_port = free_port()
        self.pb_port = free_port()
        self.log = directory / "haproxy.log"
        self.proc: subprocess.Popen | None = None

    @property
    def environment(self) -> dict[str, str]:
        env = {"BALANCER_HTTP": f"127.0.0.1:{self.http_port}", "BALANCER_PB": f"127.0.0.1:{self.pb_port}"}
        for number, (http, pb) in enumerate(self.nodes, start=1):
            env[f"NODE{number}_HTTP"] = http
            env[f"NODE{number}_PB"] = pb
        return env

    def start(self) -> Balancer:
        binary = haproxy_binary()
        env = {k: v for k, v in os.environ.items() if not re.match(r"(NODE\d+|BALANCER)_", k)}
        env.update(self.environment)
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [binary, "-db", "-f", str(self.config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=self.directory,
            )
        self._wait_listening()
        return self

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def _wait_listening(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + START_TIMEOUT
        waiting = [self.http_port, self.pb_port]
        while waiting:
            if self.proc.poll() is not None:
                raise AssertionError(f"haproxy exited with {self.proc.returncode}:\n{self.output()}")
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"haproxy did not accept on 127.0.0.1 port(s) {waiting} within {START_TIMEOUT:.0f} s:\n"
                    + self.output()
                )
            try:
                socket.create_connection(("127.0.0.1", waiting[0]), timeout=1).close()
                waiting.pop(0)
            except OSError:
                time.sleep(0.05)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=STOP_TIMEOUT)
