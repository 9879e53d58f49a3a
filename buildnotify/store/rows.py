"""Stored rows back into domain values, for every read of events."""

from __future__ import annotations

from collections.abc import Mapping

from buildnotify.events import Author, BuildEvent, Status, Transition


def event_from_row(row: Mapping) -> BuildEvent:
    return BuildEvent(
        id=row["id"],
        provider=row["provider"],
        project=row["project"],
        pipeline=row["pipeline"],
        branch=row["branch"],
        sha=row["sha"],
        author=Author(row["author_name"], row["author_email"], row["author_login"]),
        build_id=row["build_id"],
        build_number=row["build_number"],
        attempt=row["attempt"],
        status=Status(row["status"]),
        transition=Transition(row["transition"]) if row["transition"] else None,
        url=row["url"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        received_at=row["received_at"],
        delivery_key=row["delivery_key"],
    )
