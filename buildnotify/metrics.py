"""Every metric the hub exports at ``GET /metrics``, defined in one place.

The server makes one :class:`Metrics` per hub and hands it to the parts that
count (ingest, the bus, the PB service, the relays), so that they count
without importing each other. Each hub has its own registry rather than
prometheus_client's global one: tests run several hubs in one process.

Labels stay few and fixed (providers, answer classes, session kinds,
eviction reasons, relay names), never a project or an address.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

#: the Content-Type of :meth:`Metrics.exposition`
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: webhook answers by class: label ``reason`` of ``buildnotify_webhooks_total``
ACCEPTED = ("stored", "duplicate", "stale", "ignored")
REJECTED = (
    "bad_request",
    "bad_signature",
    "too_large",
    "unsupported_media",
    "not_post",
    "unavailable",
)

#: label ``reason`` of ``buildnotify_evictions_total``
EVICTIONS = ("too_slow", "no_heartbeat", "replaced", "unresponsive")

# seconds: webhooks are answered after a commit (a few ms, an fsync, a busy writer)
_INGEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# seconds from an event's receipt to its dispatch on this node (other nodes: NOTIFY and a read)
_LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

SessionCounts = Callable[[], Mapping[str, int]]


class Metrics:
    """The collectors of one hub, in their own registry.

    Counting parts use the attributes directly, e.g.
    ``metrics.webhooks.labels(provider="github", result="rejected", reason="bad_signature").inc()``;
    the relays through ``count_relay(relay, outcome)``.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.webhooks = Counter(
            "buildnotify_webhooks",
            "Webhooks answered, by provider, result (accepted or rejected) and reason (the answer's class)",
            ["provider", "result", "reason"],
            registry=registry,
        )
        self.ingest_seconds = Histogram(
            "buildnotify_ingest_seconds",
            "Seconds from a webhook request received to its answer (a 2xx only after the commit)",
            ["provider"],
            buckets=_INGEST_BUCKETS,
            registry=registry,
        )
        self.events_stored = Counter(
            "buildnotify_events_stored",
            "Build events committed from webhooks this node answered, by provider",
            ["provider"],
            registry=registry,
        )
        self.deliveries = Counter(
            "buildnotify_deliveries",
            "Events pushed to PB observers: each event counts once per observer of its project",
            registry=registry,
        )
        self.evictions = Counter(
            "buildnotify_evictions",
            "PB sessions the hub dropped: too_slow (stopped reading), no_heartbeat, "
            "replaced (a newer login), unresponsive (did not answer a ping when a new login came)",
            ["reason"],
            registry=registry,
        )
        self.bus_lag = Histogram(
            "buildnotify_bus_lag_seconds",
            "Seconds from an event's receipt (any node) to its dispatch to this node's sessions",
            buckets=_LAG_BUCKETS,
            registry=registry,
        )
        self.relay_sends = Counter(
            "buildnotify_relay_sends",
            "Notifications a relay delivered, by relay",
            ["relay"],
            registry=registry,
        )
        self.relay_retries = Counter(
            "buildnotify_relay_retries",
            "Relay sends that failed and will be tried again, by relay",
            ["relay"],
            registry=registry,
        )
        self.relay_dead = Counter(
            "buildnotify_relay_dead",
            "Relay notifications given up on (dead-lettered), by relay",
            ["relay"],
            registry=registry,
        )
        self._sessions = _SessionsCollector()
        registry.register(self._sessions)

    def count_relay(self, relay: str, outcome: str) -> None:
        """One relay attempt's outcome, as the relay sender reports it:
        "sent", "retry" or "dead"."""
        counter = {"sent": self.relay_sends, "retry": self.relay_retries, "dead": self.relay_dead}[outcome]
        counter.labels(relay=relay).inc()

    def count_sessions(self, counts: SessionCounts) -> None:
        """``counts()`` (kind -> attached sessions) is read at each scrape,
        on the thread that serves ``/metrics`` (the reactor's)."""
        self._sessions.counts = counts

    def exposition(self) -> bytes:
        """Every metric in the Prometheus text format (:data:`CONTENT_TYPE`)."""
        return generate_latest(self.registry)


class _SessionsCollector(Collector):
    """``buildnotify_sessions{kind}``: a gauge computed at scrape time."""

    def __init__(self) -> None:
        self.counts: SessionCounts = dict

    def collect(self) -> Iterator[GaugeMetricFamily]:
        gauge = GaugeMetricFamily(
            "buildnotify_sessions", "PB sessions attached to this node, by kind", labels=["kind"]
        )
        for kind, count in sorted(self.counts().items()):
            gauge.add_metric([kind], count)
        yield gauge

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily("buildnotify_sessions", "", labels=["kind"])
