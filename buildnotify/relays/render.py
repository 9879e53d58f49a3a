"""What a relay message says: rendered once, when it is enqueued, and stored
as the exact body that will be sent (JSON), so a retry sends the same bytes
and the signature of a webhook relay covers exactly what the receiver gets."""

from __future__ import annotations

import json
import re
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


#: a longer build link is left out of a message (a cut link is a broken one):
#: URLs are stored unbounded, and a relay's body must not be
URL_LIMIT = 2000
#: Slack shows up to 40,000 characters; a message is a few short lines
CHAT_LIMIT = 4000

# an @ that starts a word: @channel, @here, @everyone, @all, @someone, <@U123>, <@&role>
_MENTION = re.compile(r"@(?=[\w&!#])")


def chat_safe(line: str, kind: str) -> str:
    """``line`` (built from webhook fields: a project, a branch, an author's
    name) unable to ping anyone: Slack's control characters escaped (so
    ``<!channel>`` is text), and a zero-width space after every ``@`` that
    starts a word (Mattermost, Rocket.Chat and Discord parse a plain
    ``@channel``, ``@all``, ``@everyone``)."""
    if kind == "slack":
        line = _slack_escaped(line)
    return _MENTION.sub("@\u200b", line)


def _slack_escaped(line: str) -> str:
    return line.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def link(event: BuildEvent) -> str | None:
    """The build's link, unless it is too long to send."""
    return event.url if event.url and len(event.url) <= URL_LIMIT else None


def summary(event: BuildEvent) -> str:
    """One line: ``acme/widget ci (main) #12 failed``."""
    where = f"{event.project} {event.pipeline}" + (f" ({event.branch})" if event.branch else "")
    number = f" #{event.build_number}" if event.build_number is not None else ""
    transition = event.transition.value if event.transition else event.status.value
    return f"{where}{number} {_WORDS.get(transition, transition)}"


def text(event: BuildEvent, developer: str | None = None, chat: str | None = None) -> str:
    """The message: the summary, the commit and its author, the link; for an
    escalated alert, addressed to its developer. ``chat`` (a relay kind):
    made :func:`chat_safe` for it, the link escaped only."""
    safe = (lambda line: chat_safe(line, chat)) if chat else (lambda line: line)
    lines = [safe(summary(event))]
    author = event.author.name or event.author.login or event.author.email
    if event.sha or author:
        commit = f"commit {event.sha[:12]}" if event.sha else "a commit"
        lines.append(safe(commit + (f" by {author}" if author else "")))
    url = link(event)
    if url:
        lines.append(_slack_escaped(url) if chat == "slack" else url)  # an @ in a link pings no one
    if developer is not None:
        lines.insert(0, safe(f"{developer}: your build alert was not seen on any client of yours:"))
    return "\n".join(lines)


def body(relay: RelaySettings, event: BuildEvent, to: list[str], developer: str | None = None) -> str:
    """The stored body for ``relay``: the JSON to POST, or for mail the
    recipients, subject and text as JSON."""
    chat = relay.kind if relay.kind in ("slack", "discord") else None
    message = text(event, developer, chat)
    payload: dict[str, Any]
    if relay.kind == "slack":  # also Mattermost and Rocket.Chat incoming webhooks
        payload = {"text": message[:CHAT_LIMIT]}
    elif relay.kind == "discord":
        # Discord refuses longer content; and whatever the text says, it pings no one
        payload = {"content": message[:2000], "allowed_mentions": {"parse": []}}
    elif relay.kind == "webhook":
        payload = {
            "relay": relay.name,
            "kind": "alert" if developer is not None else "event",
            "developer": developer,
            "text": message,
            "event": event.to_dict() | {"url": link(event)},
        }
    else:
        payload = {"to": to, "subject": f"[buildnotify] {summary(event)}", "text": message}
    return json.dumps(payload, sort_keys=True, separators=(",", ":"))
