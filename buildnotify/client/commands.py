"""One-shot client commands: ``status``, ``claim``, ``unclaim``, ``ack``,
``mute``, ``unmute``.

Each logs in without a mind (a *clientless* session, docs/protocol.md),
makes its calls, prints, and exits. The hub, user and token are found as for
``watch`` (--hub, --user, --token-file, --client-config, BUILDNOTIFY_TOKEN).
A clientless login does not replace the developer's running ``watch``.
See the "Other commands" section of docs/watch.md for exit codes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timezone
from typing import Any, TextIO

from buildnotify.client.settings import add_connection_options
from buildnotify.client.watch import COLOURS, RESET, transition_words, where

# Only light imports at module level: the parser is built for every command.

EXIT_OK = 0
EXIT_NO = 1  # the hub said no (NotAllowed, session ended), or there was nothing to do
EXIT_USAGE = 2  # bad arguments, config or token file
EXIT_REFUSED = 4  # the hub refused the login
EXIT_UNREACHABLE = 5  # could not connect, the connection dropped, or no answer in --timeout
EXIT_INTERRUPTED = 130

DEFAULT_TIMEOUT = 30.0
PROG = "buildnotify-cli"
NO_BRANCH = "-"  # --branch -: the build has no branch


EXIT_HELP = (
    "Exit status: 0 done, 1 the hub said no or nothing to do, 2 usage or config error, "
    "4 login refused, 5 hub unreachable, 141 the reader of the output went away. See docs/watch.md."
)


# -- the parser --------------------------------------------------------------------------


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register the one-shot commands on ``buildnotify-cli``'s subcommands."""
    status = sub.add_parser(
        "status",
        help="the latest finished build of every pipeline and branch, with claims",
        description="Show the newest finished build of every (project, pipeline, branch): status, "
        "transition, commit, author, age and who claimed it. Default projects: the client config's, "
        "else a developer's watched projects; anonymous sessions must name them. " + EXIT_HELP,
    )
    _connection_options(status, anonymous=True)
    status.add_argument(
        "--project", metavar="P", action="append", default=[], help="this project (repeatable)"
    )
    status.add_argument("--json", action="store_true", help="one JSON object per line (the hub's dicts)")
    status.set_defaults(run=_command("status", _status, developer=False))

    claim = sub.add_parser(
        "claim",
        help='"I\'m on it": claim a failing build',
        description="Claim a failing (project, pipeline, branch) so others know someone is on it. "
        "Without --branch: the pipeline's only failing branch. Only a failing build can be claimed; "
        "the claim is cleared when the build is fixed. " + EXIT_HELP,
    )
    claim.add_argument("project", metavar="PROJECT", help="e.g. acme/widget")
    claim.add_argument("pipeline", metavar="PIPELINE", help="workflow / pipeline / job name, e.g. ci")
    claim.add_argument("--branch", metavar="B", help=f"the branch ({NO_BRANCH}: a build without one)")
    claim.add_argument("--note", metavar="TEXT", help='what you are doing, e.g. "flaky test, looking"')
    _connection_options(claim)
    claim.set_defaults(run=_command("claim", _claim))

    unclaim = sub.add_parser(
        "unclaim",
        help="release your claim on a build",
        description="Release your claim. Without --branch: the pipeline's only branch you claimed. "
        + EXIT_HELP,
    )
    unclaim.add_argument("project", metavar="PROJECT", help="e.g. acme/widget")
    unclaim.add_argument("pipeline", metavar="PIPELINE", help="e.g. ci")
    unclaim.add_argument("--branch", metavar="B", help=f"the branch ({NO_BRANCH}: a build without one)")
    _connection_options(unclaim)
    unclaim.set_defaults(run=_command("unclaim", _unclaim))

    ack = sub.add_parser(
        "ack",
        help="list or acknowledge your pending alerts",
        description="Without arguments, list your pending (unacknowledged) alerts. With alert ids, "
        "or --all, acknowledge them: they are not sent to your client again. " + EXIT_HELP,
    )
    ack.add_argument("alert_ids", metavar="ALERT_ID", type=int, nargs="*", help="an alert's id")
    ack.add_argument("--all", action="store_true", help="acknowledge every pending alert")
    ack.add_argument("--json", action="store_true", help="list: one alert object per line")
    _connection_options(ack)
    ack.set_defaults(run=_command("ack", _ack))

    mute = sub.add_parser(
        "mute",
        help="stop a project's events and alerts reaching your client for a while",
        description="Mute PROJECT: none of its events or alerts are pushed to your client until "
        "--minutes pass (default: until you unmute it). Alerts stay pending. " + EXIT_HELP,
    )
    mute.add_argument("project", metavar="PROJECT", help="e.g. acme/widget")
    mute.add_argument("--minutes", metavar="N", type=float, help="for N minutes (default: until unmuted)")
    _connection_options(mute)
    mute.set_defaults(run=_command("mute", _mute))

    unmute = sub.add_parser(
        "unmute",
        help="push a muted project's events and alerts to your client again",
        description="Unmute PROJECT. " + EXIT_HELP,
    )
    unmute.add_argument("project", metavar="PROJECT", help="e.g. acme/widget")
    _connection_options(unmute)
    unmute.set_defaults(run=_command("unmute", _unmute))


def _connection_options(parser: argparse.ArgumentParser, anonymous: bool = False) -> None:
    """The same hub, user and token options as ``watch``, and ``--timeout``."""
    add_connection_options(parser, anonymous=anonymous)
    parser.add_argument(
        "--timeout",
        metavar="S",
        type=float,
        default=DEFAULT_TIMEOUT,
        help=f"give up when the hub has not answered in S seconds (default {DEFAULT_TIMEOUT:.0f})",
    )


# -- running a command ---------------------------------------------------------------------


class Failed(Exception):
    """Stop the command: print ``message`` (if any) and exit with ``code``."""

    def __init__(self, code: int, message: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclasses.dataclass
class Context:
    """What a command's body gets: its arguments, the logged-in perspective, where to print."""

    args: argparse.Namespace
    hub: str
    user: str | None
    perspective: Any
    stdout: TextIO

    async def call(self, method: str, *args: Any) -> Any:
        from twisted.spread import pb

        try:
            return await self.perspective.callRemote(method, *args)
        except pb.RemoteError as e:
            raise Failed(EXIT_NO, str(e)) from None

    def print(self, line: str = "") -> None:
        self.stdout.write(line + "\n")

    @property
    def colour(self) -> bool:
        return self.stdout.isatty() and not os.environ.get("NO_COLOR")


Body = Callable[[Context], Awaitable[int]]


def _say(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr)


def _command(name: str, body: Body, developer: bool = True) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        return _run(args, name, body, developer)

    return run


def _run(args: argparse.Namespace, name: str, body: Body, developer: bool) -> int:
    """Resolve hub, user and token like ``watch``; check the arguments; then
    connect, log in, run ``body`` and exit with its code."""
    from buildnotify.client.settings import ClientConfigError, resolve_connection

    needs_user = (
        f"{name} needs a developer: give --user NAME (or set user in the client config)"
        if developer
        else None
    )
    try:
        connection = resolve_connection(args, needs_user=needs_user)
    except ClientConfigError as e:
        _say(str(e))
        return EXIT_USAGE
    if connection.warning:
        _say(f"warning: {connection.warning}")
    hub, user = connection.hub, connection.user
    if args.timeout <= 0:
        _say("--timeout must be more than 0 seconds")
        return EXIT_USAGE
    try:
        _check(args, name, connection.config, user)
    except Failed as e:
        if e.message:
            _say(e.message)
        return e.code
    from twisted.internet import reactor

    return _in_reactor(reactor, lambda: _session(args, body, hub, user, connection.token))


def _check(args: argparse.Namespace, name: str, config: Any, user: str | None) -> None:
    """Mistakes found before connecting; resolves defaults on ``args``."""
    if name == "status":
        args.project = list(args.project) or list(config.projects) or None
        if user is None and not args.project:
            raise Failed(EXIT_USAGE, "name the projects with --project P (or projects in the client config)")
    elif name == "ack":
        if args.all and args.alert_ids:
            raise Failed(EXIT_USAGE, "give alert ids or --all, not both")
    elif name == "mute" and args.minutes is not None and not args.minutes > 0:
        raise Failed(EXIT_USAGE, "--minutes must be more than 0 (leave it out to mute until unmuted)")


def _in_reactor(reactor: Any, work: Callable[[], Awaitable[int]]) -> int:
    """Run ``work`` in the reactor; its result is the exit code. The reactor
    stops whatever ``work`` ends with; an error is raised again here, after it
    stopped (reporting it from inside the reactor could fail in turn, say on a
    closed pipe, and leave the reactor running for ever)."""
    import signal

    from twisted.internet.defer import Deferred
    from twisted.python.failure import Failure

    ended: list[int | Failure] = []

    def done(result: int | Failure) -> None:
        ended.append(result)
        if reactor.running:
            reactor.stop()

    def interrupted(signum: int, frame: Any) -> None:
        ended.append(EXIT_INTERRUPTED if signum == signal.SIGINT else 128 + signum)
        reactor.callFromThread(reactor.stop)

    def start() -> None:
        signal.signal(signal.SIGINT, interrupted)
        signal.signal(signal.SIGTERM, interrupted)
        Deferred.fromCoroutine(work()).addBoth(done)  # type: ignore[arg-type]

    reactor.callWhenRunning(start)
    reactor.run(installSignalHandlers=False)
    if not ended:
        return EXIT_INTERRUPTED
    if isinstance(ended[0], Failure):
        ended[0].raiseException()  # a closed pipe (| head -1) is handled by cli.main
    return ended[0]


async def _session(
    args: argparse.Namespace, body: Body, hub: str, user: str | None, token: str | None
) -> int:
    """``hub``: one endpoint, or several (comma separated): the first that
    answers is used."""
    from twisted.internet import defer, error, reactor
    from twisted.internet.endpoints import clientFromString
    from twisted.spread import pb

    from buildnotify.client.core import describe
    from buildnotify.client.settings import hub_list
    from buildnotify.protocol import SECURITY

    broker = None

    async def work() -> int:
        nonlocal broker, hub
        failures: list[tuple[str, str]] = []
        for endpoint in hub_list(hub):  # resolve_connection made sure each parses
            factory = pb.PBClientFactory(security=SECURITY)
            try:
                broker = await clientFromString(reactor, endpoint).connect(factory)
                root = await factory.getRootObject()
                hub = endpoint
                break
            except defer.CancelledError:
                raise
            except Exception as e:
                if broker is not None and broker.transport is not None:
                    broker.transport.loseConnection()
                broker = None
                failures.append((endpoint, describe(e)))
        else:
            if len(failures) == 1:
                raise Failed(EXIT_UNREACHABLE, f"cannot reach the hub at {hub}: {failures[0][1]}")
            tried = "; ".join(f"{endpoint} ({why})" for endpoint, why in failures)
            raise Failed(EXIT_UNREACHABLE, f"cannot reach the hub at any of {tried}")
        try:
            if user is None:
                perspective = await root.callRemote("loginAnonymous", None)
            else:
                perspective = await root.callRemote("login", user, token, None)
        except pb.RemoteError as e:
            raise Failed(EXIT_REFUSED, f"the hub refused the login: {e}") from None
        context = Context(args=args, hub=hub, user=user, perspective=perspective, stdout=sys.stdout)
        code = await body(context)
        sys.stdout.flush()
        return code

    try:
        return await defer.Deferred.fromCoroutine(work()).addTimeout(args.timeout, reactor)
    except Failed as e:
        sys.stdout.flush()
        if e.message:
            _say(e.message)
        return e.code
    except defer.TimeoutError:
        _say(f"the hub at {hub} did not answer within {args.timeout:g} s")
        return EXIT_UNREACHABLE
    except (pb.PBConnectionLost, pb.DeadReferenceError, error.ConnectionLost, error.ConnectionDone) as e:
        _say(f"lost the connection to the hub at {hub}: {describe(e)}")
        return EXIT_UNREACHABLE
    finally:
        if broker is not None and broker.transport is not None:
            broker.transport.loseConnection()


# -- formatting ----------------------------------------------------------------------------


def _author(event: dict[str, Any]) -> str:
    author = event.get("author") or {}
    return author.get("login") or author.get("name") or author.get("email") or ""


def _moment(stamp: Any) -> datetime | None:
    try:
        moment = datetime.fromisoformat(stamp) if stamp else None
    except (TypeError, ValueError):
        return None
    if moment is not None and moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment


def age(event: dict[str, Any], now: datetime | None = None) -> str:
    """How long ago the build finished (else was received): 45s, 12m, 3h, 5d."""
    moment = _moment(event.get("finished_at") or event.get("received_at") or event.get("started_at"))
    if moment is None:
        return "?"
    seconds = max(0, int(((now or datetime.now(timezone.utc)) - moment).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def claim_text(claim: dict[str, Any] | None) -> str:
    if not claim:
        return ""
    note = claim.get("note")
    return f"{claim.get('developer')}: {note}" if note else str(claim.get("developer"))


STATUS_HEADER = ("PROJECT", "PIPELINE", "BRANCH", "STATUS", "TRANSITION", "SHA", "AUTHOR", "AGE", "CLAIM")


def status_rows(states: Sequence[dict[str, Any]], now: datetime | None = None) -> list[tuple[str, ...]]:
    ordered = sorted(
        states, key=lambda e: (e.get("project") or "", e.get("pipeline") or "", e.get("branch") or "")
    )
    return [
        (
            str(e.get("project")),
            str(e.get("pipeline")),
            e.get("branch") or NO_BRANCH,
            str(e.get("status")),
            transition_words(e["transition"]) if e.get("transition") else "",
            (e.get("sha") or "")[:8],
            _author(e),
            age(e, now),
            claim_text(e.get("claim")),
        )
        for e in ordered
    ]


def table(
    header: Sequence[str], rows: Sequence[Sequence[str]], colour_column: int | None = None
) -> list[str]:
    """Left-aligned columns; with ``colour_column``, that cell coloured by its value."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = []
    for n, row in enumerate([header, *rows]):
        cells = [cell.ljust(w) for cell, w in zip(row, widths, strict=True)]
        if colour_column is not None and n > 0 and row[colour_column] in COLOURS:
            cells[colour_column] = f"{COLOURS[row[colour_column]]}{cells[colour_column]}{RESET}"
        lines.append("  ".join(cells).rstrip())
    return lines


def _until(iso: str | None) -> str:
    moment = _moment(iso)
    if moment is None or moment.year >= 9999:
        return "until you unmute it"
    local = moment.astimezone()
    same_day = local.date() == datetime.now().astimezone().date()
    return "until " + local.strftime("%H:%M" if same_day else "%Y-%m-%d %H:%M")


# -- the commands --------------------------------------------------------------------------


async def _status(ctx: Context) -> int:
    projects = ctx.args.project
    states = await ctx.call("status", projects)
    if ctx.args.json:
        for state in states:
            ctx.print(json.dumps(state))
        return EXIT_OK
    if not states:
        if projects:
            ctx.print(f"no finished builds of {', '.join(projects)}")
        else:
            ctx.print("no finished builds of your watched projects (name projects with --project P)")
        return EXIT_OK
    for line in table(STATUS_HEADER, status_rows(states), colour_column=3 if ctx.colour else None):
        ctx.print(line)
    return EXIT_OK


def _branch_arg(branch: str | None) -> tuple[bool, str | None]:
    """(given, branch) from --branch; ``-`` is a build without a branch."""
    if branch is None:
        return False, None
    return True, None if branch == NO_BRANCH else branch


async def _claim(ctx: Context) -> int:
    args = ctx.args
    given, branch = _branch_arg(args.branch)
    if not given:
        states = await ctx.call("status", [args.project])
        mine = [s for s in states if s.get("pipeline") == args.pipeline]
        failing = [s for s in mine if s.get("status") in ("failure", "error")]
        if len(failing) > 1:
            branches = ", ".join(s.get("branch") or NO_BRANCH for s in failing)
            raise Failed(
                EXIT_USAGE,
                f"{args.project} {args.pipeline} is failing on several branches ({branches}); "
                "pick one with --branch B",
            )
        if failing:
            branch = failing[0].get("branch")
        elif len(mine) == 1:
            branch = mine[0].get("branch")  # not failing: the hub will say so
    claim = await ctx.call("claim", args.project, args.pipeline, branch, args.note)
    note = f': "{claim["note"]}"' if claim.get("note") else ""
    ctx.print(f"you are on {where(claim)}{note}")
    return EXIT_OK


async def _unclaim(ctx: Context) -> int:
    args = ctx.args
    given, branch = _branch_arg(args.branch)
    if not given:
        states = await ctx.call("status", [args.project])
        claimed = [
            s
            for s in states
            if s.get("pipeline") == args.pipeline and (s.get("claim") or {}).get("developer") == ctx.user
        ]
        if len(claimed) > 1:
            branches = ", ".join(s.get("branch") or NO_BRANCH for s in claimed)
            raise Failed(
                EXIT_USAGE,
                f"you claimed {args.project} {args.pipeline} on several branches ({branches}); "
                "pick one with --branch B",
            )
        if claimed:
            branch = claimed[0].get("branch")
    place = where({"project": args.project, "pipeline": args.pipeline, "branch": branch})
    if not await ctx.call("unclaim", args.project, args.pipeline, branch):
        raise Failed(EXIT_NO, f"you have no claim on {place}")
    ctx.print(f"released your claim on {place}")
    return EXIT_OK


def alert_line(alert: dict[str, Any]) -> tuple[str, ...]:
    event = alert.get("event") or {}
    return (
        str(alert.get("alert_id")),
        age(event),
        transition_words(event["transition"]) if event.get("transition") else "",
        where(event),
        (event.get("sha") or "")[:8],
        event.get("url") or "",
    )


async def _ack(ctx: Context) -> int:
    args = ctx.args
    if not args.all and not args.alert_ids:
        pending = await ctx.call("alerts")
        if args.json:
            for alert in pending:
                ctx.print(json.dumps(alert))
            return EXIT_OK
        if not pending:
            ctx.print("no pending alerts")
            return EXIT_OK
        for line in table(
            ("ID", "AGE", "TRANSITION", "BUILD", "SHA", "URL"), [alert_line(a) for a in pending]
        ):
            ctx.print(line)
        ctx.print(f"acknowledge with: {PROG} ack ID ... (or --all)")
        return EXIT_OK
    if args.all:
        ids = [a["alert_id"] for a in await ctx.call("alerts")]
        if not ids:
            raise Failed(EXIT_NO, "no pending alerts to acknowledge")
    else:
        ids = list(dict.fromkeys(args.alert_ids))
    count = await ctx.call("ack", ids)
    if count == 0:
        raise Failed(EXIT_NO, "no alert acknowledged: unknown ids, or acknowledged already")
    plural = "" if count == 1 else "s"
    if count < len(ids):
        ctx.print(f"acknowledged {count} of {len(ids)} alerts (the others: unknown, or acknowledged already)")
    else:
        ctx.print(f"acknowledged {count} alert{plural}")
    return EXIT_OK


async def _mute(ctx: Context) -> int:
    answer = await ctx.call("mute", ctx.args.project, ctx.args.minutes)
    ctx.print(f"muted {answer.get('project')} {_until(answer.get('muted_until'))}")
    return EXIT_OK


async def _unmute(ctx: Context) -> int:
    project = ctx.args.project
    saved = (await ctx.call("settings")).get(project) or {}
    moment = _moment(saved.get("muted_until"))
    await ctx.call("unmute", project)
    if moment is None or moment <= datetime.now(timezone.utc):
        raise Failed(EXIT_NO, f"{project} was not muted")
    ctx.print(f"unmuted {project}")
    return EXIT_OK
