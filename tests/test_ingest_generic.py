import json
import logging
from datetime import datetime, timezone

import pytest

from buildnotify.events import FALLBACK_STATUS, Author, Status
from buildnotify.ingest import generic
from buildnotify.ingest.base import (
    BadRequest,
    HookRequest,
    ProviderConfig,
    Unauthorized,
    UnsupportedMediaType,
    content_hash,
)
from tests.ingest_support import Fixtures, only_event

CONFIG = ProviderConfig(tokens={"hil-rig": "tok-hil-0123456789", "backup-cron": "tok-backup-abcdef"})
RECEIVED = datetime(2024, 5, 14, 4, 0, tzinfo=timezone.utc)
fixture = Fixtures("generic")


def request(
    body: bytes,
    *,
    token: str | None = "tok-hil-0123456789",
    content_type: str = "application/json",
    **headers: str,
) -> HookRequest:
    all_headers = {
        "content-type": content_type,
        **{k.replace("_", "-").lower(): v for k, v in headers.items()},
    }
    if token is not None:
        all_headers["authorization"] = f"Bearer {token}"
    return HookRequest(body=body, headers=all_headers, received_at=RECEIVED)


def parse_one(body: bytes, config: ProviderConfig = CONFIG, **kwargs):
    return only_event(generic.parse(request(body, **kwargs), config), "generic")


def body_of(**fields) -> bytes:
    data = {"project": "acme/scripts", "pipeline": "backup-check", "number": 58, "status": "success"}
    data.update(fields)
    return json.dumps({k: v for k, v in data.items() if v is not None}).encode()


# -- authentication ------------------------------------------------------------------


def test_token_names_the_source():
    delivery, _ = parse_one(fixture("minimal"), token="tok-backup-abcdef")
    assert delivery.source == "backup-cron"


def test_bearer_scheme_is_case_insensitive():
    req = request(fixture("minimal"), token=None, authorization="bearer tok-hil-0123456789")
    assert generic.parse(req, CONFIG).source == "hil-rig"


def test_missing_token_is_unauthorized():
    with pytest.raises(Unauthorized, match="missing bearer token") as e:
        generic.parse(request(fixture("minimal"), token=None), CONFIG)
    assert e.value.code == 401


def test_other_scheme_is_unauthorized():
    req = request(fixture("minimal"), token=None, authorization="Basic dXNlcjpwYXNz")
    with pytest.raises(Unauthorized):
        generic.parse(req, CONFIG)


def test_wrong_token_is_unauthorized_without_echoing_tokens():
    with pytest.raises(Unauthorized, match="invalid bearer token") as e:
        generic.parse(request(fixture("minimal"), token="tok-hil-0123456788"), CONFIG)
    for token in CONFIG.tokens.values():
        assert token not in e.value.message


def test_secret_is_a_token_named_default():
    config = ProviderConfig(secret="only-one-token")
    delivery, _ = parse_one(fixture("minimal"), config, token="only-one-token")
    assert delivery.source == "default"


def test_unauthenticated_config_accepts_without_token():
    delivery, event = parse_one(fixture("minimal"), ProviderConfig(), token=None)
    assert delivery.source is None
    assert event.status is Status.SUCCESS


# -- body handling -------------------------------------------------------------------


def test_wrong_content_type_is_415():
    with pytest.raises(UnsupportedMediaType):
        generic.parse(request(fixture("minimal"), content_type="application/x-www-form-urlencoded"), CONFIG)


def test_malformed_json_is_bad_request():
    with pytest.raises(BadRequest, match="malformed JSON"):
        generic.parse(request(b'{"project": "acme/scripts"'), CONFIG)


@pytest.mark.parametrize("name", ["project", "pipeline", "status"])
def test_missing_required_field_is_bad_request_naming_it(name):
    with pytest.raises(BadRequest) as e:
        generic.parse(request(body_of(**{name: None})), CONFIG)
    assert name in e.value.message


@pytest.mark.parametrize("name", ["project", "pipeline"])
def test_blank_required_field_is_bad_request_naming_it(name):
    with pytest.raises(BadRequest, match=name):
        generic.parse(request(body_of(**{name: "  "})), CONFIG)


def test_build_id_or_number_is_required():
    with pytest.raises(BadRequest, match="build_id"):
        generic.parse(request(body_of(number=None)), CONFIG)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("project", 7),
        ("number", "twelve"),
        ("number", True),
        ("attempt", 1.5),
        ("build_id", {"x": 1}),
        ("branch", ["main"]),
        ("author", "jdoe"),
    ],
)
def test_mistyped_field_is_bad_request_naming_it(name, value):
    with pytest.raises(BadRequest) as e:
        generic.parse(request(body_of(**{name: value})), CONFIG)
    assert name in e.value.message


def test_mistyped_author_field_names_it():
    with pytest.raises(BadRequest, match="author.email"):
        generic.parse(request(body_of(author={"email": {"a": 1}})), CONFIG)


def test_numbers_from_shell_variables_are_accepted():
    _, event = parse_one(body_of(number="58", attempt="3", build_id=None))
    assert event.build_number == 58
    assert event.attempt == 3
    assert event.build_id == "58"


# -- delivery key --------------------------------------------------------------------


def test_delivery_key_prefers_idempotency_key_header():
    delivery, event = parse_one(fixture("failure"), idempotency_key="run-731-attempt-2")
    assert delivery.key == "hil-rig:run-731-attempt-2"  # scoped to the token's source
    assert event.delivery_key == "hil-rig:run-731-attempt-2"


def test_delivery_key_from_body_field():
    delivery, _ = parse_one(fixture("failure"))
    assert delivery.key == "hil-rig:nightly-hil-731-2"


def test_delivery_key_falls_back_to_content_hash():
    body = fixture("minimal")
    delivery, event = parse_one(body)
    assert delivery.key == "hil-rig:" + content_hash(body)
    assert event.delivery_key == "hil-rig:" + content_hash(body)


# -- statuses ------------------------------------------------------------------------


#: What each raw value must mean, written out independently of the module.
EXPECTED_STATUSES = {
    "queued": Status.QUEUED,
    "running": Status.RUNNING,
    "success": Status.SUCCESS,
    "failure": Status.FAILURE,
    "error": Status.ERROR,
    "cancelled": Status.CANCELLED,
    "skipped": Status.SKIPPED,
    "failed": Status.FAILURE,
    "passed": Status.SUCCESS,
    "errored": Status.ERROR,
    "canceled": Status.CANCELLED,
}


def test_status_map_is_the_documented_table():
    assert generic.STATUS_MAP == EXPECTED_STATUSES


@pytest.mark.parametrize(("raw", "expected"), sorted(EXPECTED_STATUSES.items()))
def test_status_map_entry_through_parse(raw, expected):
    assert parse_one(body_of(status=raw))[1].status is expected


def test_every_hub_status_is_accepted_verbatim():
    for status in Status:
        assert parse_one(body_of(status=status.value))[1].status is status


@pytest.mark.parametrize(("alias", "expected"), [("failed", Status.FAILURE), ("passed", Status.SUCCESS)])
def test_aliases(alias, expected):
    assert parse_one(body_of(status=alias.upper()))[1].status is expected


def test_unknown_status_falls_back_and_logs(caplog):
    with caplog.at_level(logging.WARNING):
        _, event = parse_one(body_of(status="unstable"))
    assert event.status is FALLBACK_STATUS
    assert any("unstable" in r.getMessage() and "generic" in r.getMessage() for r in caplog.records)


# -- field by field ------------------------------------------------------------------


def test_full_fixture():
    delivery, event = parse_one(fixture("failure"))
    assert delivery.source == "hil-rig"
    assert event.provider == "generic"
    assert event.project == "acme/firmware"
    assert event.pipeline == "nightly-hil"
    assert event.build_id == "hil-2024-05-14-r2"
    assert event.build_number == 731
    assert event.attempt == 2
    assert event.status is Status.FAILURE
    assert event.branch == "main"
    assert event.sha == "9f8e7d6c5b4a39281706f5e4d3c2b1a098765432"
    assert event.author == Author(name="Jane Doe", email="jane@acme.example", login="jdoe")
    assert event.url == "https://ci.acme.example/nightly-hil/731"
    assert event.started_at == datetime(2024, 5, 14, 2, 0, tzinfo=timezone.utc)
    assert event.finished_at == datetime(2024, 5, 14, 1, 41, 12, tzinfo=timezone.utc)  # +02:00 → UTC
    assert event.received_at == RECEIVED
    assert event.delivery_key == "hil-rig:nightly-hil-731-2"
    assert event.id is None
    assert event.transition is None


def test_minimal_fixture():
    _, event = parse_one(fixture("minimal"))
    assert event.project == "acme/scripts"
    assert event.pipeline == "backup-check"
    assert event.build_id == "58"  # defaults to number
    assert event.build_number == 58
    assert event.attempt == 1
    assert event.status is Status.SUCCESS  # "passed"
    assert event.branch is None
    assert event.sha is None
    assert event.author == Author()
    assert event.url is None
    assert event.started_at is None
    assert event.finished_at is None


def test_epoch_timestamps():
    _, event = parse_one(body_of(started_at=1715652000, finished_at=1715652061000))
    assert event.started_at == datetime(2024, 5, 14, 2, 0, tzinfo=timezone.utc)
    assert event.finished_at == datetime(2024, 5, 14, 2, 1, 1, tzinfo=timezone.utc)
