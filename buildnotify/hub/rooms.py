"""Project perspectives: one shared object per project (the "multiple
client" pattern). Every attached observer sees every committed event of the
project and every claim on one of its broken builds."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from buildnotify.events import BuildEvent, Transition
from buildnotify.hub.wire import OneWayCall

log = logging.getLogger(__name__)

ClaimKey = tuple[str, str]  # (pipeline, branch or "")


class Observer(Protocol):
    """What a room pushes to (an observing session, hub/sessions.py)."""

    def deliver(self, call: OneWayCall) -> None: ...

    def deliver_event(self, event: BuildEvent, call: OneWayCall | None) -> None: ...

    def fail(self, reason: str) -> None: ...


class ProjectRoom:
    def __init__(self, name: str, claims: Iterable[dict[str, Any]] = ()) -> None:
        self.name = name
        self.observers: set[Observer] = set()
        self.claims: dict[ClaimKey, dict[str, Any]] = {(c["pipeline"], c["branch"] or ""): c for c in claims}

    def attach(self, observer: Observer) -> None:
        self.observers.add(observer)

    def detach(self, observer: Observer) -> None:
        self.observers.discard(observer)

    def publish(self, event: BuildEvent, call: OneWayCall | None) -> None:
        """Push ``call`` (the event, encoded once; None when nobody observes)
        to every observer; a fix clears the claim on its build."""
        self._each_observer(lambda observer: observer.deliver_event(event, call))
        if event.transition is Transition.FIXED:
            cleared = self.claims.pop((event.pipeline, event.branch or ""), None)
            if cleared is not None:
                self.announce_claim(cleared | {"state": "cleared", "fixed_by": event.id})

    def set_claim(self, claim: dict[str, Any]) -> None:
        self.claims[(claim["pipeline"], claim["branch"] or "")] = claim
        self.announce_claim(claim | {"state": "claimed"})

    def release_claim(self, pipeline: str, branch: str | None) -> dict[str, Any] | None:
        released = self.claims.pop((pipeline, branch or ""), None)
        if released is not None:
            self.announce_claim(released | {"state": "released"})
        return released

    def announce_claim(self, claim: dict[str, Any]) -> None:
        call = OneWayCall("claim", claim_wire(claim))
        self._each_observer(lambda observer: observer.deliver(call))

    def _each_observer(self, push: Callable[[Observer], None]) -> None:
        """``push`` to every observer; one that fails is logged and dropped
        (its client reconnects and resumes), and never keeps the others from
        the message."""
        for observer in list(self.observers):
            try:
                push(observer)
            except Exception:
                log.exception("pushing to an observer of %s failed; dropping it", self.name)
                self.observers.discard(observer)
                observer.fail("the hub could not push to this session")


def claim_wire(claim: dict[str, Any]) -> dict[str, Any]:
    """A claim as pushed: plain data, times as ISO 8601."""
    out = dict(claim)
    if out.get("claimed_at") is not None and not isinstance(out["claimed_at"], str):
        out["claimed_at"] = out["claimed_at"].isoformat()
    out["branch"] = out.get("branch") or None
    return out
