"""The buildnotify client library: one PB client for every front end.

- :class:`WatchClient` connects, logs in (with a token, or anonymously),
  watches projects, reconnects with backoff and resumes without losing or
  repeating events; a front end gives it a listener (see :mod:`.core`).
- :class:`ResumeFile` keeps the last seen event id on disk per hub, user and project set.
- :func:`load_config` / :func:`resolve_token`: the client config file and
  where the token comes from.

``buildnotify-cli watch`` (:mod:`.watch`) is the terminal front end.
"""

from buildnotify.client.core import (
    SIGNED_IN_ELSEWHERE,
    TOO_SLOW,
    Ending,
    Listener,
    NotConnected,
    Outcome,
    Phase,
    State,
    WatchClient,
    default_retry_policy,
)
from buildnotify.client.resume import ResumeFile, default_state_dir
from buildnotify.client.settings import (
    DEFAULT_HUB,
    TOKEN_VARIABLE,
    ClientConfig,
    ClientConfigError,
    default_config_path,
    load_config,
    resolve_token,
)

__all__ = [
    "DEFAULT_HUB",
    "SIGNED_IN_ELSEWHERE",
    "TOKEN_VARIABLE",
    "TOO_SLOW",
    "ClientConfig",
    "ClientConfigError",
    "Ending",
    "Listener",
    "NotConnected",
    "Outcome",
    "Phase",
    "ResumeFile",
    "State",
    "WatchClient",
    "default_config_path",
    "default_retry_policy",
    "default_state_dir",
    "load_config",
    "resolve_token",
]
