"""relay: Django-compatible signals that also fire in every other process."""

from relay._version import __version__ as __version__
from relay.aio import AsyncRelay
from relay.bridge import Relay, current_message, disconnected, gap, reconnected
from relay.signals import Signal, receiver
from relay.transport.base import TransportError
from relay.wire import Message, WireError, register_type

__all__ = [
    "AsyncRelay",
    "Message",
    "Relay",
    "Signal",
    "TransportError",
    "WireError",
    "current_message",
    "disconnected",
    "gap",
    "receiver",
    "reconnected",
    "register_type",
]
