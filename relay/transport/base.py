"""
The transport seam: what the bridge needs from a broker, and nothing more.

A broker backend is one module of ``relay.transport`` (see
``relay.transport.registry``) with a threaded and an asyncio transport. Every
transport has the required capability, ``Transport`` (``AsyncTransport``):
publish many payloads, subscribe and unsubscribe, read with a timeout, check
its health, close, forget its connections after a fork, and say its largest
payload. The others are optional: ``DurableLog`` (``AsyncDurableLog``) keeps
a bounded log and cursors for ``durable=True``, ``Claims``
(``AsyncClaims``) makes leases for ``scope="once"``, and ``Presence``
(``AsyncPresence``) keeps the heartbeats of ``peers()``. A bridge checks for
what it needs when it is made, or when a ``scope="once"`` receiver connects.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Sequence
from typing import NamedTuple


class TransportError(ConnectionError):
    """The broker could not be reached, or a connection to it broke."""


class Resubscribed(TransportError):
    """
    The subscribed connection was lost and restored underneath the caller
    (the client library reconnected and subscribed again by itself, or the
    broker closed the connection and accepted it again): messages published
    in between were lost on this connection. The subscription is live again;
    no ``reconnect()`` is needed.
    """


class Outgoing(NamedTuple):
    """
    One payload to publish. For the durable log: ``ids`` lists its message
    ids (hex, comma-separated), ``origin`` is its sender and ``last`` the
    sequence number of its last message, so that a reader can tell it has the
    frame already without decoding it.
    """

    channel: str
    data: bytes
    ids: str = ""
    origin: str = ""
    last: int = 0
    #: The durable log of this payload, if not the one given to ``publish_many``
    #: (a sharded transport keeps one log per signal).
    log: Log | None = None


class LogEntry(NamedTuple):
    """
    One entry of the durable log: its position, channel, payload and message
    ids, and its origin and last sequence number ("" and 0 if not recorded).
    """

    position: str
    channel: str
    data: bytes
    ids: str
    origin: str = ""
    last: int = 0


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
    #: Optional: after a ``Resubscribed`` or a ``reconnect()``, the channels
    #: whose messages may have been lost (None: every channel). A subscription
    #: over several connections (one per Redis Cluster primary) sets it, so
    #: that the durable catch-up reads only the logs of those channels.
    restored_channels: set[str] | None = None

    @abstractmethod
    def subscribe(self, channels: Collection[str]) -> None:
        """Subscribe to ``channels``; return once the broker has confirmed."""

    def psubscribe(self, patterns: Collection[str]) -> None:
        """Subscribe to every channel matching the glob ``patterns`` (for monitoring)."""
        raise NotImplementedError(f"{type(self).__name__} cannot subscribe to channel patterns")

    @abstractmethod
    def unsubscribe(self, channels: Collection[str]) -> None:
        """Stop receiving ``channels``."""

    @abstractmethod
    def get(self, timeout: float) -> tuple[str, bytes] | None:
        """
        Wait up to ``timeout`` seconds for the next message.

        Returns ``(channel, data)``, or None if no message arrived in time (a
        control reply, such as a subscription confirmation, also returns None).
        Raises ``TransportError`` if the connection is lost, and
        ``Resubscribed`` if it was lost and restored without the caller: a
        subscription confirmation nobody asked for.
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
    """
    The required capability of a broker: publishing and subscribing. Safe to
    share between threads.
    """

    #: A short description for logs, without credentials.
    description: str
    #: The largest payload, in bytes, the broker accepts.
    max_payload: int
    #: True for a broker that spreads keys and channels over shards (Redis
    #: Cluster): the bridge then names each signal's channel and keys under
    #: one hash tag, ``{<signal name>}``, and keeps one durable log per signal.
    sharded: bool = False

    @abstractmethod
    def publish_many(self, items: Sequence[Outgoing], log: Log | None = None) -> None:
        """
        Publish several payloads in order, in one round trip where possible;
        with ``log`` (only if the transport is a ``DurableLog``), append each
        to the log first.
        """

    @abstractmethod
    def subscription(self) -> Subscription:
        """Open a new subscribed connection (initially subscribed to nothing)."""

    @abstractmethod
    def check(self) -> None:
        """Raise ``TransportError`` (naming the broker) unless the broker answers."""

    @abstractmethod
    def after_fork(self) -> None:
        """Forget every connection inherited from a parent process."""

    @abstractmethod
    def close(self) -> None:
        """Close every connection this transport opened."""


class DurableLog(ABC):
    """The optional capability ``durable=True`` needs: a bounded log, and cursors."""

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


class Claims(ABC):
    """The optional capability ``scope="once"`` needs: atomic claims with leases."""

    @abstractmethod
    def claim(self, key: str, ttl_seconds: float, leases: str | None = None) -> bool:
        """
        Atomically create ``key`` for ``ttl_seconds``; False if it exists
        already. With ``leases``, a claim won is also recorded there (a
        sorted set), due at the end of the claim.
        """

    @abstractmethod
    def renew(self, keys: Sequence[str], ttl_seconds: float, leases: str) -> None:
        """Extend the claims ``keys`` by ``ttl_seconds`` from now, and their due times."""

    @abstractmethod
    def finish(self, key: str, value: str, ttl_seconds: float, leases: str) -> None:
        """Set ``key`` to ``value`` for ``ttl_seconds`` and remove it from ``leases``."""

    @abstractmethod
    def get_values(self, keys: Sequence[str]) -> list[str | None]:
        """The strings stored at ``keys`` (None where there is none), in one round trip."""

    @abstractmethod
    def overdue(self, leases: str, before: float, count: int) -> list[str]:
        """Up to ``count`` keys of ``leases`` due before Unix time ``before``."""

    @abstractmethod
    def discard(self, leases: str, key: str) -> bool:
        """Remove ``key`` from ``leases``; True if this call removed it."""


class Presence(ABC):
    """
    The optional capability presence needs (``peers()``, heartbeats): one
    small record per process, kept under one key per namespace (a Redis hash).
    """

    @abstractmethod
    def announce(self, key: str, member: str, data: bytes, ttl_seconds: float) -> None:
        """Store ``data`` as ``member``'s record in ``key``, which lasts ``ttl_seconds`` more."""

    @abstractmethod
    def members(self, key: str) -> dict[str, bytes]:
        """Every record in ``key``, by member."""

    @abstractmethod
    def forget(self, key: str, members: Sequence[str]) -> None:
        """Remove the records of ``members`` from ``key``."""


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
    #: The largest payload, in bytes, the broker accepts.
    max_payload: int
    #: See ``Transport.sharded``.
    sharded: bool = False

    @abstractmethod
    async def publish_many(self, items: Sequence[Outgoing], log: Log | None = None) -> None:
        """See ``Transport.publish_many``."""

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


class AsyncDurableLog(ABC):
    """``DurableLog`` for asyncio."""

    @abstractmethod
    async def read_log(self, log: Log, after: str | None, count: int) -> list[LogEntry]:
        """See ``DurableLog.read_log``."""

    @abstractmethod
    async def read_log_backwards(self, log: Log, before: str | None, count: int) -> list[LogEntry]:
        """See ``DurableLog.read_log_backwards``."""

    @abstractmethod
    async def get_value(self, key: str) -> str | None:
        """See ``DurableLog.get_value``."""

    @abstractmethod
    async def set_value(self, key: str, value: str) -> None:
        """See ``DurableLog.set_value``."""


class AsyncClaims(ABC):
    """``Claims`` for asyncio."""

    @abstractmethod
    async def claim(self, key: str, ttl_seconds: float, leases: str | None = None) -> bool:
        """See ``Claims.claim``."""

    @abstractmethod
    async def renew(self, keys: Sequence[str], ttl_seconds: float, leases: str) -> None:
        """See ``Claims.renew``."""

    @abstractmethod
    async def finish(self, key: str, value: str, ttl_seconds: float, leases: str) -> None:
        """See ``Claims.finish``."""

    @abstractmethod
    async def get_values(self, keys: Sequence[str]) -> list[str | None]:
        """See ``Claims.get_values``."""

    @abstractmethod
    async def overdue(self, leases: str, before: float, count: int) -> list[str]:
        """See ``Claims.overdue``."""

    @abstractmethod
    async def discard(self, leases: str, key: str) -> bool:
        """See ``Claims.discard``."""


class AsyncPresence(ABC):
    """``Presence`` for asyncio."""

    @abstractmethod
    async def announce(self, key: str, member: str, data: bytes, ttl_seconds: float) -> None:
        """See ``Presence.announce``."""

    @abstractmethod
    async def members(self, key: str) -> dict[str, bytes]:
        """See ``Presence.members``."""

    @abstractmethod
    async def forget(self, key: str, members: Sequence[str]) -> None:
        """See ``Presence.forget``."""
