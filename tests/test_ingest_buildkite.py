import hashlib
import hmac
import json
import logging
from datetime import datetime, timedelta, timezone

import pytest

from buildnotify.events import FALLBACK_STATUS, Author, Status
from buildnotify.ingest import buildkite
from buildnotify.ingest.base import (
    BadRequest,
    HookRequest,
    Ignored,
    ProviderConfig,
    Unauthorized,
    UnsupportedMediaType,
    content_hash,
)
from tests.ingest_support import Fixtures, only_event, utc

TOKEN = "bk-token-for-tests"
CONFIG = ProviderConfig(secret=TOKEN)
RECEIVED = datetime(2024, 5, 14, 12, 10, tzinfo=timezone.utc)
NOW = int(RECEIVED.timestamp())
BUILD_ID = "018f7a61-93c4-4e2b-b7d0-1a2b3c4d5e6f"
FOX = Author(name="Fox Mulder", email="fox@acme.example", login="fmulder")
fixture = Fixtures("buildkite")
edited = fixture.edited


def signature(body: bytes, timestamp: int = NOW, secret: str = TOKEN) -> str:
    """As Buildkite documents it, computed here without the module's helpers."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"timestamp={timestamp},signature={digest}"


def request(
    event: str | None,
    body: bytes,
    *,
    token: str | None = TOKEN,
    signed: str | None = None,
    content_type: str = "application/json",
) -> HookRequest:
    headers = {"content-type": content_type, "user-agent": "Buildkite-Request"}
    if event is not None:
        headers["x-buildkite-event"] = event
    if signed is not None:
        headers["x-buildkite-signature"] = signed
    elif token is not None:
        headers["x-buildkite-token"] = token
    return HookRequest(body=body, headers=headers, received_at=RECEIVED)


def parse_one(event: str | None, body: bytes, config: ProviderConfig = CONFIG, **kwargs):
    return only_event(buildkite.parse(request(event, body, **kwargs), config), "buildkite")


# -- field by field ------------------------------------------------------------------


def test_build_running_started_from_the_ui():
    body = fixture("build_running")
    delivery, event = parse_one("build.running", body)
    assert delivery.key == f"build.running:{content_hash(body)}"
    assert delivery.source is None
    assert event.provider == "buildkite"
    assert event.project == "acme/widget"
    assert event.pipeline == "widget"
    assert event.build_id == "018f7a4c-2b9e-4d1a-9c55-7e0d3b1f6a21"
    assert event.build_number == 1408
    assert event.attempt == 1
    assert event.status is Status.RUNNING
    assert event.branch == "main"
    assert event.sha is None  # "HEAD": not resolved yet
    assert event.author == Author(name="Walter Skinner", email="walter@acme.example", login=None)
    assert event.url == "https://buildkite.com/acme/widget/builds/1408"
    assert event.started_at == utc("2024-05-14 11:58:09.031")
    assert event.finished_at is None
    assert event.received_at == RECEIVED
    assert event.delivery_key == delivery.key
    assert event.id is None and event.transition is None


def test_build_finished_failed():
    body = fixture("build_finished_failed")
    delivery, event = parse_one("build.finished", body)
    assert delivery.key == f"build.finished:{content_hash(body)}"
    assert event.project == "acme/widget"
    assert event.pipeline == "widget"
    assert event.build_id == BUILD_ID
    assert event.build_number == 1409
    assert event.attempt == 1
    assert event.status is Status.FAILURE
    assert event.branch == "feature/login-throttle"
    assert event.sha == "c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3"
    assert event.author == FOX  # the commit author, with the SCM username
    assert event.url == "https://buildkite.com/acme/widget/builds/1409"
    assert event.started_at == utc("2024-05-14 12:02:20.415")
    assert event.finished_at == utc("2024-05-14 12:09:02.877")


def test_job_finished_retry():
    body = fixture("job_finished")
    delivery, event = parse_one("job.finished", body)
    assert delivery.key == f"job.finished:{content_hash(body)}"
    assert event.project == "acme/widget"
    assert event.pipeline == "widget / :rspec: Specs"
    assert event.build_id == BUILD_ID  # the build: a retried job is the same run, next attempt
    assert event.build_number == 1409
    assert event.attempt == 2  # retries_count 1
    assert event.status is Status.FAILURE
    assert event.branch == "feature/login-throttle"
    assert event.sha == "c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3"
    assert event.author == FOX
    assert event.url == ("https://buildkite.com/acme/widget/builds/1409#018f7a66-0c1d-4b5e-9f2a-3b4c5d6e7f80")
    assert event.started_at == utc("2024-05-14 12:05:42.880")
    assert event.finished_at == utc("2024-05-14 12:09:01.644")
    assert event.received_at == RECEIVED


def test_event_name_from_body_without_header():
    delivery, event = parse_one(None, fixture("build_finished_failed"))
    assert delivery.key.startswith("build.finished:")
    assert event.status is Status.FAILURE


def test_parallel_and_matrix_jobs_are_told_apart():
    def edit(d):
        d["job"].update(parallel_group_index=2, parallel_group_total=4, matrix={"ruby": "3.3", "os": "linux"})

    _, event = parse_one("job.finished", edited("job_finished", edit))
    assert event.pipeline == "widget / :rspec: Specs (3/4) [os=linux, ruby=3.3]"


def test_organization_from_web_url_when_api_urls_are_absent():
    def edit(d):
        d["pipeline"].pop("url")
        d["build"].pop("url")

    assert parse_one("build.finished", edited("build_finished_failed", edit))[1].project == "acme/widget"


def test_without_any_url_the_project_is_the_slug():
    def edit(d):
        for key in ("url", "web_url"):
            d["pipeline"].pop(key)
            d["build"].pop(key)

    _, event = parse_one("build.finished", edited("build_finished_failed", edit))
    assert event.project == "widget"
    assert event.url is None


# -- statuses ------------------------------------------------------------------------

EXPECTED = {
    "creating": Status.QUEUED,
    "scheduled": Status.QUEUED,
    "pending": Status.QUEUED,
    "waiting": Status.QUEUED,
    "limiting": Status.QUEUED,
    "limited": Status.QUEUED,
    "assigned": Status.QUEUED,
    "accepted": Status.QUEUED,
    "running": Status.RUNNING,
    "failing": Status.RUNNING,
    "passed": Status.SUCCESS,
    "blocked": Status.SUCCESS,
    "unblocked": Status.SUCCESS,
    "failed": Status.FAILURE,
    "timing_out": Status.FAILURE,
    "timed_out": Status.FAILURE,
    "canceling": Status.CANCELLED,
    "canceled": Status.CANCELLED,
    "skipped": Status.SKIPPED,
    "not_run": Status.SKIPPED,
    "broken": Status.SKIPPED,
    "waiting_failed": Status.SKIPPED,
    "blocked_failed": Status.SKIPPED,
    "unblocked_failed": Status.SKIPPED,
    "expired": Status.ERROR,
}


def test_status_table_covers_build_and_job_states():
    assert buildkite.STATUS_MAP == EXPECTED


@pytest.mark.parametrize(("raw", "expected"), sorted(EXPECTED.items()))
def test_build_state(raw, expected):
    body = edited("build_finished_failed", lambda d: d["build"].update(state=raw))
    _, event = parse_one("build.finished", body)
    assert event.status is expected
    assert (event.finished_at is not None) == expected.finished


@pytest.mark.parametrize(("raw", "expected"), sorted(EXPECTED.items()))
def test_job_state(raw, expected):
    body = edited("job_finished", lambda d: d["job"].update(state=raw))
    _, event = parse_one("job.finished", body)
    assert event.status is expected
    assert (event.finished_at is not None) == expected.finished


@pytest.mark.parametrize(
    ("blocked_state", "expected"), [("failed", Status.FAILURE), ("running", Status.RUNNING)]
)
def test_blocked_build_takes_the_block_steps_blocked_state(blocked_state, expected):
    body = edited(
        "build_finished_failed", lambda d: d["build"].update(state="blocked", blocked_state=blocked_state)
    )
    assert parse_one("build.finished", body)[1].status is expected


def test_build_finished_blocked_on_a_passing_build_is_a_success():
    # what build.finished carries when a build stops at a block step
    body = edited("build_finished_failed", lambda d: d["build"].update(state="passed", blocked=True))
    assert parse_one("build.finished", body)[1].status is Status.SUCCESS


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"passed": True}, Status.SUCCESS),
        ({"passed": False}, Status.FAILURE),
        ({"passed": None, "exit_status": 0}, Status.SUCCESS),
        ({"passed": None, "exit_status": 2}, Status.FAILURE),
    ],
)
def test_finished_job_state_resolves_from_result_fields(extra, expected):
    body = edited("job_finished", lambda d: d["job"].update(state="finished", **extra))
    assert parse_one("job.finished", body)[1].status is expected


@pytest.mark.parametrize("name", ["build_finished_failed", "job_finished"])
def test_unknown_state_falls_back_and_is_logged(name, caplog):
    def edit(d):
        d["job" if "job" in d else "build"]["state"] = "exploded"
        d["job" if "job" in d else "build"].pop("exit_status", None)

    with caplog.at_level(logging.WARNING):
        _, event = parse_one(json.loads(fixture(name))["event"], edited(name, edit))
    assert event.status is FALLBACK_STATUS
    assert any("buildkite" in r.getMessage() and "exploded" in r.getMessage() for r in caplog.records)


# -- authentication: token -----------------------------------------------------------


def test_missing_token_and_signature_is_unauthorized():
    with pytest.raises(Unauthorized, match="missing X-Buildkite-Signature or X-Buildkite-Token") as e:
        buildkite.parse(request("build.finished", fixture("build_finished_failed"), token=None), CONFIG)
    assert e.value.code == 401
    assert TOKEN not in e.value.message


def test_wrong_token_is_unauthorized():
    with pytest.raises(Unauthorized, match="X-Buildkite-Token does not match") as e:
        buildkite.parse(request("build.finished", fixture("build_finished_failed"), token="guess"), CONFIG)
    assert TOKEN not in e.value.message


def test_hub_without_token_configured_rejects():
    config = ProviderConfig(tokens={"other": "x"})
    with pytest.raises(Unauthorized, match="no Buildkite webhook token"):
        buildkite.parse(request("build.finished", fixture("build_finished_failed"), token="x"), config)


def test_unauthenticated_config_accepts_without_token():
    _, event = parse_one(
        "build.finished", fixture("build_finished_failed"), config=ProviderConfig(), token=None
    )
    assert event.status is Status.FAILURE


# -- authentication: signature -------------------------------------------------------


def test_signature_over_timestamp_dot_body_is_accepted():
    body = fixture("build_finished_failed")
    _, event = parse_one("build.finished", body, signed=signature(body))
    assert event.build_id == BUILD_ID


def test_signature_over_body_alone_is_rejected():
    body = fixture("build_finished_failed")
    digest = hmac.new(TOKEN.encode(), body, hashlib.sha256).hexdigest()
    with pytest.raises(Unauthorized, match="does not match"):
        buildkite.parse(request("build.finished", body, signed=f"timestamp={NOW},signature={digest}"), CONFIG)


def test_signature_with_other_secret_is_rejected():
    body = fixture("build_finished_failed")
    with pytest.raises(Unauthorized) as e:
        buildkite.parse(request("build.finished", body, signed=signature(body, secret="other")), CONFIG)
    assert TOKEN not in e.value.message


def test_signature_over_other_body_is_rejected():
    body = fixture("build_finished_failed")
    tampered = body.replace(b'"state": "failed"', b'"state": "passed"')
    assert tampered != body
    with pytest.raises(Unauthorized):
        buildkite.parse(request("build.finished", tampered, signed=signature(body)), CONFIG)


def test_timestamp_is_part_of_the_signed_message():
    body = fixture("build_finished_failed")
    moved = signature(body).replace(f"timestamp={NOW}", f"timestamp={NOW + 1}")
    with pytest.raises(Unauthorized, match="does not match"):
        buildkite.parse(request("build.finished", body, signed=moved), CONFIG)


@pytest.mark.parametrize("offset", [-301, 301, -86400])
def test_signed_timestamp_outside_the_replay_window_is_rejected(offset):
    body = fixture("build_finished_failed")
    with pytest.raises(Unauthorized, match="replay window") as e:
        buildkite.parse(request("build.finished", body, signed=signature(body, NOW + offset)), CONFIG)
    assert e.value.code == 401


@pytest.mark.parametrize("offset", [-300, -120, 0, 299])
def test_signed_timestamp_inside_the_replay_window_is_accepted(offset):
    body = fixture("build_finished_failed")
    parse_one("build.finished", body, signed=signature(body, NOW + offset))


def test_replay_window_is_configurable():
    body = fixture("build_finished_failed")
    config = ProviderConfig(secret=TOKEN, replay_window=60)
    old = signature(body, NOW - int(timedelta(minutes=2).total_seconds()))
    with pytest.raises(Unauthorized, match="replay window"):
        buildkite.parse(request("build.finished", body, signed=old), config)
    parse_one("build.finished", body, config=config, signed=signature(body, NOW - 30))


@pytest.mark.parametrize(
    "header",
    ["signature=abc", "timestamp=1715688600", "timestamp=soon,signature=ab12", "sha256=ab12", ""],
)
def test_malformed_signature_header_is_rejected(header):
    body = fixture("build_finished_failed")
    req = request("build.finished", body, token=None)
    req.headers["x-buildkite-signature"] = header
    with pytest.raises(Unauthorized):
        buildkite.parse(req, CONFIG)


def test_authentication_comes_before_content_type():
    with pytest.raises(Unauthorized):
        buildkite.parse(request("build.finished", b"x", token="guess", content_type="text/plain"), CONFIG)


# -- events --------------------------------------------------------------------------


def test_ping_is_ignored():
    with pytest.raises(Ignored) as e:
        buildkite.parse(request("ping", fixture("ping")), CONFIG)
    assert e.value.reason == "ping"


@pytest.mark.parametrize("event", ["agent.connected", "cluster_token.registration_blocked", "build.exploded"])
def test_other_events_are_ignored(event):
    with pytest.raises(Ignored, match=event):
        buildkite.parse(request(event, fixture("ping")), CONFIG)


def test_job_activated_block_step_is_ignored():
    body = edited("job_finished", lambda d: d.update(event="job.activated") or d["job"].update(type="manual"))
    with pytest.raises(Ignored):
        buildkite.parse(request("job.activated", body), CONFIG)


@pytest.mark.parametrize("kind", ["waiter", "manual"])
def test_jobs_without_a_result_of_their_own_are_ignored(kind):
    body = edited("job_finished", lambda d: d["job"].update(type=kind))
    with pytest.raises(Ignored, match=kind):
        buildkite.parse(request("job.finished", body), CONFIG)


def test_trigger_jobs_are_kept():
    body = edited("job_finished", lambda d: d["job"].update(type="trigger", state="passed"))
    assert parse_one("job.finished", body)[1].status is Status.SUCCESS


# -- bad requests --------------------------------------------------------------------


def test_wrong_content_type_is_415():
    with pytest.raises(UnsupportedMediaType) as e:
        buildkite.parse(
            request("build.finished", fixture("build_finished_failed"), content_type="text/plain"), CONFIG
        )
    assert e.value.code == 415


def test_malformed_json_is_bad_request():
    with pytest.raises(BadRequest, match="malformed JSON"):
        buildkite.parse(request("build.finished", b'{"event": "build.finished", "build": '), CONFIG)


@pytest.mark.parametrize(
    ("name", "path"),
    [
        ("build_finished_failed", "build"),
        ("build_finished_failed", "build.state"),
        ("build_finished_failed", "pipeline.slug"),
        ("job_finished", "job"),
        ("job_finished", "pipeline.slug"),
    ],
)
def test_missing_required_field_is_bad_request_naming_it(name, path):
    def drop(data):
        *parents, leaf = path.split(".")
        for part in parents:
            data = data[part]
        del data[leaf]

    event = json.loads(fixture(name))["event"]
    with pytest.raises(BadRequest) as e:
        buildkite.parse(request(event, edited(name, drop)), CONFIG)
    assert path in e.value.message


def test_job_without_any_name_is_bad_request():
    def drop(data):
        data["job"].pop("name")
        data["job"].pop("step_key")

    with pytest.raises(BadRequest, match="job.name"):
        buildkite.parse(request("job.finished", edited("job_finished", drop)), CONFIG)


@pytest.mark.parametrize(
    ("name", "event"), [("build_finished_failed", "build.finished"), ("job_finished", "job.finished")]
)
def test_build_without_an_id_is_named_by_its_number(name, event):
    _, parsed = parse_one(event, edited(name, lambda d: d["build"].pop("id")))
    assert (parsed.build_id, parsed.build_number) == ("1409", 1409)


def test_build_without_an_id_or_a_number_is_bad_request_naming_both():
    def drop(data):
        data["build"].pop("id")
        data["build"].pop("number")

    with pytest.raises(BadRequest, match=r"missing field: build.id \(or build.number\)"):
        buildkite.parse(request("build.finished", edited("build_finished_failed", drop)), CONFIG)
