"""The hub's configuration: a TOML file, environment overrides (everything a
container needs, so that it needs no mounted file), and a generated file with
fresh secrets for the zero-setup start."""

from __future__ import annotations

import dataclasses
import os
import secrets
import socket
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import platformdirs

from buildnotify.hub.settings import POLICIES, PBSettings
from buildnotify.ingest.base import ProviderConfig

PROVIDERS = ("github", "gitlab", "jenkins", "buildkite", "circleci", "generic")
#: providers authenticated by per-source tokens rather than one shared secret
TOKEN_PROVIDERS = ("jenkins", "generic")

DEFAULT_HTTP = "tcp:8786:interface=127.0.0.1"
DEFAULT_PB = "tcp:8787:interface=127.0.0.1"
DEFAULT_MAX_BODY = 25 * 1024 * 1024

#: Every environment variable the hub reads (each overrides its key in the
#: config file; a command-line option overrides both). The deployment files
#: and their test are checked against this tuple.
ENV_DATABASE = "BUILDNOTIFY_DATABASE"
ENV_NODE = "BUILDNOTIFY_NODE"
ENV_HTTP = "BUILDNOTIFY_HTTP"
ENV_PB = "BUILDNOTIFY_PB"
#: a relay's URL, webhook secret and SMTP password from the environment
#: (<NAME>: the relay's name upper-cased, other characters as _); not in
#: ENVIRONMENT, as their names depend on the relays configured
RELAY_ENVIRONMENT = (
    "BUILDNOTIFY_RELAY_<NAME>_URL",
    "BUILDNOTIFY_RELAY_<NAME>_SECRET",
    "BUILDNOTIFY_RELAY_<NAME>_PASSWORD",
)
ENVIRONMENT = (
    ENV_DATABASE,
    ENV_NODE,
    ENV_HTTP,
    ENV_PB,
    *(
        f"BUILDNOTIFY_{name.upper()}_{'TOKENS' if name in TOKEN_PROVIDERS else 'SECRET'}"
        for name in PROVIDERS
    ),
)


class ConfigError(Exception):
    """A configuration problem, worded for the person who wrote the file."""


def default_config_path() -> Path:
    return Path(platformdirs.user_config_dir("buildnotify")) / "hub.toml"


def default_node() -> str:
    """This node's name among several hubs on one database: the host name and
    process id, unique even with several nodes on one host. Name nodes
    (BUILDNOTIFY_NODE) to keep a name across restarts."""
    return f"{socket.gethostname() or 'hub'}:{os.getpid()}"


def default_database() -> str:
    return str(Path(platformdirs.user_data_dir("buildnotify")) / "hub.db")


@dataclasses.dataclass(frozen=True)
class HubConfig:
    http: str = DEFAULT_HTTP
    pb: str = DEFAULT_PB
    database: str = dataclasses.field(default_factory=default_database)
    max_body: int = DEFAULT_MAX_BODY
    node: str = dataclasses.field(default_factory=default_node)  # this hub among several (unique)
    providers: Mapping[str, ProviderConfig] = dataclasses.field(
        default_factory=lambda: {name: ProviderConfig() for name in PROVIDERS}
    )
    session: PBSettings = PBSettings()
    #: ``[relays.<name>]`` tables as written, the environment's URLs, secrets
    #: and passwords applied; buildnotify.relays reads them
    relays: Mapping[str, Mapping[str, Any]] = dataclasses.field(
        default_factory=dict, repr=False
    )  # URLs, secrets
    escalation: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # the [escalation] table
    path: Path | None = None

    def replace(self, **changes: Any) -> HubConfig:
        return dataclasses.replace(self, **changes)


def load(path: Path, environ: Mapping[str, str] = os.environ) -> HubConfig:
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    return parse(data, environ, path)


def find(path: Path | None = None) -> HubConfig:
    """The hub's config as every command finds it: the file at ``path``; with
    none, the default file if there is one, else the defaults and what the
    environment says."""
    if path is not None:
        return load(path)
    default = default_config_path()
    return load(default) if default.exists() else parse({})


def parse(
    data: Mapping[str, Any], environ: Mapping[str, str] = os.environ, path: Path | None = None
) -> HubConfig:
    where = str(path) if path else "config"
    unknown = set(data) - {"hub", "pb", "relays", "escalation", *PROVIDERS}
    if unknown:
        raise ConfigError(
            f"{where}: unknown section(s) {sorted(unknown)}; expected hub, pb, relays, escalation "
            f"or {list(PROVIDERS)}"
        )
    hub = _table(data, "hub", where)
    _only(hub, {"http", "pb", "database", "max_body", "node"}, f"{where} [hub]")
    max_body = hub.get("max_body", DEFAULT_MAX_BODY)
    if not isinstance(max_body, int) or max_body <= 0:
        raise ConfigError(f"{where} [hub]: max_body must be a positive number of bytes")
    node = environ.get(ENV_NODE) or hub.get("node") or default_node()
    if not isinstance(node, str) or not node.strip() or not node.isprintable():
        source = ENV_NODE if environ.get(ENV_NODE) else f"{where} [hub] node"
        raise ConfigError(f"{source}: a node name must be non-empty text on one line")
    providers = {name: _provider(name, _table(data, name, where), environ, where) for name in PROVIDERS}
    return HubConfig(
        http=environ.get(ENV_HTTP) or str(hub.get("http", DEFAULT_HTTP)),
        pb=environ.get(ENV_PB) or str(hub.get("pb", DEFAULT_PB)),
        database=environ.get(ENV_DATABASE) or str(hub.get("database") or default_database()),
        max_body=max_body,
        node=node.strip(),
        providers=providers,
        session=_pb_settings(_table(data, "pb", where), f"{where} [pb]"),
        relays=_relays(_table(data, "relays", where), environ, where),
        escalation=_table(data, "escalation", where),
        path=path,
    )


def _relays(
    tables: Mapping[str, Any], environ: Mapping[str, str], where: str
) -> dict[str, Mapping[str, Any]]:
    """Each relay's table with BUILDNOTIFY_RELAY_<NAME>_URL, _SECRET and
    _PASSWORD applied (the settings themselves are checked by buildnotify.relays)."""
    relays = {}
    for name, table in tables.items():
        if not isinstance(table, Mapping):
            raise ConfigError(f"{where}: [relays.{name}] must be a table")
        prefix = "BUILDNOTIFY_RELAY_" + "".join(c if c.isalnum() else "_" for c in name.upper())
        overrides = {key: environ.get(f"{prefix}_{key.upper()}") for key in ("url", "secret", "password")}
        relays[name] = dict(table) | {key: value for key, value in overrides.items() if value}
    return relays


def _pb_settings(table: Mapping[str, Any], where: str) -> PBSettings:
    defaults = PBSettings()
    fields = {f.name: type(getattr(defaults, f.name)) for f in dataclasses.fields(PBSettings)}
    _only(table, set(fields), where)
    values: dict[str, Any] = {}
    for key, value in table.items():
        kind = fields[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            raise ConfigError(f"{where}: {key} must be a {kind.__name__}")
        if kind in (int, float) and value <= 0:
            raise ConfigError(f"{where}: {key} must be positive")
        values[key] = value
    if values.get("login_policy", defaults.login_policy) not in POLICIES:
        raise ConfigError(f"{where}: login_policy must be one of {', '.join(POLICIES)}")
    return PBSettings(**values)


def _provider(name: str, table: Mapping[str, Any], environ: Mapping[str, str], where: str) -> ProviderConfig:
    env = f"BUILDNOTIFY_{name.upper()}"
    if name in TOKEN_PROVIDERS:
        _only(table, {"tokens"}, f"{where} [{name}]")
        tokens = dict(table.get("tokens", {}))
        if environ.get(f"{env}_TOKENS"):
            tokens = _parse_token_list(environ[f"{env}_TOKENS"], f"{env}_TOKENS")
        if not all(isinstance(v, str) and v for v in tokens.values()):
            raise ConfigError(f"{where} [{name}.tokens]: each source needs a non-empty string token")
        return ProviderConfig(tokens=tokens)
    _only(table, {"secret", "replay_window"}, f"{where} [{name}]")
    secret = environ.get(f"{env}_SECRET") or table.get("secret") or None
    if secret is not None and not isinstance(secret, str):
        raise ConfigError(f"{where} [{name}]: secret must be a string")
    return ProviderConfig(secret=secret, replay_window=float(table.get("replay_window", 300)))


def _parse_token_list(text: str, variable: str) -> dict[str, str]:
    """``name=token,name2=token2`` (a bare token is named "default")."""
    tokens = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, sep, token = item.partition("=")
        if not sep:
            name, token = "default", item
        if not token:
            raise ConfigError(f"{variable}: source {name!r} has an empty token")
        tokens[name.strip()] = token.strip()
    return tokens


def _table(data: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: [{key}] must be a table")
    return value


def _only(table: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = set(table) - allowed
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}; expected some of {sorted(allowed)}")


def generate(path: Path, database: str | None = None) -> HubConfig:
    """Write a config with loopback listeners and a fresh secret for every
    provider (readable by the owner only), and load it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        "# buildnotify hub configuration, generated by `buildnotify-cli serve`.",
        "# Give each CI system the secret of its section; see docs/webhooks/.",
        "",
        "[hub]",
        f'http = "{DEFAULT_HTTP}"',
        f'pb = "{DEFAULT_PB}"',
        f"database = {_toml_string(database or default_database())}",
        f"max_body = {DEFAULT_MAX_BODY}",
    ]
    for name in PROVIDERS:
        lines.append("")
        if name in TOKEN_PROVIDERS:
            lines += [f"[{name}.tokens]", f'default = "{secrets.token_urlsafe(24)}"']
        else:
            lines += [f"[{name}]", f'secret = "{secrets.token_urlsafe(24)}"']
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(lines) + "\n")
    return load(path)


def _toml_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
