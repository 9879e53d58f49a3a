"""The tray's state without a screen: event sequences -> states in words,
colours, ages, claims, alerts, projects, the connection and goodbyes."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta, timezone
from typing import Any

from twisted.internet.task import Clock

from buildnotify.client import Ending, Outcome, Phase, State
from buildnotify_tray.builds import BuildState
from buildnotify_tray.model import Colour, Link, Projects, TrayModel
from buildnotify_tray.notifications import summarize

_ids = itertools.count(1)
HUB = "tcp:127.0.0.1:8787"
T0 = datetime(2024, 5, 14, 10, 0, tzinfo=timezone.utc)  # build 1 finished then; build n, n minutes later
WIDGET = ("acme/widget", "ci", "main")


def event(
    status: str,
    number: int,
    transition: str | None = None,
    project: str = "acme/widget",
    branch: str | None = "main",
    **fields: Any,
) -> dict[str, Any]:
    moment = (T0 + timedelta(minutes=number - 1)).isoformat()
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
        "received_at": moment,
        "finished_at": moment if status not in ("queued", "running") else None,
    } | fields


def clock_at(minutes_after_t0: float) -> Clock:
    clock = Clock()
    clock.advance((T0 + timedelta(minutes=minutes_after_t0)).timestamp())
    return clock


def live_model(
    user: str | None = None, claims: list[dict[str, Any]] | None = None, clock: Clock | None = None
) -> TrayModel:
    model = TrayModel(user=user, hub=HUB, clock=clock or clock_at(60))
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


def texts(model: TrayModel) -> list[str]:
    return [e.text for e in model.entries()]


def local_hhmm(clock: Clock) -> str:
    return datetime.fromtimestamp(clock.seconds()).astimezone().strftime("%H:%M")


# -- states ---------------------------------------------------------------------------------


def test_a_grey_ring_until_a_build_is_known() -> None:
    model = TrayModel(hub=HUB)
    assert (model.link, model.worst, model.colour) == (Link.CONNECTING, None, Colour.GREY)
    model.on_state(State(Phase.LIVE, "live", HUB, watch={}))
    assert (model.link, model.worst, model.colour) == (Link.LIVE, None, Colour.GREY)
    assert model.entries() == []


def test_each_state_has_its_words_and_colour() -> None:
    model = live_model()
    model.on_event(event("failure", 1, "failed", branch="new"))
    model.on_event(event("failure", 1, "failed", branch="old"))
    model.on_event(event("failure", 2, "still_failing", branch="old"))
    model.on_event(event("error", 3, "failed", branch="infra"))
    model.on_event(event("running", 4, "started", branch="busy"))
    model.on_event(event("success", 5, "passed", branch="green"))
    model.on_event(event("cancelled", 6, branch="never"))
    got = [(e.key[2], e.state, e.colour) for e in model.entries()]
    assert got == [
        ("new", BuildState.NEW_FAILURE, Colour.RED),
        ("old", BuildState.STILL_FAILING, Colour.RED),
        ("infra", BuildState.ERROR, Colour.PURPLE),
        ("busy", BuildState.BUILDING, Colour.AMBER),
        ("green", BuildState.PASSING, Colour.GREEN),
        ("never", BuildState.UNKNOWN, Colour.GREY),
    ], "worst first, each state its own"
    words = texts(model)
    assert words[0].startswith("acme/widget ci@new: new failure, #1 by alice")
    assert words[1].startswith("acme/widget ci@old: still failing, #2 by alice")
    assert words[2].startswith("acme/widget ci@infra: infrastructure error, #3 by alice")
    assert words[3].startswith("acme/widget ci@busy: building #4 by alice")
    assert words[4].startswith("acme/widget ci@green: passing, #5 by alice")
    assert words[5] == "acme/widget ci@never: no result yet"
    assert (model.worst, model.colour) == (BuildState.NEW_FAILURE, Colour.RED)
    assert model.tooltip.startswith(
        "buildnotify: 1 new failure, 1 still failing, 1 infrastructure error, 1 building, 1 passing, "
        "1 no result yet"
    )


def test_building_names_the_running_build_and_a_rebuild_stays_red() -> None:
    model = live_model(clock=clock_at(20))
    model.on_event(event("success", 12, "passed"))
    model.on_event(event("running", 13, "started", author={"login": "bob"}))
    assert texts(model) == ["acme/widget ci@main: building #13 by bob, started 8m ago (last: passed #12)"]
    assert model.entries()[0].url == "https://ci.example.com/acme/widget/13"
    model.on_event(event("failure", 13, "failed", author={"login": "bob"}))
    model.on_event(event("running", 14, "started"))
    assert model.colour == Colour.RED
    assert texts(model) == ["acme/widget ci@main: new failure, #13 by bob, 8m ago; rebuilding #14 (7m)"]
    assert model.entries()[0].url == "https://ci.example.com/acme/widget/13", "the failure is what to open"


def test_the_age_of_each_build_follows_the_clock() -> None:
    clock = clock_at(4)
    model = live_model(clock=clock)
    model.on_event(event("failure", 1, "failed"))
    assert texts(model) == ["acme/widget ci@main: new failure, #1 by alice, 4m ago"]
    clock.advance(2 * 3600)
    assert texts(model) == ["acme/widget ci@main: new failure, #1 by alice, 2h ago"]


def test_a_cancelled_or_skipped_run_does_not_count() -> None:
    model = live_model()
    model.on_event(event("failure", 1, "failed"))
    model.on_event(event("running", 2, "started"))
    model.on_event(event("cancelled", 2))
    assert model.entries()[0].state == BuildState.NEW_FAILURE, "a cancel after a failure must stay red"
    assert "#1" in texts(model)[0] and "rebuilding" not in texts(model)[0]
    model.on_event(event("success", 3, "fixed"))
    model.on_event(event("skipped", 4))
    assert model.entries()[0].state == BuildState.PASSING
    # a status row of a cancelled run (an older hub's) changes nothing either
    model.on_status([event("cancelled", 5)])
    assert model.entries()[0].state == BuildState.PASSING


def test_a_late_old_build_does_not_change_the_state() -> None:
    model = live_model()
    model.on_event(event("success", 5, "passed"))
    model.on_event(event("failure", 4, "failed"))  # delivered late; build 5 is newer
    assert model.worst == BuildState.PASSING


def test_your_own_breakage_is_highlighted() -> None:
    model = live_model(user="ada")
    mine = event("failure", 1, "failed", author={"login": "a.lovelace", "email": "ada@example.com"})
    model.on_event(mine)
    model.on_alert({"alert_id": 3, "developer": "ada", "event": mine})  # the hub knows it is ada's
    model.on_event(event("failure", 2, "failed", project="acme/gadget"))
    by_project = {e.key[0]: e for e in model.entries()}
    assert by_project["acme/widget"].mine and "#1 by you" in by_project["acme/widget"].text
    assert not by_project["acme/gadget"].mine and "by alice" in by_project["acme/gadget"].text
    model.on_acked([3])
    assert [e.key[0] for e in model.entries() if e.mine] == ["acme/widget"], "yours after the ack too"


# -- claims and alerts ------------------------------------------------------------------------


def test_claims_say_who_with_the_note_and_you_for_your_own() -> None:
    model = live_model(user="ada")
    model.on_event(event("failure", 1, "failed"))
    model.on_claim(claim("claimed"))
    assert texts(model)[0].endswith('; bob is on it: "flaky test"')
    assert model.entries()[0].claimed_by == "bob"
    model.on_claim(claim("claimed", developer="ada", note="looking"))
    assert texts(model)[0].endswith('; you are on it: "looking"')
    model.on_claim(claim("released", developer="ada"))
    assert "on it" not in texts(model)[0]
    model.on_claim(claim("claimed", note=None))
    assert texts(model)[0].endswith("; bob is on it")


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
    model.on_event(event("success", 2, "fixed"))
    assert "on it" not in texts(model)[0], "a fix clears the claim, even if the hub's clear is missed"
    model.on_claim(claim("cleared"))
    assert [n.kind for n in model.take_notifications()] == ["fixed"]
    assert "on it" not in texts(model)[0]


def test_pending_alerts_are_listed_until_acknowledged() -> None:
    model = live_model(user="alice")
    broke = event("failure", 1, "failed")
    alert = {"alert_id": 7, "developer": "alice", "event": broke}
    model.on_alert(alert)
    assert [n.kind for n in model.take_notifications()] == ["alert"]
    model.on_alert(alert)  # sent again at the next login: not news
    assert model.take_notifications() == []
    fixed = event("success", 2, "fixed")
    model.on_alerts([alert, {"alert_id": 9, "developer": "alice", "event": fixed}])  # alerts() at start
    assert [(a.alert_id, a.urgent) for a in model.alert_entries()] == [(7, True), (9, False)]
    assert model.alert_entries()[0].text == "Your commit 00000001 broke acme/widget ci@main (#1, 1h ago)"
    assert model.alert_entries()[1].text.startswith("Your commit 00000002 fixed acme/widget ci@main")
    assert "2 alerts for you" in model.tooltip
    model.on_acked([7])
    assert [a.alert_id for a in model.alert_entries()] == [9]
    model.on_alerts([])  # acknowledged elsewhere (buildnotify-cli ack)
    assert model.alert_entries() == []


def test_an_alert_replaces_the_notification_of_its_event() -> None:
    model = live_model(user="alice")
    failed = event("failure", 2, "failed")
    model.on_event(failed)  # the hub pushes the event, then the alert
    model.on_alert({"alert_id": 1, "developer": "alice", "event": failed})
    notes = model.take_notifications()
    assert [n.kind for n in notes] == ["alert"]
    assert notes[0].title == f"Your commit {failed['sha'][:8]} broke acme/widget ci@main"
    assert notes[0].urgent


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


def test_claims_from_the_watch_answer_and_status_rows_seed_without_notifying() -> None:
    model = live_model(claims=[claim("claimed")])
    row = event("failure", 9, "failed") | {"claim": {k: v for k, v in claim("x").items() if k != "state"}}
    model.on_status([row, event("success", 3, "passed", project="acme/gadget") | {"claim": None}])
    assert model.worst == BuildState.NEW_FAILURE
    assert model.entries()[0].text.endswith('bob is on it: "flaky test"')
    assert model.take_notifications() == []


# -- projects ---------------------------------------------------------------------------------


def test_invisible_and_misspelled_projects_are_named() -> None:
    model = live_model()
    model.on_event(event("success", 1, "passed"))
    model.on_hidden(["acme/secret"])
    model.on_projects(Projects(("acme/widget", "acme/widgit"), ("acme/gadget", "acme/widget")))
    header = model.header()
    assert "Not visible: acme/secret (no such project, or private)" in header
    assert "No builds yet: acme/widgit (misspelled?)" in header
    assert [n.title for n in model.take_notifications()] == ["Not watching acme/secret"]
    assert [(c.project, c.watched, c.note) for c in model.project_choices()] == [
        ("acme/gadget", False, ""),
        ("acme/widget", True, ""),
        ("acme/widgit", True, "no builds yet (misspelled?)"),
    ]
    model.on_unwatched("acme/widget")
    assert model.entries() == [] and model.watching == ("acme/widgit",)


def test_a_first_run_says_it_watches_everything_visible() -> None:
    model = live_model(user="ada")
    model.on_watched({"watching": ["acme/gadget", "acme/widget"], "claims": [claim("claimed")]})
    model.on_projects(
        Projects(("acme/gadget", "acme/widget"), ("acme/gadget", "acme/widget"), first_run=True)
    )
    assert "Watching all 2 projects you can see (change in Projects)" in model.header()
    assert model.entries()[0].claimed_by == "bob"


# -- the connection -----------------------------------------------------------------------------


def test_an_unreachable_hub_keeps_the_colours_marked_stale_with_the_time() -> None:
    clock = clock_at(30)
    model = live_model(clock=clock)
    model.on_event(event("failure", 1, "failed"))
    lost = local_hhmm(clock)
    model.on_state(State(Phase.DISCONNECTED, "disconnected (connection refused); retrying in 1.0 s", HUB))
    clock.advance(600)
    model.on_state(State(Phase.CONNECTING, "connecting to the hub", HUB))
    model.on_state(State(Phase.DISCONNECTED, "disconnected (connection refused); retrying in 2.0 s", HUB))
    assert (model.link, model.colour, model.worst) == (Link.STALE, Colour.RED, BuildState.NEW_FAILURE)
    assert model.as_of == lost, "the time the list was last current, not the last retry"
    assert model.header()[:2] == [
        f"Not live: builds as of {lost} (hub unreachable)",
        "disconnected (connection refused); retrying in 2.0 s",
    ]
    assert f"not live: as of {lost}" in model.tooltip
    assert model.entries()[0].state == BuildState.NEW_FAILURE
    assert not model.can_act()
    model.on_state(State(Phase.LIVE, "live", HUB, watch={}))
    assert (model.link, model.as_of, model.colour) == (Link.LIVE, None, Colour.RED)


def test_signed_in_elsewhere_greys_the_icon_until_signing_in_again() -> None:
    clock = clock_at(30)
    model = live_model(user="alice", clock=clock)
    model.on_event(event("failure", 1, "failed"))
    model.take_notifications()
    model.on_goodbye("signed in elsewhere")
    model.on_state(State(Phase.STOPPED, "alice signed in elsewhere; this client stopped", HUB))
    model.on_outcome(Outcome(Ending.SIGNED_IN_ELSEWHERE, "alice signed in elsewhere"))
    assert (model.link, model.colour) == (Link.SIGNED_OUT, Colour.GREY)
    assert model.header() == [
        f"Signed in elsewhere at {local_hhmm(clock)}: another client of yours took over",
        "Builds below are as of then, not updated",
    ]
    assert [n.kind for n in model.take_notifications()] == ["goodbye"]
    model.on_signing_in()
    model.on_state(State(Phase.CONNECTING, "connecting", HUB))
    assert (model.link, model.colour) == (Link.STALE, Colour.RED)
    model.on_state(State(Phase.LIVE, "live", HUB, watch={}))
    assert model.link == Link.LIVE


def test_too_slow_is_only_a_disconnection() -> None:
    model = live_model()
    model.on_goodbye("too slow")
    model.on_state(State(Phase.DISCONNECTED, "disconnected", HUB))
    assert model.link == Link.STALE and model.take_notifications() == []


def test_a_refusal_stops_and_says_why() -> None:
    model = TrayModel(user="alice", hub=HUB)
    model.on_outcome(Outcome(Ending.REFUSED, "unknown developer or wrong token"))
    assert (model.link, model.colour) == (Link.STOPPED, Colour.GREY)
    assert model.header()[0] == "the hub refused: unknown developer or wrong token"
    assert [n.kind for n in model.take_notifications()] == ["stopped"]


def test_a_failed_action_is_notified() -> None:
    model = live_model(user="alice")
    model.on_action_failed("could not claim acme/widget ci@main: it is not failing")
    [note] = model.take_notifications()
    assert note.body == "could not claim acme/widget ci@main: it is not failing" and note.urgent


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
