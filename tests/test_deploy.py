"""The deployment files agree with the hub and with each other: what
docker-compose.yml sets on a hub is something the hub reads, the ports the
hubs listen on are the ones haproxy balances to and the ones published, and
the Dockerfile runs a real command. (Docker itself cannot run in CI; haproxy
runs this config for real in tests/test_cluster.py.)"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from buildnotify import cli
from buildnotify.config import ENV_HTTP, ENV_NODE, ENV_PB, ENVIRONMENT
from tests.balancer import HAPROXY_CFG, haproxy_binary
from tests.hubprocess import cli_env, run_cli

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
HAPROXY_IN_CONTAINER = "/usr/local/etc/haproxy/haproxy.cfg"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def hub_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The long-running hub nodes: built from the Dockerfile, running the default command."""
    return {
        name: service
        for name, service in compose["services"].items()
        if "build" in service and "command" not in service
    }


def balancer(compose: dict[str, Any]) -> dict[str, Any]:
    [service] = [s for s in compose["services"].values() if str(s.get("image", "")).startswith("haproxy:")]
    return service


def port_of(endpoint: str) -> int:
    match = re.fullmatch(r"(?:haproxy:)?tcp:(\d+):interface=0\.0\.0\.0", endpoint)
    assert match, f"{endpoint!r}: a node must listen on all of its container's interfaces"
    return int(match.group(1))


def dockerfile_instruction(name: str) -> list[str]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    return [line.split(None, 1)[1] for line in text.splitlines() if line.split(None, 1)[:1] == [name]]


def test_the_compose_file_runs_two_hub_nodes_postgres_and_haproxy(compose: dict[str, Any]) -> None:
    hubs = hub_services(compose)
    assert len(hubs) >= 2, f"expected two or more hub nodes, found {sorted(hubs)}"
    assert str(compose["services"]["postgres"]["image"]).startswith("postgres:")
    assert balancer(compose)


def test_every_variable_set_on_a_hub_is_one_the_hub_reads(compose: dict[str, Any]) -> None:
    for name, service in hub_services(compose).items():
        unread = set(service["environment"]) - set(ENVIRONMENT)
        assert not unread, f"{name} sets {sorted(unread)}, which the hub does not read (config.ENVIRONMENT)"
        assert service["environment"][ENV_NODE] == name, f"{name} must be named {name} in the hub's logs"
    for name, service in compose["services"].items():
        if "build" in service:
            unread = set(service.get("environment", {})) - set(ENVIRONMENT)
            assert not unread, f"{name} sets {sorted(unread)}, which the hub does not read"


def test_every_secret_is_required_from_the_operator(compose: dict[str, Any]) -> None:
    """No hub starts with an unauthenticated provider by an oversight."""
    for name, service in hub_services(compose).items():
        for variable in ENVIRONMENT:
            if variable.endswith(("_SECRET", "_TOKENS")):
                value = service["environment"].get(variable, "")
                assert re.fullmatch(r"\$\{" + variable + r":\?[^}]+\}", value), (
                    f"{name} {variable}: {value!r}"
                )


def test_the_nodes_use_the_postgres_service(compose: dict[str, Any]) -> None:
    postgres = compose["services"]["postgres"]["environment"]
    expected = f"postgresql+psycopg://{postgres['POSTGRES_USER']}:"
    for name, service in compose["services"].items():
        if "build" in service:
            url = service["environment"]["BUILDNOTIFY_DATABASE"]
            assert url.startswith(expected), f"{name}: {url}"
            assert url.endswith(f"@postgres:5432/{postgres['POSTGRES_DB']}"), f"{name}: {url}"


def test_the_ports_agree_between_the_hubs_haproxy_and_the_published_ports(compose: dict[str, Any]) -> None:
    front = balancer(compose)
    env = front["environment"]
    for number, (name, service) in enumerate(sorted(hub_services(compose).items()), start=1):
        http, pb = service["environment"][ENV_HTTP], service["environment"][ENV_PB]
        assert http.startswith("haproxy:") and pb.startswith("haproxy:"), (
            f"{name} must read the PROXY protocol haproxy sends (send-proxy-v2)"
        )
        assert env[f"NODE{number}_HTTP"] == f"{name}:{port_of(http)}"
        assert env[f"NODE{number}_PB"] == f"{name}:{port_of(pb)}"
    published = {int(container): int(host) for host, container in (p.split(":") for p in front["ports"])}
    for variable in ("BALANCER_HTTP", "BALANCER_PB"):
        port = int(env[variable].rsplit(":", 1)[1])
        assert published.get(port) == port, f"{variable} {env[variable]} is not published as {port}"
    assert f"./deploy/haproxy.cfg:{HAPROXY_IN_CONTAINER}:ro" in front["volumes"]
    exposed = {int(p) for p in dockerfile_instruction("EXPOSE")[0].split()}
    node_ports = {
        port_of(s["environment"][k]) for s in hub_services(compose).values() for k in (ENV_HTTP, ENV_PB)
    }
    assert node_ports <= exposed, f"the nodes listen on {node_ports}; the Dockerfile exposes {exposed}"


def test_haproxy_gets_every_variable_its_config_requires(compose: dict[str, Any], tmp_path: Path) -> None:
    env = balancer(compose)["environment"]
    text = "\n".join(line.split("#", 1)[0] for line in HAPROXY_CFG.read_text().splitlines())
    optional = set(re.findall(r"^\.if defined\((\w+)\)", text, re.M))
    used = set(re.findall(r"\$\{(\w+)\}", text))
    assert used - optional <= set(env), f"haproxy.cfg needs {sorted(used - optional - set(env))}"
    # and haproxy accepts the file with exactly these values (names resolved later: init-addr none)
    result = subprocess.run(
        [haproxy_binary(), "-c", "-f", str(HAPROXY_CFG)],
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", **env},
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_depends_on_waits_for_health_that_is_checked(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        for other, condition in service.get("depends_on", {}).items():
            assert other in services, f"{name} depends on {other}, which is not a service"
            if condition["condition"] == "service_healthy":
                assert "healthcheck" in services[other], f"{name} waits for {other}'s health, never checked"
    for name in hub_services(compose):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["migrate"]["command"] == ["buildnotify-cli", "db", "upgrade"]


def test_the_dockerfile_runs_a_real_command_as_a_user(tmp_path: Path) -> None:
    assert dockerfile_instruction("FROM") == ["python:3.11-slim"]
    [user] = dockerfile_instruction("USER")
    assert user not in ("root", "0")
    [command] = dockerfile_instruction("CMD")
    argv = json.loads(command)
    assert argv[0] == "buildnotify-cli"
    cli._parser().parse_args(argv[1:])  # argparse exits 2 on anything it does not know
    result = run_cli([*argv[1:], "--help"], cli_env(tmp_path))
    assert result.returncode == 0, result
    [env] = dockerfile_instruction("ENV")
    variables = {k for k, _ in (item.split("=", 1) for item in shlex.split(env))} - {"PYTHONUNBUFFERED"}
    assert variables <= set(ENVIRONMENT), f"the Dockerfile sets {sorted(variables - set(ENVIRONMENT))}"
