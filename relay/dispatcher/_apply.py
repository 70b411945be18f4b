"""
Calling a receiver with the arguments it accepts, as PyDispatcher's robustApply does.

Positional arguments always go through. Named arguments go through when the
receiver declares a parameter of that name (positional-or-keyword, not taken by
a positional argument, or keyword-only), or all of them when it takes
``**kwargs``. Naming one parameter both positionally and by keyword is a
``TypeError``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from types import CodeType, FunctionType, MethodType
from typing import Any, NamedTuple

__all__ = ["robust_apply"]

_POSITIONAL: Any = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


class _Accepts(NamedTuple):
    """What a receiver accepts once ``given`` positional arguments are bound."""

    # Names taken by the positional arguments that a keyword could also fill.
    taken: frozenset[str]
    # The keywords it accepts; None when it takes **kwargs (or cannot be inspected).
    names: frozenset[str] | None


def _accepts(signature: inspect.Signature | None, given: int) -> _Accepts:
    if signature is None:
        return _Accepts(frozenset(), None)
    parameters = list(signature.parameters.values())
    positional = [p for p in parameters if p.kind in _POSITIONAL]
    keyword = inspect.Parameter.POSITIONAL_OR_KEYWORD
    taken = frozenset(p.name for p in positional[:given] if p.kind is keyword)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return _Accepts(taken, None)
    names = {p.name for p in positional[given:] if p.kind is keyword}
    names.update(p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY)
    return _Accepts(taken, frozenset(names))


def _signature(receiver: Callable[..., Any]) -> inspect.Signature | None:
    try:
        return inspect.signature(receiver)
    except (TypeError, ValueError):
        return None  # no signature to inspect (some builtins): let the call decide


@functools.lru_cache(maxsize=1024)
def _accepts_code(code: CodeType, bound: bool, given: int) -> _Accepts:
    # Plain functions and methods: their code object says it all, so cache by it.
    count = code.co_argcount
    positional = [
        (name, index < code.co_posonlyargcount)
        for index, name in enumerate(code.co_varnames[:count])
    ]
    if bound:
        positional = positional[1:]  # self
    taken = frozenset(name for name, only in positional[:given] if not only)
    if code.co_flags & inspect.CO_VARKEYWORDS:
        return _Accepts(taken, None)
    keyword_only = code.co_varnames[count : count + code.co_kwonlyargcount]
    names = {name for name, only in positional[given:] if not only}
    return _Accepts(taken, frozenset((*names, *keyword_only)))


def _accepts_for(receiver: Callable[..., Any], given: int) -> _Accepts:
    bound = type(receiver) is MethodType
    plain = receiver.__func__ if bound else receiver  # type: ignore[attr-defined]
    if type(plain) is FunctionType and not plain.__dict__:
        # No __wrapped__ or __signature__ to follow: the code object decides.
        return _accepts_code(plain.__code__, bound, given)
    return _accepts(_signature(receiver), given)


def robust_apply(receiver: Callable[..., Any], /, *arguments: Any, **named: Any) -> Any:
    """
    Call ``receiver`` with ``arguments`` and the part of ``named`` it accepts.

    Arguments:

        receiver
            Any callable: a function, a bound method, an object with
            ``__call__``, a ``functools.partial``. A decorator that sets
            ``__wrapped__`` (``functools.wraps``) is seen through, so the
            wrapped function's parameters decide.

        arguments
            Positional arguments, passed to the receiver as they are.

        named
            Named arguments, filtered to those the receiver declares unless
            it takes ``**kwargs``.

    Returns what the receiver returns. Raises ``TypeError`` when an argument
    is given both positionally and by name.
    """
    accepts = _accepts_for(receiver, len(arguments))
    for name in accepts.taken:
        if name in named:
            raise TypeError(
                f"Argument {name!r} specified both positionally and as a keyword "
                f"for calling {receiver!r}"
            )
    if accepts.names is not None:
        named = {key: value for key, value in named.items() if key in accepts.names}
    return receiver(*arguments, **named)
