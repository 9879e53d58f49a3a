"""What a ``[relays.<name>]`` table and the ``[escalation]`` table say, read
and checked. The config module keeps those tables as they are (with the
environment's URLs, secrets and passwords already applied); this module
turns them into settings, so that relays stay importable by the server and
the command line only."""

from __future__ import annotations

import dataclasses
import fnmatch
import re
from collections.abc import Mapping
from typing import Any

from buildnotify.events import BuildEvent, Transition

KINDS = ("slack", "discord", "webhook", "smtp")
#: what a relay forwards unless told otherwise
DEFAULT_TRANSITIONS = (Transition.FAILED.value, Transition.FIXED.value)
#: ``to = "author"``: mail the commit's author (an escalation: the developer)
AUTHOR = "author"
#: the longest ``timeout``: an attempt (at most twice it: the answer, then its
#: body) must end well inside the sender's lease, or another node would claim
#: the message and send it while this one still waits for its answer
MAX_TIMEOUT = 120.0


# one bare address, ASCII: what an author's email from a webhook must be to be mailed
_ADDRESS = re.compile(r"[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")


def mailable(address: str | None) -> bool:
    """Whether ``address`` (an author's email, from a webhook) is one plain
    address: not a list (``a@x, b@y``), not a display name, no spaces."""
    return bool(address) and _ADDRESS.fullmatch(address) is not None


class RelaySettingsError(ValueError):
    """A relay or escalation setting that cannot work, worded for the config's author."""


@dataclasses.dataclass(frozen=True)
class RelaySettings:
    """One relay. Secrets and passwords are kept out of ``repr`` (and so out
    of every log line and traceback that shows the settings)."""

    name: str
    kind: str
    url: str | None = dataclasses.field(default=None, repr=False)  # a webhook URL is a secret too
    secret: str | None = dataclasses.field(default=None, repr=False)
    projects: tuple[str, ...] = ("*",)
    branches: tuple[str, ...] = ("*",)
    transitions: tuple[str, ...] = DEFAULT_TRANSITIONS
    give_up_after: float = 24 * 3600.0  # seconds from enqueueing until a message is dead
    timeout: float = 30.0  # seconds for one attempt
    # smtp
    host: str = "localhost"
    port: int = 25
    sender: str = "buildnotify@localhost"  # the ``from`` key
    to: tuple[str, ...] = ()  # addresses, or ("author",)
    starttls: bool = False
    username: str | None = None
    password: str | None = dataclasses.field(default=None, repr=False)

    def selects(self, event: BuildEvent) -> bool:
        """Whether this relay forwards ``event`` (globs on project and branch)."""
        transition = event.transition.value if event.transition else None
        return (
            transition in self.transitions
            and any(fnmatch.fnmatchcase(event.project, p) for p in self.projects)
            and any(fnmatch.fnmatchcase(event.branch or "", b) for b in self.branches)
        )

    @property
    def to_author(self) -> bool:
        return self.to == (AUTHOR,)


@dataclasses.dataclass(frozen=True)
class EscalationSettings:
    """``[escalation]``: an alert no attached client received within
    ``after`` seconds goes out through the developer's relay, once; alerts
    older than ``max_age`` are not escalated (turning escalation on does not
    mail a developer's whole backlog)."""

    after: float = 300.0
    check_every: float = 10.0
    max_age: float = 24 * 3600.0


_STRING_KEYS = ("url", "secret", "host", "from", "username", "password")
_NUMBER_KEYS = ("give_up_after", "timeout")
_LIST_KEYS = ("projects", "branches", "transitions")
_KEYS = {"kind", "port", "starttls", "to", *_STRING_KEYS, *_NUMBER_KEYS, *_LIST_KEYS}


def parse_relays(tables: Mapping[str, Any], where: str = "config") -> dict[str, RelaySettings]:
    """The ``[relays]`` table: one sub-table per relay."""
    return {name: parse_relay(name, table, f"{where} [relays.{name}]") for name, table in tables.items()}


def parse_relay(name: str, table: Any, where: str) -> RelaySettings:
    if not isinstance(table, Mapping):
        raise RelaySettingsError(f"{where}: must be a table")
    unknown = set(table) - _KEYS
    if unknown:
        raise RelaySettingsError(
            f"{where}: unknown key(s) {sorted(unknown)}; expected some of {sorted(_KEYS)}"
        )
    kind = table.get("kind")
    if kind not in KINDS:
        raise RelaySettingsError(f"{where}: kind must be one of {', '.join(KINDS)}")
    values: dict[str, Any] = {"name": name, "kind": kind}
    for key in _STRING_KEYS:
        if key in table:
            if not isinstance(table[key], str) or not table[key]:
                raise RelaySettingsError(f"{where}: {key} must be a non-empty string")
            values["sender" if key == "from" else key] = table[key]
    for key in _NUMBER_KEYS:
        if key in table:
            values[key] = _positive(table[key], f"{where}: {key}")
    if values.get("timeout", 0) > MAX_TIMEOUT:
        raise RelaySettingsError(f"{where}: timeout must be at most {MAX_TIMEOUT:g} seconds")
    for key in _LIST_KEYS:
        if key in table:
            items = table[key]
            if not isinstance(items, list) or not items or not all(isinstance(i, str) for i in items):
                raise RelaySettingsError(f"{where}: {key} must be a non-empty list of strings")
            values[key] = tuple(items)
    known = {t.value for t in Transition}
    if not set(values.get("transitions", ())) <= known:
        raise RelaySettingsError(f"{where}: transitions must be some of {', '.join(sorted(known))}")
    if "port" in table:
        if (
            not isinstance(table["port"], int)
            or isinstance(table["port"], bool)
            or not 0 < table["port"] < 65536
        ):
            raise RelaySettingsError(f"{where}: port must be a TCP port number")
        values["port"] = table["port"]
    if "starttls" in table:
        if not isinstance(table["starttls"], bool):
            raise RelaySettingsError(f"{where}: starttls must be true or false")
        values["starttls"] = table["starttls"]
    if "to" in table:
        to = table["to"]
        if to == AUTHOR:
            values["to"] = (AUTHOR,)
        elif isinstance(to, list) and to and all(isinstance(a, str) and "@" in a for a in to):
            values["to"] = tuple(to)
        else:
            raise RelaySettingsError(f'{where}: to must be "author" or a list of email addresses')
    if kind == "smtp":
        if not values.get("to"):
            raise RelaySettingsError(f'{where}: an smtp relay needs to = ["address", ...] or to = "author"')
    elif not values.get("url", "").startswith(("http://", "https://")):
        raise RelaySettingsError(
            f"{where}: a {kind} relay needs url = an http(s) URL (or BUILDNOTIFY_RELAY_{env_name(name)}_URL)"
        )
    return RelaySettings(**values)


def parse_escalation(table: Any, where: str = "config [escalation]") -> EscalationSettings:
    if not isinstance(table, Mapping):
        raise RelaySettingsError(f"{where}: must be a table")
    allowed = {f.name for f in dataclasses.fields(EscalationSettings)}
    unknown = set(table) - allowed
    if unknown:
        raise RelaySettingsError(
            f"{where}: unknown key(s) {sorted(unknown)}; expected some of {sorted(allowed)}"
        )
    return EscalationSettings(**{key: _positive(value, f"{where}: {key}") for key, value in table.items()})


def env_name(relay: str) -> str:
    """``ops-chat`` -> ``OPS_CHAT``, as in BUILDNOTIFY_RELAY_OPS_CHAT_URL."""
    return "".join(c if c.isalnum() else "_" for c in relay.upper())


def _positive(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise RelaySettingsError(f"{where} must be a positive number of seconds")
    return float(value)
