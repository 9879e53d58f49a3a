"""The hub's web site: ``/`` says what it is, ``/hooks/<provider>`` takes
webhooks (:mod:`buildnotify.ingest.http`), ``/cctray.xml`` is read from the
store (:mod:`buildnotify.feeds.cctray`). Assembling them is the server's job,
so that ingest knows nothing of the store or the feeds.
"""

from __future__ import annotations

from collections.abc import Mapping

from twisted.web import resource, server

from buildnotify.feeds.cctray import CCTrayResource
from buildnotify.ingest.base import Provider, ProviderConfig
from buildnotify.ingest.http import HooksResource, JSONError, LimitedRequest, Record, json_answer
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

    def __init__(self, root: resource.Resource, max_body: int) -> None:
        super().__init__(root)
        self.max_body = max_body

    def log(self, request: server.Request) -> None:
        """No access log: ingest logs one line per delivery itself."""


def make_site(
    providers: Mapping[str, Provider],
    configs: Mapping[str, ProviderConfig],
    record: Record,
    max_body: int,
    *,
    store: Store | None = None,
) -> HubSite:
    """``/hooks/<provider>``; with ``store``, also ``/cctray.xml`` (read from it)."""
    root = Root()
    root.putChild(b"hooks", HooksResource(providers, configs, record))
    if store is not None:
        root.putChild(b"cctray.xml", CCTrayResource(store))
    return HubSite(root, max_body)
