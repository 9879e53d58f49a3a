"""Wiring: config → store → webhook site (and, later, the PB service)."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IListeningPort
from twisted.internet.task import LoopingCall

from buildnotify.bus import Bus
from buildnotify.bus.local import LocalBus
from buildnotify.bus.postgres import PostgresBus
from buildnotify.config import HubConfig
from buildnotify.endpoints import proxied
from buildnotify.events import utcnow
from buildnotify.hub.service import PBService
from buildnotify.ingest.providers import PROVIDERS
from buildnotify.metrics import Metrics
from buildnotify.relays import RelayService
from buildnotify.site import make_site
from buildnotify.store import Store, database, retention

log = logging.getLogger("buildnotify")
PRUNE_EVERY = 3600.0  # seconds


class Hub:
    """A running hub. ``await Hub.start(config, reactor)``; ``await hub.stop()``."""

    def __init__(
        self,
        config: HubConfig,
        store: Store,
        bus: Bus,
        service: PBService,
        http_port: IListeningPort,
        pb_port: IListeningPort,
        metrics: Metrics,
        relays: RelayService | None = None,
    ) -> None:
        self.config = config
        self.metrics = metrics  # what GET /metrics shows; the relays count here too
        self.relays = relays
        self.store = store
        self.bus = bus
        self.service = service
        self.http_port = http_port
        self.pb_port = pb_port
        self._pruning = LoopingCall(self.prune)
        self._pruning.clock = store.reactor

    def prune(self) -> Deferred:
        """Forget what is older than the retention window (runs hourly)."""
        cutoff = utcnow() - timedelta(days=self.config.session.retention_days)
        d = self.store.write(lambda conn: retention.prune(conn, cutoff))
        d.addCallback(lambda counts: counts[0] and log.info("pruned %d events, %d deliveries", *counts))
        d.addErrback(lambda f: log.error("pruning failed: %s", f.getErrorMessage()))
        return d

    @classmethod
    async def start(cls, config: HubConfig, reactor: Any, clock: Any = None) -> Hub:
        """``clock`` runs the PB service's timeouts (tests pass a ``task.Clock``)."""
        for name, provider in config.providers.items():
            if not provider.authenticated:
                log.warning("%s: no secret configured; accepting unauthenticated webhooks", name)
        node = config.node
        store = Store.open(config.database, reactor, name=f"buildnotify {node}")
        metrics = Metrics()  # one registry per hub: tests run several in one process
        bus: Bus = (
            PostgresBus(store, node, metrics=metrics) if store.shared else LocalBus(store, node, metrics)
        )
        store.on_commit = bus.committed
        service = PBService(store, bus, config.session, reactor, clock, metrics)
        site = make_site(
            PROVIDERS, config.providers, store.record, config.max_body, store=store, metrics=metrics
        )
        relays = RelayService.from_tables(
            store, config.relays, config.escalation, node, reactor, clock, counted=metrics.count_relay
        )
        ports: list[IListeningPort] = []
        try:
            await bus.start()
            await service.start()
            relays.start()
            if relays.relays:
                bus.subscribe_events(relays.sender.wake)  # a commit may have enqueued messages
            guard = service.factory(proxied=proxied(config.pb))
            ports.append(await serverFromString(reactor, config.pb).listen(guard))
            ports.append(await serverFromString(reactor, config.http).listen(site))
        except Exception:
            await relays.stop()
            service.stop()
            bus.stop()
            for port in ports:
                await port.stopListening()
            await store.stop()
            raise
        hub = cls(
            config, store, bus, service, http_port=ports[1], pb_port=ports[0], metrics=metrics, relays=relays
        )
        log.info(
            "webhooks on %s/hooks/<provider>; database %s",
            hub.http_url,
            database.display_url(config.database),
        )
        log.info("PB service on %s", hub.pb_address)
        hub._pruning.start(PRUNE_EVERY, now=True)
        return hub

    @property
    def pb_address(self) -> str:
        """``tcp:HOST:PORT`` of the PB listener, for clients and tests."""
        host = self.pb_port.getHost()
        return f"tcp:{host.host}:{host.port}"

    @property
    def http_url(self) -> str:
        host = self.http_port.getHost()
        return f"http://{host.host}:{host.port}"

    async def stop(self) -> None:
        if self._pruning.running:
            self._pruning.stop()
        for port in (self.http_port, self.pb_port):
            await maybeDeferred(port.stopListening)  # None if it was stopped already
        if self.relays is not None:
            await self.relays.stop()  # lets a pass under way record its outcomes first
        self.service.stop()
        self.bus.stop()
        await self.store.stop()
