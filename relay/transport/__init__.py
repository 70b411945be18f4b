"""
How the bridge reaches a broker: a small interface and its Redis pub/sub implementation.

The threaded bridge only ever talks to ``Transport`` and ``Subscription``, the
asyncio bridge to ``AsyncTransport`` and ``AsyncSubscription``; see
``relay.transport.base``. ``relay.transport.redis`` and
``relay.transport.aioredis`` are the implementations, on redis-py and
``redis.asyncio``.
"""

from relay.transport.base import (
    AsyncSubscription,
    AsyncTransport,
    Log,
    LogEntry,
    Outgoing,
    Subscription,
    Transport,
    TransportError,
)

__all__ = [
    "AsyncSubscription",
    "AsyncTransport",
    "Log",
    "LogEntry",
    "Outgoing",
    "Subscription",
    "Transport",
    "TransportError",
]
