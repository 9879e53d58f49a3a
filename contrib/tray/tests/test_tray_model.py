"""The tray's state without a screen: event sequences -> colours, menu
entries, notifications, the connection and goodbyes."""

from __future__ import annotations

import itertools
from typing import Any

from buildnotify.client import Ending, Outcome, Phase, State
from buildnotify_tray.model import BuildState, Colour, Overall, TrayModel, summarize

_ids = itertools.count(1)
HUB = "tcp:127.0.0.1:8787"


def event(
    status: str,
    number: int,
    transition: str | None = None,
    project: str = "acme/widget",
    branch: str | None = "main",
    **fields: Any,
) -> dict[str, Any]:
    return {
        "id": next(_ids),
        "project": project,
        "pipeline": "ci",
        "branch": branch,
        "sha": f"{number:08x}cafe",
        "status": status,
        "transition": transition,
        "url": f"https://ci.example.com/{project}/{number}",
        "author": {"name": "Alice", "email": "alice@example.com", "login": "alice"},
        "build_id": str(number),
        "build_number": number,
        "attempt": 1,
    } | fields


def live_model(user: str | None = None, claims: list[dict[str, Any]] | None = None) -> TrayModel:
    model = TrayModel(user=user, hub=HUB)
    model.on_state(State(Phase.CONNECTING, "connecting", HUB))
    model.on_state(
        State(Phase.LIVE, "live", HUB, watch={"watching": ["acme/widget"], "claims": claims or []})
    )
    return model


def claim(state: str, developer: str = "bob", note: str | None = "flaky test") -> dict[str, Any]:
    return {
        "project": "acme/widget",
        "pipeline": "ci",
        "branch": "main",
        "developer": developer,
        "note": note,
        "claimed_at": "2024-05-01T10:00:00+00:00",
        "state": state,
    }


def test_grey_until_connected_then_unknown_until_a_build_is_known() -> None:
    model = TrayModel(hub=HUB)
    assert model.worst == Overall.DISCONNECTED and model.colour == Colour.GREY
    model.on_state(State(Phase.LIVE, "live", HUB, watch={}))
    assert model.worst == Overall.UNKNOWN and model.colour == Colour.GREY
    assert model.entries() == []


def test_a_sequence_of_builds_colours_the_icon() -> None:
    model = live_model()
    model.on_event(event("running", 1, "started"))
    assert (model.worst, model.colour) == (Overall.BUILDING, Colour.AMBER)
    model.on_event(event("success", 1, "passed"))
    assert (model.worst, model.colour) == (Overall.PASSING, Colour.GREEN)
    model.on_event(event("failure", 2, "failed", project="acme/gadget"))
    assert (model.worst, model.colour) == (Overall.FAILING, Colour.RED)
    model.on_event(event("running", 3, "started", project="acme/gadget"))  # rebuilding: still red
    assert model.worst == Overall.FAILING
    assert "rebuilding" in model.entries()[0].text
    model.on_event(event("running", 2, "started"))
    model.on_event(event("success", 3, "fixed", project="acme/gadget"))  # widget still building
    assert (model.worst, model.colour) == (Overall.BUILDING, Colour.AMBER)
    model.on_event(event("success", 2, "passed"))
    assert model.worst == Overall.PASSING
    assert "2 passing" in model.tooltip


def test_a_late_old_build_and_a_cancelled_one_do_not_change_the_state() -> None:
    model = live_model()
    model.on_event(event("success", 5, "passed"))
    model.on_event(event("failure", 4, "failed"))  # delivered late; build 5 is newer
    assert model.worst == Overall.PASSING
    model.on_event(event("cancelled", 6))
    assert model.worst == Overall.PASSING
    build = model.builds[("acme/widget", "ci", "main")]
    assert build.result["build_number"] == 5 and build.latest["build_number"] == 6


def test_disconnecting_greys_the_icon_but_keeps_the_builds() -> None:
    model = live_model()
    model.on_event(event("failure", 1, "failed"))
    model.on_state(State(Phase.DISCONNECTED, "disconnected (connection refused); retrying in 1.0 s", HUB))
    assert (model.worst, model.colour) == (Overall.DISCONNECTED, Colour.GREY)
    assert "connection refused" in model.tooltip
    assert [e.state for e in model.entries()] == [BuildState.FAILING]
    model.on_state(State(Phase.LIVE, "live", HUB, watch={}))
    assert model.colour == Colour.RED


def test_menu_entries_failing_first_with_url_author_and_claim() -> None:
    model = live_model()
    model.on_event(event("success", 1, "passed", project="acme/aardvark"))
    model.on_event(event("failure", 7, "failed", project="acme/widget"))
    model.on_event(event("running", 2, "started", project="acme/gadget", branch=None))
    model.on_claim(claim("claimed"))
    entries = model.entries()
    assert [e.state for e in entries] == [BuildState.FAILING, BuildState.BUILDING, BuildState.PASSING]
    assert [e.colour for e in entries] == [Colour.RED, Colour.AMBER, Colour.GREEN]
    assert entries[0].text == "acme/widget ci@main: failing (#7 by alice); bob is on it"
    assert entries[0].url == "https://ci.example.com/acme/widget/7"
    assert entries[1].text.startswith("acme/gadget ci@-: building")


def test_failures_and_fixes_are_notified_other_transitions_not() -> None:
    model = live_model()
    model.on_event(event("running", 1, "started"))
    model.on_event(event("success", 1, "passed"))
    assert model.take_notifications() == []
    failed = event("failure", 2, "failed")
    model.on_event(failed)
    model.on_event(event("failure", 3, "still_failing"))
    model.on_event(event("success", 4, "fixed"))
    notes = model.take_notifications()
    assert [(n.kind, n.urgent) for n in notes] == [("failed", True), ("fixed", False)]
    assert notes[0].title == "acme/widget ci@main failed"
    assert notes[0].url == failed["url"] and notes[0].event_id == failed["id"]
    assert model.take_notifications() == []


def test_an_alert_replaces_the_notification_of_its_event() -> None:
    model = live_model(user="alice")
    failed = event("failure", 2, "failed")
    model.on_event(failed)  # the hub pushes the event, then the alert
    model.on_alert({"alert_id": 1, "developer": "alice", "event": failed})
    notes = model.take_notifications()
    assert [n.kind for n in notes] == ["alert"]
    assert notes[0].title == f"Your commit {failed['sha'][:8]} broke acme/widget ci@main"
    assert notes[0].urgent
    assert model.colour == Colour.RED


def test_claims_of_others_are_notified_and_shown_until_fixed() -> None:
    model = live_model(user="alice")
    model.on_event(event("failure", 1, "failed"))
    model.take_notifications()
    model.on_claim(claim("claimed"))
    model.on_claim(claim("claimed", developer="alice"))  # my own: not notified
    model.on_claim(claim("released", developer="alice"))
    model.on_claim(claim("claimed"))
    notes = model.take_notifications()
    assert [(n.kind, n.title, n.body) for n in notes] == [
        ("claim", "bob is on acme/widget ci@main", '"flaky test"'),
        ("claim", "bob is on acme/widget ci@main", '"flaky test"'),
    ]
    assert model.entries()[0].text.endswith("bob is on it")
    model.on_event(event("success", 2, "fixed"))
    model.on_claim(claim("cleared"))
    assert [n.kind for n in model.take_notifications()] == ["fixed"]
    assert not model.entries()[0].text.endswith("is on it")


def test_claims_from_the_watch_answer_and_status_rows_seed_without_notifying() -> None:
    model = live_model(claims=[claim("claimed")])
    row = event("failure", 9, "failed") | {"claim": {k: v for k, v in claim("x").items() if k != "state"}}
    model.on_status([row, event("success", 3, "passed", project="acme/gadget") | {"claim": None}])
    assert model.worst == Overall.FAILING
    assert model.entries()[0].text.endswith("bob is on it")
    assert model.take_notifications() == []


def test_goodbye_signed_in_elsewhere_stops_the_tray() -> None:
    model = live_model(user="alice")
    model.on_event(event("failure", 1, "failed"))
    model.take_notifications()
    model.on_goodbye("signed in elsewhere")
    assert (model.worst, model.colour) == (Overall.SIGNED_IN_ELSEWHERE, Colour.GREY)
    assert "signed in elsewhere" in model.tooltip
    assert [n.kind for n in model.take_notifications()] == ["goodbye"]
    model.on_state(State(Phase.STOPPED, "alice signed in elsewhere; this client stopped", HUB))
    model.on_outcome(Outcome(Ending.SIGNED_IN_ELSEWHERE, "alice signed in elsewhere"))
    assert model.worst == Overall.SIGNED_IN_ELSEWHERE


def test_too_slow_is_only_a_disconnection() -> None:
    model = live_model()
    model.on_goodbye("too slow")
    model.on_state(State(Phase.DISCONNECTED, "disconnected", HUB))
    assert model.worst == Overall.DISCONNECTED and model.take_notifications() == []


def test_a_refusal_stops_and_says_why() -> None:
    model = TrayModel(user="alice", hub=HUB)
    model.on_outcome(Outcome(Ending.REFUSED, "unknown developer or wrong token"))
    assert model.worst == Overall.STOPPED and model.colour == Colour.GREY
    assert model.connection == "the hub refused: unknown developer or wrong token"
    assert [n.kind for n in model.take_notifications()] == ["stopped"]


def test_subscribers_hear_every_change() -> None:
    model = TrayModel(hub=HUB)
    calls: list[int] = []
    model.subscribe(lambda: calls.append(1))
    model.on_event(event("success", 1, "passed"))
    model.on_state(State(Phase.LIVE, "live", HUB, watch={}))
    assert len(calls) == 2


def test_summarize_one_or_many() -> None:
    model = live_model()
    assert summarize([]) is None
    model.on_event(event("success", 1, "fixed"))
    one = summarize(model.take_notifications())
    assert one is not None and one.title == "acme/widget ci@main fixed" and not one.urgent
    model.on_event(event("success", 1, "fixed", project="acme/gadget"))
    model.on_event(event("failure", 2, "failed", project="acme/widget"))
    many = summarize(model.take_notifications())
    assert many is not None and many.urgent
    assert many.title == "2 build updates"
    assert many.body.splitlines() == ["acme/widget ci@main failed", "acme/gadget ci@main fixed"]
    assert many.url == "https://ci.example.com/acme/widget/2"
