"""Buildkite Pipelines webhooks: build events and job events.

A Buildkite webhook notification service sends its token either in clear
(``X-Buildkite-Token``) or as ``X-Buildkite-Signature: timestamp=T,signature=S``
with S = HMAC-SHA256(token, "T.<body>"); the timestamp makes a replay window
possible. Buildkite sends no delivery id. Documented in ``docs/webhooks/buildkite.md``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from buildnotify.delivery import Delivery
from buildnotify.events import Author, BuildEvent, Status, map_status
from buildnotify.ingest.base import (
    BadRequest,
    HookRequest,
    Ignored,
    ProviderConfig,
    Unauthorized,
    constant_time_equal,
    content_hash,
    field,
    first,
    hmac_sha256_hex,
    identifier,
    integer,
    load_json,
    optional,
    parse_time,
    require_json,
    text,
    url_path,
)

NAME = "buildkite"

EVENT_HEADER = "X-Buildkite-Event"
TOKEN_HEADER = "X-Buildkite-Token"
SIGNATURE_HEADER = "X-Buildkite-Signature"

#: Build states and job states share one table; where a word means something
#: different for a job, the job sense is noted.
STATUS_MAP: dict[str, Status] = {
    "creating": Status.QUEUED,
    "scheduled": Status.QUEUED,
    "pending": Status.QUEUED,
    "waiting": Status.QUEUED,  # behind a wait step
    "limiting": Status.QUEUED,  # concurrency group check
    "limited": Status.QUEUED,  # waiting for its concurrency group
    "assigned": Status.QUEUED,
    "accepted": Status.QUEUED,  # an agent took it; the command has not started
    "running": Status.RUNNING,
    "failing": Status.RUNNING,  # a job failed, others still run; build.finished brings the result
    "passed": Status.SUCCESS,
    # Blocked on a block step: Buildkite reports such a build as finished with
    # the step's blocked_state, "passed" unless the step says otherwise.
    "blocked": Status.SUCCESS,
    "unblocked": Status.SUCCESS,  # a block step someone let through
    "failed": Status.FAILURE,
    "timing_out": Status.FAILURE,
    "timed_out": Status.FAILURE,
    "canceling": Status.CANCELLED,
    "canceled": Status.CANCELLED,
    "skipped": Status.SKIPPED,
    "not_run": Status.SKIPPED,
    "broken": Status.SKIPPED,  # the step's conditions or branch filter excluded it
    # *_failed: never ran because the build had already failed elsewhere;
    # the job that failed carries the red.
    "waiting_failed": Status.SKIPPED,
    "blocked_failed": Status.SKIPPED,
    "unblocked_failed": Status.SKIPPED,
    "expired": Status.ERROR,  # no agent picked it up in time: infrastructure needs a look
}

_BUILD_EVENTS = {"build.scheduled", "build.running", "build.failing", "build.finished", "build.skipped"}
_JOB_EVENTS = {"job.scheduled", "job.started", "job.finished"}
#: Job types that run something; waiter (wait step) and manual (block step)
#: jobs carry no result of their own.
_RESULT_JOBS = {"script", "trigger"}

_SIGNATURE = re.compile(r"^\s*timestamp=([0-9]{1,20})\s*,\s*signature=([0-9a-fA-F]+)\s*$")
_ORG_IN_API_URL = re.compile(r"/organizations/([^/]+)/pipelines/")


def parse(request: HookRequest, config: ProviderConfig) -> Delivery:
    """One build.* or job.* delivery → one BuildEvent; ping, job.activated,
    agent and other events are ignored."""
    _authenticate(request, config)
    require_json(request)
    data = load_json(request.body)
    event = first([request.header(EVENT_HEADER), data.get("event")])
    event = event if isinstance(event, str) else None
    if event == "ping":
        raise Ignored("ping")
    if event in _BUILD_EVENTS:
        build = _build(data)
    elif event in _JOB_EVENTS:
        build = _job(data)
    else:
        raise Ignored(f"unsupported Buildkite event {event!r}")
    key = f"{event}:{content_hash(request.body)}"
    build = build.replace(received_at=request.received_at, delivery_key=key)
    return Delivery(provider=NAME, key=key, events=(build,))


def _authenticate(request: HookRequest, config: ProviderConfig) -> None:
    if not config.authenticated:
        return
    signature = request.header(SIGNATURE_HEADER)
    token = request.header(TOKEN_HEADER)
    if not signature and not token:
        raise Unauthorized(f"missing {SIGNATURE_HEADER} or {TOKEN_HEADER} header (set the webhook's token)")
    if not config.secret:
        raise Unauthorized("no Buildkite webhook token is configured on the hub")
    if not signature:
        if not constant_time_equal(token, config.secret):
            raise Unauthorized(f"{TOKEN_HEADER} does not match the configured token")
        return
    match = _SIGNATURE.match(signature)
    if match is None:
        raise Unauthorized(f"malformed {SIGNATURE_HEADER}: expected timestamp=<unix>,signature=<hex>")
    timestamp, presented = match.groups()
    expected = hmac_sha256_hex(config.secret, timestamp.encode() + b"." + request.body)
    if not constant_time_equal(presented.lower(), expected):
        raise Unauthorized(f"{SIGNATURE_HEADER} does not match the request body")
    # Checked after the signature: the timestamp is only trustworthy once signed.
    age = request.received_at.timestamp() - int(timestamp)
    if abs(age) > config.replay_window:
        raise Unauthorized(
            f"{SIGNATURE_HEADER} timestamp is {abs(age):.0f}s from the hub's clock, "
            f"outside the {config.replay_window:.0f}s replay window"
        )


def _build(data: Mapping[str, Any]) -> BuildEvent:
    status = _build_status(data)
    return _event(
        data, pipeline=field(data, "pipeline.slug", str), status=status, url=text(data, "build.web_url")
    )


def _job(data: Mapping[str, Any]) -> BuildEvent:
    job = field(data, "job", Mapping)
    kind = text(data, "job.type")
    if kind not in _RESULT_JOBS:
        raise Ignored(f"Buildkite {kind!r} job: no result of its own")
    label = first([text(data, "job.name"), text(data, "job.step_key")])
    if label is None:
        raise BadRequest("missing field: job.name")
    index, total = integer(data, "job.parallel_group_index"), integer(data, "job.parallel_group_total")
    if index is not None and total is not None:
        label = f"{label} ({index + 1}/{total})"  # parallel copies share one name
    matrix = job.get("matrix")
    if isinstance(matrix, Mapping) and matrix:
        label = f"{label} [{', '.join(f'{k}={v}' for k, v in sorted(matrix.items()))}]"
    status = map_status(NAME, STATUS_MAP, _job_state(data))
    event = _event(
        data,
        pipeline=f"{field(data, 'pipeline.slug', str)} / {label}",
        status=status,
        url=first([text(data, "job.web_url"), text(data, "build.web_url")]),
    )
    # A retried job is a new job in the same build: the build id stays, the count grows.
    return event.replace(
        attempt=(integer(data, "job.retries_count") or 0) + 1,
        started_at=parse_time(job.get("started_at")),
        finished_at=parse_time(job.get("finished_at")) if status.finished else None,
    )


def _event(data: Mapping[str, Any], *, pipeline: str, status: Status, url: str | None) -> BuildEvent:
    build = field(data, "build", Mapping)
    number = integer(data, "build.number")
    commit = text(data, "build.commit")
    return BuildEvent(
        provider=NAME,
        project=_project(data),
        pipeline=pipeline,
        # Without an id (some older and hand-made payloads) the number names the build.
        build_id=identifier(data, "build.id", number="build.number"),
        build_number=number,
        status=status,
        branch=text(data, "build.branch"),
        # "HEAD" until an agent has resolved the commit of a build started from the UI
        sha=commit if commit != "HEAD" else None,
        # the commit author when a push started the build, else the Buildkite user who did
        author=Author(
            name=first([text(data, "build.author.name"), text(data, "build.creator.name")]),
            email=first([text(data, "build.author.email"), text(data, "build.creator.email")]),
            login=text(data, "build.author.username"),
        ),
        url=url,
        started_at=parse_time(build.get("started_at")),
        finished_at=parse_time(build.get("finished_at")) if status.finished else None,
    )


def _build_status(data: Mapping[str, Any]) -> Status:
    state = field(data, "build.state", str)
    blocked_state = text(data, "build.blocked_state")
    if state == "blocked" and blocked_state:
        state = blocked_state
    return map_status(NAME, STATUS_MAP, state)


def _job_state(data: Mapping[str, Any]) -> str | None:
    """The job's state; GraphQL-style ``finished`` is resolved to passed/failed
    from ``passed`` or ``exit_status`` when the payload has them."""
    state = text(data, "job.state")
    if state == "finished":
        passed, exit_status = optional(data, "job.passed"), optional(data, "job.exit_status")
        if isinstance(passed, bool):
            return "passed" if passed else "failed"
        if isinstance(exit_status, int) and not isinstance(exit_status, bool):
            return "passed" if exit_status == 0 else "failed"
    return state


def _project(data: Mapping[str, Any]) -> str:
    """``<organization>/<pipeline slug>``, like ``acme/widget``."""
    slug = field(data, "pipeline.slug", str)
    org = _organization(data)
    return f"{org}/{slug}" if org else slug


def _organization(data: Mapping[str, Any]) -> str | None:
    """Build and job payloads carry no organization object, so the slug comes
    from the API URL (``.../organizations/<org>/pipelines/...``) or the web URL
    (``https://buildkite.com/<org>/<pipeline>/...``)."""
    org = text(data, "organization.slug")
    if org:
        return org
    for at in ("pipeline.url", "build.url"):
        match = _ORG_IN_API_URL.search(text(data, at) or "")
        if match:
            return match.group(1)
    for at in ("pipeline.web_url", "build.web_url"):
        segments = url_path(text(data, at))
        if len(segments) >= 2:
            return segments[0]
    return None
