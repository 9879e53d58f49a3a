"""Jenkins, through the Notification plugin's JSON (``notification`` plugin id).

The plugin cannot sign requests, so each Jenkins (or team) gets its own token,
put in the endpoint URL: ``/hooks/jenkins/<token>`` or ``?token=<token>``.
Documented in ``docs/webhooks/jenkins.md``.
"""

from __future__ import annotations

import base64
import binascii
import re
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import unquote

from buildnotify.delivery import Delivery
from buildnotify.events import Author, BuildEvent, Status, map_status
from buildnotify.ingest.base import (
    HookRequest,
    Ignored,
    ProviderConfig,
    Unauthorized,
    constant_time_equal,
    field,
    first,
    integer,
    load_json,
    match_token,
    optional,
    parse_time,
    require_json,
    text,
)

NAME = "jenkins"

#: ``build.status`` (Jenkins ``Result``) of a COMPLETED/FINALIZED notification.
STATUS_MAP: dict[str, Status] = {
    "success": Status.SUCCESS,
    "unstable": Status.FAILURE,  # the build ran but tests failed: red for a failure hub
    "failure": Status.FAILURE,
    "aborted": Status.CANCELLED,
    "not_built": Status.SKIPPED,  # e.g. a pipeline stage never reached
}

#: Phases before the result exists. COMPLETED and FINALIZED carry a result.
_PHASES = {"QUEUED": Status.QUEUED, "STARTED": Status.RUNNING}
_FINISHED = ("COMPLETED", "FINALIZED")

_BRANCH_PREFIX = re.compile(r"^(?:refs/heads/|refs/remotes/origin/|origin/)")


def parse(request: HookRequest, config: ProviderConfig) -> Delivery:
    """One notification → one BuildEvent.

    COMPLETED and FINALIZED describe the same finished build (the plugin sends
    both with the default "All Events", only one with a narrower choice), so
    both get the same delivery key: whichever arrives first is stored and the
    other is answered as a duplicate.
    """
    source = _authenticate(request, config)
    require_json(request)
    data = load_json(request.body)
    name = field(data, "name", str)
    number = integer(data, "build.number", required=True)
    phase = field(data, "build.phase", str).upper()
    if phase in _PHASES:
        status = _PHASES[phase]
    elif phase in _FINISHED:
        status = map_status(NAME, STATUS_MAP, text(data, "build.status"))
    else:
        raise Ignored(f"unsupported Jenkins phase {phase!r}")

    # The full name with folders, e.g. "acme/widget/main" for the main branch of
    # a multibranch project. Not split at the branch: QUEUED and STARTED come
    # before checkout and carry no scm data, and every phase must land on the
    # same (project, pipeline).
    path = _job_path(text(data, "url")) or [name]
    job = "/".join(path)
    key = f"{job}#{number}:{'COMPLETED' if phase in _FINISHED else phase}"
    timestamp = parse_time(optional(data, "build.timestamp"))
    started_at, finished_at = None, None
    if phase == "STARTED":
        started_at = timestamp
    elif phase in _FINISHED:
        # COMPLETED: start + duration; FINALIZED: a little later, once post-build steps ran
        finished_at = timestamp
        started_at = _start(timestamp, optional(data, "build.duration"))
    culprits = optional(data, "build.scm.culprits")
    event = BuildEvent(
        provider=NAME,
        project=job,
        pipeline=path[-1],
        build_id=str(number),
        build_number=number,
        status=status,
        branch=_branch(text(data, "build.scm.branch")),
        sha=text(data, "build.scm.commit"),
        # Jenkins user ids; an entry that is not one is passed over
        author=Author(
            login=first(c for c in culprits if isinstance(c, str)) if isinstance(culprits, list) else None
        ),
        url=text(data, "build.full_url"),
        started_at=started_at,
        finished_at=finished_at,
        received_at=request.received_at,
        delivery_key=key,
    )
    return Delivery(provider=NAME, key=key, events=(event,), source=source)


def _authenticate(request: HookRequest, config: ProviderConfig) -> str | None:
    """The matched source name; ``config.secret`` alone counts as an unnamed source."""
    if not config.authenticated:
        return None
    presented = first([request.path.strip("/"), request.query.get("token"), _basic_password(request)])
    if not presented:
        raise Unauthorized(
            "missing token: post to /hooks/jenkins/<token>, /hooks/jenkins?token=<token> "
            "or https://jenkins:<token>@<hub>/hooks/jenkins"
        )
    source = match_token(presented, config.tokens)
    if source is not None:
        return source
    if config.secret and constant_time_equal(presented, config.secret):
        return None
    raise Unauthorized("unknown Jenkins token")


def _basic_password(request: HookRequest) -> str | None:
    """The password of ``Authorization: Basic``: the plugin sends the user info
    of the endpoint URL that way, which keeps the token out of request paths."""
    scheme, _, value = (request.header("Authorization") or "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return decoded.partition(":")[2] or None


def _start(finished: datetime | None, duration: Any) -> datetime | None:
    """When a build that took ``duration`` milliseconds and finished at
    ``finished`` started; None when either is missing or unusable (like any
    time, not worth refusing a build result for)."""
    if finished is None or not isinstance(duration, int) or isinstance(duration, bool) or duration <= 0:
        return None
    try:
        return finished - timedelta(milliseconds=duration)
    except OverflowError:  # a duration of millennia
        return None


def _job_path(url: str | None) -> list[str]:
    """``job/team/job/widget/`` → ``["team", "widget"]``: the full name with
    folders, which ``name`` (the job's short name) lacks."""
    if url is None:
        return []
    parts = [p for p in url.strip("/").split("/") if p]
    if len(parts) < 2 or len(parts) % 2 or any(p != "job" for p in parts[::2]):
        return []
    return [unquote(p) for p in parts[1::2]]


def _branch(value: str | None) -> str | None:
    if value is None or not value.strip():
        return None
    return _BRANCH_PREFIX.sub("", value.strip()) or None
