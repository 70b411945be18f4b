"""
How the bridge reaches a broker: the capabilities it needs, and the backends.

The threaded bridge only ever talks to ``Transport`` and ``Subscription``
(plus ``DurableLog`` in durable mode and ``Claims`` for ``scope="once"``), the
asyncio bridge to their ``Async`` twins; see ``relay.transport.base``.
``relay.transport.registry`` picks a backend by URL scheme or client:
``relay.transport.redis`` (one server), ``relay.transport.sentinel`` and
``relay.transport.cluster`` (Redis Cluster, sharded pub/sub).
"""

from relay.transport.base import (
    AsyncClaims,
    AsyncDurableLog,
    AsyncSubscription,
    AsyncTransport,
    Claims,
    DurableLog,
    Log,
    LogEntry,
    Outgoing,
    Resubscribed,
    Subscription,
    Transport,
    TransportError,
)

__all__ = [
    "AsyncClaims",
    "AsyncDurableLog",
    "AsyncSubscription",
    "AsyncTransport",
    "Claims",
    "DurableLog",
    "Log",
    "LogEntry",
    "Outgoing",
    "Resubscribed",
    "Subscription",
    "Transport",
    "TransportError",
]
