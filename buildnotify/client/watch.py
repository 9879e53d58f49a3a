"""``buildnotify-cli watch``: follow build events in a terminal or a script.

One line per event on stdout (or one JSON object per line with ``--json``),
connection status on stderr, reconnects and resumes on its own. See
docs/watch.md for usage and exit codes.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import sys
from collections.abc import Callable
from datetime import datetime
from typing import Any, TextIO

from buildnotify.client.settings import add_connection_options
from buildnotify.closedpipe import EXIT_CLOSED_PIPE, ReaderWatch, silence

# Only light imports at module level: the parser is built for every command.

EXIT_OK = 0
EXIT_BUILD_FAILED = 1  # --until-finished: the build did not succeed
EXIT_USAGE = 2  # bad arguments, config or token file
EXIT_SIGNED_IN_ELSEWHERE = 3  # another client of the same developer took over
EXIT_REFUSED = 4  # the hub refused the login or the watch
EXIT_INTERRUPTED = 130  # Ctrl-C (SIGINT); 143 for SIGTERM
# EXIT_CLOSED_PIPE (141, from closedpipe): the reader of stdout went away (watch | head -1)

FINISHED = ("success", "failure", "error", "cancelled", "skipped")
ONLY = ("all", "changes", "failures")
STOP_GRACE = 3.0  # seconds a stopping client gets to close before the process exits anyway


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``watch`` on ``buildnotify-cli``'s subcommands."""
    parser = sub.add_parser(
        "watch",
        help="follow build events live (reconnects and resumes on its own)",
        description="Follow the build events of projects on a hub: one line per event, alerts for "
        "your own commits and claims stand out, connection status on stderr. Logs in anonymously "
        "unless a user is given (--user or the client config). Resumes where the last run stopped. "
        "Exit status: 0 done, 1 --until-finished build did not succeed, 2 usage or config error, "
        "3 signed in elsewhere, 4 refused by the hub, 130 interrupted, 141 the reader of the output went "
        "away. See docs/watch.md.",
    )
    add_connection_options(parser)
    parser.add_argument(
        "--project",
        metavar="P",
        action="append",
        default=[],
        help="watch this project, e.g. acme/widget (repeatable; a developer's default: "
        "the projects watched before)",
    )
    parser.add_argument("--branch", metavar="B", help="show only events of this branch")
    parser.add_argument(
        "--only",
        choices=ONLY,
        default="all",
        help="all events (default); changes: failed and fixed only; failures: failing builds only",
    )
    parser.add_argument("--json", action="store_true", help="one JSON object per line, with a 'type' key")
    parser.add_argument("--notify", action="store_true", help="desktop notifications (needs notify-send)")
    parser.add_argument(
        "--until-finished",
        metavar="PROJECT[@BRANCH]",
        help="exit when the next build of PROJECT (on BRANCH) finishes: 0 if it succeeded, 1 if not",
    )
    parser.add_argument(
        "--from-now", action="store_true", help="skip what happened since the last run; show new events only"
    )
    parser.set_defaults(run=run)
    return parser


# -- formatting ---------------------------------------------------------------------

RESET = "\033[0m"
BOLD = "\033[1m"
DIM = "\033[2m"
COLOURS = {
    "failure": "\033[31m",
    "error": "\033[31m",
    "success": "\033[32m",
    "running": "\033[33m",
    "queued": "\033[33m",
    "cancelled": "\033[90m",
    "skipped": "\033[90m",
}
#: Your commit's alert: bright white on red when it broke a build; bold green
#: text on the terminal's own background when it fixed one (black on green was
#: near unreadable on most themes).
BROKE_TINT = "\033[97;41m"
FIXED_TINT = "\033[32m"


def transition_words(transition: Any) -> str:
    """A transition as people say it (the wire's names are identifiers):
    ``still_failing`` -> ``still failing``."""
    return str(transition).replace("_", " ")


def wanted(event: dict[str, Any], only: str, branch: str | None) -> bool:
    if branch is not None and event.get("branch") != branch:
        return False
    if only == "changes":
        return event.get("transition") in ("failed", "fixed")
    if only == "failures":
        return event.get("status") in ("failure", "error")
    return True


def _when(event: dict[str, Any]) -> str:
    stamp = event.get("finished_at") or event.get("received_at") or event.get("started_at")
    try:
        moment = datetime.fromisoformat(stamp).astimezone() if stamp else None
    except (TypeError, ValueError):
        moment = None
    if moment is None:
        return "--:--:--"
    if moment.date() != datetime.now().astimezone().date():
        return moment.strftime("%Y-%m-%d %H:%M")
    return moment.strftime("%H:%M:%S")


def author(event: dict[str, Any]) -> str:
    """Who made the build's commit: login, else name, else email, else ``?``."""
    author = event.get("author") or {}
    return author.get("login") or author.get("name") or author.get("email") or "?"


def where(d: dict[str, Any]) -> str:
    """``acme/widget ci@main``: an event's or a claim's branch (``ci@-``: none)."""
    return f"{d.get('project')} {d.get('pipeline')}@{d.get('branch') or '-'}"


def format_event(event: dict[str, Any], colour: bool) -> str:
    status = str(event.get("status"))
    parts = [
        _when(event),
        f"{status:<9}",
        where(event),
        (event.get("sha") or "-")[:8],
        author(event),
    ]
    if event.get("transition"):
        parts.append(f"[{transition_words(event['transition'])}]")
    if event.get("url"):
        parts.append(event["url"])
    line = " ".join(parts)
    if colour:
        emphasis = BOLD if event.get("transition") in ("failed", "fixed") else ""
        line = f"{emphasis}{COLOURS.get(status, '')}{line}{RESET}"
    return line


def format_alert(alert: dict[str, Any], colour: bool) -> str:
    event = alert.get("event") or {}
    transition = event.get("transition")
    verb = {"failed": "BROKE", "still_failing": "STILL BREAKS", "fixed": "FIXED"}.get(
        transition, transition_words(transition).upper()
    )
    line = (
        f"!! YOUR COMMIT {(event.get('sha') or '')[:8]} {verb} {where(event)} "
        f"(build {event.get('build_number') or event.get('build_id')}) {event.get('url') or ''}"
    ).rstrip()
    if colour:
        tint = FIXED_TINT if transition == "fixed" else BROKE_TINT
        line = f"{BOLD}{tint}{line}{RESET}"
    return line


def format_claim(claim: dict[str, Any], colour: bool) -> str:
    state = claim.get("state")
    who = claim.get("developer")
    if state == "released":
        text = f">> {who} released {where(claim)}"
    elif state == "cleared":
        text = f">> {where(claim)} was fixed; {who}'s claim is cleared"
    else:
        note = f': "{claim["note"]}"' if claim.get("note") else ""
        text = f">> {who} is on {where(claim)}{note}"
    return f"{BOLD}\033[36m{text}{RESET}" if colour else text


# -- the terminal front end ------------------------------------------------------------


class StatusLine:
    """Connection status on stderr: one rewritten line on a terminal, plain
    lines otherwise."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.shown = ""

    def transient(self, text: str) -> None:
        if self.tty:
            self.stream.write(f"\r\033[K{DIM}{text}{RESET}")
            self.shown = text
        else:
            self.stream.write(f"buildnotify: {text}\n")
        self.stream.flush()

    def permanent(self, text: str) -> None:
        self.clear()
        self.stream.write(f"buildnotify: {text}\n")
        self.stream.flush()

    def clear(self) -> None:
        if self.tty and self.shown:
            self.stream.write("\r\033[K")
            self.stream.flush()
            self.shown = ""

    def around(self, write: Callable[[], None]) -> None:
        """Print to stdout without mangling a status line on the same terminal."""
        shown = self.shown
        self.clear()
        write()
        if shown:
            self.transient(shown)


class Notifier:
    """Desktop notifications through notify-send, where there is one."""

    def __init__(self, reactor: Any, status: StatusLine) -> None:
        self.reactor = reactor
        self.program = shutil.which("notify-send")
        if self.program is None:
            status.permanent("--notify: desktop notifications are not supported here (no notify-send found)")

    def __call__(self, title: str, body: str, urgent: bool = False) -> None:
        if self.program is None:
            return
        from twisted.internet.protocol import ProcessProtocol

        args = [self.program, "--app-name=buildnotify", f"--urgency={'critical' if urgent else 'normal'}"]
        self.reactor.spawnProcess(ProcessProtocol(), self.program, [*args, title, body], env=os.environ)


class Terminal:
    """The listener that prints: events, alerts, claims on stdout; state on stderr."""

    def __init__(
        self,
        *,
        json_lines: bool,
        only: str,
        branch: str | None,
        until: tuple[str, str | None] | None,
        stdout: TextIO,
        status: StatusLine,
        notify: Notifier | None = None,
    ) -> None:
        self.json = json_lines
        self.only = only
        self.branch = branch
        self.until = until
        self.stdout = stdout
        self.colour = not json_lines and stdout.isatty() and not os.environ.get("NO_COLOR")
        self.status = status
        self.notify = notify
        self.finished: dict[str, Any] | None = None  # the awaited build, once it finished
        self.on_finished: Callable[[dict[str, Any]], None] | None = None
        self.on_reader_gone: Callable[[], None] | None = None
        self._lives = 0

    def _out(self, line: str) -> None:
        def write() -> None:
            self.stdout.write(line + "\n")
            self.stdout.flush()

        try:
            self.status.around(write)
        except BrokenPipeError:
            self.reader_gone()

    def reader_gone(self) -> None:
        """stdout's reader went away (``watch | head -1``): what is left goes
        nowhere, quietly, and the watch should stop (``on_reader_gone``)."""
        silence(self.stdout, self.status.stream)
        if self.on_reader_gone is not None:
            self.on_reader_gone()

    def _json(self, kind: str, data: dict[str, Any]) -> None:
        self._out(json.dumps({"type": kind, **data}))

    def on_event(self, event: dict[str, Any]) -> None:
        awaited = self._awaited(event)
        if awaited or wanted(event, self.only, self.branch):
            if self.json:
                self._json("event", event)
            else:
                self._out(format_event(event, self.colour))
            if self.notify and event.get("transition") in ("failed", "fixed"):
                self.notify(
                    f"{event.get('project')} {transition_words(event.get('transition'))}",
                    f"{where(event)} by {author(event)}",
                    urgent=event.get("transition") == "failed",
                )
        if awaited and self.finished is None:
            self.finished = event
            if self.on_finished is not None:
                self.on_finished(event)

    def _awaited(self, event: dict[str, Any]) -> bool:
        if self.until is None or event.get("status") not in FINISHED:
            return False
        project, branch = self.until
        return event.get("project") == project and (branch is None or event.get("branch") == branch)

    def on_alert(self, alert: dict[str, Any]) -> None:
        if self.json:
            self._json("alert", alert)
        else:
            self._out(format_alert(alert, self.colour))
        if self.notify:
            event = alert.get("event") or {}
            self.notify(
                f"Your commit: {transition_words(event.get('transition'))}",
                where(event),
                urgent=event.get("transition") != "fixed",
            )

    def on_claim(self, claim: dict[str, Any]) -> None:
        if self.branch is not None and claim.get("branch") != self.branch:
            return
        if self.json:
            self._json("claim", claim)
        else:
            self._out(format_claim(claim, self.colour))

    def on_state(self, state: Any) -> None:
        from buildnotify.client.core import Phase

        if state.phase in (Phase.CONNECTING, Phase.CATCHING_UP, Phase.DISCONNECTED):
            self.status.transient(state.message + ("" if state.phase == Phase.DISCONNECTED else " ..."))
        elif state.phase == Phase.LIVE:
            self._lives += 1
            self.status.permanent(state.message if self._lives == 1 else "reconnected: " + state.message)
            if state.gap:
                self.status.permanent("warning: some events were pruned before this client could catch up")
            if self._lives == 1 and not self.json and state.watch:
                for claim in state.watch.get("claims") or []:
                    self.on_claim(claim)

    def on_goodbye(self, reason: str) -> None:
        self.status.permanent(f"the hub said goodbye: {reason}")

    def on_access_lost(self, projects: list[str], reason: str) -> None:
        self.status.permanent(f"no longer watching {', '.join(projects)}: {reason}")


# -- running it -----------------------------------------------------------------------


def _fail(message: str) -> int:
    print(f"buildnotify-cli watch: {message}", file=sys.stderr)
    return EXIT_USAGE


def run(args: argparse.Namespace) -> int:
    from buildnotify.client.settings import ClientConfigError, resolve_connection

    try:
        connection = resolve_connection(args, no_token_hint=" (or watch --anonymous)")
    except ClientConfigError as e:
        return _fail(str(e))
    if connection.warning:
        print(f"buildnotify-cli watch: warning: {connection.warning}", file=sys.stderr)
    until = None
    if args.until_finished:
        project, _, branch = args.until_finished.partition("@")
        if not project:
            return _fail("--until-finished takes PROJECT or PROJECT@BRANCH")
        until = (project, branch or None)
    projects: list[str] | None = list(args.project) or list(connection.config.projects) or None
    if until is not None and (projects is None or until[0] not in projects):
        projects = [*(projects or []), until[0]]
    if connection.user is None and not projects:
        return _fail("name the projects to watch with --project P (or projects in the client config)")
    return _watch(
        args,
        hub=connection.hub,
        user=connection.user,
        token=connection.token,
        projects=projects,
        until=until,
    )


def _watch(
    args: argparse.Namespace,
    *,
    hub: str,
    user: str | None,
    token: str | None,
    projects: list[str] | None,
    until: tuple[str, str | None] | None,
) -> int:
    from twisted.internet import reactor

    from buildnotify.client.core import Ending, Outcome, WatchClient
    from buildnotify.client.resume import ResumeFile

    logging.basicConfig(level=logging.WARNING, format="buildnotify: %(message)s", stream=sys.stderr)
    status = StatusLine(sys.stderr)
    terminal = Terminal(
        json_lines=args.json,
        only=args.only,
        branch=args.branch,
        until=until,
        stdout=sys.stdout,
        status=status,
        notify=Notifier(reactor, status) if args.notify else None,
    )
    # --until-finished waits for the *next* build: no replay, and the saved
    # position of the long-running watch is left alone.
    resume = None if until is not None else ResumeFile.for_hub(hub, user, projects=projects)
    try:
        client = WatchClient(
            terminal,
            hub=hub,
            user=user,
            token=token,
            projects=projects,
            resume=resume,
            start_live=args.from_now,
            reactor=reactor,
        )
    except ValueError as e:
        return _fail(str(e))
    exit_code: list[int] = []

    def finish(code: int) -> None:
        if not exit_code:
            exit_code.append(code)
        client.stop()
        reactor.callLater(STOP_GRACE, _stop_reactor, reactor)  # in case closing hangs

    def ended(outcome: Outcome) -> None:
        status.clear()
        if outcome.ending == Ending.SIGNED_IN_ELSEWHERE:
            print(f"buildnotify-cli watch: {outcome.message}", file=sys.stderr)
            code = EXIT_SIGNED_IN_ELSEWHERE
        elif outcome.ending == Ending.REFUSED:
            print(f"buildnotify-cli watch: the hub refused: {outcome.message}", file=sys.stderr)
            code = EXIT_REFUSED
        else:
            code = EXIT_OK
        if not exit_code:
            exit_code.append(code)
        _stop_reactor(reactor)

    def build_finished(event: dict[str, Any]) -> None:
        finish(EXIT_OK if event.get("status") == "success" else EXIT_BUILD_FAILED)

    terminal.on_finished = build_finished
    terminal.on_reader_gone = lambda: finish(EXIT_CLOSED_PIPE)

    def interrupted(signum: int, frame: Any) -> None:
        if exit_code:  # a second Ctrl-C: do not wait for a clean close
            reactor.callFromThread(_stop_reactor, reactor)
            return
        code = EXIT_INTERRUPTED if signum == signal.SIGINT else 128 + signum
        reactor.callFromThread(finish, code)

    def started() -> None:
        signal.signal(signal.SIGINT, interrupted)
        signal.signal(signal.SIGTERM, interrupted)
        ReaderWatch.start(reactor, sys.stdout, terminal.reader_gone)  # no need to wait for an event
        client.start().addCallback(ended)

    reactor.callWhenRunning(started)
    reactor.run()
    status.clear()
    return exit_code[0] if exit_code else EXIT_INTERRUPTED


def _stop_reactor(reactor: Any) -> None:
    if reactor.running:
        reactor.stop()


def main(argv: list[str] | None = None) -> int:
    """``python -m buildnotify.client.watch``: the same as ``buildnotify-cli watch``."""
    parser = argparse.ArgumentParser(prog="buildnotify-cli")
    sub = parser.add_subparsers()
    add_parser(sub)
    args = parser.parse_args(["watch", *(sys.argv[1:] if argv is None else argv)])
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
