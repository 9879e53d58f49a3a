"""The hub's web site: ``/`` says what it is, ``/hooks/<provider>`` takes
webhooks (:mod:`buildnotify.ingest.http`), ``/cctray.xml`` is read from the
store (:mod:`buildnotify.feeds.cctray`), ``/healthz``, ``/readyz`` and
``/metrics`` are for operators (:mod:`buildnotify.operations`). Assembling them is the server's job,
so that ingest knows nothing of the store or the feeds.
"""

from __future__ import annotations

from collections.abc import Mapping

from twisted.web import resource, server

from buildnotify.feeds.cctray import CCTrayResource
from buildnotify.ingest.base import Provider, ProviderConfig
from buildnotify.ingest.http import HooksResource, JSONError, LimitedRequest, Record, json_answer
from buildnotify.metrics import Metrics
from buildnotify.operations import Healthz, MetricsPage, Readyz, store_readiness
from buildnotify.store import Store


class Root(resource.Resource):
    """``GET /`` says what this is (and that it is up); the rest is 404."""

    def getChild(self, path: bytes, request: server.Request) -> resource.Resource:
        if path == b"":
            return self
        return JSONError(404, "not found; webhooks go to /hooks/<provider>")

    def render(self, request: server.Request) -> bytes:
        return json_answer(request, 200, {"service": "buildnotify", "hooks": "/hooks/"})


class HubSite(server.Site):
    requestFactory = LimitedRequest

    def __init__(
        self,
        root: resource.Resource,
        max_body: int,
        metrics: Metrics | None = None,
        providers: frozenset[str] = frozenset(),
    ) -> None:
        super().__init__(root)
        self.max_body = max_body
        self.metrics = metrics  # LimitedRequest counts bodies over max_body here
        self.providers = providers

    def log(self, request: server.Request) -> None:
        """No access log: ingest logs one line per delivery itself."""


def make_site(
    providers: Mapping[str, Provider],
    configs: Mapping[str, ProviderConfig],
    record: Record,
    max_body: int,
    *,
    store: Store | None = None,
    metrics: Metrics | None = None,
) -> HubSite:
    """``/hooks/<provider>``, ``/healthz`` and ``/metrics``; with ``store``,
    also ``/cctray.xml`` and ``/readyz`` (read from it)."""
    metrics = metrics or Metrics()
    root = Root()
    root.putChild(b"hooks", HooksResource(providers, configs, record, metrics))
    root.putChild(b"healthz", Healthz())
    root.putChild(b"metrics", MetricsPage(metrics))
    if store is not None:
        root.putChild(b"cctray.xml", CCTrayResource(store))
        root.putChild(b"readyz", Readyz(store_readiness(store), store.reactor))
    return HubSite(root, max_body, metrics, frozenset(providers))
