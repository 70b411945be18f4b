"""The transport seam: what the bridge needs from a broker, and nothing more."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Sequence


class TransportError(ConnectionError):
    """The broker could not be reached, or a connection to it broke."""


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
    def publish_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        """Publish several payloads in order, in one round trip where possible."""

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
