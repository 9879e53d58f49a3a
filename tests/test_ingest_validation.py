"""Validation at the door: the field readers the parsers share, and
:func:`clean`, which every delivery passes before the store sees it."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from sqlalchemy import BigInteger, Integer

from buildnotify.delivery import Delivery
from buildnotify.events import Author, BuildEvent, Status
from buildnotify.ingest import clean as door
from buildnotify.ingest.base import (
    INT_MAX,
    INT_MIN,
    BadRequest,
    OutOfRange,
    WrongType,
    identifier,
    integer,
    parse_time,
    text,
    url_path,
)
from buildnotify.ingest.clean import clean
from buildnotify.store.schema import events

# -- reading fields ----------------------------------------------------------------------


@pytest.mark.parametrize("value", [{"a": 1}, ["main"], 7, 1.5, True])
def test_text_of_another_type_is_bad_request_naming_the_field(value):
    with pytest.raises(WrongType) as e:
        text({"run": {"head_branch": value}}, "run.head_branch")
    assert e.value.code == 400
    assert e.value.message == "field run.head_branch has the wrong type: expected a string"


def test_an_object_on_the_path_of_another_type_is_named():
    with pytest.raises(WrongType, match="field run has the wrong type: expected an object"):
        text({"run": "42"}, "run.head_branch")


@pytest.mark.parametrize(
    "data", [{}, {"run": None}, {"run": {"head_branch": None}}, {"run": {"head_branch": ""}}]
)
def test_absent_text_is_none_unless_required(data):
    assert text(data, "run.head_branch") is None
    with pytest.raises(BadRequest, match="missing field: run.head_branch"):
        text(data, "run.head_branch", required=True)


@pytest.mark.parametrize(
    ("value", "expected"), [(42, 42), ("42", 42), (" 0042 ", 42), (-3, -3), (INT_MAX, INT_MAX)]
)
def test_integer_accepts_numbers_and_strings_of_decimal_digits(value, expected):
    assert integer({"number": value}, "number") == expected


@pytest.mark.parametrize("value", ["4x2", "-42", "1e3", "٣", "²", 42.0, True, [42], {"n": 42}])
def test_integer_of_another_type_is_bad_request_naming_the_field(value):
    with pytest.raises(WrongType, match="field build.number has the wrong type: expected an integer"):
        integer({"build": {"number": value}}, "build.number")


@pytest.mark.parametrize("value", [2**63, 2**64, 10**30, INT_MIN - 1, -(10**30), str(2**63), "9" * 10_000])
def test_integer_past_64_bits_is_refused_naming_the_field(value):
    with pytest.raises(OutOfRange) as e:
        integer({"build": {"number": value}}, "build.number")
    assert e.value.code == 400
    assert e.value.message.startswith("field build.number is out of range")


def test_identifier_is_a_string_or_integer_else_the_number():
    assert identifier({"id": 7}, "id") == "7"
    assert identifier({"id": "run-7"}, "id", number="number") == "run-7"
    assert identifier({"number": "12"}, "id", number="number") == "12"
    with pytest.raises(BadRequest, match=r"missing field: id \(or number\)"):
        identifier({}, "id", number="number")
    with pytest.raises(WrongType, match="field id has the wrong type: expected a string or an integer"):
        identifier({"id": [7]}, "id")


@pytest.mark.parametrize(
    "value",
    [float("nan"), float("inf"), 1e30, 10**400, "9999-12-31T23:59:59-05:00", "0001-01-01T00:00:00+01:00"],
)
def test_a_time_no_datetime_can_hold_is_absent_not_an_error(value):
    assert parse_time(value) is None


@pytest.mark.parametrize(
    ("url", "segments"),
    [
        ("https://gitlab.example/acme/widget", ["acme", "widget"]),
        ("git@gitlab.example:acme/widget.git", ["acme", "widget.git"]),
        ("ssh://git@gitlab.example:2222/acme/widget.git", ["acme", "widget.git"]),
        ("https://[::1/acme/widget", []),
        (None, []),
    ],
)
def test_url_path_reads_web_and_scp_like_urls(url, segments):
    assert url_path(url) == segments


# -- cleaning what the parsers hand on ------------------------------------------------------

RECEIVED = datetime(2024, 5, 14, 12, 0, tzinfo=timezone.utc)


def cleaned(**fields: object) -> BuildEvent:
    event = BuildEvent(
        **{
            "provider": "generic",
            "project": "acme/widget",
            "pipeline": "ci",
            "build_id": "7",
            "status": Status.FAILURE,
            "received_at": RECEIVED,
            **fields,
        }
    )
    [out] = clean(Delivery(provider="generic", key="k", events=(event,))).events
    return out


def test_limits_are_what_the_columns_hold():
    c = events.c
    for column in (c.project, c.pipeline, c.branch, c.author_name, c.author_email, c.author_login):
        assert column.type.length == door.NAME_LIMIT, column
    assert c.build_id.type.length == door.BUILD_ID_LIMIT
    assert c.sha.type.length == door.SHA_LIMIT
    assert isinstance(c.build_number.type, BigInteger) and (INT_MIN, INT_MAX) == (-(2**63), 2**63 - 1)
    assert type(c.attempt.type) is Integer and door.ATTEMPT_MAX == 2**31 - 1


def test_nul_and_control_characters_are_removed():
    event = cleaned(project="acme/\x00widget", pipeline="\x1b[31mci\x7f", branch="main\x85")
    assert (event.project, event.pipeline, event.branch) == ("acme/widget", "[31mci", "main")


def test_line_breaks_and_tabs_become_one_space_and_ends_are_trimmed():
    event = cleaned(pipeline="lint\r\n\tand test", author=Author(name=" Ada\u2028Lovelace\n"))
    assert (event.pipeline, event.author.name) == ("lint and test", "Ada Lovelace")


def test_lone_surrogates_become_the_replacement_character():
    assert cleaned(branch="feat\ud800ure").branch == "feat\ufffdure"
    assert cleaned(author=Author(login="\udfff")).author.login == "\ufffd"


def test_long_names_are_cut_to_the_limit():
    event = cleaned(project="p" * 10_000, branch="b" * 254 + " x", author=Author(email="e" * 300))
    assert event.project == "p" * door.NAME_LIMIT
    assert event.branch == "b" * 254  # cut, then the trailing space trimmed
    assert event.author.email == "e" * door.NAME_LIMIT


def test_long_build_ids_are_replaced_by_their_digest_and_stay_apart():
    one, other = cleaned(build_id="r" * 300), cleaned(build_id="r" * 299 + "s")
    assert one.build_id.startswith("sha256:") and len(one.build_id) == 71
    assert one.build_id != other.build_id
    assert cleaned(build_id="r" * 300).build_id == one.build_id  # a redelivery finds its run
    assert cleaned(build_id="r" * 255).build_id == "r" * 255


def test_an_oversize_sha_is_dropped_not_cut():
    assert cleaned(sha="a" * 65).sha is None
    assert cleaned(sha="a" * 64).sha == "a" * 64


def test_urls_are_cleaned_but_not_cut():
    """The column is TEXT on both databases: a cut URL would only lead nowhere."""
    url = "https://ci.example/" + "x" * 100_000
    assert cleaned(url=url + "\x00\n").url == url


@pytest.mark.parametrize("name", ["project", "pipeline", "build_id"])
def test_a_required_name_with_nothing_left_is_bad_request_naming_it(name):
    with pytest.raises(BadRequest, match=f"missing field: {name}"):
        cleaned(**{name: "\x00\x01 \n"})


def test_empty_optional_names_become_none():
    event = cleaned(branch="\x00", sha=" ", author=Author(name="\n", email="", login="\x7f"))
    assert (event.branch, event.sha, event.author) == (None, None, Author())


@pytest.mark.parametrize("number", [2**63, -(2**63) - 1])
def test_build_number_the_column_cannot_hold_is_refused(number):
    with pytest.raises(OutOfRange, match="field build_number is out of range"):
        cleaned(build_number=number)


@pytest.mark.parametrize(("attempt", "expected"), [(0, 1), (-5, 1), (3, 3), (2**40, 2**31 - 1)])
def test_attempt_is_clamped_to_the_column(attempt, expected):
    assert cleaned(attempt=attempt).attempt == expected


@pytest.mark.parametrize(
    ("fields", "name"),
    [
        ({"pipeline": {"name": "ci"}}, "pipeline"),
        ({"branch": ["main"]}, "branch"),
        ({"sha": 7}, "sha"),
        ({"author": Author(email=["a@b"])}, "author.email"),
        ({"build_number": "7"}, "build_number"),
        ({"attempt": 1.5}, "attempt"),
        ({"started_at": "2024-05-14"}, "started_at"),
    ],
)
def test_a_parser_handing_on_a_wrong_type_is_bad_request_naming_the_field(fields, name):
    """The parsers name the payload's field; this is the safety net behind them."""
    with pytest.raises(WrongType, match=f"field {name} has the wrong type"):
        cleaned(**fields)


def test_naive_times_are_taken_as_utc():
    assert cleaned(started_at=datetime(2024, 5, 14, 11, 0)).started_at == datetime(
        2024, 5, 14, 11, 0, tzinfo=timezone.utc
    )


@pytest.mark.parametrize("key", ["key\x00", "key\n", " key", "k\ud800ey", ""])
def test_an_odd_delivery_key_is_replaced_by_its_digest(key):
    delivery = clean(Delivery(provider="generic", key=key, events=()))
    assert delivery.key.startswith("sha256:")
    assert clean(Delivery(provider="generic", key=key, events=())).key == delivery.key


def test_a_printable_delivery_key_is_kept_as_sent():
    event = BuildEvent(provider="generic", project="p", pipeline="ci", build_id="1", status=Status.SUCCESS)
    delivery = clean(Delivery(provider="generic", key="nightly-731 ü", events=(event,)))
    assert delivery.key == "nightly-731 ü"
    assert delivery.events[0].delivery_key == "nightly-731 ü"
