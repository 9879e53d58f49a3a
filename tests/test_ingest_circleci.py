import json
import logging
from datetime import datetime, timezone

import pytest

from buildnotify.events import FALLBACK_STATUS, Author, Status
from buildnotify.ingest import circleci
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

SECRET = "circle-signing-secret"
CONFIG = ProviderConfig(secret=SECRET)
RECEIVED = datetime(2024, 5, 14, 13, 0, tzinfo=timezone.utc)
fixture = Fixtures("circleci")
edited = fixture.edited


def request(
    body: bytes, *, signature: str | None = None, content_type: str = "application/json"
) -> HookRequest:
    try:
        kind = json.loads(body).get("type", "")
    except ValueError:
        kind = ""
    headers = {
        "content-type": content_type,
        "user-agent": "CircleCI-Webhook/1.0",
        "circleci-event-type": kind,
        "circleci-signature": signature if signature is not None else "v1=" + hmac_sha256_hex(SECRET, body),
    }
    return HookRequest(body=body, headers=headers, received_at=RECEIVED)


def parse_one(body: bytes, **kwargs):
    return only_event(circleci.parse(request(body, **kwargs), CONFIG), "circleci")


# -- signatures ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "secret", "expected"),
    [
        # the examples published in CircleCI's "Validate outbound webhooks" docs
        (b"hello world", "secret", "734cc62f32841568f45715aeb9f4d7891324e6d948e4c6c60c0621cdac48623a"),
        (b"lalala", "another-secret", "daa220016c8f29a8b214fbfc3671aeec2145cfb1e6790184ffb38b6d0425fa00"),
        (
            b"an-important-request-payload",
            "hunter123",
            "9be2242094a9a8c00c64306f382a7f9d691de910b4a266f67bd314ef18ac49fa",
        ),
        (b"foo", "secret", "773ba44693c7553d6ee20f61ea5d2757a9a4f4a44d2841ae4e95b52e4cd62db4"),
    ],
)
def test_circleci_published_signature_examples(body, secret, expected):
    assert hmac_sha256_hex(secret, body) == expected
    req = HookRequest(body=body, headers={"circleci-signature": f"v1={expected}"})
    # authentication passes, so we get as far as the (malformed) JSON
    with pytest.raises(BadRequest, match="malformed JSON"):
        circleci.parse(req, ProviderConfig(secret=secret))


def test_signature_with_several_versions_accepts_matching_v1():
    body = fixture("workflow_completed_failed")
    good = hmac_sha256_hex(SECRET, body)
    _, event = parse_one(body, signature=f"v2=abc, v1=deadbeef, v1={good},v3=xyz")
    assert event.status is Status.FAILURE


def test_missing_signature_is_unauthorized():
    req = request(fixture("workflow_completed_failed"))
    del req.headers["circleci-signature"]
    with pytest.raises(Unauthorized, match="missing circleci-signature") as e:
        circleci.parse(req, CONFIG)
    assert e.value.code == 401
    assert SECRET not in e.value.message


def test_wrong_signature_is_unauthorized():
    body = fixture("workflow_completed_failed")
    with pytest.raises(Unauthorized, match="does not match") as e:
        circleci.parse(request(body, signature="v1=" + hmac_sha256_hex("nope", body)), CONFIG)
    assert SECRET not in e.value.message


def test_signature_without_v1_is_unauthorized():
    body = fixture("workflow_completed_failed")
    good = hmac_sha256_hex(SECRET, body)
    with pytest.raises(Unauthorized, match="no v1"):
        circleci.parse(request(body, signature=f"v2={good}"), CONFIG)


def test_unauthenticated_config_accepts_unsigned():
    req = request(fixture("workflow_completed_failed"), signature="")
    delivery = circleci.parse(req, ProviderConfig())
    assert delivery.events[0].status is Status.FAILURE


# -- body handling -------------------------------------------------------------------


def test_wrong_content_type_is_415():
    with pytest.raises(UnsupportedMediaType):
        circleci.parse(request(fixture("workflow_completed_failed"), content_type="text/xml"), CONFIG)


def test_malformed_json_is_bad_request():
    with pytest.raises(BadRequest, match="malformed JSON"):
        circleci.parse(request(b'{"type": "workflow-completed",'), CONFIG)


@pytest.mark.parametrize(
    ("name", "path"),
    [
        ("workflow_completed_failed", "id"),
        ("workflow_completed_failed", "workflow.status"),
        ("workflow_completed_failed", "workflow.name"),
        ("workflow_completed_failed", "pipeline.number"),
        ("workflow_completed_failed", "project.slug"),
        ("job_completed_success", "job.status"),
        ("job_completed_success", "job.name"),
        ("job_completed_success", "job.number"),
        ("job_completed_success", "job.id"),
    ],
)
def test_missing_required_field_is_bad_request_naming_it(name, path):
    def drop(data):
        *parents, leaf = path.split(".")
        for part in parents:
            data = data[part]
        del data[leaf]

    with pytest.raises(BadRequest) as e:
        circleci.parse(request(edited(name, drop)), CONFIG)
    assert path in e.value.message


def test_ping_is_ignored():
    # CircleCI's "Test Ping Event" payload is abbreviated and not documented in full
    body = json.dumps(
        {
            "type": "ping",
            "id": "5a7a5e6c-2f0a-4b3d-9c1e-6f2b8d4e0a11",
            "happened_at": "2024-05-14T12:00:00.000Z",
            "webhook": {"id": "cf8c4fdd-0587-4da1-b4ca-4846e9640af9", "name": "buildnotify"},
        }
    ).encode()
    with pytest.raises(Ignored) as e:
        circleci.parse(request(body), CONFIG)
    assert e.value.reason == "ping"


def test_unknown_event_is_ignored():
    body = edited("workflow_completed_failed", lambda d: d.update(type="pipeline-created"))
    with pytest.raises(Ignored, match="pipeline-created"):
        circleci.parse(request(body), CONFIG)


# -- statuses ------------------------------------------------------------------------


#: What each raw CircleCI value must mean, written out independently of the module.
EXPECTED_STATUSES = {
    # the "potential statuses" of workflow-completed and job-completed
    "success": Status.SUCCESS,
    "failed": Status.FAILURE,
    "error": Status.ERROR,
    "canceled": Status.CANCELLED,
    "unauthorized": Status.ERROR,
    # the wider workflow/job status enums of API v2
    "cancelled": Status.CANCELLED,
    "failing": Status.FAILURE,
    "timedout": Status.FAILURE,
    "infrastructure_fail": Status.ERROR,
    "terminated-unknown": Status.ERROR,
    "retried": Status.CANCELLED,
    "not_run": Status.SKIPPED,
    "running": Status.RUNNING,
    "queued": Status.QUEUED,
    "not_running": Status.QUEUED,
    "blocked": Status.QUEUED,
    "on_hold": Status.QUEUED,
}


def test_status_map_is_the_documented_table():
    assert circleci.STATUS_MAP == EXPECTED_STATUSES


@pytest.mark.parametrize(("raw", "expected"), sorted(EXPECTED_STATUSES.items()))
def test_status_map_entry_through_workflow(raw, expected):
    body = edited("workflow_completed_failed", lambda d: d["workflow"].update(status=raw))
    assert parse_one(body)[1].status is expected


@pytest.mark.parametrize(("raw", "expected"), sorted(EXPECTED_STATUSES.items()))
def test_status_map_entry_through_job(raw, expected):
    body = edited("job_completed_success", lambda d: d["job"].update(status=raw.upper()))
    assert parse_one(body)[1].status is expected


def test_unknown_status_falls_back_and_logs(caplog):
    body = edited("workflow_completed_failed", lambda d: d["workflow"].update(status="vaporized"))
    with caplog.at_level(logging.WARNING):
        _, event = parse_one(body)
    assert event.status is FALLBACK_STATUS
    assert any("vaporized" in r.getMessage() and "circleci" in r.getMessage() for r in caplog.records)


# -- field by field ------------------------------------------------------------------


def test_workflow_completed_failed():
    delivery, event = parse_one(fixture("workflow_completed_failed"))
    assert delivery.key == "3888f21b-eaa7-38e3-8f3d-75a63bba8895"
    assert delivery.source is None
    assert event.provider == "circleci"
    assert event.project == "acme/widget"
    assert event.pipeline == "build-test-deploy"
    assert event.build_id == "1285fe1d-d3a6-44fc-8886-8979558254c4"  # the pipeline: re-runs are one run
    assert event.build_number == 130
    assert event.attempt == 1
    assert event.status is Status.FAILURE
    assert event.branch == "main"
    assert event.sha == "1dc6aa69429bff4806ad6afe58d3d8f57e25973e"
    assert event.author == Author(name="Jane Doe", email="jane@acme.example", login=None)
    assert event.url == (
        "https://app.circleci.com/pipelines/github/acme/widget/130/workflows/fda08377-fe7e-46b1-8992-3a7aaecac9c3"
    )
    assert event.started_at == utc("2024-05-14T12:49:03.616")
    assert event.finished_at == utc("2024-05-14T12:49:34.170")
    assert event.received_at == RECEIVED
    assert event.delivery_key == "3888f21b-eaa7-38e3-8f3d-75a63bba8895"
    assert event.id is None
    assert event.transition is None


def test_job_completed_success():
    delivery, event = parse_one(fixture("job_completed_success"))
    assert delivery.key == "8bd71c28-4969-3677-8940-3e3a61c46660"
    assert event.project == "acme/widget"
    assert event.pipeline == "build-test-deploy / test"
    assert event.build_id == "8b91f9a8-7975-4e60-916c-f0152ccbc937"
    assert event.build_number == 136
    assert event.attempt == 1
    assert event.status is Status.SUCCESS
    assert event.branch == "main"
    assert event.sha == "1dc6aa69429bff4806ad6afe58d3d8f57e25973e"
    assert event.author == Author(name="Jane Doe", email="jane@acme.example")
    assert event.url == (
        "https://app.circleci.com/pipelines/github/acme/widget/130/workflows/"
        "fda08377-fe7e-46b1-8992-3a7aaecac9c3/jobs/136"
    )
    assert event.started_at == utc("2024-05-14T12:49:28.841")
    assert event.finished_at == utc("2024-05-14T12:49:34.170")
    assert event.delivery_key == "8bd71c28-4969-3677-8940-3e3a61c46660"


def test_workflow_completed_gitlab_trigger_parameters():
    delivery, event = parse_one(fixture("workflow_completed_gitlab"))
    assert delivery.key == "cbabbb40-6084-4f91-8311-a326c0f4963a"
    # opaque circleci/<org-id>/<project-id> slug: organization and project names instead
    assert event.project == "acme/gadget"
    assert event.pipeline == "nightly"
    assert event.build_id == "37c74cb7-d64d-4032-8731-1cb95bfef921"
    assert event.build_number == 57
    assert event.status is Status.ERROR  # infrastructure_fail
    assert event.branch == "develop"
    assert event.sha == "850a1519f25d14e968649cc420d1bd381715c05c"
    assert event.author == Author(name="Sam Smith", email="sam@acme.example", login="ssmith")
    assert event.started_at == utc("2024-05-14T16:20:07.631")
    assert event.finished_at == utc("2024-05-14T16:20:13.812")


@pytest.mark.parametrize(
    ("slug", "org", "name", "expected"),
    [
        ("gh/acme/widget", "acme", "widget", "acme/widget"),
        ("github/acme/widget", "acme", "widget", "acme/widget"),
        ("bb/acme/widget", "acme", "widget", "acme/widget"),
        ("circleci/Dda/6Ek", "acme", "gadget", "acme/gadget"),
        ("circleci/Dda/6Ek", "", "", "circleci/Dda/6Ek"),
    ],
)
def test_project_from_slug(slug, org, name, expected):
    def change(d):
        d["project"].update(slug=slug, name=name)
        d["organization"]["name"] = org

    assert parse_one(edited("workflow_completed_failed", change))[1].project == expected


def test_workflow_without_a_pipeline_id_is_its_own_run():
    body = edited("workflow_completed_failed", lambda d: d["pipeline"].pop("id"))
    assert parse_one(body)[1].build_id == "fda08377-fe7e-46b1-8992-3a7aaecac9c3"


def test_workflow_without_a_pipeline_id_or_workflow_id_is_bad_request():
    body = edited("workflow_completed_failed", lambda d: [d["pipeline"].pop("id"), d["workflow"].pop("id")])
    with pytest.raises(BadRequest, match="missing field: workflow.id"):
        circleci.parse(request(body), CONFIG)
