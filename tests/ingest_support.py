"""Helpers shared by the ``tests/test_ingest_*.py`` suites; each suite keeps
its own request builder, since the headers are what differ per provider."""

import json
import logging
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from buildnotify.events import BuildEvent
from buildnotify.ingest.base import Delivery

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


def capture_logs(testcase: Any, name: str = "buildnotify") -> list[logging.LogRecord]:
    """Every record logger ``name`` emits at INFO and above until ``testcase``
    ends (trial test cases have no caplog)."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    testcase.addCleanup(logger.setLevel, level)
    testcase.addCleanup(logger.removeHandler, handler)
    return records
