"""
The demo worker app: ``relay worker relay.demo.app``.

It connects receivers of every kind to ``demo.order_placed``:

- ``any_sender``: any sender;
- ``by_class``: sender ``Order`` (the class);
- ``by_name``: sender ``"relay.demo.app.Order"`` (its name);
- ``uid_first`` and ``uid_second``: two registrations sharing one
  ``dispatch_uid``, so only the first exists;
- ``local_only``: ``scope="local"``, so sends from other processes never
  fire it.

Each receiver counts what it got, the message ids it saw twice and the
latency from send to receipt. ``demo.ping`` answers with ``demo.pong``, and
``demo.done`` answers with a ``demo.report`` of the counts (carrying the
request's ``round``). With
``RELAY_DEMO_VERBOSE=1`` every delivery is logged.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Any

from relay import Signal, current_message

logger = logging.getLogger("relay.demo")

RECEIVERS = ("any_sender", "by_class", "by_name", "uid_first", "uid_second", "local_only")


class Order:
    """A sender class; other processes name it ``relay.demo.app.Order``."""


class Invoice:
    """Another sender class, which no receiver here filters on."""


order_placed = Signal(name="demo.order_placed")
ping = Signal(name="demo.ping")
pong = Signal(name="demo.pong")
done = Signal(name="demo.done")
report = Signal(name="demo.report")

WORKER = os.environ.get("RELAY_DEMO_WORKER") or f"{socket.gethostname()}:{os.getpid()}"
VERBOSE = os.environ.get("RELAY_DEMO_VERBOSE") == "1"

_lock = threading.Lock()
_counts = dict.fromkeys(RECEIVERS, 0)
_seen: dict[str, set[str]] = {name: set() for name in RECEIVERS}
_duplicates = 0
_latencies: list[float] = []
_first: float | None = None
_last: float | None = None


def _record(receiver: str, kwargs: dict[str, Any]) -> None:
    global _duplicates, _first, _last
    message = current_message()
    now = time.time()
    with _lock:
        _counts[receiver] += 1
        if message is not None:
            if message.id in _seen[receiver]:
                _duplicates += 1
            _seen[receiver].add(message.id)
            if receiver == "any_sender":
                _latencies.append(now - message.sent_at)
                _first = now if _first is None else _first
                _last = now
    if VERBOSE:
        origin = message.origin if message else "this process"
        logger.info(
            "worker %s: %s got order #%s (sender %s) from %s",
            WORKER,
            receiver,
            kwargs.get("number"),
            message.sender if message else None,
            origin,
        )


def any_sender(sender: Any, **kwargs: Any) -> None:
    _record("any_sender", kwargs)


def by_class(sender: Any, **kwargs: Any) -> None:
    _record("by_class", kwargs)


def by_name(sender: Any, **kwargs: Any) -> None:
    _record("by_name", kwargs)


def uid_first(sender: Any, **kwargs: Any) -> None:
    _record("uid_first", kwargs)


def uid_second(sender: Any, **kwargs: Any) -> None:
    _record("uid_second", kwargs)


def local_only(sender: Any, **kwargs: Any) -> None:
    _record("local_only", kwargs)


def on_ping(sender: Any, **kwargs: Any) -> None:
    pong.send(WORKER)


def percentile(values: list[float], fraction: float) -> float:
    """The ``fraction`` percentile of ``values`` (nearest rank), 0.0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def on_done(sender: Any, **kwargs: Any) -> None:
    with _lock:
        span = (_last - _first) if _first is not None and _last is not None else 0.0
        counts = dict(_counts)
        report.send(
            WORKER,
            counts=counts,
            round=kwargs.get("round"),
            duplicates=_duplicates,
            span=span,
            p50=percentile(_latencies, 0.50),
            p99=percentile(_latencies, 0.99),
        )


order_placed.connect(any_sender)
order_placed.connect(by_class, sender=Order)
order_placed.connect(by_name, sender="relay.demo.app.Order")
order_placed.connect(uid_first, dispatch_uid="demo-dedup")
order_placed.connect(uid_second, dispatch_uid="demo-dedup")
order_placed.connect(local_only, scope="local")
ping.connect(on_ping)
done.connect(on_done)

#: What ``relay worker relay.demo.app`` registers (every named Signal above).
SIGNALS = (order_placed, ping, pong, done, report)
