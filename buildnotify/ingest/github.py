"""GitHub webhooks: Actions runs and jobs, check suites, and commit statuses.

One repository (or organization) webhook can carry all four event kinds, so
the hub takes whichever the user subscribed to: ``workflow_run`` for Actions,
``workflow_job`` for per-job detail, ``check_suite`` for third-party CI apps
using the Checks API, and ``status`` for CI systems that post commit statuses.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs

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
)

NAME = "github"

SIGNATURE_HEADER = "X-Hub-Signature-256"
FORM_TYPE = "application/x-www-form-urlencoded"

#: Run/job ``status`` values (used while not completed), ``conclusion`` values
#: (used once completed) and commit-status ``state`` values share one table.
STATUS_MAP: dict[str, Status] = {
    # run / job / check suite status
    "requested": Status.QUEUED,
    "queued": Status.QUEUED,
    "pending": Status.QUEUED,  # also a commit-status state: cannot tell queued from running
    "waiting": Status.QUEUED,  # waiting for an environment's reviewers
    "in_progress": Status.RUNNING,
    # "completed" without a conclusion: finished, result unknown -> needs a look
    "completed": Status.ERROR,
    # conclusions
    "success": Status.SUCCESS,
    "neutral": Status.SUCCESS,  # the check ran and chose not to pass judgement: not red
    "failure": Status.FAILURE,
    "timed_out": Status.FAILURE,  # the build did not pass in its time budget
    "startup_failure": Status.ERROR,  # workflow file invalid or could not start
    "cancelled": Status.CANCELLED,
    "stale": Status.CANCELLED,  # GitHub gave up on an incomplete suite
    "skipped": Status.SKIPPED,
    "action_required": Status.QUEUED,  # waiting for a human to approve the run
    # commit-status states (besides pending and success above)
    "error": Status.ERROR,
}


def parse(request: HookRequest, config: ProviderConfig) -> Delivery:
    """One GitHub delivery → one BuildEvent; pings and other events are ignored."""
    _authenticate(request, config)
    data = _payload(request)
    event = (request.header("X-GitHub-Event") or "").strip().lower()
    if not event:
        raise BadRequest("missing X-GitHub-Event header")
    if event == "ping":
        raise Ignored("ping")
    handler = _HANDLERS.get(event)
    if handler is None:
        raise Ignored(f"unsupported GitHub event {event!r}")
    key = request.header("X-GitHub-Delivery") or content_hash(request.body)
    build = handler(data).replace(received_at=request.received_at, delivery_key=key)
    return Delivery(provider=NAME, key=key, events=(build,))


def _authenticate(request: HookRequest, config: ProviderConfig) -> None:
    if not config.authenticated:
        return
    presented = request.header(SIGNATURE_HEADER)
    if not presented:
        raise Unauthorized(f"missing {SIGNATURE_HEADER} header (set a secret on the GitHub webhook)")
    if not config.secret:
        raise Unauthorized("no GitHub webhook secret is configured on the hub")
    expected = "sha256=" + hmac_sha256_hex(config.secret, request.body)
    if not constant_time_equal(presented.strip(), expected):
        raise Unauthorized(f"{SIGNATURE_HEADER} does not match the request body")


def _payload(request: HookRequest) -> dict[str, Any]:
    """JSON body, or the ``payload`` field of a form-encoded body (GitHub's
    "application/x-www-form-urlencoded" content type option)."""
    if request.content_type != FORM_TYPE:
        require_json(request)
        return load_json(request.body)
    try:
        form = parse_qs(request.body.decode("ascii"), keep_blank_values=True)
    except UnicodeDecodeError:
        raise BadRequest("form body is not URL-encoded ASCII") from None
    payload = form.get("payload")
    if not payload or not payload[0]:
        raise BadRequest("missing field: payload")
    return load_json(payload[0].encode("utf-8"))


def _status_of(data: Mapping[str, Any], obj: str) -> Status:
    """``status`` until completed, then ``conclusion``."""
    status = field(data, f"{obj}.status", str)
    if status.lower() == "completed":
        status = text(data, f"{obj}.conclusion") or status
    return map_status(NAME, STATUS_MAP, status)


def _finished_at(status: Status, value: Any) -> datetime | None:
    return parse_time(value) if status.finished else None


def _workflow_run(data: Mapping[str, Any]) -> BuildEvent:
    run = field(data, "workflow_run", Mapping)
    status = _status_of(data, "workflow_run")
    pipeline = first([text(data, "workflow_run.name"), text(data, "workflow.name")])
    if not pipeline:
        raise BadRequest("missing field: workflow_run.name")
    return BuildEvent(
        provider=NAME,
        project=field(data, "repository.full_name", str),
        pipeline=pipeline,
        build_id=identifier(data, "workflow_run.id"),
        build_number=integer(data, "workflow_run.run_number"),
        attempt=integer(data, "workflow_run.run_attempt") or 1,
        status=status,
        branch=text(data, "workflow_run.head_branch"),
        sha=text(data, "workflow_run.head_sha"),
        # actor: who pushed or started the run; triggering_actor may be a re-runner
        author=_commit_author(
            data,
            "workflow_run.head_commit.author",
            login=first([text(data, "workflow_run.actor.login"), text(data, "sender.login")]),
        ),
        url=text(data, "workflow_run.html_url"),
        started_at=parse_time(first([run.get("run_started_at"), run.get("created_at")])),
        finished_at=_finished_at(status, run.get("updated_at")),
    )


def _workflow_job(data: Mapping[str, Any]) -> BuildEvent:
    job = field(data, "workflow_job", Mapping)
    status = _status_of(data, "workflow_job")
    name = field(data, "workflow_job.name", str)
    workflow = text(data, "workflow_job.workflow_name")
    return BuildEvent(
        provider=NAME,
        project=field(data, "repository.full_name", str),
        pipeline=f"{workflow} / {name}" if workflow else name,
        # the run, not the job: a re-run gets a new job id but keeps run_id
        build_id=identifier(data, "workflow_job.run_id"),
        attempt=integer(data, "workflow_job.run_attempt") or 1,
        status=status,
        branch=text(data, "workflow_job.head_branch"),
        sha=text(data, "workflow_job.head_sha"),
        author=Author(login=text(data, "sender.login")),
        url=text(data, "workflow_job.html_url"),
        started_at=parse_time(first([job.get("started_at"), job.get("created_at")])),
        finished_at=_finished_at(status, job.get("completed_at")),
    )


def _check_suite(data: Mapping[str, Any]) -> BuildEvent:
    suite = field(data, "check_suite", Mapping)
    status = _status_of(data, "check_suite")
    sha = text(data, "check_suite.head_sha")
    repo_url = text(data, "repository.html_url")
    return BuildEvent(
        provider=NAME,
        project=field(data, "repository.full_name", str),
        pipeline=field(data, "check_suite.app.name", str),
        build_id=identifier(data, "check_suite.id"),
        status=status,
        branch=text(data, "check_suite.head_branch"),
        sha=sha,
        author=_commit_author(data, "check_suite.head_commit.author", login=text(data, "sender.login")),
        url=f"{repo_url}/commit/{sha}/checks" if repo_url and sha else None,
        started_at=parse_time(suite.get("created_at")),
        finished_at=_finished_at(status, suite.get("updated_at")),
    )


def _status(data: Mapping[str, Any]) -> BuildEvent:
    sha = field(data, "sha", str)
    context = field(data, "context", str)
    status = map_status(NAME, STATUS_MAP, field(data, "state", str))
    return BuildEvent(
        provider=NAME,
        project=text(data, "repository.full_name") or field(data, "name", str),
        pipeline=context,
        build_id=f"{sha}:{context}",  # a commit status has no run id
        status=status,
        branch=_status_branch(data.get("branches"), sha),
        sha=sha,
        # not sender: for a status that is the CI's bot account, not a person
        author=_commit_author(data, "commit.commit.author", login=text(data, "commit.author.login")),
        url=text(data, "target_url"),
        finished_at=_finished_at(status, first([data.get("updated_at"), data.get("created_at")])),
    )


def _status_branch(branches: Any, sha: str) -> str | None:
    """The branch whose head is ``sha``; GitHub lists up to 10 branches that
    merely *contain* the commit, so only an unambiguous one is taken (an entry
    without a name is no help and is passed over)."""
    if not isinstance(branches, list):
        return None
    named = [b for b in branches if isinstance(b, Mapping) and isinstance(b.get("name"), str) and b["name"]]
    names = [b["name"] for b in named]
    heads = [b["name"] for b in named if optional(b, "commit.sha") == sha]
    if len(heads) == 1:
        return heads[0]
    return names[0] if len(names) == 1 else None


def _commit_author(data: Mapping[str, Any], at: str, *, login: str | None) -> Author:
    """Name and email of the commit's author (the object at ``at``); the GitHub
    login of the commit author when the payload has it, else of the user who
    triggered the build."""
    return Author(name=text(data, f"{at}.name"), email=text(data, f"{at}.email"), login=login)


_HANDLERS = {
    "workflow_run": _workflow_run,
    "workflow_job": _workflow_job,
    "check_suite": _check_suite,
    "status": _status,
}
