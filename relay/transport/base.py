"""The transport seam: what the bridge needs from a broker, and nothing more."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Sequence
from typing import NamedTuple


class TransportError(ConnectionError):
    """The broker could not be reached, or a connection to it broke."""


class Outgoing(NamedTuple):
    """One payload to publish; ``ids`` lists its message ids for the durable log."""

    channel: str
    data: bytes
    ids: str = ""


class LogEntry(NamedTuple):
    """One entry of the durable log: its position, channel, payload and message ids."""

    position: str
    channel: str
    data: bytes
    ids: str


class Log(NamedTuple):
    """
    Where durable payloads are kept: a bounded log (a Redis Stream) at
    ``key``, trimmed to about ``max_entries`` entries and, if
    ``max_age_seconds`` is set, to that age.
    """

    key: str
    max_entries: int
    max_age_seconds: float | None = None


class Subscription(ABC):
    """
    One subscribed connection, used by a single listener thread.

    After a ``TransportError``, the listener calls ``reconnect()`` until it
    succeeds; the subscription then listens to every channel it was asked
    for, including those whose ``subscribe`` failed.
    """

    #: ``time.monotonic()`` when the broker last sent anything on this connection.
    last_activity: float

    @abstractmethod
    def subscribe(self, channels: Collection[str]) -> None:
        """Subscribe to ``channels``; return once the broker has confirmed."""

    @abstractmethod
    def psubscribe(self, patterns: Collection[str]) -> None:
        """Subscribe to every channel matching the glob ``patterns`` (for monitoring)."""

    @abstractmethod
    def unsubscribe(self, channels: Collection[str]) -> None:
        """Stop receiving ``channels``."""

    @abstractmethod
    def get(self, timeout: float) -> tuple[str, bytes] | None:
        """
        Wait up to ``timeout`` seconds for the next message.

        Returns ``(channel, data)``, or None if no message arrived in time (a
        control reply, such as a subscription confirmation, also returns None).
        Raises ``TransportError`` if the connection is lost.
        """

    @abstractmethod
    def ping(self) -> None:
        """Ask the broker for a sign of life; the answer arrives through ``get``."""

    @abstractmethod
    def reconnect(self) -> None:
        """Drop the connection, connect again and resubscribe. Raises TransportError."""

    @abstractmethod
    def close(self) -> None:
        """Unsubscribe and close the connection. Safe to call twice."""


class Transport(ABC):
    """A broker connection factory and publisher, safe to share between threads."""

    #: A short description for logs, without credentials.
    description: str

    @abstractmethod
    def publish(self, channel: str, data: bytes) -> int:
        """Publish one payload; return how many subscribers received it."""

    @abstractmethod
    def publish_many(self, items: Sequence[Outgoing], log: Log | None = None) -> None:
        """
        Publish several payloads in order, in one round trip where possible;
        with ``log``, append each to the log first.
        """

    @abstractmethod
    def read_log(self, log: Log, after: str | None, count: int) -> list[LogEntry]:
        """Up to ``count`` entries after position ``after`` (None: from the start), oldest first."""

    @abstractmethod
    def read_log_backwards(self, log: Log, before: str | None, count: int) -> list[LogEntry]:
        """Up to ``count`` entries before position ``before`` (None: the end), newest first."""

    @abstractmethod
    def get_value(self, key: str) -> str | None:
        """The string stored at ``key``, or None."""

    @abstractmethod
    def set_value(self, key: str, value: str) -> None:
        """Store ``value`` at ``key``."""

    @abstractmethod
    def claim(self, key: str, ttl_seconds: float) -> bool:
        """Atomically create ``key`` for ``ttl_seconds``; False if it exists already."""

    @abstractmethod
    def subscription(self) -> Subscription:
        """Open a new subscribed connection (initially subscribed to nothing)."""

    @abstractmethod
    def check(self) -> None:
        """Raise ``TransportError`` unless the broker answers."""

    @abstractmethod
    def after_fork(self) -> None:
        """Forget every connection inherited from a parent process."""

    @abstractmethod
    def close(self) -> None:
        """Close every connection this transport opened."""


class AsyncSubscription(ABC):
    """
    ``Subscription`` for asyncio: one subscribed connection, used by a single
    listener task. The methods mean the same; those that talk to the broker
    are coroutines.
    """

    #: ``time.monotonic()`` when the broker last sent anything on this connection.
    last_activity: float

    @abstractmethod
    async def subscribe(self, channels: Collection[str]) -> None:
        """Subscribe to ``channels``; return once the broker has confirmed."""

    @abstractmethod
    async def unsubscribe(self, channels: Collection[str]) -> None:
        """Stop receiving ``channels``."""

    @abstractmethod
    async def get(self, timeout: float) -> tuple[str, bytes] | None:
        """The next ``(channel, data)`` within ``timeout`` seconds, or None."""

    @abstractmethod
    async def ping(self) -> None:
        """Ask the broker for a sign of life; the answer arrives through ``get``."""

    @abstractmethod
    async def reconnect(self) -> None:
        """Drop the connection, connect again and resubscribe. Raises TransportError."""

    @abstractmethod
    async def close(self) -> None:
        """Unsubscribe and close the connection. Safe to call twice."""


class AsyncTransport(ABC):
    """``Transport`` for asyncio: the same operations, as coroutines, on one event loop."""

    #: A short description for logs, without credentials.
    description: str

    @abstractmethod
    async def publish_many(self, items: Sequence[Outgoing], log: Log | None = None) -> None:
        """See ``Transport.publish_many``."""

    @abstractmethod
    async def read_log(self, log: Log, after: str | None, count: int) -> list[LogEntry]:
        """See ``Transport.read_log``."""

    @abstractmethod
    async def read_log_backwards(self, log: Log, before: str | None, count: int) -> list[LogEntry]:
        """See ``Transport.read_log_backwards``."""

    @abstractmethod
    async def get_value(self, key: str) -> str | None:
        """See ``Transport.get_value``."""

    @abstractmethod
    async def set_value(self, key: str, value: str) -> None:
        """See ``Transport.set_value``."""

    @abstractmethod
    async def claim(self, key: str, ttl_seconds: float) -> bool:
        """See ``Transport.claim``."""

    @abstractmethod
    def subscription(self) -> AsyncSubscription:
        """Make a new subscription (initially subscribed to nothing)."""

    @abstractmethod
    async def check(self) -> None:
        """Raise ``TransportError`` unless the broker answers."""

    @abstractmethod
    def after_fork(self) -> None:
        """Forget every connection inherited from a parent process."""

    @abstractmethod
    async def close(self) -> None:
        """Close every connection this transport opened."""
