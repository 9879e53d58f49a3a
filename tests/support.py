"""Test support: real databases (SQLite files, PostgreSQL schemas) and a real
hub on loopback.

Suites that must hold on every backend are written once as a mixin and
instantiated per backend with :func:`per_backend`.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import treq
from sqlalchemy import text
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial import unittest
from twisted.web.client import HTTPConnectionPool

from buildnotify.config import PROVIDERS, HubConfig, default_node
from buildnotify.events import BuildEvent
from buildnotify.hub.settings import PBSettings
from buildnotify.ingest.base import ProviderConfig
from buildnotify.store import database

POSTGRES_URL = os.environ.get(
    "BUILDNOTIFY_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
BACKENDS = ("sqlite", "postgresql")


def _postgres_problem() -> str | None:
    try:
        engine = database.create(POSTGRES_URL)
        with engine.connect() as conn:
            conn.execute(text("select 1"))
        engine.dispose()
    except Exception as e:  # any failure to reach it is a reason to skip
        return f"PostgreSQL not reachable at {database.display_url(POSTGRES_URL)}: {type(e).__name__}: {e}"
    return None


_problem: list[str | None] = []


def postgres_problem() -> str | None:
    if not _problem:
        _problem.append(_postgres_problem())
    return _problem[0]


def database_url(testcase: unittest.TestCase, backend: str) -> str:
    """A fresh, empty database for one test, dropped afterwards.

    PostgreSQL tests skip with the reason when no server answers, except
    under CI (``CI=true``), where that is a failure.
    """
    if backend == "sqlite":
        return os.path.join(testcase.mktemp(), "hub.db")
    problem = postgres_problem()
    if problem:
        if os.environ.get("CI") == "true":
            testcase.fail(f"{problem} (CI=true: PostgreSQL tests may not skip)")
        raise unittest.SkipTest(problem)
    schema = "bn_test_" + secrets.token_hex(6)
    admin = database.create(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(text(f"create schema {schema}"))

    def drop() -> None:
        with admin.begin() as conn:
            conn.execute(text(f"drop schema {schema} cascade"))
        admin.dispose()

    testcase.addCleanup(drop)
    separator = "&" if "?" in POSTGRES_URL else "?"
    return f"{POSTGRES_URL}{separator}options=-csearch_path%3D{schema}"


def per_backend(mixin: type, namespace: dict[str, Any]) -> None:
    """Define ``<Mixin>SQLite`` and ``<Mixin>PostgreSQL`` test cases in
    ``namespace``. ``mixin`` may be a TestCase already (mark it ``__test__ =
    False`` so that it does not run once more on its own)."""
    base = mixin.__name__.removesuffix("Tests")
    bases = (mixin,) if issubclass(mixin, unittest.TestCase) else (mixin, unittest.TestCase)
    for backend, label in (("sqlite", "SQLite"), ("postgresql", "PostgreSQL")):
        name = f"Test{base}{label}"
        namespace[name] = type(
            name, bases, {"backend": backend, "__module__": mixin.__module__, "__test__": True}
        )


def clock_at(when: datetime) -> Clock:
    """A ``task.Clock`` that reads ``when`` (an aware datetime): for what the
    hub dates by its clock, such as the end of a mute."""
    clock = Clock()
    clock.advance(when.timestamp())
    return clock


def provider_configs(**overrides: ProviderConfig) -> dict[str, ProviderConfig]:
    configs = {name: ProviderConfig() for name in PROVIDERS}
    configs.update(overrides)
    return configs


class RunningHub:
    """A hub listening on a loopback port, with a client to post to it."""

    def __init__(self, hub: Any, pool: HTTPConnectionPool) -> None:
        self.hub = hub
        self.pool = pool

    @classmethod
    async def start(
        cls,
        testcase: unittest.TestCase,
        backend: str = "sqlite",
        providers: Mapping[str, ProviderConfig] | None = None,
        max_body: int = 25 * 1024 * 1024,
        session: PBSettings | None = None,
        clock: Any = None,
        database: str | None = None,
        node: str = "",
        proxied: bool = False,
        relays: Mapping[str, Mapping[str, Any]] | None = None,
        escalation: Mapping[str, Any] | None = None,
    ) -> RunningHub:
        """``clock``: a ``task.Clock`` for the PB service's timeouts, or None
        for real time. ``database``: a URL another hub uses too (a node of
        the same hub; default: a fresh database). ``proxied``: both listeners
        read the PROXY protocol (``haproxy:`` endpoints), as behind a balancer.
        ``relays``, ``escalation``: the config's ``[relays]`` and ``[escalation]`` tables."""
        from buildnotify.server import Hub  # imports every provider

        wrapper = "haproxy:" if proxied else ""
        config = HubConfig(
            http=f"{wrapper}tcp:0:interface=127.0.0.1",
            pb=f"{wrapper}tcp:0:interface=127.0.0.1",
            database=database or database_url(testcase, backend),
            max_body=max_body,
            providers=providers or provider_configs(),
            session=session or PBSettings(),
            node=node or default_node(),
            relays=relays or {},
            escalation=escalation or {},
        )
        hub = await Hub.start(config, reactor, clock)
        testcase.addCleanup(lambda: Deferred.fromCoroutine(hub.stop()))
        pool = HTTPConnectionPool(reactor, persistent=False)
        testcase.addCleanup(pool.closeCachedConnections)
        return cls(hub, pool)

    @property
    def url(self) -> str:
        return self.hub.http_url

    async def post(
        self,
        provider: str,
        body: bytes | Mapping[str, Any],
        headers: Mapping[str, str] | None = None,
        path: str = "",
    ) -> tuple[int, dict[str, Any]]:
        """POST to ``/hooks/<provider>[/path]``; a dict body is sent as JSON."""
        if not isinstance(body, bytes):
            body = json.dumps(body).encode()
            headers = {"Content-Type": "application/json", **(headers or {})}
        url = f"{self.url}/hooks/{provider}" + (f"/{path}" if path else "")
        response = await treq.post(url, data=body, headers=dict(headers or {}), pool=self.pool)
        return response.code, json.loads(await response.content())

    async def build(self, project: str, number: int, status: str, **fields: Any) -> int:
        """Post one generic build event; returns its stored id."""
        body = {"project": project, "pipeline": "ci", "number": number, "status": status, "branch": "main"}
        code, answer = await self.post("generic", body | fields)
        assert code == 200 and answer["stored"] == 1, (code, answer)
        return answer["ids"][0]

    async def events(self, project: str | None = None) -> list[BuildEvent]:
        """Everything stored, oldest first."""
        return await self.hub.store.history(project=project, limit=100_000, after_id=0)
