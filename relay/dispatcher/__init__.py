"""
The deprecated module-level API, with PyDispatcher 2.0.7's semantics, so old code keeps working.

Before (PyDispatcher style)::

    from relay import dispatcher

    def my_handler(sender):
        ...

    my_signal = object()
    dispatcher.connect(my_handler, my_signal)
    dispatcher.send(my_signal, sender)

After::

    def my_handler(sender, **kwargs):
        ...

    my_signal = relay.Signal()
    my_signal.connect(my_handler)
    my_signal.send(sender)

What the old API does:

- Receivers are called robustly: positional arguments go through, named
  arguments only when the receiver declares them (or takes ``**kwargs``);
  ``signal`` and ``sender`` are offered like any other named argument.
- Two axes, each with a wildcard: ``sender`` takes ``Any`` (``connect``'s
  default) and ``Anonymous`` (``send``'s default); ``signal`` takes ``Any``.
  ``send`` calls the receivers of (sender, signal), then (sender, Any), then
  (Any, signal), then (Any, Any), each receiver once; ``sendExact`` only the
  first. Connecting a receiver again moves it to the end of its list.
- Receivers are held through weak references unless ``weak=False``; a bound
  method dies with its object. Senders that can be weakly referenced are, and
  their receivers go when they do; others are held while connected.
- ``signal`` is a ``relay.Signal`` or any hashable object but ``None``
  (``errors.DispatcherTypeError``). Disconnecting what is not connected
  raises ``errors.DispatcherKeyError``.

A ``relay.Signal`` given as ``signal`` is that very Signal: old-API receivers
are connected to it (through an adapter), so its own sends reach them, also
sends relayed from other processes; and an old-API send on it is
``signal.send(sender, **named)``, which reaches the new API's receivers and is
relayed when the signal is registered with a bridge. On a Signal, ``None``,
``Anonymous`` and (for ``send``) ``Any`` all mean "no sender", the new API's
``send(None)``, and old-API receivers are given ``Anonymous`` for it. Senders
of sends from other processes arrive as the bridge gives them (the local
object whose name matched, else the name), and old-API receivers connected
for a sender fire when its name matches. Receivers connected for ``signal=Any``
hear every send made through ``relay.dispatcher``, on any signal; a Signal's
own sends (``signal.send``, relayed sends) do not reach them.

Every call warns with ``DeprecationWarning`` naming the new call, pointing at
the caller; run with ``python -W error::DeprecationWarning`` to find them.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Iterator
from typing import Any as _Any

from relay.dispatcher import errors, robust, robustapply
from relay.dispatcher._deprecation import deprecated
from relay.dispatcher._routes import Responses, live, routes
from relay.dispatcher._wildcards import Anonymous, Any
from relay.dispatcher.errors import DispatcherError, DispatcherKeyError, DispatcherTypeError

__all__ = [
    "Anonymous",
    "Any",
    "DispatcherError",
    "DispatcherKeyError",
    "DispatcherTypeError",
    "connect",
    "disconnect",
    "errors",
    "getAllReceivers",
    "getReceivers",
    "liveReceivers",
    "robust",
    "robustapply",
    "send",
    "sendExact",
]


def connect(
    receiver: Callable[..., _Any],
    signal: Hashable = Any,
    sender: object = Any,
    weak: bool = True,
) -> None:
    """
    Deprecated: use ``signal.connect(receiver, sender=sender, weak=weak)``.

    Connect receiver to sender for signal.

    Arguments:

        receiver
            A callable Python object which is to receive signals. It need not
            take ``**kwargs``: it is given the named arguments it declares.
            Connecting it again for the same sender and signal moves it to
            the end of the receivers, where it is called last.

        signal
            The signal to which the receiver should respond: a ``relay.Signal``
            (the receiver is then connected to it, and hears its sends from
            this and other processes), any other hashable object except
            ``None``, or ``Any`` (the default) for every signal sent through
            ``relay.dispatcher``.

        sender
            The sender to which the receiver should respond. ``Any`` (the
            default) means any sender; ``Anonymous``, only sends that name no
            sender. Anything else is one sender, told apart by identity.

        weak
            Whether to use weak references to the receiver. By default, a
            weak reference is kept, so a receiver that is garbage collected
            disappears (a bound method, when its object is). If False, the
            receiver is kept alive.

    Raises ``errors.DispatcherTypeError`` for a signal that is None or not
    hashable, ``TypeError`` for a receiver that is not callable or is an
    ``async def`` function (connect those with ``signal.connect``).
    """
    deprecated("connect", "Signal.connect(receiver, sender=..., weak=...)")
    routes.connect(receiver, signal, sender, weak)


def disconnect(
    receiver: Callable[..., _Any],
    signal: Hashable = Any,
    sender: object = Any,
    weak: bool = True,
) -> None:
    """
    Deprecated: use ``signal.disconnect(receiver, sender=sender)``.

    Disconnect receiver from sender for signal. Receivers held through weak
    references need not be disconnected: they go when they are garbage
    collected.

    Arguments:

        receiver
            The registered receiver to disconnect.

        signal
            The registered signal to disconnect.

        sender
            The registered sender to disconnect, as given to ``connect``.

        weak
            Accepted for compatibility; a receiver is disconnected however it
            is held.

    Raises ``errors.DispatcherKeyError`` if the receiver is not connected for
    that signal and sender, ``errors.DispatcherTypeError`` for a signal that
    is None or not hashable.
    """
    deprecated("disconnect", "Signal.disconnect(receiver, sender=...)")
    routes.disconnect(receiver, signal, sender)


def send(
    signal: Hashable = Any, sender: object = Anonymous, *arguments: _Any, **named: _Any
) -> Responses:
    """
    Deprecated: use ``signal.send(sender, **named)``.

    Send signal from sender to all connected receivers.

    Arguments:

        signal
            The signal: a ``relay.Signal`` (this is then its ``send``,
            relayed to other processes when it is registered), any other
            hashable object, or ``Any`` to reach only receivers connected for
            any signal.

        sender
            The sender of the signal. ``Any`` reaches only receivers
            connected for ``Any``; ``Anonymous`` (the default) those
            connected for ``Anonymous`` or ``Any``; any other object, those
            connected for it or for ``Any``.

        arguments
            Positional arguments passed to every receiver, before the named
            ones. A ``relay.Signal`` takes named arguments only (they cross
            processes by name): positional ones raise ``TypeError`` there.

        named
            Named arguments, each passed to the receivers that accept it.

    Returns a list of tuple pairs ``[(receiver, response), ...]``: the
    receivers of (sender, signal), (sender, Any), (Any, signal) and (Any, Any),
    in that order, each once. On a ``relay.Signal``, the Signal's own receivers
    come first, in the Signal's order (connection order), then those
    connected here for any signal.

    If any receiver raises an error, it propagates back through send,
    terminating the dispatch loop.
    """
    deprecated("send", "Signal.send(sender, **named)")
    return routes.send(signal, sender, arguments, named)


def sendExact(
    signal: Hashable = Any, sender: object = Anonymous, *arguments: _Any, **named: _Any
) -> Responses:
    """
    Deprecated: use ``signal.send(sender, **named)``.

    Send signal only to the receivers connected for exactly this sender and
    this signal, skipping those connected for ``Any`` sender or ``Any``
    signal. Arguments and return value as for ``send``.

    On a ``relay.Signal``, this calls the receivers connected for that pair
    through ``relay.dispatcher`` only, in this process: a Signal cannot skip
    its receivers for any sender, so the send does not go through it and is
    not relayed.
    """
    deprecated("sendExact", "Signal.send(sender, **named)")
    return routes.send(signal, sender, arguments, named, exact=True)


def getReceivers(sender: object = Any, signal: Hashable = Any) -> list[_Any]:
    """
    Deprecated: use ``signal.receivers`` or ``signal.has_listeners(sender)``.

    Return the receivers connected for exactly this (sender, signal) pair, in
    the order they are called, as stored: weak references (resolve them with
    ``liveReceivers``), or the receivers held strongly. The list is a copy.
    Note the order of the arguments: sender first.
    """
    deprecated("getReceivers", "Signal.receivers or Signal.has_listeners(sender)")
    return routes.references(sender, signal)


def getAllReceivers(sender: object = Any, signal: Hashable = Any) -> Iterator[_Any]:
    """
    Deprecated: use ``signal.has_listeners(sender)``.

    Return an iterator over the receivers ``send`` would reach for this
    (sender, signal) pair: those of (sender, signal), (sender, Any), (Any,
    signal) and (Any, Any), each once, as stored (see ``getReceivers``).
    Only receivers connected through ``relay.dispatcher`` are known here;
    ``signal.receivers`` lists those of a Signal connected with its own API.
    """
    deprecated("getAllReceivers", "Signal.has_listeners(sender)")
    return iter(routes.all_references(sender, signal))


def liveReceivers(receivers: Iterable[_Any]) -> Iterator[Callable[..., _Any]]:
    """
    Deprecated: a Signal resolves its weak references itself.

    Yield the receivers of ``receivers`` (as ``getReceivers`` returns them),
    resolving weak references and skipping those whose receiver is gone.
    """
    deprecated("liveReceivers", "Signal.receivers")
    return live(receivers)
