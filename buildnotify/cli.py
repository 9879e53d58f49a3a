"""``buildnotify-cli``: run the hub and look at what it stored."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from buildnotify import config as configuration
from buildnotify.config import ConfigError, HubConfig

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine

EXIT_USAGE = 2
EXIT_UNREACHABLE = 5  # the database cannot be reached (the client commands' 5: the hub)
#: loggers whose INFO lines (factories starting and stopping, migration
#: steps) ``serve`` shows only with -v
QUIET_UNLESS_VERBOSE = ("twisted", "alembic")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return EXIT_USAGE
    try:
        code = args.run(args)
        sys.stdout.flush()  # here rather than at exit, where a closed pipe would be reported
        return code
    except ConfigError as e:
        print(f"buildnotify-cli: {e}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:  # the reader of our output went away (| head -1): stop quietly
        from buildnotify.closedpipe import silence

        return silence()
    except KeyboardInterrupt:
        return 130
    except Exception as e:
        from buildnotify.store.database import Unreachable  # imported already if e is one

        if not isinstance(e, Unreachable):
            raise
        print(f"buildnotify-cli: {e}", file=sys.stderr)
        return EXIT_UNREACHABLE


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="buildnotify-cli",
        description="A CI build-failure notification hub: CI webhooks in, build events out.",
    )
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    serve = sub.add_parser(
        "serve",
        help="run the hub",
        description="Run the hub. With no --config it uses (or first generates, with fresh secrets) "
        f"{configuration.default_config_path()} and listens on loopback only. With --env-only it "
        "reads no file and writes none: the BUILDNOTIFY_* environment variables and these options are "
        "the whole configuration (for containers).",
        epilog="environment (each overrides its key in the config file; an option overrides both): "
        + ", ".join(configuration.ENVIRONMENT)
        + ". Tokens are given as name=token,name2=token2. Relays: "
        + ", ".join(configuration.RELAY_ENVIRONMENT)
        + " (docs/relays.md).",
    )
    _config_options(serve, env_only=True)
    serve.add_argument(
        "--http", metavar="ENDPOINT", help=f"webhook listener (default {configuration.DEFAULT_HTTP})"
    )
    serve.add_argument(
        "--pb", metavar="ENDPOINT", help=f"PB listener for clients (default {configuration.DEFAULT_PB})"
    )
    loudness = serve.add_mutually_exclusive_group()
    loudness.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
    loudness.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="also log Twisted's listener and factory lines and Alembic's migration steps",
    )
    serve.set_defaults(run=_serve)

    history = sub.add_parser("history", help="list stored build events, newest first")
    _config_options(history)
    history.add_argument("--project", metavar="P", help="only this project, e.g. acme/widget")
    history.add_argument("--limit", metavar="N", type=int, default=20, help="at most N events (default 20)")
    history.add_argument("--json", action="store_true", help="one JSON object per line")
    history.set_defaults(run=_history)

    db = sub.add_parser("db", help="database maintenance")
    db_sub = db.add_subparsers(title="db commands", metavar="DBCOMMAND")
    upgrade = db_sub.add_parser("upgrade", help="bring the database schema to the newest version")
    _config_options(upgrade)
    upgrade.set_defaults(run=_db_upgrade)
    db.set_defaults(run=lambda _: (db.print_help(), EXIT_USAGE)[1])

    _users_parser(sub)
    _projects_parser(sub)
    _relays_parser(sub)
    from buildnotify.client.watch import add_parser as _watch_parser  # the client's front end

    _watch_parser(sub)
    from buildnotify.client.commands import add_parser as _commands_parser  # status, claim, ack, mute ...

    _commands_parser(sub)
    from buildnotify.send import add_parser as _send_parser  # one event to /hooks/generic

    _send_parser(sub)
    return parser


def _users_parser(sub: argparse._SubParsersAction) -> None:
    users = sub.add_parser(
        "users",
        help="manage developer accounts and their tokens",
        description="Developers log in to the hub with a name and a token; their emails and logins "
        "tell the hub which commits are theirs, for personal alerts.",
    )
    users_sub = users.add_subparsers(title="users commands", metavar="USERSCOMMAND")

    add = users_sub.add_parser(
        "add",
        help="add a developer and print their token (shown only once)",
        description="Add a developer and issue their token. The token is printed once and never "
        "stored: the database keeps only its hash.",
    )
    add.add_argument("name", metavar="NAME", help="login name, e.g. ada (no spaces)")
    _identity_options(add)
    _config_options(add)
    add.set_defaults(run=_users_add)

    identity = users_sub.add_parser(
        "add-identity",
        help="recognise more emails or logins as a developer's commits",
        description="Recognise more commit author emails or CI logins as NAME's (compared lower-cased).",
    )
    identity.add_argument("name", metavar="NAME", help="an existing developer")
    _identity_options(identity)
    _config_options(identity)
    identity.set_defaults(run=_users_add_identity)

    token = users_sub.add_parser(
        "token",
        help="issue a new token for a developer (the old one stops working)",
        description="Issue a new token for NAME, e.g. when the old one was lost or leaked. "
        "The old token stops working at once.",
    )
    token.add_argument("name", metavar="NAME", help="an existing developer")
    _config_options(token)
    token.set_defaults(run=_users_token)

    listing = users_sub.add_parser(
        "list",
        help="list developers, their identities and whether they have a token",
        description="List developers, their identities and whether a token is set (never the token).",
    )
    _config_options(listing)
    listing.set_defaults(run=_users_list)

    remove = users_sub.add_parser(
        "remove",
        help="remove a developer (their token, memberships, alerts and claims go too)",
        description="Remove NAME with their token, identities, memberships, settings, alerts and claims.",
    )
    remove.add_argument("name", metavar="NAME", help="an existing developer")
    _config_options(remove)
    remove.set_defaults(run=_users_remove)

    escalate = users_sub.add_parser(
        "escalate",
        help="send a developer's unseen personal alerts through a relay",
        description="A personal alert that no client of NAME received within [escalation] after "
        'seconds is sent once through RELAY (an smtp relay with to = "author" mails NAME\'s own '
        "address). --off stops it.",
    )
    escalate.add_argument("name", metavar="NAME", help="an existing developer")
    target = escalate.add_mutually_exclusive_group(required=True)
    target.add_argument("--relay", metavar="RELAY", help="a relay of the hub's config ([relays.RELAY])")
    target.add_argument("--off", action="store_true", help="never escalate NAME's alerts")
    _config_options(escalate)
    escalate.set_defaults(run=_users_escalate)
    users.set_defaults(run=lambda _: (users.print_help(), EXIT_USAGE)[1])


def _identity_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--email",
        metavar="E",
        action="append",
        default=[],
        help="a commit author email of theirs (repeatable)",
    )
    parser.add_argument(
        "--login",
        metavar="L",
        action="append",
        default=[],
        help="a CI or forge login of theirs, e.g. a GitHub username (repeatable)",
    )


def _projects_parser(sub: argparse._SubParsersAction) -> None:
    projects = sub.add_parser(
        "projects",
        help="list projects; make them private or public; manage members",
        description="Projects are public (everyone connected sees their builds) unless made private; "
        "a private project is shown only to its members. A project may be made private before its "
        "first build arrives.",
    )
    projects_sub = projects.add_subparsers(title="projects commands", metavar="PROJECTSCOMMAND")

    listing = projects_sub.add_parser("list", help="list projects, whether private, and their members")
    _config_options(listing)
    listing.set_defaults(run=_projects_list)

    for command, help, run in (
        ("private", "show the project's builds to its members only", _projects_private),
        ("public", "show the project's builds to everyone", _projects_public),
        ("members", "list the project's members", _projects_members),
    ):
        parser = projects_sub.add_parser(command, help=help, description=help[0].upper() + help[1:] + ".")
        parser.add_argument("project", metavar="P", help="project, e.g. acme/widget")
        _config_options(parser)
        parser.set_defaults(run=run)

    for command, help, run in (
        ("add-member", "let a developer see the project when it is private", _projects_add_member),
        ("remove-member", "take a developer off the project's members", _projects_remove_member),
    ):
        parser = projects_sub.add_parser(command, help=help, description=help[0].upper() + help[1:] + ".")
        parser.add_argument("project", metavar="P", help="project, e.g. acme/widget")
        parser.add_argument("name", metavar="NAME", help="an existing developer")
        _config_options(parser)
        parser.set_defaults(run=run)
    projects.set_defaults(run=lambda _: (projects.print_help(), EXIT_USAGE)[1])


def _relays_parser(sub: argparse._SubParsersAction) -> None:
    relays = sub.add_parser(
        "relays",
        help="the relays' outbox: what was sent, what waits, what is dead",
        description="Relays send selected build events (and escalated alerts) to chat webhooks, "
        "signed JSON receivers and mail; see docs/relays.md.",
    )
    relays_sub = relays.add_subparsers(title="relays commands", metavar="RELAYSCOMMAND")
    status = relays_sub.add_parser(
        "status", help="pending, sent and dead messages per relay; the dead ones with their last error"
    )
    status.add_argument("--json", action="store_true", help="one JSON object")
    _config_options(status)
    status.set_defaults(run=_relays_status)
    retry = relays_sub.add_parser("retry", help="send a dead message again, now")
    retry.add_argument("id", metavar="ID", type=int, help="the message's id (relays status lists them)")
    _config_options(retry)
    retry.set_defaults(run=_relays_retry)
    relays.set_defaults(run=lambda _: (relays.print_help(), EXIT_USAGE)[1])


def _config_options(parser: argparse.ArgumentParser, env_only: bool = False) -> None:
    source = parser.add_mutually_exclusive_group() if env_only else parser
    source.add_argument("--config", metavar="FILE", type=Path, help="hub config file (TOML)")
    if env_only:
        source.add_argument(
            "--env-only",
            action="store_true",
            help="read no config file and generate none: configure from BUILDNOTIFY_* variables "
            "and options only (a provider without a secret variable accepts unauthenticated webhooks)",
        )
    parser.add_argument("--db", metavar="URL", help="database: a SQLite file path or a SQLAlchemy URL")


def _resolve(args: argparse.Namespace, generate: bool = False) -> HubConfig:
    default = configuration.default_config_path()
    if getattr(args, "env_only", False):  # never with --config
        config = configuration.parse({})
    elif generate and not args.config and not default.exists():
        config = configuration.generate(default)
        print(f"buildnotify: generated a config with fresh secrets at {default}", flush=True)
    else:
        config = configuration.find(args.config)
    if args.db:
        config = config.replace(database=args.db)
    return config


def _open(config: HubConfig) -> Engine:
    """The hub database's engine, connected to once: a database that cannot
    be reached ends every command here, in one line (see main)."""
    from buildnotify.store import database

    engine = database.create(config.database)
    database.reach(engine, config.database)
    return engine


def _serve(args: argparse.Namespace) -> int:
    from twisted.internet import reactor
    from twisted.internet.defer import Deferred
    from twisted.logger import STDLibLogObserver, globalLogBeginner

    from buildnotify.server import Hub

    config = _resolve(args, generate=True)
    if args.http:
        config = config.replace(http=args.http)
    if args.pb:
        config = config.replace(pb=args.pb)
    _check_listeners(args, config)
    _check_relays(config)
    _open(config).dispose()
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stdout,
    )
    if not args.verbose:  # their start-up chatter; warnings and errors still show
        for chatty in QUIET_UNLESS_VERBOSE:
            logging.getLogger(chatty).setLevel(logging.WARNING)
    globalLogBeginner.beginLoggingTo([STDLibLogObserver()], redirectStandardIO=False)
    logging.getLogger("buildnotify").info(
        "node %s; config %s", config.node, config.path or "from the environment only"
    )
    exit_code = [0]

    def started(hub: Hub) -> None:
        def stop() -> Deferred:
            logging.getLogger("buildnotify").info("stopping: node %s", config.node)
            return Deferred.fromCoroutine(hub.stop())

        reactor.addSystemEventTrigger("before", "shutdown", stop)
        if not args.quiet:
            from buildnotify.firststeps import next_steps

            print(next_steps(config, hub.http_url, hub.pb_address, bool(args.http)), flush=True)

    def failed(failure: object) -> None:
        print(f"buildnotify-cli: could not start the hub: {failure.getErrorMessage()}", file=sys.stderr)  # type: ignore[attr-defined]
        exit_code[0] = 1
        reactor.stop()

    def start() -> None:
        Deferred.fromCoroutine(Hub.start(config, reactor)).addCallbacks(started, failed)

    reactor.callWhenRunning(start)
    reactor.run()
    return exit_code[0]


def _check_listeners(args: argparse.Namespace, config: HubConfig) -> None:
    """An endpoint Twisted cannot parse is a mistake named where it was made:
    the option, or the key in the config file."""
    from buildnotify.endpoints import mistake

    for key, option, variable, example in (
        ("http", args.http, configuration.ENV_HTTP, configuration.DEFAULT_HTTP),
        ("pb", args.pb, configuration.ENV_PB, configuration.DEFAULT_PB),
    ):
        if option:
            where = f"--{key}"
        elif os.environ.get(variable):
            where = variable
        else:
            where = f"{config.path or 'config'} [hub] {key}"
        problem = mistake(getattr(config, key), where, example, server=True)
        if problem:
            raise ConfigError(problem)


def _check_relays(config: HubConfig) -> None:
    """A relay or escalation setting that cannot work stops ``serve`` before anything starts."""
    from buildnotify.relays import settings

    where = str(config.path or "config")
    try:
        settings.parse_relays(config.relays, where)
        settings.parse_escalation(config.escalation, f"{where} [escalation]")
    except settings.RelaySettingsError as e:
        raise ConfigError(str(e)) from None


def _history(args: argparse.Namespace) -> int:
    from buildnotify.store import database, queries

    config = _resolve(args)
    file = database.sqlite_file(config.database)
    if file is not None and not file.exists():
        print(f"buildnotify-cli: no hub database at {file} yet", file=sys.stderr)
        return 1
    engine = _open(config)
    if database.current_revision(engine) is None:
        print(
            f"buildnotify-cli: no hub database at {database.display_url(config.database)} yet",
            file=sys.stderr,
        )
        return 1
    with engine.connect() as conn:
        found = queries.history(conn, project=args.project, limit=args.limit)
    if args.json:
        for event in found:
            print(json.dumps(event.to_dict()))
        return 0
    if not found:
        print("no events" + (f" for {args.project}" if args.project else ""))
        return 0
    rows = [
        (
            str(e.id),
            e.received_at.strftime("%Y-%m-%d %H:%M:%S") if e.received_at else "",
            e.project,
            e.pipeline,
            e.branch or "",
            e.status.value,
            e.transition.value if e.transition else "",
            (e.sha or "")[:8],
            e.author.login or e.author.name or e.author.email or "",
        )
        for e in found
    ]
    header = (
        "ID",
        "RECEIVED (UTC)",
        "PROJECT",
        "PIPELINE",
        "BRANCH",
        "STATUS",
        "TRANSITION",
        "SHA",
        "AUTHOR",
    )
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


def _db_upgrade(args: argparse.Namespace) -> int:
    from buildnotify.store import database

    engine = _open(_resolve(args))
    before = database.current_revision(engine)
    database.upgrade(engine)
    after = database.current_revision(engine)
    print(f"database {'already at' if before == after else 'upgraded to'} revision {after}")
    return 0


# -- users and projects ---------------------------------------------------------


def _accounts(args: argparse.Namespace, work: Callable[[Connection], int], writes: bool = True) -> int:
    """Run ``work`` in one transaction on the hub database, brought to the
    newest schema first; account errors become a message and exit status 1.
    Read-only commands do not create a missing SQLite database."""
    from buildnotify.store import database
    from buildnotify.store.accounts import AccountError

    config = _resolve(args)
    file = database.sqlite_file(config.database)
    if not writes and file is not None and not file.exists():
        print(f"buildnotify-cli: no hub database at {file} yet", file=sys.stderr)
        return 1
    engine = _open(config)
    try:
        database.upgrade(engine)
        with engine.begin() as conn:
            return work(conn)
    except AccountError as e:
        print(f"buildnotify-cli: {e}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()


def _print_token(name: str, token: str) -> None:
    print(f"token for {name}: {token}")
    print(
        "This token is shown only once: the hub keeps only its hash. Give it to "
        f"{name} for their client, in the BUILDNOTIFY_TOKEN environment variable or in a "
        "token file only they can read (chmod 600)."
    )


def _users_add(args: argparse.Namespace) -> int:
    from buildnotify.store import accounts

    def work(conn: Connection) -> int:
        accounts.add_developer(conn, args.name, emails=args.email, logins=args.login)
        token = accounts.issue_token(conn, args.name)
        print(f"added developer {args.name}")
        _print_token(args.name, token)
        return 0

    return _accounts(args, work)


def _users_add_identity(args: argparse.Namespace) -> int:
    from buildnotify.store import accounts

    if not args.email and not args.login:
        print("buildnotify-cli: give at least one --email or --login", file=sys.stderr)
        return EXIT_USAGE

    def work(conn: Connection) -> int:
        for kind, values in (("email", args.email), ("login", args.login)):
            for value in values:
                added = accounts.add_identity(conn, args.name, kind, value)
                print(
                    f"{kind} {value.strip().lower()} {'added to' if added else 'already belongs to'} {args.name}"
                )
        return 0

    return _accounts(args, work)


def _users_token(args: argparse.Namespace) -> int:
    from buildnotify.store import accounts

    def work(conn: Connection) -> int:
        token = accounts.issue_token(conn, args.name)
        print(f"issued a new token for {args.name}; the previous one no longer works")
        _print_token(args.name, token)
        return 0

    return _accounts(args, work)


def _users_list(args: argparse.Namespace) -> int:
    from buildnotify.store import accounts

    def work(conn: Connection) -> int:
        found = accounts.list_developers(conn)
        if not found:
            print("no developers (add one with: buildnotify-cli users add NAME --email E)")
            return 0
        rows = [
            (
                d.name,
                ", ".join(f"{kind}:{value}" for kind, value in d.identities) or "-",
                "yes" if d.has_token else "no",
            )
            for d in found
        ]
        _table(("NAME", "IDENTITIES", "TOKEN"), rows)
        return 0

    return _accounts(args, work, writes=False)


def _users_remove(args: argparse.Namespace) -> int:
    from buildnotify.store import accounts

    def work(conn: Connection) -> int:
        accounts.remove_developer(conn, args.name)
        print(f"removed developer {args.name}")
        return 0

    return _accounts(args, work)


def _users_escalate(args: argparse.Namespace) -> int:
    from buildnotify.relays import escalation

    configured = _resolve(args).relays
    if args.relay and configured and args.relay not in configured:  # no relays here: another host's config
        print(
            f"buildnotify-cli: no relay named {args.relay!r} in the hub's config "
            f"(there are: {', '.join(sorted(configured))})",
            file=sys.stderr,
        )
        return 1

    def work(conn: Connection) -> int:
        escalation.set_relay(conn, args.name, None if args.off else args.relay)
        if args.off:
            print(f"{args.name}'s alerts are not escalated")
        else:
            print(f"{args.name}'s alerts unseen by any client of theirs go out through {args.relay}")
        return 0

    return _accounts(args, work)


def _relays_status(args: argparse.Namespace) -> int:
    from buildnotify.relays import outbox

    names = list(_resolve(args).relays)

    def work(conn: Connection) -> int:
        counts = outbox.counts(conn, names)
        dead = outbox.dead(conn)
        if args.json:
            listing = [m | {"created_at": m["created_at"].isoformat()} for m in dead]
            print(json.dumps({"relays": dict(sorted(counts.items())), "dead": listing}))
            return 0
        if not counts:
            print("no relays configured and no messages")
            return 0
        rows = [(name, *(str(c[state]) for state in outbox.STATES)) for name, c in sorted(counts.items())]
        _table(("RELAY", "PENDING", "SENT", "DEAD"), rows)
        if dead:
            print()
            rows = [(str(m["id"]), m["relay"], str(m["attempts"]), m["last_error"] or "") for m in dead]
            _table(("DEAD ID", "RELAY", "ATTEMPTS", "LAST ERROR"), rows)
        return 0

    return _accounts(args, work, writes=False)


def _relays_retry(args: argparse.Namespace) -> int:
    from buildnotify.events import utcnow
    from buildnotify.relays import outbox

    def work(conn: Connection) -> int:
        if not outbox.retry(conn, args.id, utcnow()):
            print(f"buildnotify-cli: no dead relay message {args.id}", file=sys.stderr)
            return 1
        print(f"relay message {args.id} is pending again: a hub sends it within seconds")
        return 0

    return _accounts(args, work)


def _projects_list(args: argparse.Namespace) -> int:
    from buildnotify.store import accounts

    def work(conn: Connection) -> int:
        found = accounts.list_projects(conn)
        if not found:
            print("no projects")
            return 0
        rows = [(p.name, "private" if p.private else "public", ", ".join(p.members) or "-") for p in found]
        _table(("PROJECT", "VISIBILITY", "MEMBERS"), rows)
        return 0

    return _accounts(args, work, writes=False)


def _projects_private(args: argparse.Namespace) -> int:
    return _set_private(args, True)


def _projects_public(args: argparse.Namespace) -> int:
    return _set_private(args, False)


def _set_private(args: argparse.Namespace, private: bool) -> int:
    from buildnotify.store import accounts

    def work(conn: Connection) -> int:
        accounts.set_private(conn, args.project, private)
        if private:
            found = accounts.members_of(conn, args.project)
            who = ", ".join(found) if found else "no one yet (add some with projects add-member)"
            print(f"{args.project} is private: visible to its members only: {who}")
        else:
            print(f"{args.project} is public: visible to everyone")
        return 0

    return _accounts(args, work)


def _projects_members(args: argparse.Namespace) -> int:
    from buildnotify.store import accounts

    def work(conn: Connection) -> int:
        found = accounts.members_of(conn, args.project)
        print("\n".join(found) if found else f"{args.project} has no members")
        return 0

    return _accounts(args, work, writes=False)


def _projects_add_member(args: argparse.Namespace) -> int:
    from buildnotify.store import accounts

    def work(conn: Connection) -> int:
        added = accounts.add_member(conn, args.project, args.name)
        print(f"{args.name} {'is now' if added else 'was already'} a member of {args.project}")
        return 0

    return _accounts(args, work)


def _projects_remove_member(args: argparse.Namespace) -> int:
    from buildnotify.store import accounts

    def work(conn: Connection) -> int:
        if not accounts.remove_member(conn, args.project, args.name):
            print(f"buildnotify-cli: {args.name} is not a member of {args.project}", file=sys.stderr)
            return 1
        print(f"{args.name} is no longer a member of {args.project}")
        return 0

    return _accounts(args, work)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


if __name__ == "__main__":
    sys.exit(main())
