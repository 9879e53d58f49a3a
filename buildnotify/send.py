"""``buildnotify-cli send``: post one build event to the hub's generic
endpoint, for scripts and CI systems without webhooks, and (``--curl``)
print the same request as a curl command to paste anywhere.

The hub's URL and a generic token come from, first to last: ``--url`` and
``--token``; ``BUILDNOTIFY_SEND_URL`` and ``BUILDNOTIFY_SEND_TOKEN``; the
hub's own config (the one ``serve`` uses: ``--config``, else the default
file, else the ``BUILDNOTIFY_*`` variables ``serve --env-only`` reads).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from buildnotify import config as configuration
from buildnotify.config import ConfigError, HubConfig

URL_VARIABLE = "BUILDNOTIFY_SEND_URL"
TOKEN_VARIABLE = "BUILDNOTIFY_SEND_TOKEN"
TIMEOUT = 30.0  # seconds; the hub answers after the commit
EXIT_REJECTED = 1  # the hub said no (4xx): fix the request, do not retry
EXIT_UNAVAILABLE = 5  # the hub (or its database) could not be reached: retry later
STATUSES = ("queued", "running", "success", "failure", "error", "cancelled", "skipped")


def add_parser(sub: argparse._SubParsersAction) -> None:
    send = sub.add_parser(
        "send",
        help="post one build event to the hub (for scripts and CI without webhooks)",
        description="Post one build event to the hub's generic endpoint (/hooks/generic) and say "
        "what it answered. The hub's URL and token are read from the hub's config, like serve "
        f"(--config, else {configuration.default_config_path()}, else BUILDNOTIFY_HTTP and "
        f"BUILDNOTIFY_GENERIC_TOKENS), unless given with --hub-url/--token or {URL_VARIABLE}/"
        f"{TOKEN_VARIABLE}. With --curl it prints the same request as a curl command instead: "
        "that command contains the token in plain text, so that it works where you paste it; "
        "treat it like the token.",
        epilog="exit status: 0 stored (or already stored: a redelivery), 1 refused by the hub, "
        "2 usage or config error, 5 hub or its database unreachable (retry later).",
    )
    send.add_argument("--project", required=True, metavar="P", help="e.g. acme/widget")
    send.add_argument("--pipeline", required=True, metavar="NAME", help="e.g. ci or deploy")
    send.add_argument("--status", required=True, metavar="STATUS", help=f"one of {', '.join(STATUSES)}")
    send.add_argument("--branch", metavar="B", help="e.g. main")
    send.add_argument("--number", metavar="N", type=int, help="the build's number")
    send.add_argument("--build-id", metavar="ID", help="the build's id (default: its number)")
    send.add_argument("--url", dest="build_url", metavar="URL", help="link to the build")
    send.add_argument("--sha", metavar="SHA", help="the commit built")
    send.add_argument("--author-email", metavar="E", help="the commit's author: who gets a personal alert")
    send.add_argument("--author-login", metavar="L", help="the author's CI or forge login")
    send.add_argument("--key", metavar="KEY", help="Idempotency-Key: a resend with it is stored once")
    send.add_argument(
        "--hub-url",
        metavar="URL",
        help=f"the hub's webhook address, e.g. http://hub:8786 (or ${URL_VARIABLE})",
    )
    send.add_argument("--token", metavar="T", help=f"a [generic.tokens] token (or ${TOKEN_VARIABLE})")
    send.add_argument(
        "--source", metavar="NAME", help="which [generic.tokens] entry to use (default: the first)"
    )
    send.add_argument("--config", metavar="FILE", type=Path, help="the hub's config file (TOML)")
    send.add_argument(
        "--curl",
        action="store_true",
        help="print the equivalent curl command (token included) instead of sending",
    )
    send.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.status not in STATUSES:
        print(f"buildnotify-cli send: --status must be one of {', '.join(STATUSES)}", file=sys.stderr)
        return 2
    url, token = _target(args)
    endpoint = url.rstrip("/") + "/hooks/generic"
    body = json.dumps(event_body(args), separators=(",", ":"))
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if args.key:
        headers["Idempotency-Key"] = args.key
    if args.curl:
        print(curl_command(endpoint, headers, body))
        return 0
    return _post(endpoint, headers, body, args)


def event_body(args: argparse.Namespace) -> dict[str, Any]:
    """The generic endpoint's JSON (docs/webhooks/generic.md): what was given."""
    body: dict[str, Any] = {"project": args.project, "pipeline": args.pipeline, "status": args.status}
    optional = {
        "number": args.number,
        "build_id": args.build_id,
        "branch": args.branch,
        "url": args.build_url,
        "sha": args.sha,
    }
    body.update({k: v for k, v in optional.items() if v is not None})
    author = {"email": args.author_email, "login": args.author_login}
    if any(author.values()):
        body["author"] = {k: v for k, v in author.items() if v}
    return body


def curl_command(endpoint: str, headers: dict[str, str], body: str) -> str:
    """One shell line, every argument quoted."""
    words = ["curl", "-sS", "--fail-with-body", "-X", "POST", endpoint]
    for name, value in headers.items():
        words += ["-H", f"{name}: {value}"]
    words += ["--data-binary", body]
    return " ".join(shlex.quote(word) for word in words)


def _target(args: argparse.Namespace) -> tuple[str, str | None]:
    """(the hub's base URL, the token or None), from options, environment or config."""
    url = args.hub_url or os.environ.get(URL_VARIABLE)
    token = args.token or os.environ.get(TOKEN_VARIABLE)
    if url and token:
        return url, token
    config = configuration.find(args.config)
    if not url:
        url = base_url(config.http)
        if url is None:
            raise ConfigError(
                f"cannot tell the hub's URL from its listener {config.http!r}; give --hub-url or {URL_VARIABLE}"
            )
    if not token:
        tokens = dict(config.providers["generic"].tokens)
        if args.source:
            if args.source not in tokens:
                raise ConfigError(f"no [generic.tokens] entry {args.source!r} in {_where(config)}")
            token = tokens[args.source]
        else:
            token = next(iter(tokens.values()), None)  # None: the hub accepts unauthenticated events
    return url, token


def _where(config: HubConfig) -> str:
    return str(config.path) if config.path else "BUILDNOTIFY_GENERIC_TOKENS"


def base_url(endpoint: str) -> str | None:
    """``http://127.0.0.1:8786`` for the listener ``tcp:8786:interface=127.0.0.1``
    (``ssl:`` gives https; a listener on every interface is reached on
    loopback); None for one that cannot be posted to directly (unix sockets,
    PROXY-protocol listeners, which only a balancer may talk to)."""
    kind, _, rest = endpoint.partition(":")
    if kind not in ("tcp", "ssl"):
        return None
    positional: list[str] = []
    named: dict[str, str] = {}
    for part in rest.split(":"):
        key, sep, value = part.partition("=")
        if sep:
            named[key] = value
        elif part:
            positional.append(part)
    port = named.get("port") or (positional[0] if positional else None)
    if port is None or not port.isdigit():
        return None
    host = named.get("interface", "")
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    elif ":" in host:
        host = f"[{host}]"
    return f"{'https' if kind == 'ssl' else 'http'}://{host}:{port}"


def _post(endpoint: str, headers: dict[str, str], body: str, args: argparse.Namespace) -> int:
    request = urllib.request.Request(endpoint, data=body.encode(), headers=headers, method="POST")
    what = f"{args.project} {args.pipeline}" + (f" #{args.number}" if args.number is not None else "")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            code, answer = response.status, _json(response.read())
    except urllib.error.HTTPError as e:
        code, answer = e.code, _json(e.read())
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        print(f"buildnotify-cli send: cannot reach the hub at {endpoint}: {reason}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    if code == 200 and answer.get("duplicate"):
        print(f"already stored: {what} {args.status} (a resend of the same build)")
        return 0
    if code == 200:
        ids = ", ".join(str(i) for i in answer.get("ids", [])) or "-"
        stale = (
            " (older than what the hub has for this build: kept, not shown)" if answer.get("stale") else ""
        )
        print(f"stored {what} {args.status} as event {ids}{stale}")
        return 0
    error = answer.get("error") or answer.get("ignored") or f"HTTP {code}"
    print(f"buildnotify-cli send: the hub answered {code}: {error}", file=sys.stderr)
    return EXIT_UNAVAILABLE if code == 503 else EXIT_REJECTED


def _json(raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
