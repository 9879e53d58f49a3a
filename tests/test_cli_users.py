"""``buildnotify-cli users`` and ``projects`` end to end, through
:func:`buildnotify.cli.main` on a SQLite file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from buildnotify import cli
from buildnotify.store import accounts, database

TOKEN = re.compile(r"bn_[A-Za-z0-9_-]{43}")


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "hub.db"


def run(capsys, db: Path, *args: str) -> tuple[int, str, str]:
    code = cli.main([*args, "--db", str(db)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def check_token(db: Path, name: str, token: str) -> int | None:
    engine = database.create(str(db))
    try:
        with engine.connect() as conn:
            return accounts.check_token(conn, name, token)
    finally:
        engine.dispose()


def add(capsys, db: Path, name: str, *args: str) -> str:
    code, out, err = run(capsys, db, "users", "add", name, *args)
    assert (code, err) == (0, ""), err
    [token] = TOKEN.findall(out)
    return token


def test_help_lists_the_account_commands(capsys) -> None:
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    assert re.search(r"^\s+users\s+manage developer accounts", out, re.MULTILINE), out
    assert re.search(r"^\s+projects\s+list projects", out, re.MULTILINE), out
    for group, commands in (
        ("users", ("add", "add-identity", "token", "list", "remove")),
        ("projects", ("list", "private", "public", "members", "add-member", "remove-member")),
    ):
        assert cli.main([group]) == 2
        out = capsys.readouterr().out
        for command in commands:
            assert re.search(rf"^\s+{command}\s", out, re.MULTILINE), (command, out)


def test_users_add_prints_a_working_token_once(capsys, db: Path) -> None:
    code, out, err = run(capsys, db, "users", "add", "ada", "--email", "Ada@Example.com", "--login", "ada")
    assert (code, err) == (0, "")
    [token] = TOKEN.findall(out)
    assert "shown only once" in out
    assert "BUILDNOTIFY_TOKEN" in out and "token file" in out
    assert check_token(db, "ada", token) is not None
    assert check_token(db, "ada", token[:-1] + ("A" if token[-1] != "A" else "B")) is None
    assert token.encode() not in db.read_bytes()
    wal = db.with_name(db.name + "-wal")
    assert not wal.exists() or token.encode() not in wal.read_bytes()


def test_users_token_reissues_and_the_old_one_stops_working(capsys, db: Path) -> None:
    old = add(capsys, db, "ada")
    code, out, err = run(capsys, db, "users", "token", "ada")
    assert (code, err) == (0, "")
    [new] = TOKEN.findall(out)
    assert new != old
    assert "shown only once" in out
    assert check_token(db, "ada", old) is None
    assert check_token(db, "ada", new) is not None


def test_users_list_shows_identities_but_never_tokens(capsys, db: Path) -> None:
    tokens = [
        add(capsys, db, "bob"),
        add(capsys, db, "ada", "--email", "ADA@example.com", "--login", "lovelace"),
    ]
    code, out, err = run(capsys, db, "users", "list")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "IDENTITIES", "TOKEN"]
    assert lines[1].split() == ["ada", "email:ada@example.com,", "login:lovelace", "yes"]
    assert lines[2].split() == ["bob", "-", "yes"]
    for token in tokens:
        assert token not in out
    assert "sha256" not in out


def test_users_add_identity(capsys, db: Path) -> None:
    add(capsys, db, "ada")
    code, out, err = run(capsys, db, "users", "add-identity", "ada", "--email", "Ada@Example.com")
    assert (code, err) == (0, "")
    assert out.strip() == "email ada@example.com added to ada"
    engine = database.create(str(db))
    try:
        with engine.connect() as conn:
            assert [n for _, n in accounts.developers_for_author(conn, "ada@example.com", None)] == ["ada"]
    finally:
        engine.dispose()
    assert run(capsys, db, "users", "add-identity", "ada")[0] == 2


def test_users_remove(capsys, db: Path) -> None:
    token = add(capsys, db, "ada")
    add(capsys, db, "bob")
    assert run(capsys, db, "users", "remove", "ada") == (0, "removed developer ada\n", "")
    assert check_token(db, "ada", token) is None
    code, out, _ = run(capsys, db, "users", "list")
    assert [line.split()[0] for line in out.splitlines()[1:]] == ["bob"]


def test_account_errors_are_one_line_and_exit_1(capsys, db: Path) -> None:
    add(capsys, db, "ada", "--email", "ada@example.com")
    for args, message in (
        (("users", "remove", "nobody"), "no developer named 'nobody'"),
        (("users", "token", "nobody"), "no developer named 'nobody'"),
        (("users", "add", "ada"), "developer 'ada' exists already"),
        (
            ("users", "add", "bob", "--email", "ADA@example.com"),
            "email 'ada@example.com' belongs to developer 'ada' already",
        ),
        (("projects", "add-member", "acme/widget", "nobody"), "no developer named 'nobody'"),
    ):
        code, out, err = run(capsys, db, *args)
        assert (code, out, err) == (1, "", f"buildnotify-cli: {message}\n"), args
    code, out, _ = run(capsys, db, "users", "list")
    assert "bob" not in out  # the failed add left nothing behind


def test_read_only_commands_do_not_create_a_database(capsys, tmp_path: Path) -> None:
    db = tmp_path / "typo" / "hub.db"
    for args in (("users", "list"), ("projects", "list"), ("projects", "members", "acme/widget")):
        code, out, err = run(capsys, db, *args)
        assert (code, out) == (1, "")
        assert err == f"buildnotify-cli: no hub database at {db} yet\n"
    assert not db.parent.exists()


def test_empty_listings(capsys, db: Path) -> None:
    run(capsys, db, "db", "upgrade")
    assert run(capsys, db, "users", "list")[1].startswith("no developers")
    assert run(capsys, db, "projects", "list")[1] == "no projects\n"


def test_projects_privacy_and_members(capsys, db: Path) -> None:
    add(capsys, db, "ada")
    add(capsys, db, "bob")
    code, out, err = run(capsys, db, "projects", "private", "acme/secret")
    assert (code, err) == (0, "")
    assert out.startswith("acme/secret is private")
    assert run(capsys, db, "projects", "add-member", "acme/secret", "bob")[:2] == (
        0,
        "bob is now a member of acme/secret\n",
    )
    assert run(capsys, db, "projects", "add-member", "acme/secret", "ada")[0] == 0
    assert run(capsys, db, "projects", "add-member", "acme/secret", "ada")[1] == (
        "ada was already a member of acme/secret\n"
    )
    assert run(capsys, db, "projects", "public", "acme/open")[:2] == (
        0,
        "acme/open is public: visible to everyone\n",
    )
    assert run(capsys, db, "projects", "members", "acme/secret")[1] == "ada\nbob\n"
    assert run(capsys, db, "projects", "members", "acme/open")[1] == "acme/open has no members\n"

    code, out, _ = run(capsys, db, "projects", "list")
    assert [line.split() for line in out.splitlines()] == [
        ["PROJECT", "VISIBILITY", "MEMBERS"],
        ["acme/open", "public", "-"],
        ["acme/secret", "private", "ada,", "bob"],
    ]

    assert run(capsys, db, "projects", "remove-member", "acme/secret", "bob") == (
        0,
        "bob is no longer a member of acme/secret\n",
        "",
    )
    assert run(capsys, db, "projects", "remove-member", "acme/secret", "bob") == (
        1,
        "",
        "buildnotify-cli: bob is not a member of acme/secret\n",
    )
    engine = database.create(str(db))
    try:
        with engine.connect() as conn:
            assert accounts.members_of(conn, "acme/secret") == ["ada"]
            assert accounts.private_projects(conn) == {"acme/secret"}
            assert not accounts.visible(conn, "acme/secret", None)
    finally:
        engine.dispose()

    assert run(capsys, db, "projects", "public", "acme/secret")[0] == 0
    code, out, _ = run(capsys, db, "projects", "list")
    assert out.splitlines()[2].split() == ["acme/secret", "public", "ada"]
