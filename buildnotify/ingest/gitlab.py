"""GitLab webhooks: pipeline events and job events.

GitLab sends the webhook's secret token verbatim in ``X-Gitlab-Token`` (no
signature exists), names the event in ``X-Gitlab-Event`` and, since 17.4, sends
an ``Idempotency-Key`` that stays the same when a delivery is retried.
Job events of older GitLab versions lack parts newer ones carry (``project``,
``pipeline_id``, ``retries_count``); each has a fallback, so that GitLab,
which disables a hook that keeps getting 4xx, never sees one for them.
Documented in ``docs/webhooks/gitlab.md``.
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
    integer,
    load_json,
    parse_time,
    require_json,
    text,
    url_path,
)

NAME = "gitlab"

TOKEN_HEADER = "X-Gitlab-Token"
EVENT_HEADER = "X-Gitlab-Event"

#: Pipeline and job statuses share one vocabulary (``Ci::HasStatus``).
STATUS_MAP: dict[str, Status] = {
    "created": Status.QUEUED,
    "waiting_for_resource": Status.QUEUED,  # resource_group busy
    "preparing": Status.QUEUED,  # runner is provisioning; the script has not started
    "pending": Status.QUEUED,
    "scheduled": Status.QUEUED,  # delayed job (``when: delayed``) waiting for its timer
    "manual": Status.QUEUED,  # blocked on a manual action: waiting for a person, not done
    "running": Status.RUNNING,
    "waiting_for_callback": Status.RUNNING,  # job handed off to an external system
    "success": Status.SUCCESS,
    "failed": Status.FAILURE,
    "canceling": Status.CANCELLED,  # the user's intent is settled; canceled follows
    "canceled": Status.CANCELLED,
    "skipped": Status.SKIPPED,
}

#: ``X-Gitlab-Event`` → ``object_kind``; the header wins, ``object_kind`` is the
#: fallback for a missing header and for system hooks. GitLab called job
#: events "Build Hook" before it called builds jobs.
_EVENTS = {"Pipeline Hook": "pipeline", "Job Hook": "build", "Build Hook": "build"}

_REDACTED = "[REDACTED]"  # what GitLab sends for an email the user keeps private


def parse(request: HookRequest, config: ProviderConfig) -> Delivery:
    """One Pipeline Hook or Job Hook → one BuildEvent; anything else is ignored."""
    _authenticate(request, config)
    require_json(request)
    data = load_json(request.body)
    event = request.header(EVENT_HEADER)
    kind = _EVENTS.get(event or "")
    if kind is None and event in (None, "", "System Hook"):
        kind = data.get("object_kind")
    handler = _HANDLERS.get(kind) if isinstance(kind, str) else None
    if handler is None:
        raise Ignored(f"unsupported GitLab event {event or kind!r}")
    # Not X-Gitlab-Webhook-UUID: it is new on every attempt, so a retried
    # delivery would be stored twice; a body hash at least catches identical retries.
    key = request.header("Idempotency-Key") or content_hash(request.body)
    build = handler(data).replace(received_at=request.received_at, delivery_key=key)
    return Delivery(provider=NAME, key=key, events=(build,))


def _authenticate(request: HookRequest, config: ProviderConfig) -> None:
    if not config.authenticated:
        return
    presented = request.header(TOKEN_HEADER)
    if not presented:
        raise Unauthorized(f"missing {TOKEN_HEADER} header (set a secret token on the GitLab webhook)")
    if not config.secret:
        raise Unauthorized("no GitLab secret token is configured on the hub")
    if not constant_time_equal(presented, config.secret):
        raise Unauthorized(f"{TOKEN_HEADER} does not match the configured secret token")


def _pipeline(data: Mapping[str, Any]) -> BuildEvent:
    attrs = field(data, "object_attributes", Mapping)
    pipeline_id = field(data, "object_attributes.id", (int, str))
    status = map_status(NAME, STATUS_MAP, field(data, "object_attributes.status", str))
    web_url = _web_url(data)
    return BuildEvent(
        provider=NAME,
        project=_project(data),
        # workflow:name (16.1+) when set, else one constant: the branch is already
        # part of the (project, pipeline, branch) history key.
        pipeline=text(data, "object_attributes.name") or "pipeline",
        build_id=str(pipeline_id),
        build_number=first([integer(data, "object_attributes.iid"), _number(pipeline_id)]),
        status=status,
        # A merge request pipeline's ref is refs/merge-requests/<iid>/head.
        branch=first([text(data, "merge_request.source_branch"), _branch(data, "object_attributes.ref")]),
        sha=text(data, "object_attributes.sha"),
        author=Author(
            name=first([text(data, "commit.author.name"), text(data, "user.name")]),
            email=_email(data, "commit.author.email", "user.email"),
            login=text(data, "user.username"),
        ),
        url=first(
            [text(data, "object_attributes.url"), f"{web_url}/-/pipelines/{pipeline_id}" if web_url else None]
        ),
        # the payload has no started_at: created_at is the closest it offers
        started_at=parse_time(first([attrs.get("started_at"), attrs.get("created_at")])),
        finished_at=parse_time(attrs.get("finished_at")) if status.finished else None,
    )


def _job(data: Mapping[str, Any]) -> BuildEvent:
    job_id = field(data, "build_id", (int, str))
    name = field(data, "build_name", str)
    stage = text(data, "build_stage")
    # Older job events have no pipeline_id, but their commit.id has always been
    # the pipeline's id. Without either, the job is a run of its own.
    pipeline_id = first([integer(data, "pipeline_id"), integer(data, "commit.id"), _number(job_id)])
    status = map_status(NAME, STATUS_MAP, field(data, "build_status", str))
    web_url = _web_url(data)
    return BuildEvent(
        provider=NAME,
        project=_project(data),
        pipeline=f"{stage} / {name}" if stage else name,
        # The pipeline, not the job: a retried job gets a new build_id but
        # stays in its pipeline, with retries_count counting the attempts.
        build_id=str(pipeline_id if pipeline_id is not None else job_id),
        build_number=pipeline_id,
        attempt=(integer(data, "retries_count") or 0) + 1,
        status=status,
        branch=_branch(data, "ref"),
        sha=first([text(data, "sha"), text(data, "commit.sha")]),
        author=Author(
            name=first([text(data, "commit.author_name"), text(data, "user.name")]),
            email=_email(data, "commit.author_email", "user.email"),
            login=text(data, "user.username"),
        ),
        url=f"{web_url}/-/jobs/{job_id}" if web_url else None,
        started_at=parse_time(first([data.get("build_started_at_iso"), data.get("build_started_at")])),
        finished_at=(
            parse_time(first([data.get("build_finished_at_iso"), data.get("build_finished_at")]))
            if status.finished
            else None
        ),
    )


def _project(data: Mapping[str, Any]) -> str:
    """``project.path_with_namespace``. Job events of older GitLab versions
    have no ``project`` object: then the path comes from the repository's
    URLs, the SSH one first (it never carries a relative URL root), else from
    ``project_name`` (``acme / widget``, names rather than paths)."""
    path = text(data, "project.path_with_namespace")
    if path:
        return path
    for at in _REPOSITORY_URLS:
        segments = url_path(text(data, at))
        if segments:
            return "/".join(segments).removesuffix(".git")
    name = text(data, "project_name")
    if name and name.strip():
        return re.sub(r"\s*/\s*", "/", name.strip())
    raise BadRequest("missing field: project.path_with_namespace (or repository.homepage, or project_name)")


_REPOSITORY_URLS = (
    "repository.git_ssh_url",
    "repository.url",
    "repository.homepage",
    "repository.git_http_url",
)


def _web_url(data: Mapping[str, Any]) -> str | None:
    """The project's page; ``repository.homepage`` is the same page in job events without ``project``."""
    return first([text(data, "project.web_url"), text(data, "repository.homepage")])


_REF = re.compile(r"^refs/heads/")


def _branch(data: Mapping[str, Any], at: str) -> str | None:
    ref = text(data, at)
    return _REF.sub("", ref) if ref else None


def _email(data: Mapping[str, Any], *candidates: str) -> str | None:
    """The first real address: GitLab sends ``[REDACTED]`` for private ones."""
    return first(email for email in (text(data, at) for at in candidates) if email != _REDACTED)


def _number(value: int | str) -> int | None:
    """An id (already checked by :func:`field`) as a number, for ordering runs;
    None for an id that is not one."""
    if isinstance(value, int):
        return value
    return int(value) if value.isascii() and value.isdigit() and len(value) < 19 else None


_HANDLERS = {"pipeline": _pipeline, "build": _job}
