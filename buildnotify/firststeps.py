"""What ``serve`` prints once the hub listens: where each CI system posts,
where the secrets are, and one command to try it. For a newcomer's first
five minutes; ``-q`` leaves it out."""

from __future__ import annotations

import shlex
import socket

from buildnotify.config import PROVIDERS, HubConfig, default_config_path
from buildnotify.endpoints import proxied

#: the webhook path of each provider (Jenkins carries its token in the path)
HOOK_PATHS = {name: f"/hooks/{name}" for name in PROVIDERS} | {"jenkins": "/hooks/jenkins/<token>"}
DEFAULT_PB_ADDRESS = "tcp:127.0.0.1:8787"  # what the client commands connect to without --hub


def next_steps(config: HubConfig, http_url: str, pb_address: str, listener_given: bool = False) -> str:
    """The lines (joined) that tell a newcomer what to do next.
    ``listener_given``: ``--http`` overrode the config, which ``send`` reads."""
    base = _reachable(http_url)
    width = max(len(name) for name in HOOK_PATHS)
    lines = ["", "Ready. Point each CI system at its webhook URL (how, per provider: docs/webhooks/):"]
    lines += [f"  {name.ljust(width)}  {base}{path}" for name, path in HOOK_PATHS.items()]
    if config.path is not None:
        lines.append(
            f"Their secrets and tokens are in {config.path} ([github] secret ... [generic.tokens]), "
            "readable by you only."
        )
        config_option = (
            "" if config.path == default_config_path() else f" --config {shlex.quote(str(config.path))}"
        )
    else:
        lines.append(
            "Their secrets and tokens come from the environment (BUILDNOTIFY_<PROVIDER>_SECRET, "
            "BUILDNOTIFY_JENKINS_TOKENS, BUILDNOTIFY_GENERIC_TOKENS); a provider without one accepts "
            "unauthenticated webhooks."
        )
        config_option = ""
    if proxied(config.http):
        target = " --hub-url <the balancer's URL>"
    else:
        target = f" --hub-url {base}" if listener_given else ""
    lines += [
        "Try it from another terminal (posts a failed build to /hooks/generic):",
        f"  buildnotify-cli send{config_option}{target} --project acme/widget --pipeline ci --number 1 "
        "--status failure --branch main",
        "  (add --curl to print the same request as a curl command, token included, to paste elsewhere)",
        f"Watch builds arrive: buildnotify-cli watch{_hub_option(pb_address)} --project acme/widget",
        "",
    ]
    return "\n".join(lines)


def _reachable(http_url: str) -> str:
    """A listener on every interface, named by this host's name."""
    for unspecified in ("//0.0.0.0:", "//[::]:", "//:::"):
        if unspecified in http_url:
            return http_url.replace(unspecified, f"//{socket.getfqdn()}:")
    return http_url


def _hub_option(pb_address: str) -> str:
    return "" if pb_address == DEFAULT_PB_ADDRESS else f" --hub {pb_address}"
