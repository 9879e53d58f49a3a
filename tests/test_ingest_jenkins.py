import base64
import logging
from datetime import datetime, timezone

import pytest

from buildnotify.events import FALLBACK_STATUS, Author, Status
from buildnotify.ingest import jenkins
from buildnotify.ingest.base import (
    BadRequest,
    HookRequest,
    Ignored,
    ProviderConfig,
    Unauthorized,
    UnsupportedMediaType,
)
from tests.ingest_support import Fixtures, only_event, utc

TOKEN = "jk-token-for-tests"
CONFIG = ProviderConfig(tokens={"ci-main": TOKEN, "ci-legacy": "legacy-token"})
RECEIVED = datetime(2024, 5, 14, 12, 0, tzinfo=timezone.utc)
BUILD_URL = "https://jenkins.acme.example/job/acme/job/widget/job/main/42/"
SHA = "5d41402abc4b2a76b9719d911017c592ae1f3c2e"
fixture = Fixtures("jenkins")
edited = fixture.edited


def request(
    body: bytes,
    *,
    path: str = TOKEN,
    query: dict[str, str] | None = None,
    content_type: str = "application/json;charset=UTF-8",  # what the plugin sends
) -> HookRequest:
    headers = {"content-type": content_type, "user-agent": "Java/17.0.10"}
    return HookRequest(body=body, headers=headers, query=query or {}, path=path, received_at=RECEIVED)


def parse_one(body: bytes, config: ProviderConfig = CONFIG, **kwargs):
    return only_event(jenkins.parse(request(body, **kwargs), config), "jenkins")


# -- field by field ------------------------------------------------------------------


def test_queued():
    delivery, event = parse_one(fixture("queued"))
    assert delivery.key == "acme/widget/main#42:QUEUED"
    assert delivery.source == "ci-main"
    assert event.provider == "jenkins"
    assert event.project == "acme/widget/main"  # full name from the job url, not "main"
    assert event.pipeline == "main"
    assert event.build_id == "42"
    assert event.build_number == 42
    assert event.attempt == 1
    assert event.status is Status.QUEUED
    assert event.branch is None  # not checked out yet: no scm data
    assert event.sha is None
    assert event.author == Author()
    assert event.url == BUILD_URL
    assert event.started_at is None
    assert event.finished_at is None
    assert event.received_at == RECEIVED
    assert event.delivery_key == "acme/widget/main#42:QUEUED"
    assert event.id is None and event.transition is None


def test_started():
    delivery, event = parse_one(fixture("started"))
    assert delivery.key == "acme/widget/main#42:STARTED"
    assert event.project == "acme/widget/main"
    assert event.pipeline == "main"
    assert event.build_id == "42"
    assert event.status is Status.RUNNING
    assert event.started_at == utc("2024-05-14 11:49:58.117")
    assert event.finished_at is None


def test_completed_failure():
    delivery, event = parse_one(fixture("completed_failure"))
    assert delivery.key == "acme/widget/main#42:COMPLETED"
    assert event.project == "acme/widget/main"
    assert event.pipeline == "main"
    assert event.build_id == "42"
    assert event.build_number == 42
    assert event.status is Status.FAILURE
    assert event.branch == "main"
    assert event.sha == SHA
    assert event.author == Author()  # pipeline jobs report no culprits
    assert event.url == BUILD_URL
    assert event.finished_at == utc("2024-05-14 11:55:10.573")
    assert event.started_at == utc("2024-05-14 11:49:58.117")  # timestamp - duration
    assert event.delivery_key == "acme/widget/main#42:COMPLETED"


def test_finalized_is_the_same_finished_build_under_the_same_key():
    completed = parse_one(fixture("completed_failure"))[1]
    delivery, finalized = parse_one(fixture("finalized_failure"))
    assert delivery.key == "acme/widget/main#42:COMPLETED"
    assert finalized.status is Status.FAILURE
    assert finalized.finished_at == utc("2024-05-14 11:55:12.901")
    same = ("project", "pipeline", "build_id", "build_number", "attempt", "status", "branch", "sha", "url")
    assert {k: getattr(finalized, k) for k in same} == {k: getattr(completed, k) for k in same}


def test_freestyle_job_in_a_folder():
    delivery, event = parse_one(fixture("freestyle_completed_success"))
    assert delivery.key == "qa/widget-nightly#17:COMPLETED"
    assert event.project == "qa/widget-nightly"
    assert event.pipeline == "widget-nightly"
    assert event.build_id == "17"
    assert event.build_number == 17
    assert event.status is Status.SUCCESS
    assert event.branch == "master"  # origin/ stripped
    assert event.sha == "c6d86dc654b12425e706bcf951adfe5a8627a517"
    assert event.author == Author(login="dscully")  # first culprit
    assert event.url == "https://jenkins.acme.example/job/qa/job/widget-nightly/17/"
    assert event.finished_at == utc("2024-05-14 03:00:00.412")
    assert event.started_at == utc("2024-05-14 02:29:17.191")


def test_branch_job_names_are_decoded_once_like_jenkins_full_names():
    def edit(d):
        d["name"] = "feature%2Flogin"
        d["url"] = "job/acme/job/widget/job/feature%252Flogin/"
        d["build"]["scm"]["branch"] = "origin/feature/login"

    delivery, event = parse_one(edited("completed_failure", edit))
    assert event.project == "acme/widget/feature%2Flogin"
    assert event.pipeline == "feature%2Flogin"
    assert event.branch == "feature/login"
    assert delivery.key == "acme/widget/feature%2Flogin#42:COMPLETED"


def test_without_job_url_the_name_is_the_project():
    _, event = parse_one(edited("freestyle_completed_success", lambda d: d.pop("url")))
    assert event.project == "widget-nightly"
    assert event.pipeline == "widget-nightly"


def test_iso_timestamps_of_older_plugin_versions_parse():
    body = edited("completed_failure", lambda d: d["build"].update(timestamp="2024-05-14T11:55:10.573+00:00"))
    assert parse_one(body)[1].finished_at == utc("2024-05-14 11:55:10.573")


# -- statuses ------------------------------------------------------------------------

EXPECTED = {
    "success": Status.SUCCESS,
    "unstable": Status.FAILURE,
    "failure": Status.FAILURE,
    "aborted": Status.CANCELLED,
    "not_built": Status.SKIPPED,
}


def test_status_table_covers_jenkins_results():
    assert jenkins.STATUS_MAP == EXPECTED


@pytest.mark.parametrize("phase", ["COMPLETED", "FINALIZED"])
@pytest.mark.parametrize(("raw", "expected"), sorted(EXPECTED.items()))
def test_result_status(raw, expected, phase):
    body = edited("completed_failure", lambda d: d["build"].update(status=raw.upper(), phase=phase))
    assert parse_one(body)[1].status is expected


@pytest.mark.parametrize(("phase", "expected"), [("QUEUED", Status.QUEUED), ("STARTED", Status.RUNNING)])
def test_phase_before_result(phase, expected):
    # the phase decides, even if a status field were present
    body = edited("completed_failure", lambda d: d["build"].update(phase=phase, status="FAILURE"))
    assert parse_one(body)[1].status is expected


def test_unknown_result_falls_back_and_is_logged(caplog):
    body = edited("completed_failure", lambda d: d["build"].update(status="CRASHED"))
    with caplog.at_level(logging.WARNING):
        event = parse_one(body)[1]
    assert event.status is FALLBACK_STATUS
    assert any("jenkins" in r.getMessage() and "CRASHED" in r.getMessage() for r in caplog.records)


def test_completed_without_result_falls_back(caplog):
    body = edited("completed_failure", lambda d: d["build"].pop("status"))
    with caplog.at_level(logging.WARNING):
        assert parse_one(body)[1].status is FALLBACK_STATUS
    assert caplog.records


def test_unknown_phase_is_ignored():
    body = edited("completed_failure", lambda d: d["build"].update(phase="NONE"))
    with pytest.raises(Ignored, match="NONE"):
        jenkins.parse(request(body), CONFIG)


# -- authentication ------------------------------------------------------------------


def test_token_in_path_names_the_source():
    assert parse_one(fixture("queued"), path="legacy-token")[0].source == "ci-legacy"


def test_token_in_query():
    delivery, _ = parse_one(fixture("queued"), path="", query={"token": TOKEN})
    assert delivery.source == "ci-main"


def test_trailing_slash_after_token_is_fine():
    assert parse_one(fixture("queued"), path=f"{TOKEN}/")[0].source == "ci-main"


def test_token_as_basic_auth_password():
    # https://jenkins:<token>@hub/hooks/jenkins: the plugin turns URL user info into Basic auth
    req = request(fixture("queued"), path="")
    req.headers["authorization"] = "Basic " + base64.b64encode(f"jenkins:{TOKEN}".encode()).decode()
    assert jenkins.parse(req, CONFIG).source == "ci-main"


@pytest.mark.parametrize(
    "header",
    ["Basic " + base64.b64encode(b"jenkins:guess").decode(), "Basic !!notbase64", f"Bearer {TOKEN}"],
)
def test_wrong_or_unusable_authorization_is_unauthorized(header):
    req = request(fixture("queued"), path="")
    req.headers["authorization"] = header
    with pytest.raises(Unauthorized):
        jenkins.parse(req, CONFIG)


def test_missing_token_is_unauthorized():
    with pytest.raises(Unauthorized, match="missing token") as e:
        jenkins.parse(request(fixture("queued"), path=""), CONFIG)
    assert e.value.code == 401
    assert TOKEN not in e.value.message


def test_wrong_token_is_unauthorized():
    with pytest.raises(Unauthorized) as e:
        jenkins.parse(request(fixture("queued"), path="guess"), CONFIG)
    assert TOKEN not in e.value.message
    assert "guess" not in e.value.message


def test_wrong_token_in_path_is_not_rescued_by_query():
    with pytest.raises(Unauthorized):
        jenkins.parse(request(fixture("queued"), path="guess", query={"token": TOKEN}), CONFIG)


def test_secret_alone_is_an_unnamed_token():
    delivery, _ = parse_one(fixture("queued"), config=ProviderConfig(secret=TOKEN))
    assert delivery.source is None
    with pytest.raises(Unauthorized):
        jenkins.parse(request(fixture("queued"), path="guess"), ProviderConfig(secret=TOKEN))


def test_authentication_comes_before_content_type():
    with pytest.raises(Unauthorized):
        jenkins.parse(request(b"<JobState/>", path="guess", content_type="application/xml"), CONFIG)


def test_unauthenticated_config_accepts_without_token():
    delivery, event = parse_one(fixture("completed_failure"), config=ProviderConfig(), path="")
    assert delivery.source is None
    assert event.status is Status.FAILURE


# -- bad requests --------------------------------------------------------------------


def test_xml_format_is_415():
    # the plugin's other format: application/xml;charset=UTF-8
    with pytest.raises(UnsupportedMediaType) as e:
        jenkins.parse(request(b"<JobState/>", content_type="application/xml;charset=UTF-8"), CONFIG)
    assert e.value.code == 415


def test_malformed_json_is_bad_request():
    with pytest.raises(BadRequest, match="malformed JSON"):
        jenkins.parse(request(b'{"name": "main", "build": {'), CONFIG)


@pytest.mark.parametrize("path", ["name", "build", "build.number", "build.phase"])
def test_missing_required_field_is_bad_request_naming_it(path):
    def drop(data):
        *parents, leaf = path.split(".")
        for part in parents:
            data = data[part]
        del data[leaf]

    with pytest.raises(BadRequest) as e:
        jenkins.parse(request(edited("completed_failure", drop)), CONFIG)
    assert path in e.value.message


@pytest.mark.parametrize("number", ["4x2", "-42", 42.5, [42]])
def test_non_integer_build_number_is_bad_request(number):
    body = edited("completed_failure", lambda d: d["build"].update(number=number))
    with pytest.raises(BadRequest, match="field build.number has the wrong type"):
        jenkins.parse(request(body), CONFIG)


def test_build_number_as_a_string_of_digits_is_read_as_the_number():
    body = edited("completed_failure", lambda d: d["build"].update(number="42"))
    _, event = parse_one(body)
    assert (event.build_number, event.build_id) == (42, "42")
