"""Helpers shared by the ``tests/test_ingest_*.py`` suites. Each parser
suite keeps its own request builder, since the headers are what differ per
provider; :func:`signed` sends like every CI system at once, for the suites
that post to a running hub."""

import json
import logging
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from buildnotify.config import PROVIDERS, TOKEN_PROVIDERS
from buildnotify.delivery import Delivery
from buildnotify.events import BuildEvent
from buildnotify.ingest.base import ProviderConfig, hmac_sha256_hex

FIXTURES = Path(__file__).parent / "fixtures"


class Fixtures:
    """The JSON bodies in ``tests/fixtures/<provider>/``: ``fixture(name)``
    reads one, ``fixture.edited(name, edit)`` one after ``edit(data)``."""

    def __init__(self, provider: str) -> None:
        self.directory = FIXTURES / provider

    def __call__(self, name: str) -> bytes:
        return (self.directory / f"{name}.json").read_bytes()

    def edited(self, name: str, edit: Callable[[Any], object]) -> bytes:
        data = json.loads(self(name))
        edit(data)
        return json.dumps(data).encode()


def only_event(delivery: Delivery, provider: str) -> tuple[Delivery, BuildEvent]:
    """The delivery and its one event, checking both came from ``provider``."""
    assert delivery.provider == provider
    assert len(delivery.events) == 1
    return delivery, delivery.events[0]


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


# -- posting signed webhooks to a running hub ------------------------------------------

SECRET = "ingest-test-secret"
#: The header that names the event, per provider that has one.
_EVENT_HEADERS = {"github": "X-GitHub-Event", "gitlab": "X-Gitlab-Event", "buildkite": "X-Buildkite-Event"}
#: The header that carries a delivery id, per provider that reads one.
_DELIVERY_HEADERS = {"github": "X-GitHub-Delivery", "gitlab": "Idempotency-Key", "generic": "Idempotency-Key"}


def signing_configs() -> dict[str, ProviderConfig]:
    """Every provider authenticated with :data:`SECRET`, as a hub in production is."""
    shared = ProviderConfig(secret=SECRET)
    per_source = ProviderConfig(tokens={"ci": SECRET})
    return {name: per_source if name in TOKEN_PROVIDERS else shared for name in PROVIDERS}


def signed(
    provider: str, body: bytes, event: str | None = None, delivery: str | None = None
) -> tuple[dict[str, str], str]:
    """Headers and path that authenticate ``body`` to a hub configured with
    :func:`signing_configs`, as each CI system sends them."""
    headers = {"Content-Type": "application/json"}
    path = ""
    if event is not None and provider in _EVENT_HEADERS:
        headers[_EVENT_HEADERS[provider]] = event
    if delivery is not None and provider in _DELIVERY_HEADERS:
        headers[_DELIVERY_HEADERS[provider]] = delivery
    if provider == "github":
        headers["X-Hub-Signature-256"] = "sha256=" + hmac_sha256_hex(SECRET, body)
    elif provider == "gitlab":
        headers["X-Gitlab-Token"] = SECRET
    elif provider == "buildkite":
        headers["X-Buildkite-Token"] = SECRET
    elif provider == "circleci":
        headers["circleci-signature"] = "v1=" + hmac_sha256_hex(SECRET, body)
    elif provider == "jenkins":
        path = SECRET
    elif provider == "generic":
        headers["Authorization"] = f"Bearer {SECRET}"
    return headers, path


def capture_logs(
    testcase: Any, name: str = "buildnotify", level: int = logging.INFO
) -> list[logging.LogRecord]:
    """Every record logger ``name`` emits at ``level`` and above until
    ``testcase`` ends (trial test cases have no caplog)."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(level)
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger(name)
    previous = logger.level
    logger.setLevel(level)
    logger.addHandler(handler)
    testcase.addCleanup(logger.setLevel, previous)
    testcase.addCleanup(logger.removeHandler, handler)
    return records
