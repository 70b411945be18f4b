"""
Deprecated: PyDispatcher's ``robust`` module, ``sendRobust``.

New code calls ``signal.send_robust(sender, **named)``.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from relay.dispatcher._deprecation import deprecated
from relay.dispatcher._routes import Responses, routes
from relay.dispatcher._wildcards import Anonymous
from relay.dispatcher._wildcards import Any as AnyMarker

__all__ = ["sendRobust"]


def sendRobust(
    signal: Hashable = AnyMarker, sender: object = Anonymous, *arguments: Any, **named: Any
) -> Responses:
    """
    Deprecated: use ``signal.send_robust(sender, **named)``.

    Send signal from sender to all connected receivers catching errors.

    Arguments:

        signal
            The signal: a ``relay.Signal``, any other hashable object, or
            ``Any`` to reach only receivers connected for any signal.

        sender
            The sender of the signal. ``Any`` reaches only receivers
            connected for ``Any``; ``Anonymous`` (the default) those
            connected for ``Anonymous`` or ``Any``.

        arguments
            Positional arguments passed to every receiver (not on a
            ``relay.Signal``, whose sends take named arguments only).

        named
            Named arguments, each passed to the receivers that accept it.

    Returns a list of tuple pairs ``[(receiver, response), ...]``. If a
    receiver raises an error (any subclass of ``Exception``), the error
    instance is its response, and it is logged on the ``relay.dispatch``
    logger; the other receivers still run. On a ``relay.Signal`` this is
    ``signal.send_robust``, relayed to other processes when registered.
    """
    deprecated("robust.sendRobust", "Signal.send_robust(sender, **named)")
    return routes.send(signal, sender, arguments, named, robust=True)
