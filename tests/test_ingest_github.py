import logging
from datetime import datetime, timezone
from urllib.parse import urlencode

import pytest

from buildnotify.events import FALLBACK_STATUS, Author, Status
from buildnotify.ingest import github
from buildnotify.ingest.base import (
    BadRequest,
    HookRequest,
    Ignored,
    ProviderConfig,
    Unauthorized,
    UnsupportedMediaType,
    hmac_sha256_hex,
)
from tests.ingest_support import Fixtures, only_event, utc

SECRET = "s3cret-for-tests"
CONFIG = ProviderConfig(secret=SECRET)
RECEIVED = datetime(2024, 5, 14, 12, 0, tzinfo=timezone.utc)
DELIVERY = "72d3162e-cc78-11e3-81ab-4c9367dc0958"
fixture = Fixtures("github")
edited = fixture.edited


def sign(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac_sha256_hex(secret, body)


def request(
    event: str,
    body: bytes,
    *,
    content_type: str = "application/json",
    signature: str | None = None,
    delivery: str | None = DELIVERY,
) -> HookRequest:
    headers = {"content-type": content_type, "x-github-event": event, "user-agent": "GitHub-Hookshot/abc123"}
    headers["x-hub-signature-256"] = signature if signature is not None else sign(body)
    if delivery is not None:
        headers["x-github-delivery"] = delivery
    return HookRequest(body=body, headers=headers, received_at=RECEIVED)


def parse_one(event: str, body: bytes, **kwargs):
    return only_event(github.parse(request(event, body, **kwargs), CONFIG), "github")


# -- signatures ----------------------------------------------------------------------


def test_github_published_signature_test_vector():
    # https://docs.github.com/webhooks/using-webhooks/validating-webhook-deliveries#testing-the-webhook-payload-validation
    assert (
        sign(b"Hello, World!", "It's a Secret to Everybody")
        == "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    )


def test_test_vector_signature_is_accepted_by_parse():
    body = b"Hello, World!"
    req = request(
        "ping",
        body,
        signature="sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
    )
    # authentication passes, so we get as far as the (malformed) JSON
    with pytest.raises(BadRequest, match="malformed JSON"):
        github.parse(req, ProviderConfig(secret="It's a Secret to Everybody"))


def test_missing_signature_is_unauthorized():
    req = request("workflow_run", fixture("workflow_run_completed_failure"))
    del req.headers["x-hub-signature-256"]
    with pytest.raises(Unauthorized, match="missing X-Hub-Signature-256") as e:
        github.parse(req, CONFIG)
    assert e.value.code == 401
    assert SECRET not in e.value.message


def test_wrong_signature_is_unauthorized():
    body = fixture("workflow_run_completed_failure")
    with pytest.raises(Unauthorized, match="does not match") as e:
        github.parse(request("workflow_run", body, signature=sign(body, "other-secret")), CONFIG)
    assert SECRET not in e.value.message


def test_signature_over_other_body_is_unauthorized():
    body = fixture("workflow_run_completed_failure")
    tampered = body.replace(b'"failure"', b'"success"')
    with pytest.raises(Unauthorized):
        github.parse(request("workflow_run", tampered, signature=sign(body)), CONFIG)


def test_legacy_sha1_signature_alone_is_not_enough():
    body = fixture("workflow_run_completed_failure")
    req = request("workflow_run", body)
    del req.headers["x-hub-signature-256"]
    req.headers["x-hub-signature"] = "sha1=0123456789abcdef0123456789abcdef01234567"
    with pytest.raises(Unauthorized):
        github.parse(req, CONFIG)


def test_unauthenticated_config_accepts_unsigned():
    body = fixture("workflow_run_completed_failure")
    req = request("workflow_run", body, signature="")
    delivery = github.parse(req, ProviderConfig())
    assert delivery.events[0].status is Status.FAILURE
    assert delivery.source is None


# -- body handling -------------------------------------------------------------------


def test_form_encoded_body_is_accepted_and_signed_over_raw_form():
    payload = fixture("workflow_run_completed_failure")
    form = urlencode({"payload": payload.decode()}).encode()
    _, event = parse_one("workflow_run", form, content_type="application/x-www-form-urlencoded")
    _, from_json = parse_one("workflow_run", payload)
    assert event == from_json


def test_form_signed_over_json_instead_of_form_is_rejected():
    payload = fixture("workflow_run_completed_failure")
    form = urlencode({"payload": payload.decode()}).encode()
    with pytest.raises(Unauthorized):
        github.parse(
            request(
                "workflow_run",
                form,
                content_type="application/x-www-form-urlencoded",
                signature=sign(payload),
            ),
            CONFIG,
        )


def test_form_without_payload_field_is_bad_request():
    form = b"other=1"
    with pytest.raises(BadRequest, match="payload"):
        github.parse(request("workflow_run", form, content_type="application/x-www-form-urlencoded"), CONFIG)


def test_wrong_content_type_is_415():
    body = fixture("workflow_run_completed_failure")
    with pytest.raises(UnsupportedMediaType) as e:
        github.parse(request("workflow_run", body, content_type="text/plain"), CONFIG)
    assert e.value.code == 415


def test_malformed_json_is_bad_request():
    body = b'{"action": "completed", "workflow_run": '
    with pytest.raises(BadRequest, match="malformed JSON"):
        github.parse(request("workflow_run", body), CONFIG)


@pytest.mark.parametrize(
    ("event", "name", "path"),
    [
        ("workflow_run", "workflow_run_completed_failure", "repository.full_name"),
        ("workflow_run", "workflow_run_completed_failure", "workflow_run.id"),
        ("workflow_run", "workflow_run_completed_failure", "workflow_run.status"),
        ("workflow_job", "workflow_job_completed", "workflow_job.run_id"),
        ("workflow_job", "workflow_job_completed", "workflow_job.name"),
        ("check_suite", "check_suite_completed", "check_suite.app.name"),
        ("status", "status_failure", "state"),
        ("status", "status_failure", "context"),
        ("status", "status_failure", "sha"),
    ],
)
def test_missing_required_field_is_bad_request_naming_it(event, name, path):
    def drop(data):
        *parents, leaf = path.split(".")
        for part in parents:
            data = data[part]
        del data[leaf]

    with pytest.raises(BadRequest) as e:
        github.parse(request(event, edited(name, drop)), CONFIG)
    assert path in e.value.message


@pytest.mark.parametrize(
    ("event", "name", "path", "value", "expected"),
    [
        ("workflow_run", "workflow_run_completed_failure", "workflow_run.name", {"name": "CI"}, "a string"),
        ("workflow_run", "workflow_run_completed_failure", "workflow_run.head_branch", ["main"], "a string"),
        ("workflow_run", "workflow_run_completed_failure", "workflow_run.head_sha", 7, "a string"),
        ("workflow_run", "workflow_run_completed_failure", "workflow_run.run_number", "412th", "an integer"),
        ("workflow_run", "workflow_run_completed_failure", "workflow_run.head_commit", "c0ffee", "an object"),
        ("workflow_job", "workflow_job_completed", "workflow_job.workflow_name", ["CI"], "a string"),
        ("check_suite", "check_suite_completed", "check_suite.head_branch", True, "a string"),
        ("status", "status_failure", "target_url", {"href": "x"}, "a string"),
    ],
)
def test_field_of_the_wrong_type_is_bad_request_naming_it(event, name, path, value, expected):
    def swap(data):
        *parents, leaf = path.split(".")
        for part in parents:
            data = data[part]
        data[leaf] = value

    with pytest.raises(BadRequest) as e:
        github.parse(request(event, edited(name, swap)), CONFIG)
    assert e.value.message == f"field {path} has the wrong type: expected {expected}"


def test_run_number_past_64_bits_is_bad_request_naming_it():
    body = edited("workflow_run_completed_failure", lambda d: d["workflow_run"].update(run_number=2**64))
    with pytest.raises(BadRequest, match="field workflow_run.run_number is out of range"):
        github.parse(request("workflow_run", body), CONFIG)


def test_ping_is_ignored():
    with pytest.raises(Ignored) as e:
        github.parse(request("ping", fixture("ping")), CONFIG)
    assert e.value.reason == "ping"


@pytest.mark.parametrize("event", ["push", "pull_request", "check_run", "deployment_status"])
def test_unknown_event_is_ignored(event):
    with pytest.raises(Ignored, match=event):
        github.parse(request(event, b'{"action": "opened"}'), CONFIG)


def test_missing_event_header_is_bad_request():
    req = request("workflow_run", fixture("workflow_run_completed_failure"))
    del req.headers["x-github-event"]
    with pytest.raises(BadRequest, match="X-GitHub-Event"):
        github.parse(req, CONFIG)


def test_delivery_key_falls_back_to_content_hash():
    body = fixture("workflow_run_completed_failure")
    delivery, event = parse_one("workflow_run", body, delivery=None)
    assert delivery.key.startswith("sha256:")
    assert event.delivery_key == delivery.key


# -- statuses ------------------------------------------------------------------------


#: What each raw GitHub value must mean, written out independently of the module.
EXPECTED_STATUSES = {
    "requested": Status.QUEUED,
    "queued": Status.QUEUED,
    "pending": Status.QUEUED,
    "waiting": Status.QUEUED,
    "action_required": Status.QUEUED,
    "in_progress": Status.RUNNING,
    "completed": Status.ERROR,
    "success": Status.SUCCESS,
    "neutral": Status.SUCCESS,
    "failure": Status.FAILURE,
    "timed_out": Status.FAILURE,
    "startup_failure": Status.ERROR,
    "error": Status.ERROR,
    "cancelled": Status.CANCELLED,
    "stale": Status.CANCELLED,
    "skipped": Status.SKIPPED,
}


def test_status_map_is_the_documented_table():
    assert github.STATUS_MAP == EXPECTED_STATUSES


@pytest.mark.parametrize(("raw", "expected"), sorted(EXPECTED_STATUSES.items()))
def test_status_map_entry_through_parse(raw, expected):
    def change(data):
        if raw in ("requested", "queued", "pending", "waiting", "in_progress"):
            data["workflow_run"].update(status=raw, conclusion=None)
        elif raw == "completed":
            data["workflow_run"].update(status="completed", conclusion=None)
        else:
            data["workflow_run"].update(status="completed", conclusion=raw)

    _, event = parse_one("workflow_run", edited("workflow_run_completed_failure", change))
    assert event.status is expected


@pytest.mark.parametrize("state", ["pending", "success", "failure", "error"])
def test_every_commit_status_state_is_known(state):
    _, event = parse_one("status", edited("status_failure", lambda d: d.update(state=state)))
    assert event.status is EXPECTED_STATUSES[state]


def test_unknown_status_falls_back_and_logs(caplog):
    body = edited("workflow_run_completed_failure", lambda d: d["workflow_run"].update(conclusion="exploded"))
    with caplog.at_level(logging.WARNING):
        _, event = parse_one("workflow_run", body)
    assert event.status is FALLBACK_STATUS
    assert any("exploded" in r.getMessage() and "github" in r.getMessage() for r in caplog.records)


# -- field by field ------------------------------------------------------------------


def test_workflow_run_completed_failure():
    delivery, event = parse_one("workflow_run", fixture("workflow_run_completed_failure"))
    assert delivery.key == DELIVERY
    assert delivery.source is None
    assert event.provider == "github"
    assert event.project == "acme/widget"
    assert event.pipeline == "CI"
    assert event.build_id == "9876543210"
    assert event.build_number == 412
    assert event.attempt == 2
    assert event.status is Status.FAILURE
    assert event.branch == "main"
    assert event.sha == "7d3a1f0c9b2e4d5f6a7b8c9d0e1f2a3b4c5d6e7f"
    # commit author's name/email; actor (not the re-running triggering_actor) for the login
    assert event.author == Author(name="Mona Lisa Octocat", email="mona@acme.example", login="octocat")
    assert event.url == "https://github.com/acme/widget/actions/runs/9876543210"
    assert event.started_at == utc("2024-05-14T09:15:30")
    assert event.finished_at == utc("2024-05-14T09:19:47")
    assert event.received_at == RECEIVED
    assert event.delivery_key == DELIVERY
    assert event.id is None
    assert event.transition is None


def test_workflow_run_in_progress():
    _, event = parse_one("workflow_run", fixture("workflow_run_in_progress"))
    assert event.project == "acme/widget"
    assert event.pipeline == "CI"
    assert event.build_id == "9876600001"
    assert event.build_number == 413
    assert event.attempt == 1
    assert event.status is Status.RUNNING
    assert event.branch == "feature/retry-backoff"
    assert event.sha == "c0ffee00c0ffee00c0ffee00c0ffee00c0ffee00"
    assert event.author == Author(name="Jane Doe", email="jane@acme.example", login="jdoe")
    assert event.url == "https://github.com/acme/widget/actions/runs/9876600001"
    assert event.started_at == utc("2024-05-14T10:01:00")
    assert event.finished_at is None


def test_workflow_job_completed():
    _, event = parse_one("workflow_job", fixture("workflow_job_completed"))
    assert event.project == "acme/widget"
    assert event.pipeline == "CI / test (3.12)"
    assert event.build_id == "9876543210"  # the run id, shared by all attempts
    assert event.build_number is None
    assert event.attempt == 2
    assert event.status is Status.FAILURE  # timed_out
    assert event.branch == "main"
    assert event.sha == "7d3a1f0c9b2e4d5f6a7b8c9d0e1f2a3b4c5d6e7f"
    assert event.author == Author(login="octocat")
    assert event.url == "https://github.com/acme/widget/actions/runs/9876543210/job/26954321098"
    assert event.started_at == utc("2024-05-14T09:15:41")
    assert event.finished_at == utc("2024-05-14T09:19:45")
    assert event.delivery_key == DELIVERY


def test_check_suite_completed():
    _, event = parse_one("check_suite", fixture("check_suite_completed"))
    assert event.project == "acme/widget"
    assert event.pipeline == "Acme Lint"
    assert event.build_id == "23456789555"
    assert event.build_number is None
    assert event.attempt == 1
    assert event.status is Status.SUCCESS  # neutral
    assert event.branch == "release/2.4"
    assert event.sha == "5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f"
    assert event.author == Author(name="Release Bot", email="release@acme.example", login="acme-release")
    assert (
        event.url == "https://github.com/acme/widget/commit/5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f/checks"
    )
    assert event.started_at == utc("2024-05-14T11:20:31")
    assert event.finished_at == utc("2024-05-14T11:24:02")


def test_status_failure():
    _, event = parse_one("status", fixture("status_failure"))
    sha = "7d3a1f0c9b2e4d5f6a7b8c9d0e1f2a3b4c5d6e7f"
    assert event.project == "acme/widget"
    assert event.pipeline == "continuous-integration/jenkins/branch"
    assert event.build_id == f"{sha}:continuous-integration/jenkins/branch"
    assert event.build_number is None
    assert event.attempt == 1
    assert event.status is Status.FAILURE
    assert event.branch == "main"  # the listed branch whose head is the sha
    assert event.sha == sha
    # commit author's login, never the CI bot that sent the status
    assert event.author == Author(name="Mona Lisa Octocat", email="mona@acme.example", login="octocat")
    assert event.url == "https://jenkins.acme.example/job/widget/job/main/218/"
    assert event.started_at is None
    assert event.finished_at == utc("2024-05-14T09:31:07")


def test_status_without_linked_author_or_clear_branch():
    def change(data):
        data["commit"]["author"] = None
        data["branches"][0]["commit"]["sha"] = "0" * 40
        data["state"] = "pending"

    _, event = parse_one("status", edited("status_failure", change))
    assert event.author == Author(name="Mona Lisa Octocat", email="mona@acme.example", login=None)
    assert event.branch is None  # two branches contain it, neither has it as head
    assert event.status is Status.QUEUED
    assert event.finished_at is None
