"""``POST /hooks/<provider>[/<path>]``: the twisted.web side of ingest.

The request body is capped before it is read (413 at the first byte over the
limit: :class:`LimitedRequest`); the provider parses it;
:func:`~buildnotify.ingest.clean.clean` normalizes what the parser hands on;
the ``record`` callable (the store's) commits it; only then is the CI system
answered 2xx. Every answer is JSON, and no bad input gets a 5xx:
503 means the database is unavailable, and the CI should retry.
"""

from __future__ import annotations

import json
import logging
import time
import traceback
from collections.abc import Callable, Mapping
from io import BytesIO
from pathlib import Path
from typing import Any, Protocol

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from twisted.web import resource, server

from buildnotify.delivery import Delivery
from buildnotify.events import BuildEvent, utcnow
from buildnotify.ingest.base import HookError, HookRequest, Ignored, Provider, ProviderConfig
from buildnotify.ingest.clean import clean
from buildnotify.logtext import printable
from buildnotify.metrics import Metrics

log = logging.getLogger("buildnotify.ingest")


class Recorded(Protocol):
    """What ingest reads of a committed delivery (the store's
    :class:`~buildnotify.store.batch.Recorded`)."""

    @property
    def duplicate(self) -> bool: ...

    @property
    def events(self) -> tuple[BuildEvent, ...]: ...

    @property
    def stale(self) -> int: ...


#: Commits a delivery; fires once it is committed (or known already).
Record = Callable[[Delivery], Deferred[Recorded]]


def client(request: server.Request) -> str:
    """The sender's address for log lines: the CI system's own address also
    behind a balancer, when the listener reads the PROXY protocol
    (``haproxy:tcp:...``), which makes it the transport's peer."""
    peer = request.getClientAddress()
    return str(getattr(peer, "host", None) or peer)


def json_answer(request: server.Request, code: int, payload: Mapping[str, Any]) -> bytes:
    """``payload`` as the JSON body of a ``code`` answer (every answer of the site is JSON)."""
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json")
    return json.dumps(payload).encode() + b"\n"


def finish(request: server.Request, body: bytes) -> None:
    """Answer a request that returned NOT_DONE_YET, unless its client has gone."""
    if not request._disconnected:
        request.write(body)
        request.finish()


class HookResource(resource.Resource):
    """One provider's endpoint; the rest of the path goes to the provider
    (Jenkins carries its token there)."""

    isLeaf = True

    def __init__(
        self,
        name: str,
        parse: Provider,
        config: ProviderConfig,
        record: Record,
        metrics: Metrics | None = None,
    ) -> None:
        super().__init__()
        self.name = name
        self.parse = parse
        self.config = config
        self.record = record
        self.metrics = metrics or Metrics()

    def render(self, request: server.Request) -> bytes | int:
        request.received = time.perf_counter()  # type: ignore[attr-defined]
        if request.method != b"POST":
            request.setHeader(b"allow", b"POST")
            return self._answer(request, 405, {"error": "webhooks are POSTed"}, "not_post")
        return self.render_POST(request)

    def _answer(self, request: server.Request, code: int, payload: Mapping[str, Any], reason: str) -> bytes:
        """The JSON answer, counted by its class (``reason``) and timed from
        the request's arrival."""
        result = "accepted" if code < 300 else "rejected"
        self.metrics.webhooks.labels(provider=self.name, result=result, reason=reason).inc()
        received = getattr(request, "received", None)
        if received is not None:
            self.metrics.ingest_seconds.labels(provider=self.name).observe(time.perf_counter() - received)
        return json_answer(request, code, payload)

    def render_POST(self, request: server.Request) -> bytes | int:
        hook = HookRequest(
            body=request.content.read(),
            headers={
                k.decode("latin-1").lower(): v[0].decode("latin-1")
                for k, v in request.requestHeaders.getAllRawHeaders()
            },
            query={
                k.decode("latin-1"): v[0].decode("utf-8", "replace") for k, v in request.args.items() if v
            },
            path="/".join(p.decode("utf-8", "replace") for p in request.postpath),
            received_at=utcnow(),
        )
        try:
            delivery = clean(self.parse(hook, self.config))
        except Ignored as e:
            log.info("ignored %s from %s: %s", self.name, client(request), printable(e.reason))
            return self._answer(request, 202, {"ignored": e.reason}, "ignored")
        except HookError as e:
            log.info("rejected %s from %s: %d %s", self.name, client(request), e.code, printable(e.message))
            return self._answer(request, e.code, {"error": e.message}, rejection(e.code))
        except Exception as e:
            # A parser bug: one line saying where, not a traceback per request.
            log.error(
                "rejected %s from %s: 400, the parser failed: %s",
                self.name,
                client(request),
                printable(_where(e)),
            )
            body = {"error": f"could not read this {self.name} payload"}
            return self._answer(request, 400, body, "bad_request")

        finished = request.notifyFinish()
        finished.addErrback(lambda _: None)  # the CI system hung up; the event is stored anyway
        d = self.record(delivery)
        d.addCallbacks(self._stored, self._failed, callbackArgs=(request, delivery), errbackArgs=(request,))
        return server.NOT_DONE_YET

    def _stored(self, recorded: Recorded, request: server.Request, delivery: Delivery) -> None:
        projects = sorted({e.project for e in delivery.events}) or ["-"]
        statuses = ",".join(e.status.value for e in delivery.events) or "-"
        if recorded.duplicate:
            outcome = "duplicate"
        elif recorded.stale and not recorded.events:
            outcome = "stale"
        else:
            outcome = "stored"
        log.info(
            "accepted %s from %s %s %s: %s (delivery %s%s)",
            self.name,
            client(request),
            printable(",".join(projects)),
            statuses,
            outcome,
            printable(delivery.key),
            f", source {delivery.source}" if delivery.source else "",
        )
        body = {
            "stored": len(recorded.events),
            "ids": [e.id for e in recorded.events],
            "duplicate": recorded.duplicate,
            "stale": recorded.stale,
        }
        self.metrics.events_stored.labels(provider=self.name).inc(len(recorded.events))
        finish(request, self._answer(request, 200, body, outcome))

    def _failed(self, failure: Failure, request: server.Request) -> None:
        if refused_value(failure.value):
            # clean() should have made this impossible: one line, and no endless retries.
            log.error(
                "rejected %s: 400, the database refused a value: %s",
                self.name,
                printable(_where(failure.value)),
            )
            body = {"error": "the event store refused a value of this delivery"}
            finish(request, self._answer(request, 400, body, "bad_request"))
            return
        log.error("store failed for %s: %s", self.name, failure.getErrorMessage(), exc_info=failure.value)
        # Not the sender's fault and nothing was committed: 503 asks the CI to retry.
        body = {"error": "the event store is unavailable; retry later"}
        finish(request, self._answer(request, 503, body, "unavailable"))


#: a rejection's label in the metrics, by its status code
_REJECTIONS = {401: "bad_signature", 413: "too_large", 415: "unsupported_media"}


def rejection(code: int) -> str:
    """The metrics' name for a rejection with status ``code``."""
    return _REJECTIONS.get(code, "bad_request")


def refused_value(error: BaseException) -> bool:
    """Whether the store failed on a value of the delivery (which a retry
    cannot fix) rather than because the database is unavailable: a PEP 249
    DataError, or the driver refusing a Python value. (An IntegrityError is
    not one: with clean values it only comes from a race with another hub
    node storing the same delivery, and the retry finds it stored.)"""
    if isinstance(error, (OverflowError, ValueError)):  # UnicodeEncodeError is a ValueError
        return True
    error = getattr(error, "orig", None) or error  # SQLAlchemy wraps the driver's exception
    return any(cls.__name__ == "DataError" for cls in type(error).__mro__)


def _where(error: BaseException) -> str:
    """``KeyError: 'x' at github.py:120``: the exception and its innermost frame."""
    frames = traceback.extract_tb(error.__traceback__)
    at = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
    return f"{type(error).__name__}: {error}{at}"


class HooksResource(resource.Resource):
    """``/hooks/``: one child per provider."""

    def __init__(
        self,
        providers: Mapping[str, Provider],
        configs: Mapping[str, ProviderConfig],
        record: Record,
        metrics: Metrics | None = None,
    ):
        super().__init__()
        self.hooks = {
            name.encode(): HookResource(name, parse, configs.get(name, ProviderConfig()), record, metrics)
            for name, parse in providers.items()
        }

    def getChild(self, path: bytes, request: server.Request) -> resource.Resource:
        if path == b"":
            return self
        hook = self.hooks.get(path)
        if hook is None:
            known = ", ".join(sorted(h.decode() for h in self.hooks))
            return JSONError(404, f"no such provider {path.decode('utf-8', 'replace')!r}; try one of {known}")
        return hook

    def render(self, request: server.Request) -> bytes:
        return json_answer(request, 200, {"providers": sorted(h.decode() for h in self.hooks)})


class JSONError(resource.Resource):
    """Any request under it gets ``code`` and ``{"error": message}``."""

    isLeaf = True

    def __init__(self, code: int, message: str) -> None:
        super().__init__()
        self.code, self.message = code, message

    def render(self, request: server.Request) -> bytes:
        return json_answer(request, self.code, {"error": self.message})


class LimitedRequest(server.Request):
    """A request whose body may not exceed ``site.max_body`` bytes: past it
    the client gets 413 and the connection is closed, nothing more is read."""

    _too_large = False
    _received = 0

    def gotLength(self, length: int | None) -> None:
        if length is not None and length > self.channel.site.max_body:
            self._reject(length)
            return
        super().gotLength(length)

    def handleContentChunk(self, data: bytes) -> None:
        if self._too_large:
            return
        self._received += len(data)
        if self._received > self.channel.site.max_body:
            self._reject(None)
            return
        super().handleContentChunk(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        if self._too_large:
            return
        super().requestReceived(command, path, version)

    def _reject(self, length: int | None) -> None:
        self._too_large = True
        self.content = BytesIO()
        limit = self.channel.site.max_body
        size = f"{length} bytes" if length is not None else "more bytes"
        log.info("rejected from %s: 413 body of %s over the %d-byte limit", client(self), size, limit)
        self._count_too_large()
        body = json.dumps({"error": f"request body over the {limit}-byte limit"}).encode() + b"\n"
        transport = self.channel.transport
        transport.write(
            b"HTTP/1.1 413 Payload Too Large\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body)
        )
        transport.loseConnection()

    def _count_too_large(self) -> None:
        """Counted against the provider its path names, if the site knows it
        (any other path is "other": labels stay few whatever is sent)."""
        site = self.channel.site
        metrics: Metrics | None = getattr(site, "metrics", None)
        if metrics is None:
            return
        path = getattr(self.channel, "_path", b"").split(b"?")[0].split(b"/")
        name = path[2].decode("latin-1") if len(path) > 2 and path[1] == b"hooks" else ""
        provider = name if name in getattr(site, "providers", ()) else "other"
        metrics.webhooks.labels(provider=provider, result="rejected", reason="too_large").inc()
