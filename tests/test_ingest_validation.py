"""Validation at the door: the field readers the parsers share."""

from __future__ import annotations

import pytest

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
