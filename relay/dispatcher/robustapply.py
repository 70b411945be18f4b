"""
Deprecated: PyDispatcher's ``robustapply`` module.

``robustApply(receiver, *arguments, **named)`` calls a receiver with the
positional arguments and only the named arguments it declares. New code gives
receivers ``**kwargs`` and lets ``Signal.send`` call them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from relay.dispatcher._apply import robust_apply
from relay.dispatcher._deprecation import deprecated

__all__ = ["robustApply"]


def robustApply(receiver: Callable[..., Any], /, *arguments: Any, **named: Any) -> Any:
    """
    Deprecated: give receivers ``**kwargs`` and call them with every argument.

    Call ``receiver`` with ``arguments`` and the subset of ``named`` it accepts.

    Arguments:

        receiver
            A callable. Its parameters decide which named arguments it gets:
            those it declares by name (keyword-only ones included), or all of
            them if it takes ``**kwargs``.

        arguments
            Positional arguments, passed through as they are.

        named
            Named arguments, filtered to what ``receiver`` accepts.

    Returns what ``receiver`` returns. Raises ``TypeError`` when an argument
    is given both positionally and by name.
    """
    deprecated("robustapply.robustApply", "receivers that take **kwargs, called by Signal.send")
    return robust_apply(receiver, *arguments, **named)
