"""
Prometheus metrics of relay bridges (``pip install signal-relay[prometheus]``).

Register a bridge on a ``prometheus_client`` registry, then expose the
registry as any other (``prometheus_client.start_http_server``, a Django view
around ``generate_latest``, ``make_asgi_app``)::

    from prometheus_client import start_http_server
    from relay.contrib.prometheus import register

    register(bridge)
    start_http_server(9100)

or let ``relay worker --metrics-port 9100`` do both (``serve_metrics``).

Every ``stats()`` counter of the bridge is a counter labelled ``namespace``
(``published`` is ``relay_messages_published_total``, see ``STAT_METRICS``);
per signal, labelled ``namespace`` and ``signal``, come the messages sent,
received, the receiver calls and errors, and the histogram
``relay_delivery_latency_seconds`` over ``relay.presence.LATENCY_BUCKETS``.

The collector reads ``stats()`` and ``signal_stats()`` when it is scraped and
at no other time: sending and receiving cost nothing more with metrics on.
"""

from __future__ import annotations

import errno
import threading
import weakref
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Final

from relay.core import STAT_NAMES, Bridge
from relay.presence import LATENCY_BUCKETS, SignalStats
from relay.usage import UsageError


class MissingExtraError(ImportError, UsageError):
    """``prometheus_client`` is not installed (also a one-line error of the ``relay`` command)."""


try:
    from prometheus_client import REGISTRY, CollectorRegistry, start_http_server
    from prometheus_client.metrics_core import (
        CounterMetricFamily,
        HistogramMetricFamily,
        Metric,
    )
    from prometheus_client.registry import Collector
except ImportError as exc:  # pragma: no cover - exercised in a subprocess
    raise MissingExtraError(
        "relay.contrib.prometheus needs prometheus_client: pip install signal-relay[prometheus]",
        name=exc.name,
    ) from exc

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

__all__ = [
    "LATENCY_METRIC",
    "SIGNAL_METRICS",
    "STAT_METRICS",
    "MetricsServerError",
    "MissingExtraError",
    "RelayCollector",
    "register",
    "serve_metrics",
    "unregister",
]

#: The counter each ``stats()`` name is exported as (labelled ``namespace``),
#: and its help text.
STAT_METRICS: Final[dict[str, tuple[str, str]]] = {
    "published": ("relay_messages_published_total", "Messages handed to Redis."),
    "publish_errors": ("relay_publish_errors_total", "Failed publish attempts."),
    "dropped": (
        "relay_messages_dropped_total",
        "Messages never published (queue full, stopped while Redis was away).",
    ),
    "received": (
        "relay_messages_received_total",
        "Messages from other processes received live, duplicates included.",
    ),
    "fired": (
        "relay_receiver_calls_total",
        "Receiver calls for messages from other processes.",
    ),
    "duplicates": (
        "relay_messages_duplicate_total",
        "Messages received again and ignored.",
    ),
    "rejected": (
        "relay_messages_rejected_total",
        "Frames or messages rejected: undecodable, malformed, unsigned, badly signed, "
        "outside the replay window or older than the anti-replay window.",
    ),
    "receiver_errors": (
        "relay_receiver_errors_total",
        "Exceptions raised by receivers fired for messages from other processes.",
    ),
    "listener_errors": (
        "relay_listener_errors_total",
        "Unexpected errors the listener survived.",
    ),
    "disconnects": ("relay_disconnects_total", "Times the listener lost Redis."),
    "reconnects": ("relay_reconnects_total", "Times the listener got Redis back."),
    "gaps": (
        "relay_gaps_total",
        "Losses found in another process's sequence numbers.",
    ),
    "missed": ("relay_messages_missed_total", "Messages the gaps lost."),
    "replayed": (
        "relay_messages_replayed_total",
        "Messages fired from the durable log.",
    ),
    "once_skipped": (
        "relay_once_skipped_total",
        "scope='once' runs another process claimed first.",
    ),
    "once_retried": (
        "relay_once_retried_total",
        "scope='once' runs taken over here after their process died.",
    ),
    "once_lost": (
        "relay_once_lost_total",
        "scope='once' runs whose process died with nobody left to take them over.",
    ),
    "once_errors": (
        "relay_once_errors_total",
        "scope='once' claims that could not be made or marked done.",
    ),
}

#: The counter each ``SignalStats`` count is exported as (labelled
#: ``namespace`` and ``signal``), and its help text.
SIGNAL_METRICS: Final[dict[str, tuple[str, str]]] = {
    "sent": (
        "relay_signal_messages_sent_total",
        "Messages this process numbered on the signal (sent, queued or dropped).",
    ),
    "received": (
        "relay_signal_messages_received_total",
        "Messages of other processes received live on the signal (no duplicates, no replays).",
    ),
    "fired": (
        "relay_signal_receiver_calls_total",
        "Receiver calls for the signal's messages from other processes.",
    ),
    "errors": (
        "relay_signal_receiver_errors_total",
        "Receiver calls for the signal's messages from other processes that raised.",
    ),
}

#: The histogram of delivery latency (labelled ``namespace`` and ``signal``).
LATENCY_METRIC: Final = "relay_delivery_latency_seconds"
_LATENCY_HELP: Final = (
    "Delivery latency of messages from other processes: receipt time minus send time."
)
# The ``le`` labels, as prometheus_client writes them (Go's formatting: "0.0005", "1.0").
_BOUNDS: Final = tuple(repr(float(bound)) for bound in LATENCY_BUCKETS)


def _stat_metric(name: str) -> tuple[str, str]:
    """The metric of the ``stats()`` counter ``name``, also of one ``STAT_METRICS`` lacks."""
    return STAT_METRICS.get(name) or (f"relay_{name}_total", f"The {name!r} counter of stats().")


class RelayCollector(Collector):
    """
    A ``prometheus_client`` collector of the metrics of one or more bridges.

    Arguments:

        bridges
            The bridges (``relay.Relay`` or ``relay.AsyncRelay``) to export;
            more can be added with ``add()``. A bridge given twice is
            exported once.

    It reads each bridge's ``stats()`` and ``signal_stats()`` when the
    registry is collected (scraped), never in between. Bridges of different
    namespaces are told apart by the ``namespace`` label; the counts of
    bridges of one namespace in this process are added up, as they are one
    process's view of that namespace.

    Register it yourself (``registry.register(RelayCollector(bridge))``) or,
    to share one collector among the bridges of a process, with
    ``register()``. It describes its metric families even with no bridges,
    so a registry refuses a second collector of relay's metrics.
    """

    def __init__(self, *bridges: Bridge) -> None:
        self._lock = threading.Lock()
        self._bridges: list[Bridge] = []
        for bridge in bridges:
            self.add(bridge)

    @property
    def bridges(self) -> tuple[Bridge, ...]:
        """The bridges exported, in the order they were added."""
        with self._lock:
            return tuple(self._bridges)

    def add(self, bridge: Bridge) -> bool:
        """
        Export ``bridge`` too. Returns False (and does nothing) if it already is.

        Raises ``TypeError`` for anything that is not a bridge.
        """
        if not isinstance(bridge, Bridge):
            raise TypeError(
                f"expected a relay bridge (Relay or AsyncRelay), not {type(bridge).__name__}"
            )
        with self._lock:
            if any(known is bridge for known in self._bridges):
                return False
            self._bridges.append(bridge)
            return True

    def remove(self, bridge: Bridge) -> bool:
        """
        Stop exporting ``bridge``. Returns False if it was not exported.

        Its namespace's counters then drop by its counts, which Prometheus
        reads as a counter reset.
        """
        with self._lock:
            for index, known in enumerate(self._bridges):
                if known is bridge:
                    del self._bridges[index]
                    return True
            return False

    def describe(self) -> Iterable[Metric]:
        """The metric families this collector yields, without samples."""
        return self._families()

    def collect(self) -> Iterable[Metric]:
        """The metric families with the bridges' counts now."""
        stats: dict[str, dict[str, int]] = {}
        signals: dict[tuple[str, str], list[SignalStats]] = {}
        for bridge in self.bridges:
            namespace = bridge.namespace
            totals = stats.setdefault(namespace, dict.fromkeys(STAT_NAMES, 0))
            for name, count in bridge.stats().items():
                totals[name] = totals.get(name, 0) + count
            for name, counts in bridge.signal_stats().items():
                signals.setdefault((namespace, name), []).append(counts)
        return self._families(stats, signals)

    def _families(
        self,
        stats: dict[str, dict[str, int]] | None = None,
        signals: dict[tuple[str, str], list[SignalStats]] | None = None,
    ) -> Iterator[Metric]:
        stats = stats or {}
        signals = signals or {}
        names = dict.fromkeys(STAT_NAMES)
        for totals in stats.values():
            names.update(dict.fromkeys(totals))
        for name in names:
            metric, documentation = _stat_metric(name)
            counter = CounterMetricFamily(metric, documentation, labels=["namespace"])
            for namespace, totals in stats.items():
                counter.add_metric([namespace], totals.get(name, 0))
            yield counter
        for field, (metric, documentation) in SIGNAL_METRICS.items():
            counter = CounterMetricFamily(metric, documentation, labels=["namespace", "signal"])
            for (namespace, signal), found in signals.items():
                counter.add_metric([namespace, signal], sum(getattr(s, field) for s in found))
            yield counter
        histogram = HistogramMetricFamily(
            LATENCY_METRIC, _LATENCY_HELP, labels=["namespace", "signal"], unit="seconds"
        )
        for (namespace, signal), found in signals.items():
            counts = [sum(column) for column in zip(*(s.latency for s in found), strict=True)]
            buckets: list[tuple[str, float]] = []
            cumulative = 0
            for bound, count in zip(_BOUNDS, counts, strict=False):
                cumulative += count
                buckets.append((bound, cumulative))
            buckets.append(("+Inf", sum(counts)))
            histogram.add_metric([namespace, signal], buckets, sum(s.latency_sum for s in found))
        yield histogram


_registered: weakref.WeakKeyDictionary[CollectorRegistry, RelayCollector] = (
    weakref.WeakKeyDictionary()
)
_registered_lock = threading.Lock()


def register(bridge: Bridge, registry: CollectorRegistry = REGISTRY) -> RelayCollector:
    """
    Export ``bridge``'s metrics from ``registry``; return the collector.

    Arguments:

        bridge
            A ``relay.Relay`` or ``relay.AsyncRelay``, started or not.

        registry
            The ``prometheus_client`` registry to export from: the default
            one (``prometheus_client.REGISTRY``, what ``start_http_server``,
            ``generate_latest`` and ``make_asgi_app`` serve unless told
            otherwise) if not given.

    Every bridge registered on one registry shares one ``RelayCollector``
    (bridges of several namespaces are told apart by the ``namespace``
    label). Registering a bridge again is a no-op that returns the same
    collector. Raises ``prometheus_client``'s ``ValueError`` if another
    collector of relay's metric names, not made here, is on ``registry``.
    """
    with _registered_lock:
        collector = _registered.get(registry)
        if collector is None:
            collector = RelayCollector(bridge)
            registry.register(collector)
            _registered[registry] = collector
        else:
            collector.add(bridge)
        return collector


def unregister(bridge: Bridge, registry: CollectorRegistry = REGISTRY) -> bool:
    """
    Stop exporting ``bridge``'s metrics from ``registry`` (where ``register()``
    put them). Returns False if they were not. The shared collector stays
    registered, exporting the other bridges.
    """
    with _registered_lock:
        collector = _registered.get(registry)
        return collector is not None and collector.remove(bridge)


class MetricsServerError(OSError, UsageError):
    """The metrics server could not listen (also a one-line error of the ``relay`` command)."""


def serve_metrics(
    bridge: Bridge,
    port: int,
    host: str = "127.0.0.1",
    registry: CollectorRegistry = REGISTRY,
) -> tuple[WSGIServer, threading.Thread]:
    """
    Register ``bridge`` on ``registry`` and serve the registry over HTTP, in
    the Prometheus text format, from a daemon thread; return at once.

    Arguments:

        bridge
            The bridge whose metrics to serve (see ``register()``).

        port
            The TCP port to listen on; 0 picks a free one (read it from the
            returned server's ``server_address``).

        host
            The address to listen on: loopback unless given (``"0.0.0.0"``
            for every IPv4 interface).

        registry
            The registry to serve: the default one, which also holds
            ``prometheus_client``'s process and platform metrics and any
            metric the application defined, unless given.

    Returns ``prometheus_client.start_http_server``'s ``(server, thread)``;
    ``server.shutdown()`` then ``server.server_close()`` stop it. Raises
    ``MetricsServerError`` (an ``OSError``) naming the port when it cannot
    listen there, for one because the port is in use.
    """
    added = not any(known is bridge for known in _exported(registry))
    collector = register(bridge, registry)
    try:
        server, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        if added:
            collector.remove(bridge)
        if exc.errno == errno.EADDRINUSE:
            reason = f"port {port} is already in use on {host}; choose another port"
        else:
            reason = f"cannot listen on {host} port {port}: {exc.strerror or exc}"
        error = MetricsServerError(f"cannot serve Prometheus metrics: {reason}")
        error.errno = exc.errno
        raise error from exc
    return server, thread


def _exported(registry: CollectorRegistry) -> tuple[Bridge, ...]:
    with _registered_lock:
        collector = _registered.get(registry)
    return collector.bridges if collector is not None else ()
