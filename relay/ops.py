"""
The operations the bridge core asks its drivers to perform.

``relay.core`` writes everything that needs the broker, a clock or a receiver
as generators that yield these operations and get each result sent back (or
its exception thrown in): ``relay.bridge.Relay`` performs them with threads,
``relay.aio.AsyncRelay`` with asyncio. The core itself does no I/O.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar

if TYPE_CHECKING:
    from relay.signals import Signal
    from relay.wire import Message

__all__ = [
    "Call",
    "Handle",
    "Op",
    "PublisherWait",
    "Reconnect",
    "RunOnce",
    "Send",
    "Steps",
    "Stopping",
    "Wait",
]

T = TypeVar("T")

#: The transport methods the core calls (see ``relay.transport.base``).
TransportMethod = Literal[
    "publish_many",
    "read_log",
    "read_log_backwards",
    "get_value",
    "set_value",
    "claim",
    "renew",
    "finish",
    "get_values",
    "overdue",
    "discard",
    "announce",
    "members",
    "forget",
]


@dataclass(frozen=True, slots=True)
class Call:
    """Call ``method`` of the bridge's transport with ``args``; the result is sent back."""

    method: TransportMethod
    args: tuple[Any, ...] = ()


@dataclass(frozen=True, slots=True)
class Handle:
    """Handle a frame read from the durable log; sends back how many messages fired."""

    channel: str
    data: bytes


@dataclass(frozen=True, slots=True)
class Wait:
    """Wait up to ``seconds`` for the bridge to stop; sends back True if it is stopping."""

    seconds: float


@dataclass(frozen=True, slots=True)
class PublisherWait:
    """``Wait``, for the publisher: True once the publisher is being stopped."""

    seconds: float


@dataclass(frozen=True, slots=True)
class Stopping:
    """Sends back True if the bridge is being stopped."""


@dataclass(frozen=True, slots=True)
class Reconnect:
    """Replace the subscription's connection and subscribe again (may raise TransportError)."""

    subscription: Any


@dataclass(frozen=True, slots=True)
class Send:
    """Send a built-in signal locally and robustly, with the bridge as sender."""

    signal: Signal
    kwargs: dict[str, Any]


@dataclass(frozen=True, slots=True)
class RunOnce:
    """Run a ``scope="once"`` receiver whose claim this process took over, then finish it."""

    signal: Signal
    message: Message
    call: tuple[Any, bool, object, str, bool]
    claim: str


Op = Call | Handle | Wait | PublisherWait | Stopping | Reconnect | Send | RunOnce
#: A generator of operations that returns a ``T``.
Steps = Generator[Op, Any, T]
