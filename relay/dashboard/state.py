"""
What the dashboard page shows, computed from successive ``peers()`` snapshots.

This module is pure: ``Tracker.update`` takes the peers of a namespace as
``Bridge.peers(include_gone=True)`` returns them, ``Tracker.state`` returns the
page's state as JSON-friendly values. Nothing here talks to Redis or serves
HTTP (``relay.dashboard.server`` does).

Counts travel in heartbeats, so they move in steps of one heartbeat. The
tracker remembers each peer's counts as of its previous heartbeat and spreads
what a new heartbeat adds evenly over the seconds between the two (by the
peer's clock, ``Peer.last_seen``). That gives, per signal, a history of send
and delivery rates at one-second resolution over the last ``history`` seconds;
it ends at the last second every live peer has reported, so that its last
points are never too low for a heartbeat that has not arrived yet. The rates
shown are the mean of the last ``rate_window`` seconds of that history.

Delivery latency (receipt time minus ``sent_at``) comes from the peers'
histograms over ``relay.presence.LATENCY_BUCKETS``: p50 and p99 of what was
delivered in the last ``latency_window`` seconds, and since the peers started.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from relay.presence import LATENCY_BUCKETS, WORKER_COUNTERS, Peer, latency_quantile

__all__ = ["WORKER_COUNTERS", "Tracker", "merge_histograms"]

_BUCKETS: Final = len(LATENCY_BUCKETS) + 1


@dataclass(slots=True)
class _Mark:
    """What the tracker last saw of one peer."""

    last_seen: float
    sent: dict[str, int] = field(default_factory=dict)
    received: dict[str, int] = field(default_factory=dict)
    latency: dict[str, tuple[int, ...]] = field(default_factory=dict)
    stats_received: int = 0
    # The peer's own receive rate between its last two heartbeats seen.
    receive_rate: float = 0.0


def _mark(peer: Peer, *, empty: bool) -> _Mark:
    """``peer``'s counts now, or (``empty``) a peer that has counted nothing yet."""
    if empty:
        return _Mark(last_seen=peer.started_at)
    return _Mark(
        last_seen=peer.last_seen,
        sent={name: s.sent for name, s in peer.signals.items()},
        received={name: s.received for name, s in peer.signals.items()},
        latency={name: tuple(s.latency) for name, s in peer.signals.items()},
        stats_received=peer.stats.get("received", 0),
    )


class _Series:
    """Per-second counts (floats: a step is spread over seconds), by absolute second."""

    __slots__ = ("seconds",)

    def __init__(self) -> None:
        self.seconds: dict[int, float] = {}

    def spread(self, start: float, end: float, amount: float, floor: int) -> None:
        """Add ``amount`` spread evenly over ``(start, end]``, keeping seconds >= ``floor``."""
        if amount <= 0:
            return
        if end <= start:
            second = math.floor(end)
            if second >= floor:
                self.seconds[second] = self.seconds.get(second, 0.0) + amount
            return
        span = end - start
        first = max(math.floor(start), floor)
        if first > math.floor(end):
            return
        for second in range(first, math.floor(end) + 1):
            overlap = min(end, second + 1) - max(start, second)
            if overlap > 0:
                self.seconds[second] = self.seconds.get(second, 0.0) + amount * overlap / span

    def prune(self, floor: int) -> None:
        for second in [s for s in self.seconds if s < floor]:
            del self.seconds[second]

    def window(self, first: int, last: int) -> list[float]:
        """The counts of the seconds ``first`` to ``last``, both included."""
        get = self.seconds.get
        return [round(get(second, 0.0), 3) for second in range(first, last + 1)]


class Tracker:
    """
    The dashboard's memory of a namespace.

    Arguments:

        started_at
            ``time.time()`` when the dashboard started: peers that started
            earlier count from what they had when first seen, later ones
            from zero.

        history
            Seconds of per-signal rate history kept for the plots (300).

        rate_window
            Seconds of history the current rates average over (10).

        latency_window
            Seconds of deliveries the recent latency quantiles cover (60).
    """

    def __init__(
        self,
        started_at: float,
        *,
        history: int = 300,
        rate_window: int = 10,
        latency_window: float = 60.0,
    ) -> None:
        if history < 1 or rate_window < 1 or latency_window <= 0:
            raise ValueError("history, rate_window and latency_window must be positive")
        self.started_at = started_at
        self.history = history
        self.rate_window = rate_window
        self.latency_window = latency_window
        self._marks: dict[str, _Mark] = {}
        self._sent: dict[str, _Series] = {}
        self._received: dict[str, _Series] = {}
        # (peer's time of the heartbeat, signal, latency histogram delta)
        self._latency: deque[tuple[float, str, tuple[int, ...]]] = deque()
        self._peers: list[Peer] = []
        self._polled_at: float | None = None
        self._error: str | None = None
        self._error_since: float | None = None

    # -- input -------------------------------------------------------------------

    def update(self, peers: Sequence[Peer], now: float) -> None:
        """Take a new snapshot of the namespace, as ``peers(include_gone=True)`` gives it."""
        floor = math.floor(now) - self.history - 1
        for peer in peers:
            previous = self._marks.get(peer.id)
            if previous is None:
                # A peer started since the dashboard did counts from zero; one
                # that was already running, from what it has when first seen.
                previous = _mark(peer, empty=peer.started_at >= self.started_at)
            if peer.last_seen < previous.last_seen:
                continue  # an older record than the one already seen
            current = _mark(peer, empty=False)
            start, end = previous.last_seen, peer.last_seen
            for name in peer.signals:
                sent = current.sent[name] - previous.sent.get(name, 0)
                self._series(self._sent, name).spread(start, end, sent, floor)
                received = current.received[name] - previous.received.get(name, 0)
                self._series(self._received, name).spread(start, end, received, floor)
                before = previous.latency.get(name, (0,) * _BUCKETS)
                delta = tuple(
                    max(0, a - b) for a, b in zip(current.latency[name], before, strict=False)
                )
                if any(delta):
                    self._latency.append((end, name, delta))
            if end > start:
                gained = max(0, current.stats_received - previous.stats_received)
                current.receive_rate = gained / (end - start)
            else:
                current.receive_rate = previous.receive_rate
            self._marks[peer.id] = current
        seen = {peer.id for peer in peers}
        for gone in [key for key in self._marks if key not in seen]:
            del self._marks[gone]
        for series in (*self._sent.values(), *self._received.values()):
            series.prune(floor)
        while self._latency and self._latency[0][0] < now - self.latency_window:
            self._latency.popleft()
        self._peers = list(peers)
        self._polled_at = now
        self._error = None
        self._error_since = None

    def failed(self, error: str, now: float) -> None:
        """Record that the broker could not be read at ``now``; the last snapshot stays."""
        if self._error_since is None:
            self._error_since = now
        self._error = error

    def _series(self, table: dict[str, _Series], name: str) -> _Series:
        series = table.get(name)
        if series is None:
            series = table[name] = _Series()
        return series

    # -- output ------------------------------------------------------------------

    def state(self, now: float, namespace: str) -> dict[str, Any]:
        """The page's state at ``now``: JSON-friendly values only."""
        peers = self._peers
        alive = [peer for peer in peers if peer.alive]
        # The history ends with the last second that every live peer has
        # reported on (its heartbeats are up to one interval behind).
        horizon = min((peer.last_seen for peer in alive), default=now)
        horizon = min(horizon, now)
        last = math.floor(horizon) - 1
        first = max(last - self.history + 1, math.floor(self.started_at) - 1)
        first = min(first, last)
        names = sorted(
            {name for peer in peers for name in (*peer.signals, *peer.sends, *peer.hears)}
        )
        deltas: dict[str, list[tuple[int, ...]]] = {}
        for _, name, delta in self._latency:
            deltas.setdefault(name, []).append(delta)
        recent = {name: merge_histograms(found) for name, found in deltas.items()}
        signals = []
        for name in names:
            stats = [peer.signals[name] for peer in peers if name in peer.signals]
            overall = merge_histograms(item.latency for item in stats)
            sent_history = self._series(self._sent, name).window(first, last)
            received_history = self._series(self._received, name).window(first, last)
            window = min(self.rate_window, len(sent_history))
            signals.append(
                {
                    "name": name,
                    "sent": sum(item.sent for item in stats),
                    "received": sum(item.received for item in stats),
                    "fired": sum(item.fired for item in stats),
                    "errors": sum(item.errors for item in stats),
                    "senders": sum(1 for peer in alive if name in peer.sends),
                    "listeners": sum(1 for peer in alive if name in peer.hears),
                    "send_rate": _mean(sent_history[-window:]) if window else 0.0,
                    "delivery_rate": _mean(received_history[-window:]) if window else 0.0,
                    "latency": {
                        "p50": latency_quantile(recent.get(name, ()), 0.5),
                        "p99": latency_quantile(recent.get(name, ()), 0.99),
                        "p50_all": latency_quantile(overall, 0.5),
                        "p99_all": latency_quantile(overall, 0.99),
                        "window": self.latency_window,
                    },
                    "history": {"sent": sent_history, "received": received_history},
                }
            )
        workers = [self._worker(peer, now) for peer in peers]
        return {
            "namespace": namespace,
            "now": now,
            "polled_at": self._polled_at,
            "broker": {
                "ok": self._error is None,
                "error": self._error,
                "since": self._error_since,
            },
            "history": {"start": first, "step": 1, "seconds": self.history},
            "rate_window": self.rate_window,
            "summary": {
                "alive": len(alive),
                "gone": sum(1 for peer in peers if peer.state == "gone"),
                "stopped": sum(1 for peer in peers if peer.state == "stopped"),
                "signals": len(names),
            },
            "signals": signals,
            "workers": workers,
        }

    def _worker(self, peer: Peer, now: float) -> dict[str, Any]:
        mark = self._marks.get(peer.id)
        return {
            "id": peer.id,
            "worker_id": peer.worker_id,
            "host": peer.host,
            "pid": peer.pid,
            "kind": peer.kind,
            "version": peer.version,
            "state": peer.state,
            "started_at": peer.started_at,
            "last_seen": peer.last_seen,
            "last_seen_ago": max(0.0, now - peer.last_seen),
            "uptime": max(0.0, peer.last_seen - peer.started_at),
            "heartbeat": peer.heartbeat,
            "sends": list(peer.sends),
            "hears": list(peer.hears),
            "receive_rate": mark.receive_rate if mark is not None and peer.alive else 0.0,
            "counters": {name: peer.stats.get(name, 0) for name in WORKER_COUNTERS},
        }


def _mean(values: Iterable[float]) -> float:
    items = list(values)
    return round(sum(items) / len(items), 3) if items else 0.0


def merge_histograms(histograms: Iterable[Sequence[int]]) -> list[int]:
    """The bucket-by-bucket sum of latency histograms."""
    total = [0] * _BUCKETS
    for counts in histograms:
        for index, count in enumerate(counts):
            total[index] += count
    return total
