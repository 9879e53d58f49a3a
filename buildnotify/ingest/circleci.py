"""CircleCI outbound webhooks (``workflow-completed`` and ``job-completed``).

CircleCI only announces finished workflows and jobs, so there is no
"started" event from this provider. Projects on the GitHub OAuth app and
Bitbucket Cloud integrations describe the commit in ``pipeline.vcs``; GitHub
App, GitLab and Bitbucket Data Center projects use ``pipeline.trigger_parameters``
instead, and both are read.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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
    hmac_sha256_hex,
    integer,
    load_json,
    optional,
    parse_time,
    require_json,
    text,
)

NAME = "circleci"

SIGNATURE_HEADER = "circleci-signature"
EVENTS = ("workflow-completed", "job-completed")

#: Workflow and job statuses from CircleCI's webhook and API v2 docs.
STATUS_MAP: dict[str, Status] = {
    "success": Status.SUCCESS,
    "failed": Status.FAILURE,
    "failing": Status.FAILURE,  # still running, but a job has already failed
    "timedout": Status.FAILURE,
    "error": Status.ERROR,  # e.g. invalid config
    "infrastructure_fail": Status.ERROR,
    "terminated-unknown": Status.ERROR,
    "unauthorized": Status.ERROR,  # a restricted context the actor may not use
    "canceled": Status.CANCELLED,
    "cancelled": Status.CANCELLED,
    "retried": Status.CANCELLED,  # superseded by a re-run
    "not_run": Status.SKIPPED,
    "running": Status.RUNNING,
    "queued": Status.QUEUED,
    "not_running": Status.QUEUED,
    "blocked": Status.QUEUED,  # waiting on upstream jobs
    "on_hold": Status.QUEUED,  # waiting on an approval job
}

#: ``project.slug`` prefixes that name a VCS ("gh/acme/widget"); GitHub App
#: and GitLab projects have opaque slugs ("circleci/<org-id>/<project-id>").
_VCS_PREFIXES = ("gh", "github", "bb", "bitbucket")


def parse(request: HookRequest, config: ProviderConfig) -> Delivery:
    """One CircleCI webhook → one BuildEvent, keyed by the event's ``id``."""
    _authenticate(request, config)
    require_json(request)
    data = load_json(request.body)
    kind = data.get("type") or request.header("circleci-event-type")
    if kind not in EVENTS:
        raise Ignored("ping" if kind == "ping" else f"unsupported CircleCI event {kind!r}")
    key = field(data, "id", str)
    build = _workflow(data) if kind == "workflow-completed" else _job(data)
    build = build.replace(received_at=request.received_at, delivery_key=key)
    return Delivery(provider=NAME, key=key, events=(build,))


def _authenticate(request: HookRequest, config: ProviderConfig) -> None:
    """``circleci-signature: v1=<hex>[,v2=...]``: accept if a v1 matches."""
    if not config.authenticated:
        return
    header = request.header(SIGNATURE_HEADER)
    if not header:
        raise Unauthorized(f"missing {SIGNATURE_HEADER} header (set a secret token on the CircleCI webhook)")
    if not config.secret:
        raise Unauthorized("no CircleCI signing secret is configured on the hub")
    presented = [
        value.strip()
        for version, _, value in (part.strip().partition("=") for part in header.split(","))
        if version == "v1"
    ]
    if not presented:
        raise Unauthorized(f"{SIGNATURE_HEADER} has no v1 signature")
    expected = hmac_sha256_hex(config.secret, request.body)
    if not any([constant_time_equal(sig, expected) for sig in presented]):  # no short-circuit
        raise Unauthorized(f"{SIGNATURE_HEADER} does not match the request body")


def _workflow(data: Mapping[str, Any]) -> BuildEvent:
    status = map_status(NAME, STATUS_MAP, field(data, "workflow.status", str))
    return _event(
        data,
        pipeline=field(data, "workflow.name", str),
        # The pipeline, not the workflow: "Rerun workflow" makes a new workflow
        # id in the same pipeline, which must be the same run (newer by its
        # stop time) for a passing re-run to be "fixed".
        build_id=text(data, "pipeline.id") or field(data, "workflow.id", str),
        build_number=integer(data, "pipeline.number", required=True),
        status=status,
        url=text(data, "workflow.url"),
        started_at=optional(data, "workflow.created_at"),
        finished_at=optional(data, "workflow.stopped_at"),
    )


def _job(data: Mapping[str, Any]) -> BuildEvent:
    status = map_status(NAME, STATUS_MAP, field(data, "job.status", str))
    number = integer(data, "job.number", required=True)
    workflow_url = text(data, "workflow.url")
    return _event(
        data,
        pipeline=f"{field(data, 'workflow.name', str)} / {field(data, 'job.name', str)}",
        build_id=field(data, "job.id", str),
        build_number=number,
        status=status,
        url=f"{workflow_url}/jobs/{number}" if workflow_url else None,
        started_at=optional(data, "job.started_at"),
        finished_at=optional(data, "job.stopped_at"),
    )


#: Where the commit is described: ``pipeline.vcs`` (GitHub OAuth app, Bitbucket
#: Cloud), else one of the ``trigger_parameters`` (GitHub App, GitLab, Bitbucket DC).
_COMMIT_SOURCES = (
    "pipeline.vcs",
    "pipeline.trigger_parameters.git",
    "pipeline.trigger_parameters.github_app",
    "pipeline.trigger_parameters.gitlab",
)


def _event(data: Mapping[str, Any], *, started_at: Any, finished_at: Any, **fields: Any) -> BuildEvent:
    field(data, "pipeline", Mapping)

    def pick(*keys: str) -> str | None:
        return first(text(data, f"{source}.{key}") for source in _COMMIT_SOURCES for key in keys)

    return BuildEvent(
        provider=NAME,
        project=_project(data),
        branch=pick("branch"),
        sha=pick("revision", "checkout_sha", "commit_sha"),
        author=Author(
            name=pick("commit.author.name", "commit_author_name"),
            email=pick("commit.author.email", "commit_author_email"),
            login=pick("author_login", "user_username"),
        ),
        started_at=parse_time(started_at),
        finished_at=parse_time(finished_at),
        **fields,
    )


def _project(data: Mapping[str, Any]) -> str:
    """``gh/acme/widget`` → ``acme/widget``; for opaque ``circleci/...`` slugs,
    ``<organization.name>/<project.name>``; else the slug as given."""
    slug = field(data, "project.slug", str)
    prefix, _, rest = slug.partition("/")
    if prefix in _VCS_PREFIXES and rest:
        return rest
    org, name = text(data, "organization.name"), text(data, "project.name")
    return f"{org}/{name}" if org and name else slug
