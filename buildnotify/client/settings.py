"""Client defaults: the client config file and where the token comes from.

``~/.config/buildnotify/client.toml`` (the platform's user config directory),
every key optional::

    hub = "tls:hub.example.com:8787"   # or several nodes of one hub: a list,
                                       # or "tls:a.example.com:8787,tls:b.example.com:8787"
    user = "ada"
    token_file = "~/.config/buildnotify/token"
    projects = ["acme/widget", "acme/gadget"]

The token is never in the config file itself: it comes from an argument,
a token file, or ``BUILDNOTIFY_TOKEN``. ``BUILDNOTIFY_HUB`` overrides the
file's ``hub``; ``--hub`` overrides both.

A hub of several nodes is named by all their endpoints, comma separated
(``--hub`` may also be repeated): the client uses the first that answers
and moves on to the next when a connection fails or is lost.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import stat
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import platformdirs

from buildnotify.endpoints import mistake

DEFAULT_HUB = "tcp:127.0.0.1:8787"
HUB_EXAMPLES = "tcp:127.0.0.1:8787 or tls:hub.example.com:8787"
TOKEN_VARIABLE = "BUILDNOTIFY_TOKEN"
CONFIG_VARIABLE = "BUILDNOTIFY_CLIENT_CONFIG"
HUB_VARIABLE = "BUILDNOTIFY_HUB"


class ClientConfigError(Exception):
    """A problem with the client's config or token, worded for its user."""


def hub_list(hub: str | Iterable[str]) -> tuple[str, ...]:
    """The endpoints of ``hub``: one endpoint, several comma separated, or a
    sequence of those; in order, each once (an endpoint holds no comma)."""
    parts = [hub] if isinstance(hub, str) else list(hub)
    endpoints = (e.strip() for part in parts for e in part.split(","))
    return tuple(dict.fromkeys(e for e in endpoints if e))


def default_config_path(environ: Mapping[str, str] = os.environ) -> Path:
    if environ.get(CONFIG_VARIABLE):
        return Path(environ[CONFIG_VARIABLE])
    return Path(platformdirs.user_config_dir("buildnotify")) / "client.toml"


@dataclasses.dataclass(frozen=True)
class ClientConfig:
    hub: str = DEFAULT_HUB  # one endpoint, or several comma separated
    user: str | None = None
    token_file: Path | None = None
    projects: tuple[str, ...] = ()
    path: Path | None = None  # where it was read from, if anywhere


def load_config(path: Path | None = None, environ: Mapping[str, str] = os.environ) -> ClientConfig:
    """Read the client config; a missing default file means all defaults
    (a missing file named explicitly is an error)."""
    explicit = path is not None or bool(environ.get(CONFIG_VARIABLE))
    path = path or default_config_path(environ)
    try:
        text = path.read_text()
    except FileNotFoundError:
        if explicit:
            raise ClientConfigError(f"{path}: no such client config file") from None
        return ClientConfig()
    except OSError as e:
        raise ClientConfigError(f"{path}: cannot read: {e.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ClientConfigError(f"{path}: not valid TOML: {e}") from None
    return parse_config(data, path)


def parse_config(data: Mapping[str, Any], path: Path | None = None) -> ClientConfig:
    where = str(path) if path else "client config"
    allowed = {"hub", "user", "token_file", "projects"}
    unknown = set(data) - allowed
    if unknown:
        raise ClientConfigError(
            f"{where}: unknown key(s) {sorted(unknown)}; expected some of {sorted(allowed)}"
        )
    for key in ("user", "token_file"):
        if key in data and not (isinstance(data[key], str) and data[key]):
            raise ClientConfigError(f"{where}: {key} must be a non-empty string")
    hub = data.get("hub", DEFAULT_HUB)
    if isinstance(hub, list) and all(isinstance(h, str) for h in hub):
        hub = ",".join(hub)
    if not (isinstance(hub, str) and hub_list(hub)):
        raise ClientConfigError(f"{where}: hub must be an endpoint, or a list of endpoints")
    projects = data.get("projects", [])
    if isinstance(projects, str):
        projects = [projects]
    if not isinstance(projects, list) or not all(isinstance(p, str) and p for p in projects):
        raise ClientConfigError(f"{where}: projects must be a list of project names")
    token_file = data.get("token_file")
    return ClientConfig(
        hub=hub,
        user=data.get("user"),
        token_file=_expand(token_file, path) if token_file else None,
        projects=tuple(projects),
        path=path,
    )


def _expand(value: str, relative_to: Path | None) -> Path:
    """``~`` expanded; a relative path is relative to the config file."""
    p = Path(value).expanduser()
    if not p.is_absolute() and relative_to is not None:
        p = relative_to.parent / p
    return p


def read_token_file(path: Path) -> tuple[str, str | None]:
    """The token in ``path`` (first line, stripped) and a warning when
    others may read the file."""
    try:
        text = path.read_text()
        mode = path.stat().st_mode
    except OSError as e:
        raise ClientConfigError(f"token file {path}: {e.strerror or e}") from None
    token = text.strip().splitlines()[0].strip() if text.strip() else ""
    if not token:
        raise ClientConfigError(f"token file {path} is empty")
    warning = None
    if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
        warning = f"token file {path} is readable by others; make it private with: chmod 600 {path}"
    return token, warning


def resolve_token(
    token: str | None = None,
    token_file: Path | None = None,
    config: ClientConfig | None = None,
    environ: Mapping[str, str] = os.environ,
) -> tuple[str | None, str | None]:
    """The token and an optional warning. First of: ``token``, ``token_file``,
    ``$BUILDNOTIFY_TOKEN``, the config's ``token_file``; ``None`` if none."""
    if token:
        return token, None
    if token_file is not None:
        return read_token_file(token_file)
    if environ.get(TOKEN_VARIABLE, "").strip():
        return environ[TOKEN_VARIABLE].strip(), None
    if config is not None and config.token_file is not None:
        return read_token_file(config.token_file)
    return None, None


# -- the connection options shared by ``watch`` and the one-shot commands --------------


def add_connection_options(parser: argparse.ArgumentParser, anonymous: bool = True) -> None:
    """``--hub``, ``--user``, ``--anonymous`` (if ``anonymous``), ``--token-file``
    and ``--client-config``; :func:`resolve_connection` reads them."""
    parser.add_argument(
        "--hub",
        metavar="ENDPOINT",
        action="append",
        help="the hub's PB endpoint (default tcp:127.0.0.1:8787, or $BUILDNOTIFY_HUB); repeat it, or "
        "separate with commas, to name every node of a hub: the client moves on when one fails",
    )
    parser.add_argument("--user", metavar="NAME", help="log in as this developer (needs a token)")
    if anonymous:
        parser.add_argument(
            "--anonymous",
            action="store_true",
            help="log in anonymously even if the client config names a user",
        )
    parser.add_argument(
        "--token-file", metavar="F", type=Path, help="file holding the token (else $BUILDNOTIFY_TOKEN)"
    )
    parser.add_argument(
        "--client-config",
        metavar="FILE",
        type=Path,
        help="client config (default ~/.config/buildnotify/client.toml or $BUILDNOTIFY_CLIENT_CONFIG)",
    )


@dataclasses.dataclass(frozen=True)
class Connection:
    """Where to connect and as whom, from the options and the client config."""

    config: ClientConfig
    hub: str  # one endpoint, or several comma separated (see hub_list)
    user: str | None = None  # None: anonymous
    token: str | None = None
    warning: str | None = None  # about the token file, for the user


def resolve_connection(
    args: argparse.Namespace,
    *,
    needs_user: str | None = None,
    no_token_hint: str = "",
    environ: Mapping[str, str] = os.environ,
) -> Connection:
    """Hub, user and token from the options of :func:`add_connection_options`
    and the client config. Raises :class:`ClientConfigError` with a message for
    the user: a hub that is not an endpoint (naming --hub or the config file);
    ``needs_user`` if there is no user and one is needed;
    ``no_token_hint`` ends the message when a user has no token."""
    config = load_config(args.client_config, environ)
    if args.hub:
        hub, where = ",".join(args.hub), "--hub"
    elif environ.get(HUB_VARIABLE, "").strip():
        hub, where = environ[HUB_VARIABLE], HUB_VARIABLE
    else:
        hub, where = config.hub, f"hub in {config.path}"
    endpoints = hub_list(hub)
    if not endpoints:
        raise ClientConfigError(f"{where}: no endpoint; e.g. {HUB_EXAMPLES}")
    for endpoint in endpoints:
        problem = mistake(endpoint, where, HUB_EXAMPLES, server=False)
        if problem:
            raise ClientConfigError(problem)
    hub = ",".join(endpoints)
    user = None if getattr(args, "anonymous", False) else (args.user or config.user)
    if user is None:
        if needs_user is not None:
            raise ClientConfigError(needs_user)
        if args.token_file is not None:
            raise ClientConfigError("--token-file needs --user (or a user in the client config)")
        return Connection(config, hub)
    token, warning = resolve_token(None, args.token_file, config, environ)
    if token is None:
        raise ClientConfigError(
            f"no token for {user}: give --token-file, set BUILDNOTIFY_TOKEN, or set token_file "
            f"in the client config{no_token_hint}"
        )
    return Connection(config, hub, user, token, warning)
