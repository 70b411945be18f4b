"""
How the bridge reaches a broker: a small interface and its Redis pub/sub implementation.

The bridge only ever talks to ``Transport`` and ``Subscription``; see
``relay.transport.base``. ``relay.transport.redis`` is the implementation.
"""

from relay.transport.base import (
    Log,
    LogEntry,
    Outgoing,
    Subscription,
    Transport,
    TransportError,
)

__all__ = ["Log", "LogEntry", "Outgoing", "Subscription", "Transport", "TransportError"]
