"""Configuration from the environment, as a container gets it: every
``BUILDNOTIFY_*`` variable the hub reads, what overrides what, and
``serve --env-only`` run as a real process with no config file at all."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

from buildnotify import config as configuration
from buildnotify.config import ENVIRONMENT, PROVIDERS, TOKEN_PROVIDERS, ConfigError, parse
from buildnotify.ingest.base import hmac_sha256_hex
from tests.hubprocess import HubProcess, cli_env, free_port, generic_event, post, run_cli

FILE = {
    "hub": {
        "http": "tcp:1111:interface=127.0.0.1",
        "pb": "tcp:2222:interface=127.0.0.1",
        "database": "/from/the/file.db",
        "node": "file-node",
    }
}


def test_the_database_comes_from_buildnotify_database() -> None:
    url = "postgresql+psycopg://hub@db/hub"
    assert parse({}, {"BUILDNOTIFY_DATABASE": url}).database == url
    assert parse(FILE, {"BUILDNOTIFY_DATABASE": url}).database == url
    assert parse(FILE, {}).database == "/from/the/file.db"


def test_the_node_name_comes_from_buildnotify_node_then_the_file_then_host_and_process() -> None:
    assert parse({}, {"BUILDNOTIFY_NODE": "node7"}).node == "node7"
    assert parse(FILE, {"BUILDNOTIFY_NODE": "node7"}).node == "node7"
    assert parse(FILE, {}).node == "file-node"
    assert parse({}, {}).node == f"{socket.gethostname()}:{os.getpid()}"  # two on one host differ


@pytest.mark.parametrize("node", ["   ", "two\nlines"])
def test_a_node_name_that_cannot_name_a_node_is_refused(node: str) -> None:
    with pytest.raises(ConfigError, match="BUILDNOTIFY_NODE: a node name must be"):
        parse({}, {"BUILDNOTIFY_NODE": node})
    with pytest.raises(ConfigError, match=r"\[hub\] node: a node name must be"):
        parse({"hub": {"node": node}}, {})


@pytest.mark.parametrize(("key", "variable"), [("http", "BUILDNOTIFY_HTTP"), ("pb", "BUILDNOTIFY_PB")])
def test_the_endpoints_come_from_the_environment(key: str, variable: str) -> None:
    endpoint = "haproxy:tcp:9999:interface=0.0.0.0"
    assert getattr(parse({}, {variable: endpoint}), key) == endpoint
    assert getattr(parse(FILE, {variable: endpoint}), key) == endpoint
    assert getattr(parse(FILE, {}), key) == FILE["hub"][key]
    assert (
        getattr(parse({}, {}), key)
        == {"http": configuration.DEFAULT_HTTP, "pb": configuration.DEFAULT_PB}[key]
    )


@pytest.mark.parametrize("provider", [p for p in PROVIDERS if p not in TOKEN_PROVIDERS])
def test_a_provider_secret_comes_from_its_variable(provider: str) -> None:
    variable = f"BUILDNOTIFY_{provider.upper()}_SECRET"
    assert parse({}, {variable: "s3cret"}).providers[provider].secret == "s3cret"
    assert parse({provider: {"secret": "file"}}, {variable: "s3cret"}).providers[provider].secret == "s3cret"


@pytest.mark.parametrize("provider", TOKEN_PROVIDERS)
def test_provider_tokens_come_from_their_variable(provider: str) -> None:
    variable = f"BUILDNOTIFY_{provider.upper()}_TOKENS"
    found = parse({}, {variable: "ci=one, laptop=two"}).providers[provider].tokens
    assert found == {"ci": "one", "laptop": "two"}
    assert parse({}, {variable: "bare"}).providers[provider].tokens == {"default": "bare"}


def test_environment_names_every_variable_the_hub_reads() -> None:
    """The tuple the deployment test checks compose files against is the one
    the parser reads: a variable outside it changes nothing."""
    everything = {variable: "x" for variable in ENVIRONMENT} | {
        "BUILDNOTIFY_HTTP": "tcp:1:interface=127.0.0.1",
        "BUILDNOTIFY_PB": "tcp:2:interface=127.0.0.1",
    }
    for variable in ENVIRONMENT:
        assert parse({}, everything) != parse({}, {k: v for k, v in everything.items() if k != variable}), (
            f"{variable} is listed in config.ENVIRONMENT but changes nothing"
        )
    assert len(set(ENVIRONMENT)) == len(ENVIRONMENT) == 4 + len(PROVIDERS)


# -- serve --env-only, a real process ------------------------------------------------


def test_serve_env_only_runs_from_the_environment_and_writes_no_file(tmp_path: Path) -> None:
    http_port, pb_port = free_port(), free_port()
    database = tmp_path / "data" / "hub.db"
    database.parent.mkdir()
    token, github_secret = "env-token-" + "a" * 20, "env-github-" + "b" * 20
    env = cli_env(
        tmp_path,
        BUILDNOTIFY_DATABASE=str(database),
        BUILDNOTIFY_NODE="edge-7",
        BUILDNOTIFY_HTTP=f"tcp:{http_port}:interface=127.0.0.1",
        BUILDNOTIFY_PB=f"tcp:{pb_port}:interface=127.0.0.1",
        BUILDNOTIFY_GENERIC_TOKENS=f"ci={token}",
        BUILDNOTIFY_GITHUB_SECRET=github_secret,
    )
    hub = HubProcess(tmp_path, ["--env-only"], http_port, env)
    try:
        hub.start().wait_ready()
        with socket.create_connection(("127.0.0.1", pb_port), timeout=5):
            pass  # the PB listener is where BUILDNOTIFY_PB put it

        body, headers = generic_event("env-1")
        status, answer = post(http_port, "/hooks/generic", body, {**headers, "Authorization": "Bearer no"})
        assert status == 401, answer
        status, answer = post(
            http_port, "/hooks/generic", body, {**headers, "Authorization": f"Bearer {token}"}
        )
        assert (status, answer["stored"]) == (200, 1), answer
        github = b'{"zen": "Keep it logically awesome."}'
        signature = "sha256=" + hmac_sha256_hex(github_secret.encode(), github)
        github_headers = {"Content-Type": "application/json", "X-GitHub-Event": "ping"}
        status, _ = post(http_port, "/hooks/github", github, {**github_headers, "X-Hub-Signature-256": "x"})
        assert status == 401
        status, answer = post(
            http_port, "/hooks/github", github, {**github_headers, "X-Hub-Signature-256": signature}
        )
        assert status == 202, answer  # verified with the secret from the environment, then ignored
        assert hub.terminate() == 0
    finally:
        hub.close()
    output = hub.output()
    assert "node edge-7; config from the environment only" in output, output
    assert "no secret configured" in output and "github: no secret" not in output, output
    assert token not in output and github_secret not in output
    assert not (tmp_path / "xdg-config").exists(), "--env-only must not generate a config file"

    # the other commands find the database by BUILDNOTIFY_DATABASE too, with no file anywhere
    result = run_cli(["history", "--json"], env)
    assert result.returncode == 0, result
    [event] = [json.loads(line) for line in result.stdout.splitlines()]
    assert (event["project"], event["status"]) == ("acme/widget", "failure"), event
    assert not (tmp_path / "xdg-config").exists()


def test_serve_names_the_variable_with_a_bad_endpoint(tmp_path: Path) -> None:
    env = cli_env(tmp_path, BUILDNOTIFY_DATABASE=str(tmp_path / "hub.db"), BUILDNOTIFY_PB="tcp:notaport")
    result = run_cli(["serve", "--env-only"], env, timeout=30)
    assert result.returncode == 2, result
    assert result.stderr.startswith("buildnotify-cli: BUILDNOTIFY_PB: not an endpoint: 'tcp:notaport'")


def test_serve_env_only_and_config_exclude_each_other(tmp_path: Path) -> None:
    result = run_cli(["serve", "--env-only", "--config", str(tmp_path / "x.toml")], cli_env(tmp_path))
    assert result.returncode == 2
    assert "not allowed with argument" in result.stderr


def test_serve_help_explains_env_only_and_names_every_variable(tmp_path: Path) -> None:
    result = run_cli(["serve", "--help"], cli_env(tmp_path))
    assert result.returncode == 0, result
    text = " ".join(result.stdout.split())
    assert "--env-only" in text and "reads no file and writes none" in text
    for variable in ENVIRONMENT:
        assert variable in text
