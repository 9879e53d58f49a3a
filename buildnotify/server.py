"""Wiring: config → store → webhook site (and, later, the PB service)."""

from __future__ import annotations

import logging
from typing import Any

from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort

from buildnotify.config import HubConfig
from buildnotify.ingest.http import make_site
from buildnotify.ingest.providers import PROVIDERS
from buildnotify.store import Store, database

log = logging.getLogger("buildnotify")


class Hub:
    """A running hub. ``await Hub.start(config, reactor)``; ``await hub.stop()``."""

    def __init__(self, config: HubConfig, store: Store, http_port: IListeningPort) -> None:
        self.config = config
        self.store = store
        self.http_port = http_port

    @classmethod
    async def start(cls, config: HubConfig, reactor: Any) -> Hub:
        for name, provider in config.providers.items():
            if not provider.authenticated:
                log.warning("%s: no secret configured; accepting unauthenticated webhooks", name)
        store = Store.open(config.database, reactor)
        site = make_site(PROVIDERS, config.providers, store.record, config.max_body)
        try:
            port = await serverFromString(reactor, config.http).listen(site)
        except Exception:
            await store.stop()
            raise
        hub = cls(config, store, port)
        log.info(
            "webhooks on %s/hooks/<provider>; database %s",
            hub.http_url,
            database.display_url(config.database),
        )
        return hub

    @property
    def http_url(self) -> str:
        host = self.http_port.getHost()
        return f"http://{host.host}:{host.port}"

    async def stop(self) -> None:
        await self.http_port.stopListening()
        await self.store.stop()
