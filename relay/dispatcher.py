"""
The deprecated module-level API, kept so old code keeps working.

Before (PyDispatcher style)::

    from relay import dispatcher
    dispatcher.connect(handler, signal=order_placed, sender=dispatcher.Any)
    dispatcher.send(order_placed, sender, total=10)
    dispatcher.disconnect(handler, signal=order_placed)

After::

    order_placed.connect(handler)
    order_placed.send(sender, total=10)
    order_placed.disconnect(handler)

``signal`` may be a ``Signal`` or any hashable object (a string, an
``object()``), which gets a ``Signal`` of its own the first time it is used.
Every call warns with ``DeprecationWarning``.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable, Hashable
from typing import Final

from relay.signals import Signal

__all__ = ["Any", "connect", "disconnect", "send"]


class _AnySender:
    """The "any sender" marker of the old API; means the same as ``None``."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "relay.dispatcher.Any"

    def __reduce__(self) -> str:
        return "Any"


Any: Final = _AnySender()

_signals: dict[Hashable, Signal] = {}
_signals_lock = threading.Lock()


def _signal_for(signal: Signal | Hashable) -> Signal:
    if isinstance(signal, Signal):
        return signal
    try:
        hash(signal)
    except TypeError:
        raise TypeError(
            f"signal must be a Signal or a hashable object, not {type(signal).__name__}"
        ) from None
    with _signals_lock:
        found = _signals.get(signal)
        if found is None:
            found = _signals[signal] = Signal()
        return found


def _sender(sender: object) -> object:
    return None if sender is Any else sender


def _warn(old: str, new: str) -> None:
    warnings.warn(
        f"relay.dispatcher.{old}() is deprecated; use {new} instead.",
        DeprecationWarning,
        stacklevel=3,
    )


def connect(
    handler: Callable[..., object],
    signal: Signal | Hashable,
    sender: object = Any,
    weak: bool = True,
) -> None:
    """
    Deprecated: use ``signal.connect(handler, sender=sender, weak=weak)``.

    Arguments:

        handler
            The receiver to connect; it must accept ``**kwargs``.

        signal
            A ``Signal``, or any hashable object standing for one.

        sender
            The sender to respond to; ``Any`` (the default) means any sender.

        weak
            Whether to hold the handler through a weak reference.
    """
    _warn("connect", "Signal.connect(receiver, sender=..., weak=...)")
    _signal_for(signal).connect(handler, sender=_sender(sender), weak=weak)


def disconnect(
    handler: Callable[..., object], signal: Signal | Hashable, sender: object = Any
) -> bool:
    """
    Deprecated: use ``signal.disconnect(handler, sender=sender)``.

    Returns True if the handler was connected for that sender.
    """
    _warn("disconnect", "Signal.disconnect(receiver, sender=...)")
    return _signal_for(signal).disconnect(handler, sender=_sender(sender))


def send(
    signal: Signal | Hashable, sender: object = Any, **named: object
) -> list[tuple[Callable[..., object], object]]:
    """
    Deprecated: use ``signal.send(sender, **named)``.

    Returns a list of (receiver, response) pairs, as ``Signal.send`` does.
    """
    _warn("send", "Signal.send(sender, **named)")
    return _signal_for(signal).send(_sender(sender), **named)
