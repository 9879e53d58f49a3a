import logging
from datetime import datetime, timezone

import pytest

from buildnotify.events import FALLBACK_STATUS, Author, Status
from buildnotify.ingest import gitlab
from buildnotify.ingest.base import (
    BadRequest,
    HookRequest,
    Ignored,
    ProviderConfig,
    Unauthorized,
    UnsupportedMediaType,
    content_hash,
    parse_time,
)
from tests.ingest_support import Fixtures, only_event, utc

SECRET = "gl-token-for-tests"
CONFIG = ProviderConfig(secret=SECRET)
RECEIVED = datetime(2024, 5, 14, 12, 10, tzinfo=timezone.utc)
IDEMPOTENCY_KEY = "9db5a20d-3bbb-416d-a265-c095052a9348"
PIPELINE, JOB = "Pipeline Hook", "Job Hook"
fixture = Fixtures("gitlab")
edited = fixture.edited


def request(
    event: str | None,
    body: bytes,
    *,
    token: str | None = SECRET,
    content_type: str = "application/json",
    idempotency_key: str | None = IDEMPOTENCY_KEY,
) -> HookRequest:
    headers = {
        "content-type": content_type,
        "user-agent": "GitLab/17.11.1-ee",
        "x-gitlab-webhook-uuid": "c764a944-82c2-4044-9213-ec5b89d12778",
        "x-gitlab-event-uuid": "0f490e30-2db8-4091-91a1-52fe67960342",
        "x-gitlab-instance": "https://gitlab.acme.example",
    }
    if event is not None:
        headers["x-gitlab-event"] = event
    if token is not None:
        headers["x-gitlab-token"] = token
    if idempotency_key is not None:
        headers["idempotency-key"] = idempotency_key
    return HookRequest(body=body, headers=headers, received_at=RECEIVED)


def parse_one(event: str | None, body: bytes, config: ProviderConfig = CONFIG, **kwargs):
    return only_event(gitlab.parse(request(event, body, **kwargs), config), "gitlab")


# -- field by field ------------------------------------------------------------------


def test_pipeline_success():
    delivery, event = parse_one(PIPELINE, fixture("pipeline_success"))
    assert delivery.key == IDEMPOTENCY_KEY
    assert delivery.source is None
    assert event.provider == "gitlab"
    assert event.project == "acme/widget"
    assert event.pipeline == "pipeline"  # no workflow:name
    assert event.build_id == "1187342"
    assert event.build_number == 312  # iid: per project, orders runs
    assert event.attempt == 1
    assert event.status is Status.SUCCESS
    assert event.branch == "main"
    assert event.sha == "8f3a2c1d9e4b7a6f5c0d1e2f3a4b5c6d7e8f9a0b"
    # name and email from the commit, login from the user (whose email is private)
    assert event.author == Author(name="Dana Scully", email="dana@acme.example", login="dscully")
    assert event.url == "https://gitlab.acme.example/acme/widget/-/pipelines/1187342"
    assert event.started_at == utc("2024-05-14 11:41:07")
    assert event.finished_at == utc("2024-05-14 11:49:58")
    assert event.received_at == RECEIVED
    assert event.delivery_key == IDEMPOTENCY_KEY
    assert event.id is None and event.transition is None


def test_merge_request_pipeline_takes_source_branch_and_pipeline_name():
    _, event = parse_one(PIPELINE, fixture("pipeline_failed"))
    assert event.project == "acme/widget"
    assert event.pipeline == "MR pipeline"
    assert event.build_id == "1187410"
    assert event.build_number == 315
    assert event.status is Status.FAILURE
    assert event.branch == "feature/login-throttle"  # not refs/merge-requests/87/head
    assert event.sha == "c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3"
    assert event.author == Author(
        name="Fox Mulder", email="fox.mulder@users.noreply.acme.example", login="fmulder"
    )
    assert event.url == "https://gitlab.acme.example/acme/widget/-/pipelines/1187410"
    assert event.started_at == utc("2024-05-14 12:02:11")
    assert event.finished_at == utc("2024-05-14 12:07:45")


def test_running_pipeline_from_older_gitlab():
    # no object_attributes.name (before 16.1) and no object_attributes.url
    _, event = parse_one(PIPELINE, fixture("pipeline_running"))
    assert event.project == "platform/tools/gadget"
    assert event.pipeline == "pipeline"
    assert event.build_id == "98231"
    assert event.build_number == 1204
    assert event.status is Status.RUNNING
    assert event.branch == "release-2.4"
    assert event.sha == "e1f2a3b4c5d6e7f8a9b0c1d2e3f4a5b6c7d8e9f0"
    assert event.author == Author(name="Walter Skinner", email="walter@acme.example", login="wskinner")
    assert event.url == "https://gitlab.acme.example/platform/tools/gadget/-/pipelines/98231"
    assert event.started_at == utc("2022-11-03 08:15:42")
    assert event.finished_at is None


def test_failed_job():
    delivery, event = parse_one(JOB, fixture("job_failed"))
    assert delivery.key == IDEMPOTENCY_KEY
    assert event.project == "acme/widget"
    assert event.pipeline == "test / rspec"
    # the pipeline, so the retry of a job is a new attempt of the same run
    assert event.build_id == "1187342"
    assert event.build_number == 1187342
    assert event.attempt == 2  # retries_count 1
    assert event.status is Status.FAILURE
    assert event.branch == "main"
    assert event.sha == "8f3a2c1d9e4b7a6f5c0d1e2f3a4b5c6d7e8f9a0b"
    assert event.author == Author(name="Dana Scully", email="dana@acme.example", login="dscully")
    assert event.url == "https://gitlab.acme.example/acme/widget/-/jobs/5521977"
    assert event.started_at == utc("2024-05-14 11:51:05")
    assert event.finished_at == utc("2024-05-14 11:57:40")
    assert event.received_at == RECEIVED


def test_running_job_from_older_gitlab():
    # "2022-11-03 08:15:44 UTC" timestamps, no *_iso fields, no retries_count, no username
    _, event = parse_one(JOB, fixture("job_running"))
    assert event.project == "platform/tools/gadget"
    assert event.pipeline == "build / compile"
    assert event.build_id == "98231"
    assert event.build_number == 98231
    assert event.attempt == 1
    assert event.status is Status.RUNNING
    assert event.branch == "release-2.4"
    assert event.author == Author(name="Walter Skinner", email="walter@acme.example", login=None)
    assert event.url == "https://gitlab.acme.example/platform/tools/gadget/-/jobs/771902"
    assert event.started_at == utc("2022-11-03 08:15:44")
    assert event.finished_at is None


def test_job_without_stage_is_named_by_job_alone():
    body = edited("job_failed", lambda d: d.pop("build_stage"))
    assert parse_one(JOB, body)[1].pipeline == "rspec"


def test_gitlab_utc_timestamps_parse():
    assert parse_time("2016-08-12 15:23:28 UTC") == datetime(2016, 8, 12, 15, 23, 28, tzinfo=timezone.utc)
    body = edited(
        "pipeline_success", lambda d: d["object_attributes"].update(finished_at="2016-08-12 15:26:29 UTC")
    )
    assert parse_one(PIPELINE, body)[1].finished_at == datetime(2016, 8, 12, 15, 26, 29, tzinfo=timezone.utc)


def test_redacted_email_is_dropped():
    body = edited("pipeline_success", lambda d: d.pop("commit"))
    _, event = parse_one(PIPELINE, body)
    assert event.author == Author(name="Dana Scully", email=None, login="dscully")


def test_refs_heads_prefix_is_stripped():
    body = edited("job_failed", lambda d: d.update(ref="refs/heads/main"))
    assert parse_one(JOB, body)[1].branch == "main"


# -- statuses ------------------------------------------------------------------------

EXPECTED = {
    "created": Status.QUEUED,
    "waiting_for_resource": Status.QUEUED,
    "preparing": Status.QUEUED,
    "pending": Status.QUEUED,
    "scheduled": Status.QUEUED,
    "manual": Status.QUEUED,
    "running": Status.RUNNING,
    "waiting_for_callback": Status.RUNNING,
    "success": Status.SUCCESS,
    "failed": Status.FAILURE,
    "canceling": Status.CANCELLED,
    "canceled": Status.CANCELLED,
    "skipped": Status.SKIPPED,
}


def test_status_table_covers_gitlab_statuses():
    assert gitlab.STATUS_MAP == EXPECTED


@pytest.mark.parametrize(("raw", "expected"), sorted(EXPECTED.items()))
def test_pipeline_status(raw, expected):
    body = edited("pipeline_success", lambda d: d["object_attributes"].update(status=raw))
    _, event = parse_one(PIPELINE, body)
    assert event.status is expected
    assert (event.finished_at is not None) == expected.finished


@pytest.mark.parametrize(("raw", "expected"), sorted(EXPECTED.items()))
def test_job_status(raw, expected):
    body = edited("job_failed", lambda d: d.update(build_status=raw))
    _, event = parse_one(JOB, body)
    assert event.status is expected
    assert (event.finished_at is not None) == expected.finished


def test_unknown_status_falls_back_and_is_logged(caplog):
    body = edited("pipeline_success", lambda d: d["object_attributes"].update(status="exploded"))
    with caplog.at_level(logging.WARNING):
        _, event = parse_one(PIPELINE, body)
    assert event.status is FALLBACK_STATUS
    assert any("gitlab" in r.getMessage() and "exploded" in r.getMessage() for r in caplog.records)


# -- authentication ------------------------------------------------------------------


def test_missing_token_is_unauthorized():
    with pytest.raises(Unauthorized, match="missing X-Gitlab-Token") as e:
        gitlab.parse(request(PIPELINE, fixture("pipeline_success"), token=None), CONFIG)
    assert e.value.code == 401
    assert SECRET not in e.value.message


def test_wrong_token_is_unauthorized():
    with pytest.raises(Unauthorized, match="does not match") as e:
        gitlab.parse(request(PIPELINE, fixture("pipeline_success"), token="guess"), CONFIG)
    assert SECRET not in e.value.message


def test_token_prefix_is_not_enough():
    with pytest.raises(Unauthorized):
        gitlab.parse(request(PIPELINE, fixture("pipeline_success"), token=SECRET[:-1]), CONFIG)


def test_token_is_compared_in_constant_time(monkeypatch):
    calls = []

    def spy(a, b):
        calls.append((a, b))
        return a == b

    monkeypatch.setattr(gitlab, "constant_time_equal", spy)
    parse_one(PIPELINE, fixture("pipeline_success"))
    assert calls == [(SECRET, SECRET)]


def test_hub_without_secret_but_with_tokens_rejects():
    config = ProviderConfig(tokens={"ci": "other"})
    with pytest.raises(Unauthorized, match="no GitLab secret token"):
        gitlab.parse(request(PIPELINE, fixture("pipeline_success"), token="other"), config)


def test_authentication_comes_before_content_type():
    with pytest.raises(Unauthorized):
        gitlab.parse(request(PIPELINE, b"<xml/>", token="guess", content_type="text/xml"), CONFIG)


def test_unauthenticated_config_accepts_without_token():
    _, event = parse_one(PIPELINE, fixture("pipeline_success"), config=ProviderConfig(), token=None)
    assert event.status is Status.SUCCESS


# -- delivery keys -------------------------------------------------------------------


def test_without_idempotency_key_the_body_hash_is_the_key():
    body = fixture("pipeline_success")
    delivery, event = parse_one(PIPELINE, body, idempotency_key=None)
    # not X-Gitlab-Webhook-UUID: that changes on every retry of a delivery
    assert delivery.key == content_hash(body)
    assert event.delivery_key == content_hash(body)


# -- events --------------------------------------------------------------------------


def test_object_kind_is_used_without_event_header():
    _, event = parse_one(None, fixture("job_failed"))
    assert event.pipeline == "test / rspec"


def test_system_hook_header_falls_back_to_object_kind():
    _, event = parse_one("System Hook", fixture("pipeline_success"))
    assert event.build_id == "1187342"


@pytest.mark.parametrize("event", ["Push Hook", "Merge Request Hook", "Deployment Hook"])
def test_other_events_are_ignored(event):
    with pytest.raises(Ignored, match=event):
        gitlab.parse(request(event, b'{"object_kind": "push"}'), CONFIG)


def test_header_wins_over_object_kind():
    # a push payload announced as a push is ignored even if it claimed otherwise
    with pytest.raises(Ignored):
        gitlab.parse(request("Push Hook", fixture("pipeline_success")), CONFIG)


def test_unknown_object_kind_is_ignored():
    with pytest.raises(Ignored):
        gitlab.parse(request(None, b'{"object_kind": "wiki_page"}'), CONFIG)


# -- bad requests --------------------------------------------------------------------


def test_wrong_content_type_is_415():
    with pytest.raises(UnsupportedMediaType) as e:
        gitlab.parse(request(PIPELINE, fixture("pipeline_success"), content_type="text/plain"), CONFIG)
    assert e.value.code == 415


def test_malformed_json_is_bad_request():
    with pytest.raises(BadRequest, match="malformed JSON"):
        gitlab.parse(request(PIPELINE, b'{"object_kind": "pipeline", '), CONFIG)


@pytest.mark.parametrize(
    ("event", "name", "path"),
    [
        (PIPELINE, "pipeline_success", "project.path_with_namespace"),
        (PIPELINE, "pipeline_success", "object_attributes.id"),
        (PIPELINE, "pipeline_success", "object_attributes.status"),
        (PIPELINE, "pipeline_success", "object_attributes"),
        (JOB, "job_failed", "build_id"),
        (JOB, "job_failed", "build_name"),
        (JOB, "job_failed", "build_status"),
    ],
)
def test_missing_required_field_is_bad_request_naming_it(event, name, path):
    def drop(data):
        *parents, leaf = path.split(".")
        for part in parents:
            data = data[part]
        del data[leaf]

    with pytest.raises(BadRequest) as e:
        gitlab.parse(request(event, edited(name, drop)), CONFIG)
    assert path in e.value.message


@pytest.mark.parametrize(
    ("event", "name", "path", "expected"),
    [
        (PIPELINE, "pipeline_success", "object_attributes.status", "a string"),
        (PIPELINE, "pipeline_success", "object_attributes.name", "a string"),
        (PIPELINE, "pipeline_success", "object_attributes.iid", "an integer"),
        (PIPELINE, "pipeline_success", "commit.author.name", "a string"),
        (JOB, "job_failed", "build_name", "a string"),
        (JOB, "job_failed", "build_stage", "a string"),
        (JOB, "job_failed", "retries_count", "an integer"),
        (JOB, "job_failed", "sha", "a string"),
        (JOB, "job_failed", "user", "an object"),
    ],
)
def test_field_of_the_wrong_type_is_bad_request_naming_it(event, name, path, expected):
    def swap(data):
        *parents, leaf = path.split(".")
        for part in parents:
            data = data[part]
        data[leaf] = [data[leaf]] if leaf != "user" else "dscully"

    with pytest.raises(BadRequest) as e:
        gitlab.parse(request(event, edited(name, swap)), CONFIG)
    assert e.value.message == f"field {path} has the wrong type: expected {expected}"


# -- what older GitLab versions send ---------------------------------------------------


def test_job_from_an_older_gitlab_without_project_or_pipeline_id():
    """No project object, no pipeline_id, no retries_count, and "Build Hook"."""
    _, event = parse_one("Build Hook", fixture("job_success_old"))
    assert event.project == "legacy/old-widget"  # from the repository's URL, not the project's title
    assert event.pipeline == "test / rspec"
    assert event.build_id == "51230"  # commit.id: the pipeline's id, in every GitLab version
    assert event.build_number == 51230
    assert event.attempt == 1
    assert event.status is Status.SUCCESS
    assert event.branch == "main"
    assert event.sha == "3b1f0c9e8d7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c"
    assert event.author == Author(name="Margaret Hamilton", email="margaret@acme.example", login=None)
    assert event.url == "https://gitlab.acme.example/legacy/old-widget/-/jobs/380211"
    assert event.started_at == utc("2018-03-06 10:12:41")
    assert event.finished_at == utc("2018-03-06 10:19:02")


@pytest.mark.parametrize(
    ("only", "url"),
    [
        ("git_ssh_url", "git@gitlab.acme.example:legacy/old-widget.git"),
        ("git_ssh_url", "ssh://git@gitlab.acme.example:2222/legacy/old-widget.git"),
        ("url", "git@gitlab.acme.example:legacy/old-widget.git"),
        ("homepage", "https://gitlab.acme.example/legacy/old-widget"),
        ("git_http_url", "https://gitlab.acme.example/legacy/old-widget.git"),
    ],
)
def test_job_without_project_takes_the_path_from_any_repository_url(only, url):
    body = edited("job_success_old", lambda d: d.update(repository={"name": "Old Widget", only: url}))
    assert parse_one(JOB, body)[1].project == "legacy/old-widget"


def test_job_without_project_or_repository_takes_the_project_name():
    body = edited("job_success_old", lambda d: d.pop("repository"))
    _, event = parse_one(JOB, body)
    assert event.project == "Legacy Team/Old Widget"
    assert event.url is None  # nothing says where the project's pages are


def test_job_without_anything_naming_the_project_is_bad_request():
    body = edited("job_success_old", lambda d: [d.pop("repository"), d.pop("project_name")])
    with pytest.raises(BadRequest, match="missing field: project.path_with_namespace"):
        gitlab.parse(request(JOB, body), CONFIG)


def test_job_without_a_pipeline_id_is_a_run_of_its_own():
    body = edited("job_success_old", lambda d: d["commit"].pop("id"))
    _, event = parse_one(JOB, body)
    assert (event.build_id, event.build_number) == ("380211", 380211)


OPTIONAL = [
    (PIPELINE, "pipeline_success", path)
    for path in (
        "merge_request",
        "user",
        "commit",
        "builds",
        "object_attributes.iid",
        "object_attributes.name",
        "object_attributes.url",
        "object_attributes.ref",
        "object_attributes.sha",
        "object_attributes.created_at",
        "object_attributes.finished_at",
    )
] + [
    (JOB, "job_failed", path)
    for path in (
        "project",
        "pipeline_id",
        "retries_count",
        "build_stage",
        "user",
        "commit",
        "repository",
        "runner",
        "environment",
        "ref",
        "sha",
        "build_started_at",
        "build_finished_at",
        "build_started_at_iso",
        "build_finished_at_iso",
    )
]


@pytest.mark.parametrize(("event", "name", "path"), OPTIONAL)
def test_no_optional_part_is_required(event, name, path):
    """GitLab disables a hook that keeps getting 4xx: a payload without an
    optional part (an older GitLab, a pipeline without a merge request) is read."""

    def drop(data):
        *parents, leaf = path.split(".")
        for part in parents:
            data = data[part]
        del data[leaf]

    _, event = parse_one(event, edited(name, drop))
    assert event.project == "acme/widget"
