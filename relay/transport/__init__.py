"""
How the bridge reaches a broker: the capabilities it needs, and the backends.

The threaded bridge only ever talks to ``Transport`` and ``Subscription``
(plus ``DurableLog`` in durable mode, ``Claims`` for ``scope="once"`` and
``Presence`` for heartbeats), the
asyncio bridge to their ``Async`` twins; see ``relay.transport.base``.
``relay.transport.registry`` picks a backend by URL scheme or client:
``relay.transport.redis`` (one server), ``relay.transport.sentinel`` and
``relay.transport.cluster`` (Redis Cluster, sharded pub/sub).
"""

from relay.transport.base import (
    AsyncClaims,
    AsyncDurableLog,
    AsyncPresence,
    AsyncSubscription,
    AsyncTransport,
    Claims,
    DurableLog,
    Log,
    LogEntry,
    Outgoing,
    Presence,
    Resubscribed,
    Subscription,
    Transport,
    TransportError,
)

__all__ = [
    "AsyncClaims",
    "AsyncDurableLog",
    "AsyncPresence",
    "AsyncSubscription",
    "AsyncTransport",
    "Claims",
    "DurableLog",
    "Log",
    "LogEntry",
    "Outgoing",
    "Presence",
    "Resubscribed",
    "Subscription",
    "Transport",
    "TransportError",
]
