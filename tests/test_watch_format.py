"""What ``buildnotify-cli watch`` prints for people: transitions in words,
alert lines readable on a terminal, and projects it no longer shows."""

from __future__ import annotations

import io
from typing import Any

from buildnotify.client import watch

EVENT: dict[str, Any] = {
    "id": 7,
    "project": "acme/widget",
    "pipeline": "ci",
    "branch": "main",
    "sha": "1a2b3c4d5e6f",
    "status": "failure",
    "transition": "still_failing",
    "url": "https://ci.example.com/812",
    "author": {"login": "alice"},
    "build_number": 812,
    "finished_at": "2024-05-14T10:00:00+00:00",
}


def test_transitions_print_as_words() -> None:
    for transition, words in (
        ("failed", "[failed]"),
        ("still_failing", "[still failing]"),
        ("fixed", "[fixed]"),
        ("passed", "[passed]"),
        ("started", "[started]"),
    ):
        line = watch.format_event(EVENT | {"transition": transition}, colour=False)
        assert words in line, line
        assert "_" not in line.replace("ci.example", ""), f"a raw identifier in {line!r}"


def test_alert_lines_say_what_your_commit_did() -> None:
    lines = {
        t: watch.format_alert({"alert_id": 1, "event": EVENT | {"transition": t}}, colour=False)
        for t in ("failed", "still_failing", "fixed")
    }
    assert lines["failed"].startswith("!! YOUR COMMIT 1a2b3c4d BROKE acme/widget ci@main (build 812)")
    assert "STILL BREAKS acme/widget ci@main" in lines["still_failing"]
    assert "FIXED acme/widget ci@main" in lines["fixed"]


def test_a_fixed_alert_is_not_black_on_green() -> None:
    fixed = watch.format_alert({"alert_id": 1, "event": EVENT | {"transition": "fixed"}}, colour=True)
    broke = watch.format_alert({"alert_id": 2, "event": EVENT | {"transition": "failed"}}, colour=True)
    assert "\033[42;30m" not in fixed and ";30m" not in fixed, "black text on a green bar is unreadable"
    assert fixed.startswith(watch.BOLD + "\033[32m"), "a fix is bold green text on the terminal's background"
    assert "\033[97;41m" in broke, "a breakage is bright white on red"
    assert fixed.endswith(watch.RESET) and broke.endswith(watch.RESET)


def test_lost_access_is_said_on_stderr() -> None:
    stdout, stderr = io.StringIO(), io.StringIO()
    terminal = watch.Terminal(
        json_lines=False, only="all", branch=None, until=None, stdout=stdout, status=watch.StatusLine(stderr)
    )
    terminal.on_access_lost(["acme/widget", "acme/gadget"], "the project was made private")
    assert stderr.getvalue() == (
        "buildnotify: no longer watching acme/widget, acme/gadget: the project was made private\n"
    )
    assert stdout.getvalue() == ""
