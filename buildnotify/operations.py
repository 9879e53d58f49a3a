"""What an operator's tools read on the webhook port: ``GET /healthz`` (the
process answers), ``GET /readyz`` (it can store webhooks: the database
answers and its schema is at this code's migration head) and ``GET
/metrics`` (Prometheus' text format).

The readiness check runs on a reader thread (``Store.read``), never on the
reactor; one that takes longer than :data:`READY_TIMEOUT` counts as not ready.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, TimeoutError
from twisted.python.failure import Failure
from twisted.web import resource, server

from buildnotify.ingest.http import finish, json_answer
from buildnotify.metrics import CONTENT_TYPE, Metrics
from buildnotify.store import Store, database

log = logging.getLogger("buildnotify.operations")
READY_TIMEOUT = 5.0  # seconds; a balancer's check gives up about then

#: fires with why the hub cannot store webhooks, or None when it can
ReadinessCheck = Callable[[], Deferred[str | None]]


class _GetOnly(resource.Resource):
    isLeaf = True

    def render(self, request: server.Request) -> bytes | int:
        if request.method not in (b"GET", b"HEAD"):
            request.setHeader(b"allow", b"GET, HEAD")
            return json_answer(request, 405, {"error": "GET only"})
        return self.render_GET(request)

    def render_GET(self, request: server.Request) -> bytes | int:  # noqa: N802
        raise NotImplementedError


class Healthz(_GetOnly):
    """200 ``{"ok": true}`` while the process serves HTTP: for "restart it?"."""

    def render_GET(self, request: server.Request) -> bytes:  # noqa: N802
        return json_answer(request, 200, {"ok": True})


class Readyz(_GetOnly):
    """200 ``{"ready": true}`` when webhooks can be stored; else 503 with the
    reason for people: for "send it traffic?"."""

    def __init__(self, check: ReadinessCheck, clock: Any) -> None:
        super().__init__()
        self.check = check
        self.clock = clock

    def render_GET(self, request: server.Request) -> int:  # noqa: N802
        d = self.check()
        d.addTimeout(READY_TIMEOUT, self.clock)
        d.addCallbacks(self._checked, self._failed, callbackArgs=(request,), errbackArgs=(request,))
        return server.NOT_DONE_YET

    def _checked(self, reason: str | None, request: server.Request) -> None:
        if reason is None:
            finish(request, json_answer(request, 200, {"ready": True}))
        else:
            finish(request, json_answer(request, 503, {"ready": False, "reason": reason}))

    def _failed(self, failure: Failure, request: server.Request) -> None:
        if failure.check(TimeoutError):
            reason = f"the database did not answer within {READY_TIMEOUT:g} s"
        else:
            reason = f"the database is unreachable: {database.describe(failure.value)}"
        log.warning("not ready: %s", reason)
        finish(request, json_answer(request, 503, {"ready": False, "reason": reason}))


class MetricsPage(_GetOnly):
    """Every metric of this hub, rendered on the reactor thread (the session
    gauge reads the PB service, which lives there)."""

    def __init__(self, metrics: Metrics) -> None:
        super().__init__()
        self.metrics = metrics

    def render_GET(self, request: server.Request) -> bytes:  # noqa: N802
        request.setHeader(b"content-type", CONTENT_TYPE.encode())
        return self.metrics.exposition()


def store_readiness(store: Store) -> ReadinessCheck:
    """The check of a hub on ``store``: its schema at head, read off the reactor."""
    return lambda: store.read(database.not_ready)
