"""``buildnotify-cli`` as a user meets it: help, ``db upgrade``, ``history``,
and ``serve`` run as a real process (config generation, config errors, one log
line per delivery, no secret in the output).

The hub process helpers live in tests/hubprocess.py.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import stat
import tomllib
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

from buildnotify import cli
from buildnotify.config import PROVIDERS, TOKEN_PROVIDERS
from buildnotify.delivery import Delivery
from buildnotify.events import Author, BuildEvent, Status
from buildnotify.ingest.base import hmac_sha256_hex
from buildnotify.store import database
from buildnotify.store.batch import record_batch
from tests.hubprocess import HubProcess, cli_env, free_port, generic_event, post, run_cli, write_config

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def hubs():
    """Start hubs with ``hubs(directory, args, port, env)``; all are killed at the end."""
    started: list[HubProcess] = []

    def make(*args: Any) -> HubProcess:
        hub = HubProcess(*args)
        started.append(hub)
        return hub

    yield make
    for hub in started:
        hub.close()
        print(hub.output())  # shown by pytest when the test failed


@pytest.fixture
def usual_umask() -> Iterator[None]:
    """umask 022, under which a file not made private on purpose is readable
    by everyone: so that a test of a private file can fail."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def mode(path: Path) -> str:
    return oct(stat.S_IMODE(path.stat().st_mode))


# -- help and db upgrade ---------------------------------------------------------


def test_help_lists_the_commands(capsys) -> None:
    with pytest.raises(SystemExit) as exit:
        cli.main(["--help"])
    assert exit.value.code == 0
    out = capsys.readouterr().out
    for command, summary in (
        ("serve", "run the hub"),
        ("history", "list stored build events"),
        ("db", "database maintenance"),
    ):
        assert re.search(rf"^\s+{command}\s+{summary}", out, re.MULTILINE), out


def test_no_command_prints_help_and_exits_2(capsys) -> None:
    assert cli.main([]) == 2
    assert "serve" in capsys.readouterr().out


def test_installed_entry_point_answers_help(tmp_path: Path) -> None:
    result = run_cli(["--help"], cli_env(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "usage: buildnotify-cli" in result.stdout
    assert {"serve", "history", "db"} <= set(re.findall(r"^\s+(\w+)\s", result.stdout, re.MULTILINE))


def head_revision(path: Path) -> str:
    engine = database.create(str(path))
    try:
        return ScriptDirectory.from_config(database.alembic_config(engine)).get_current_head()
    finally:
        engine.dispose()


def test_db_upgrade_creates_the_database_then_is_a_no_op(tmp_path: Path, capsys, usual_umask) -> None:
    path = tmp_path / "new" / "hub.db"
    head = head_revision(tmp_path / "scratch.db")

    assert cli.main(["db", "upgrade", "--db", str(path)]) == 0
    assert capsys.readouterr().out.strip() == f"database upgraded to revision {head}"
    assert path.is_file()
    assert mode(path) == "0o600", "token hashes and identities: readable by the owner only"
    engine = database.create(str(path))
    try:
        assert {"events", "deliveries", "builds", "projects"} <= set(inspect(engine).get_table_names())
        assert database.current_revision(engine) == head
    finally:
        engine.dispose()

    assert cli.main(["db", "upgrade", "--db", str(path)]) == 0
    assert capsys.readouterr().out.strip() == f"database already at revision {head}"


def test_db_without_a_subcommand_shows_its_help(capsys) -> None:
    assert cli.main(["db"]) == 2
    assert "upgrade" in capsys.readouterr().out


# -- a database that cannot be reached -------------------------------------------

PASSWORD = "not-to-be-printed"


def closed_postgres() -> tuple[str, str]:
    """A PostgreSQL URL with a password on a port nobody listens on, and how
    the CLI may show it."""
    port = free_port()
    return (
        f"postgresql+psycopg://postgres:{PASSWORD}@127.0.0.1:{port}/test",
        f"postgresql+psycopg://postgres:***@127.0.0.1:{port}/test",
    )


@pytest.mark.parametrize(
    "command",
    [
        ["history"],
        ["db", "upgrade"],
        ["users", "list"],
        ["users", "add", "ada"],
        ["projects", "list"],
        ["projects", "private", "acme/widget"],
    ],
    ids=" ".join,
)
def test_an_unreachable_database_is_one_line_without_its_password(capsys, command: list[str]) -> None:
    url, shown = closed_postgres()
    assert cli.main([*command, "--db", url]) == cli.EXIT_UNREACHABLE
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == f"buildnotify-cli: cannot reach the database at {shown}: connection refused\n"


def test_a_sqlite_database_that_cannot_be_opened_is_one_line(tmp_path: Path, capsys) -> None:
    assert cli.main(["db", "upgrade", "--db", str(tmp_path)]) == cli.EXIT_UNREACHABLE  # a directory
    captured = capsys.readouterr()
    assert captured.out == ""
    assert (
        captured.err
        == f"buildnotify-cli: cannot open the database at {tmp_path}: unable to open database file\n"
    )


def test_serve_with_an_unreachable_database_says_so_in_one_line(tmp_path: Path) -> None:
    url, shown = closed_postgres()
    config = write_config(tmp_path / "hub.toml", port=free_port(), database=url)
    result = run_cli(["serve", "--config", str(config)], cli_env(tmp_path), timeout=30)
    assert result.returncode == cli.EXIT_UNREACHABLE, result
    assert result.stderr == f"buildnotify-cli: cannot reach the database at {shown}: connection refused\n"
    assert result.stdout == ""


# -- history ---------------------------------------------------------------------


def test_history_on_a_missing_database_is_a_clear_error(tmp_path: Path, capsys) -> None:
    path = tmp_path / "nothing-here.db"
    assert cli.main(["history", "--db", str(path)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip() == f"buildnotify-cli: no hub database at {path} yet"


def test_history_on_a_missing_database_creates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "typo" / "hub.db"
    assert cli.main(["history", "--db", str(path)]) == 1
    assert not path.parent.exists()


T0 = datetime(2026, 11, 1, 12, 0, tzinfo=timezone.utc)


def stored_events(path: Path) -> list[BuildEvent]:
    """Three deliveries recorded the way the hub records them; the events as stored."""
    deliveries = [
        Delivery(
            provider="generic",
            key="widget-7",
            events=(
                BuildEvent(
                    provider="generic",
                    project="acme/widget",
                    pipeline="ci",
                    build_id="7",
                    build_number=7,
                    status=Status.FAILURE,
                    branch="main",
                    sha="0123456789abcdef0123456789abcdef01234567",
                    author=Author("Ada Lovelace", "ada@example.com", "ada"),
                    url="https://ci.example.com/acme/widget/7",
                    started_at=T0,
                    finished_at=T0.replace(minute=3),
                    received_at=T0.replace(minute=4),
                ),
            ),
        ),
        Delivery(
            provider="generic",
            key="gadget-1",
            events=(
                BuildEvent(
                    provider="generic",
                    project="acme/gadget",
                    pipeline="nightly",
                    build_id="g1",
                    build_number=1,
                    status=Status.SUCCESS,
                    branch="dev",
                    received_at=T0.replace(minute=5),
                ),
            ),
        ),
        Delivery(
            provider="generic",
            key="widget-8",
            events=(
                BuildEvent(
                    provider="generic",
                    project="acme/widget",
                    pipeline="ci",
                    build_id="8",
                    build_number=8,
                    status=Status.SUCCESS,
                    branch="main",
                    received_at=T0.replace(minute=6),
                ),
            ),
        ),
    ]
    engine = database.create(str(path))
    try:
        database.upgrade(engine)
        with engine.begin() as conn:
            recorded = record_batch(conn, deliveries)
    finally:
        engine.dispose()
    return [event for r in recorded for event in r.events]


def history_json(capsys, *args: str) -> list[dict[str, Any]]:
    assert cli.main(["history", "--json", *args]) == 0
    lines = capsys.readouterr().out.splitlines()
    return [json.loads(line) for line in lines]


def test_history_json_prints_one_event_object_per_line(tmp_path: Path, capsys) -> None:
    path = tmp_path / "hub.db"
    widget7, gadget1, widget8 = stored_events(path)

    rows = history_json(capsys, "--db", str(path))
    assert [row["id"] for row in rows] == [widget8.id, gadget1.id, widget7.id]  # newest first
    assert rows[2] == {
        "id": widget7.id,
        "provider": "generic",
        "project": "acme/widget",
        "pipeline": "ci",
        "branch": "main",
        "sha": "0123456789abcdef0123456789abcdef01234567",
        "author": {"name": "Ada Lovelace", "email": "ada@example.com", "login": "ada"},
        "build_id": "7",
        "build_number": 7,
        "attempt": 1,
        "status": "failure",
        "transition": "failed",
        "url": "https://ci.example.com/acme/widget/7",
        "started_at": "2026-11-01T12:00:00+00:00",
        "finished_at": "2026-11-01T12:03:00+00:00",
        "received_at": "2026-11-01T12:04:00+00:00",
        "delivery_key": "widget-7",
    }
    assert rows[0]["transition"] == "fixed"
    assert rows == [e.to_dict() for e in (widget8, gadget1, widget7)]

    assert [r["delivery_key"] for r in history_json(capsys, "--db", str(path), "--limit", "2")] == [
        "widget-8",
        "gadget-1",
    ]
    only = history_json(capsys, "--db", str(path), "--project", "acme/gadget")
    assert [(r["project"], r["build_id"]) for r in only] == [("acme/gadget", "g1")]


def test_history_table(tmp_path: Path, capsys) -> None:
    path = tmp_path / "hub.db"
    stored_events(path)
    assert cli.main(["history", "--db", str(path), "--project", "acme/widget"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        "ID",
        "RECEIVED",
        "(UTC)",
        "PROJECT",
        "PIPELINE",
        "BRANCH",
        "STATUS",
        "TRANSITION",
        "SHA",
        "AUTHOR",
    ]
    assert lines[1].split()[1:] == ["2026-11-01", "12:06:00", "acme/widget", "ci", "main", "success", "fixed"]
    assert lines[2].split()[1:] == [
        "2026-11-01",
        "12:04:00",
        "acme/widget",
        "ci",
        "main",
        "failure",
        "failed",
        "01234567",
        "ada",
    ]
    assert len(lines) == 3

    assert cli.main(["history", "--db", str(path), "--project", "acme/nothing"]) == 0
    assert capsys.readouterr().out.strip() == "no events for acme/nothing"


# -- serve: configuration --------------------------------------------------------


def secrets_of(config: Mapping[str, Any]) -> dict[str, str]:
    """provider → its secret (or its default token) in a generated config."""
    found = {}
    for name in PROVIDERS:
        table = config[name]
        found[name] = table["tokens"]["default"] if name in TOKEN_PROVIDERS else table["secret"]
    return found


def test_serve_without_config_generates_one_and_reuses_it(tmp_path: Path, hubs) -> None:
    env = cli_env(tmp_path)
    port = free_port()
    expected = tmp_path / "xdg-config" / "buildnotify" / "hub.toml"
    hub = hubs(
        tmp_path,
        ["--http", f"tcp:{port}:interface=127.0.0.1", "--pb", f"tcp:{free_port()}:interface=127.0.0.1"],
        port,
        env,
    )

    hub.start().wait_ready()
    assert f"generated a config with fresh secrets at {expected}\n" in hub.output()
    assert stat.S_IMODE(expected.stat().st_mode) == 0o600
    text = expected.read_text()
    config = tomllib.loads(text)
    secrets = secrets_of(config)
    assert set(secrets) == set(PROVIDERS)
    assert all(isinstance(s, str) and len(s) >= 20 for s in secrets.values()), secrets
    assert len(set(secrets.values())) == len(PROVIDERS), "every provider gets its own secret"
    assert config["hub"]["database"] == str(tmp_path / "xdg-data" / "buildnotify" / "hub.db")
    assert config["hub"]["http"].endswith("interface=127.0.0.1"), "loopback only"

    # the generated token is the one the hub checks
    body, headers = generic_event("first-start")
    status, answer = post(port, "/hooks/generic", body, {**headers, "Authorization": "Bearer nope"})
    assert status == 401, answer
    token = secrets["generic"]
    status, answer = post(port, "/hooks/generic", body, {**headers, "Authorization": f"Bearer {token}"})
    assert (status, answer["stored"]) == (200, 1), answer
    assert hub.terminate() == 0

    hub.start().wait_ready()
    assert expected.read_text() == text, "the second start must reuse the config, not regenerate it"
    assert stat.S_IMODE(expected.stat().st_mode) == 0o600
    second = hub.logs[-1].read_text()
    assert "generated" not in second
    assert f"config {expected}" in second
    body, headers = generic_event("second-start")
    status, answer = post(port, "/hooks/generic", body, {**headers, "Authorization": f"Bearer {token}"})
    assert (status, answer["stored"]) == (200, 1), answer
    assert hub.terminate() == 0

    # both events landed in the generated database, which history finds by itself
    result = run_cli(["history", "--json"], env)
    assert result.returncode == 0, result.stderr
    keys = [json.loads(line)["delivery_key"] for line in result.stdout.splitlines()]
    assert keys == ["default:second-start", "default:first-start"]  # scoped by the token's source

    output = hub.output() + result.stdout + result.stderr
    leaked = [name for name, secret in secrets.items() if secret in output]
    assert not leaked, f"secrets of {leaked} appear in the output"


def test_serve_with_a_missing_config_file_exits_2(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    result = run_cli(["serve", "--config", str(missing)], cli_env(tmp_path), timeout=30)
    assert result.returncode == 2, result
    assert result.stderr.strip() == f"buildnotify-cli: {missing}: no such config file"
    assert "Traceback" not in result.stdout + result.stderr
    assert not (tmp_path / "xdg-config").exists(), "no config may be generated when --config is given"


@pytest.mark.parametrize(("option", "value"), [("--http", "tcp:notaport"), ("--pb", "bogus:1")])
def test_serve_names_the_option_with_a_bad_endpoint(tmp_path: Path, option: str, value: str) -> None:
    database = tmp_path / "hub.db"
    config = write_config(tmp_path / "hub.toml", port=free_port(), database=str(database))
    result = run_cli(["serve", "--config", str(config), option, value], cli_env(tmp_path), timeout=30)
    assert result.returncode == 2, result
    assert result.stderr.startswith(f"buildnotify-cli: {option}: not an endpoint: {value!r} ("), result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert not database.exists(), "a mistake in the command line must not leave a database behind"


def test_serve_names_the_config_key_with_a_bad_endpoint(tmp_path: Path) -> None:
    config = tmp_path / "hub.toml"
    config.write_text(f'[hub]\nhttp = "tcp:{free_port()}:interface=127.0.0.1"\npb = "tcp:notaport"\n')
    result = run_cli(["serve", "--config", str(config)], cli_env(tmp_path), timeout=30)
    assert result.returncode == 2, result
    assert result.stderr.startswith(f"buildnotify-cli: {config} [hub] pb: not an endpoint: 'tcp:notaport'")


def test_serve_with_an_unknown_config_key_names_it(tmp_path: Path) -> None:
    path = tmp_path / "hub.toml"
    path.write_text(f'[hub]\nhttp = "tcp:{free_port()}:interface=127.0.0.1"\ndatabse = "hub.db"\n')
    result = run_cli(["serve", "--config", str(path)], cli_env(tmp_path), timeout=30)
    assert result.returncode == 2, result
    assert "Traceback" not in result.stdout + result.stderr
    assert result.stderr.startswith(f"buildnotify-cli: {path} [hub]: unknown key(s) ['databse']"), (
        result.stderr
    )
    assert not (tmp_path / "hub.db").exists()


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ('[github]\nsecrte = "abc"\n', "secrte"),
        ('[generic]\ntoken = "abc"\n', "token"),
        ('[githbu]\nsecret = "abc"\n', "githbu"),
        ('[hub]\ndatabase = "x.db"\nmax-body = 10\n', "max-body"),
    ],
)
def test_every_unknown_config_key_is_named(tmp_path: Path, capsys, text: str, named: str) -> None:
    path = tmp_path / "hub.toml"
    path.write_text(text)
    assert cli.main(["history", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"buildnotify-cli: {path}"), err
    assert f"'{named}'" in err


def test_serve_on_a_busy_port_fails_with_exit_1(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = write_config(tmp_path / "hub.toml", port=port, database=str(tmp_path / "hub.db"))
        result = run_cli(["serve", "--config", str(config)], cli_env(tmp_path), timeout=30)
    assert result.returncode == 1, result
    assert "could not start the hub" in result.stderr
    assert "Traceback" not in result.stderr


def get(port: int, path: str) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def test_the_running_hub_keeps_its_database_files_private(tmp_path: Path, hubs, usual_umask) -> None:
    """The SQLite file and, while the hub has it open in WAL mode, its -wal
    and -shm files are readable by the owner only, like the config."""
    port, token = free_port(), os.urandom(8).hex()
    database = tmp_path / "data" / "hub.db"
    config = write_config(tmp_path / "hub.toml", port=port, database=str(database), tokens={"ci": token})
    hub = hubs(tmp_path, ["--config", str(config)], port, cli_env(tmp_path))
    hub.start().wait_ready()
    body, headers = generic_event("one")
    status, answer = post(port, "/hooks/generic", body, {**headers, "Authorization": f"Bearer {token}"})
    assert status == 200, answer
    files = [database, database.with_name("hub.db-wal"), database.with_name("hub.db-shm")]
    assert {path.name: mode(path) for path in files} == {path.name: "0o600" for path in files}
    assert hub.terminate() == 0


def test_serve_answers_get_root(tmp_path: Path, hubs) -> None:
    """What a user's ``curl http://127.0.0.1:8786/`` shows: the hub is there."""
    port = free_port()
    config = write_config(tmp_path / "hub.toml", port=port, database=str(tmp_path / "hub.db"))
    hub = hubs(tmp_path, ["--config", str(config)], port, cli_env(tmp_path))
    hub.start().wait_ready()
    assert get(port, "/") == (200, {"service": "buildnotify", "hooks": "/hooks/"})
    assert get(port, "/hooks/") == (200, {"providers": sorted(PROVIDERS)})
    status, answer = get(port, "/nothing")
    assert status == 404 and "/hooks/<provider>" in answer["error"], answer
    assert hub.terminate() == 0


# -- serve: what it logs ---------------------------------------------------------


def test_serve_logs_each_delivery_and_no_secret(tmp_path: Path, hubs) -> None:
    port = free_port()
    secrets = {
        name: f"{name}-secret-{os.urandom(8).hex()}" for name in PROVIDERS if name not in TOKEN_PROVIDERS
    }
    tokens = {"ci": f"generic-token-{os.urandom(8).hex()}", "laptop": f"other-{os.urandom(8).hex()}"}
    config = write_config(
        tmp_path / "hub.toml",
        port=port,
        database=str(tmp_path / "hub.db"),
        secrets=secrets,
        tokens=tokens,
    )
    hub = hubs(tmp_path, ["--config", str(config)], port, cli_env(tmp_path))
    hub.start().wait_ready()

    body, headers = generic_event("good-1", status="failure", project="acme/widget")
    status, good = post(port, "/hooks/generic", body, {**headers, "Authorization": f"Bearer {tokens['ci']}"})
    assert (status, good["stored"]) == (200, 1), good

    wrong_token = f"wrong-{os.urandom(8).hex()}"
    body, headers = generic_event("bad-token")
    status, bad_token = post(
        port, "/hooks/generic", body, {**headers, "Authorization": f"Bearer {wrong_token}"}
    )
    assert status == 401, bad_token

    body, headers = generic_event("no-status", status=None)
    status, invalid = post(
        port, "/hooks/generic", body, {**headers, "Authorization": f"Bearer {tokens['ci']}"}
    )
    assert status == 400, invalid

    github = (FIXTURES / "github" / "workflow_run_completed_failure.json").read_bytes()
    github_headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": "workflow_run",
        "X-GitHub-Delivery": "gh-delivery-1",
    }
    forged = "sha256=" + hmac_sha256_hex("not-" + secrets["github"], github)
    status, bad_signature = post(
        port, "/hooks/github", github, {**github_headers, "X-Hub-Signature-256": forged}
    )
    assert status == 401, bad_signature
    signed = "sha256=" + hmac_sha256_hex(secrets["github"], github)
    status, good_github = post(
        port, "/hooks/github", github, {**github_headers, "X-Hub-Signature-256": signed}
    )
    assert (status, good_github["stored"]) == (200, 1), good_github

    assert hub.terminate() == 0
    output = hub.output()
    lines = output.splitlines()

    def line_with(*words: str) -> str:
        found = [line for line in lines if all(w in line for w in words)]
        assert len(found) == 1, f"expected one log line with {words}, found {found}:\n{output}"
        return found[0]

    accepted = line_with("accepted", "generic", "good-1")
    assert re.search(r"\bacme/widget\b", accepted) and re.search(r"\bfailure\b", accepted), accepted
    assert "source ci" in accepted, "the log names the token's source, not the token"
    line_with("accepted", "github", "gh-delivery-1", "acme/widget", "failure")
    line_with("rejected", "generic", "401", bad_token["error"])
    line_with("rejected", "generic", "400", invalid["error"])
    line_with("rejected", "github", "401", bad_signature["error"])

    for secret in [*secrets.values(), *tokens.values(), wrong_token, forged.split("=", 1)[1]]:
        assert secret not in output, f"{secret!r} appears in the hub's output:\n{output}"
