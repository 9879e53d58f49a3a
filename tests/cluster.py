"""Several real hub nodes on one database, optionally behind haproxy: the
harness for cross-node tests.

::

    cluster = Cluster.start(self, nodes=2, balancer=True)   # in a trial TestCase
    cluster.node("node1").pb_address        # "tcp:127.0.0.1:<port>"
    cluster.balancer.http_port / .pb_port   # the one address for each (balancer=True)
    cluster.post_build("acme/widget", 1, "failure")          # through the balancer, else node1
    cluster.kill("node1"); cluster.start_node("node1")       # SIGKILL; start again, same ports
    cluster.output("node2")                                  # everything node2 logged
    cluster.wait_for_log("node2", "anonymous session", count=2)
    cluster.cli(["users", "add", "ada"])                     # any command, on the cluster's database

Each node is ``buildnotify-cli serve --env-only`` (configured only by
``BUILDNOTIFY_*`` variables) on free loopback ports, named node1..nodeN, on
one fresh PostgreSQL schema (tests/support.py: skipped without a server,
a failure under CI=true), migrated once before any node starts. With a
balancer the nodes read the PROXY protocol (``haproxy:`` endpoints), so
connect to them through it (or send a PROXY header, as :meth:`Node.ready`
does); without one they are plain TCP. Everything is stopped at the test's
cleanup, whether it passed or not, and each node's log is printed then.
"""

from __future__ import annotations

import json
import secrets
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from buildnotify.config import ENV_DATABASE, ENV_HTTP, ENV_NODE, ENV_PB
from tests.balancer import Balancer
from tests.hubprocess import START_TIMEOUT, HubProcess, cli_env, free_port, run_cli
from tests.support import database_url

#: the generic provider's token on every node (source name "cluster")
GENERIC_TOKEN = "cluster-" + secrets.token_hex(12)


@dataclass
class Node:
    """One hub process; its ports stay the same across restarts."""

    name: str
    http_port: int
    pb_port: int
    proxied: bool
    process: HubProcess = field(repr=False)

    @property
    def pb_address(self) -> str:
        return f"tcp:127.0.0.1:{self.pb_port}"

    @property
    def running(self) -> bool:
        return self.process.proc is not None and self.process.proc.poll() is None

    def ready(self) -> bool:
        """Whether it answers ``GET /`` (behind a PROXY v1 header when proxied)."""
        header = b"PROXY TCP4 127.0.0.1 127.0.0.1 1 %d\r\n" % self.http_port if self.proxied else b""
        try:
            with socket.create_connection(("127.0.0.1", self.http_port), timeout=2) as s:
                s.sendall(header + b"GET / HTTP/1.0\r\nHost: node\r\n\r\n")
                answer = b""
                while chunk := s.recv(4096):
                    answer += chunk
        except OSError:
            return False
        return answer.startswith((b"HTTP/1.0 200", b"HTTP/1.1 200"))


class Cluster:
    """N hub nodes on one PostgreSQL schema; see the module's docstring."""

    def __init__(self, directory: Path, database: str, count: int, balancer: bool) -> None:
        self.directory = directory
        self.database = database
        self.environment = cli_env(
            directory,
            **{ENV_DATABASE: database, "BUILDNOTIFY_GENERIC_TOKENS": f"cluster={GENERIC_TOKEN}"},
        )
        self.nodes: dict[str, Node] = {}
        for number in range(1, count + 1):
            name = f"node{number}"
            http_port, pb_port = free_port(), free_port()
            wrapper = "haproxy:" if balancer else ""
            env = {
                **self.environment,
                ENV_NODE: name,
                ENV_HTTP: f"{wrapper}tcp:{http_port}:interface=127.0.0.1",
                ENV_PB: f"{wrapper}tcp:{pb_port}:interface=127.0.0.1",
            }
            (directory / name).mkdir()
            process = HubProcess(directory / name, ["--env-only"], http_port, env)
            self.nodes[name] = Node(name, http_port, pb_port, balancer, process)
        self.balancer: Balancer | None = None
        if balancer:
            (directory / "haproxy").mkdir()
            pairs = [(f"127.0.0.1:{n.http_port}", f"127.0.0.1:{n.pb_port}") for n in self.nodes.values()]
            self.balancer = Balancer(directory / "haproxy", pairs)

    @classmethod
    def start(cls, testcase: Any, nodes: int = 2, balancer: bool = False) -> Cluster:
        """Start ``nodes`` nodes (and haproxy in front when ``balancer``) for
        ``testcase`` (a trial TestCase: it owns the schema and the cleanup)."""
        directory = Path(testcase.mktemp()).resolve()
        directory.mkdir(parents=True)
        cluster = cls(directory, database_url(testcase, "postgresql"), nodes, balancer)
        testcase.addCleanup(cluster.stop)
        upgraded = cluster.cli(["db", "upgrade"])
        assert upgraded.returncode == 0, f"db upgrade failed:\n{upgraded.stdout}{upgraded.stderr}"
        for node in cluster.nodes.values():
            node.process.start()
        for name in cluster.nodes:
            cluster.wait_ready(name)
        if cluster.balancer is not None:
            cluster.balancer.start()
        return cluster

    # -- nodes -------------------------------------------------------------------------

    def node(self, name: str) -> Node:
        return self.nodes[name]

    def kill(self, name: str) -> None:
        """SIGKILL the node, as a crash or the OOM killer would."""
        self.nodes[name].process.kill()

    def start_node(self, name: str) -> None:
        """Start a stopped node again on its ports and wait until it answers."""
        self.nodes[name].process.start()
        self.wait_ready(name)

    def wait_ready(self, name: str, timeout: float = START_TIMEOUT) -> None:
        node = self.nodes[name]
        deadline = time.monotonic() + timeout
        while not node.ready():
            if not node.running:
                raise AssertionError(f"{name} exited before answering GET /:\n{self.output(name)}")
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{name} did not answer GET / on port {node.http_port} within {timeout:.0f} s:\n"
                    + self.output(name)
                )
            time.sleep(0.05)

    def output(self, name: str) -> str:
        """Everything the node logged, over all its runs."""
        return self.nodes[name].process.output()

    def current_output(self, name: str) -> str:
        """What the node logged since it was last started."""
        logs = self.nodes[name].process.logs
        return logs[-1].read_text(errors="replace") if logs and logs[-1].exists() else ""

    def wait_for_log(self, name: str, text: str, count: int = 1, timeout: float = 10.0) -> None:
        """Poll the node's log (all runs) until ``text`` appears ``count``
        times; fail naming what is missing."""
        deadline = time.monotonic() + timeout
        while self.output(name).count(text) < count:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{name} did not log {text!r} {count} time(s) within {timeout:.0f} s:\n{self.output(name)}"
                )
            time.sleep(0.05)

    # -- using it ------------------------------------------------------------------------

    @property
    def http_port(self) -> int:
        """Where webhooks go: the balancer, else node1."""
        return self.balancer.http_port if self.balancer else self.nodes["node1"].http_port

    def cli(self, args: Sequence[str], **env: str) -> Any:
        """Run ``buildnotify-cli ARGS`` on the cluster's database (users, history ...)."""
        return run_cli(args, {**self.environment, **env})

    def post(self, body: Mapping[str, Any], source: str | None = None) -> tuple[int, dict[str, Any]]:
        """POST a generic webhook to :attr:`http_port`, from loopback address ``source``."""
        import http.client

        conn = http.client.HTTPConnection(
            "127.0.0.1", self.http_port, timeout=10, source_address=(source, 0) if source else None
        )
        try:
            headers = {"Content-Type": "application/json", "Authorization": f"Bearer {GENERIC_TOKEN}"}
            conn.request("POST", "/hooks/generic", json.dumps(body), headers)
            response = conn.getresponse()
            return response.status, json.loads(response.read())
        finally:
            conn.close()

    def post_build(self, project: str, number: int, status: str, **fields: Any) -> int:
        """Post one build event; its stored id."""
        body = {"project": project, "pipeline": "ci", "number": number, "status": status, "branch": "main"}
        code, answer = self.post(body | fields)
        assert code == 200 and answer["stored"] == 1, (code, answer)
        return answer["ids"][0]

    def stop(self) -> None:
        """Stop haproxy and every node (SIGKILL if SIGTERM is not enough);
        print each log, which pytest shows for a failed test."""
        if self.balancer is not None:
            self.balancer.close()
        for name, node in self.nodes.items():
            if node.running:
                try:
                    node.process.terminate()
                except AssertionError as e:
                    print(e)
            node.process.close()
            print(f"=== {name} ===\n{self.output(name)}")
        if self.balancer is not None:
            print(f"=== haproxy ===\n{self.balancer.output()}")
