"""One webhook's worth of normalized events: what ingest hands the store.

It sits beside :mod:`buildnotify.events`, below both ingest and the store,
so that neither has to import the other to speak of it.
"""

from __future__ import annotations

import dataclasses

from buildnotify.events import BuildEvent


@dataclasses.dataclass(frozen=True)
class Delivery:
    """The normalized result of one webhook: stored once per (provider, key)."""

    provider: str
    key: str
    events: tuple[BuildEvent, ...]
    source: str | None = None  # which configured token/secret authenticated it; never the secret
