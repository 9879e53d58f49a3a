"""``buildnotify-cli``: run the hub and look at what it stored."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from buildnotify import config as configuration
from buildnotify.config import ConfigError, HubConfig

EXIT_USAGE = 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help()
        return EXIT_USAGE
    try:
        return args.run(args)
    except ConfigError as e:
        print(f"buildnotify-cli: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


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
        f"{configuration.default_config_path()} and listens on loopback only.",
    )
    _config_options(serve)
    serve.add_argument(
        "--http", metavar="ENDPOINT", help=f"webhook listener (default {configuration.DEFAULT_HTTP})"
    )
    serve.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
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
    return parser


def _config_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", type=Path, help="hub config file (TOML)")
    parser.add_argument("--db", metavar="URL", help="database: a SQLite file path or a SQLAlchemy URL")


def _resolve(args: argparse.Namespace, generate: bool = False) -> HubConfig:
    if args.config:
        config = configuration.load(args.config)
    else:
        path = configuration.default_config_path()
        if path.exists():
            config = configuration.load(path)
        elif generate:
            config = configuration.generate(path)
            print(f"buildnotify: generated a config with fresh secrets at {path}", flush=True)
        else:
            config = HubConfig()
    if args.db:
        config = config.replace(database=args.db)
    return config


def _serve(args: argparse.Namespace) -> int:
    from twisted.internet import reactor
    from twisted.internet.defer import Deferred
    from twisted.logger import STDLibLogObserver, globalLogBeginner

    from buildnotify.server import Hub

    config = _resolve(args, generate=True)
    if args.http:
        config = config.replace(http=args.http)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stdout,
    )
    globalLogBeginner.beginLoggingTo([STDLibLogObserver()], redirectStandardIO=False)
    if config.path:
        logging.getLogger("buildnotify").info("config %s", config.path)
    exit_code = [0]

    def started(hub: Hub) -> None:
        reactor.addSystemEventTrigger("before", "shutdown", lambda: Deferred.fromCoroutine(hub.stop()))

    def failed(failure: object) -> None:
        print(f"buildnotify-cli: could not start the hub: {failure.getErrorMessage()}", file=sys.stderr)  # type: ignore[attr-defined]
        exit_code[0] = 1
        reactor.stop()

    def start() -> None:
        Deferred.fromCoroutine(Hub.start(config, reactor)).addCallbacks(started, failed)

    reactor.callWhenRunning(start)
    reactor.run()
    return exit_code[0]


def _history(args: argparse.Namespace) -> int:
    from buildnotify.store import database, queries

    config = _resolve(args)
    file = database.sqlite_file(config.database)
    if file is not None and not file.exists():
        print(f"buildnotify-cli: no hub database at {file} yet", file=sys.stderr)
        return 1
    engine = database.create(config.database)
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

    config = _resolve(args)
    engine = database.create(config.database)
    before = database.current_revision(engine)
    database.upgrade(engine)
    after = database.current_revision(engine)
    print(f"database {'already at' if before == after else 'upgraded to'} revision {after}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
