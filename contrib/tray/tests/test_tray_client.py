"""The tray's connection settings (shared with ``buildnotify-cli watch``)
and :class:`~buildnotify_tray.client.TrayClient` without a hub."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from twisted.internet.task import Clock

from buildnotify_tray.app import parser, settings
from buildnotify_tray.client import TrayClient


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("BUILDNOTIFY_TOKEN", raising=False)
    path = tmp_path / "client.toml"
    path.write_text('hub = "tcp:127.0.0.1:9999"\nprojects = ["acme/widget"]\n')
    return path


def found(config: Path, *argv: str) -> dict[str, Any] | str:
    return settings(parser().parse_args(["--client-config", str(config), *argv]))


def test_settings_come_from_the_options_and_the_client_config(config: Path, tmp_path: Path) -> None:
    assert found(config) == {
        "hub": "tcp:127.0.0.1:9999",
        "user": None,
        "token": None,
        "projects": ["acme/widget"],
    }
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    token.chmod(0o600)
    assert found(config, "--user", "ada", "--token-file", str(token), "--project", "acme/gadget") == {
        "hub": "tcp:127.0.0.1:9999",
        "user": "ada",
        "token": "s3cret",
        "projects": ["acme/gadget"],
    }


def test_settings_name_what_is_wrong(config: Path) -> None:
    assert str(found(config, "--hub", "nonsense")).startswith("--hub: not an endpoint: 'nonsense'")
    assert found(config, "--user", "ada") == (
        "no token for ada: give --token-file, set BUILDNOTIFY_TOKEN, or set token_file "
        "in the client config (or use --anonymous)"
    )
    assert found(config, "--token-file", "t") == "--token-file needs --user (or a user in the client config)"
    config.write_text("")
    assert found(config) == "name the projects to watch with --project P (or projects in the client config)"


def test_a_project_no_longer_visible_is_not_asked_for_again() -> None:
    sent: list[tuple[str, Any]] = []
    client = TrayClient(
        lambda method, payload: sent.append((method, payload)),
        hub="tcp:127.0.0.1:1",
        reactor=Clock(),
        projects=["acme/widget", "acme/secret"],
    )
    client.client = SimpleNamespace(projects=["acme/widget"])  # the WatchClient dropped it already
    client.on_access_lost(["acme/secret"], "no such project, or it is private")
    assert sent == [("on_unwatched", "acme/secret"), ("on_hidden", ["acme/secret"])]
    assert client.projects == ["acme/widget"], "the next session watches the rest only"
    client._choose("acme/gadget", True)
    assert client.client.projects == ["acme/widget", "acme/gadget"]
