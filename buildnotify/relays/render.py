"""What a relay message says: rendered once, when it is enqueued, and stored
as the exact body that will be sent (JSON), so a retry sends the same bytes
and the signature of a webhook relay covers exactly what the receiver gets."""

from __future__ import annotations

import json
from typing import Any

from buildnotify.events import BuildEvent
from buildnotify.relays.settings import RelaySettings

_WORDS = {
    "failed": "failed",
    "still_failing": "is still failing",
    "fixed": "is fixed",
    "passed": "passed",
    "started": "started",
}


def summary(event: BuildEvent) -> str:
    """One line: ``acme/widget ci (main) #12 failed``."""
    where = f"{event.project} {event.pipeline}" + (f" ({event.branch})" if event.branch else "")
    number = f" #{event.build_number}" if event.build_number is not None else ""
    transition = event.transition.value if event.transition else event.status.value
    return f"{where}{number} {_WORDS.get(transition, transition)}"


def text(event: BuildEvent, developer: str | None = None) -> str:
    """The message: the summary, the commit and its author, the link; for an
    escalated alert, addressed to its developer."""
    lines = [summary(event)]
    author = event.author.name or event.author.login or event.author.email
    if event.sha or author:
        commit = f"commit {event.sha[:12]}" if event.sha else "a commit"
        lines.append(commit + (f" by {author}" if author else ""))
    if event.url:
        lines.append(event.url)
    if developer is not None:
        lines.insert(0, f"{developer}: your build alert was not seen on any client of yours:")
    return "\n".join(lines)


def body(relay: RelaySettings, event: BuildEvent, to: list[str], developer: str | None = None) -> str:
    """The stored body for ``relay``: the JSON to POST, or for mail the
    recipients, subject and text as JSON."""
    message = text(event, developer)
    payload: dict[str, Any]
    if relay.kind == "slack":  # also Mattermost and Rocket.Chat incoming webhooks
        payload = {"text": message}
    elif relay.kind == "discord":
        payload = {"content": message[:2000]}  # Discord refuses longer content
    elif relay.kind == "webhook":
        payload = {
            "relay": relay.name,
            "kind": "alert" if developer is not None else "event",
            "developer": developer,
            "text": message,
            "event": event.to_dict(),
        }
    else:
        payload = {"to": to, "subject": f"[buildnotify] {summary(event)}", "text": message}
    return json.dumps(payload, sort_keys=True, separators=(",", ":"))
