"""Who gets a personal alert: the developer whose commit broke, kept
breaking or fixed a build, found by the commit author's email or login.
The batch that records deliveries looks the identities up and stores one
alert per developer, in the same transaction as the event.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from buildnotify.events import BuildEvent, Transition

#: Transitions that alert the commit's author.
ALERTING = (Transition.FAILED, Transition.STILL_FAILING, Transition.FIXED)

Identity = tuple[str, str]  # (kind, value): ("email", "ann@example.com") or ("login", "ann")


@dataclasses.dataclass(frozen=True)
class Alert:
    """A personal alert, committed with its event: the developer whose commit
    broke, kept breaking or fixed a build."""

    id: int
    developer: str
    event: BuildEvent


def identities_to_alert(event: BuildEvent) -> list[Identity]:
    """The author identities to alert about ``event`` (lower-cased, as the
    store keeps them); [] when its transition alerts no one."""
    if event.transition not in ALERTING:
        return []
    author = event.author
    return [
        (kind, value.lower()) for kind, value in (("email", author.email), ("login", author.login)) if value
    ]


def recipients(
    identities: list[Identity], developers: Mapping[Identity, tuple[int, str]]
) -> list[tuple[int, str]]:
    """(developer id, name) of each developer one of ``identities`` belongs
    to, once each (an author's email and login may name the same developer),
    in id order."""
    found = dict(developers[identity] for identity in identities if identity in developers)
    return sorted(found.items())
