"""
Names that identify senders across processes.

A sender object cannot travel between processes, so the wire carries its name
instead, and a receiving process matches that name against the senders its
receivers were connected for.
"""

from __future__ import annotations

from types import (
    BuiltinFunctionType,
    ClassMethodDescriptorType,
    FunctionType,
    MethodDescriptorType,
    MethodType,
    MethodWrapperType,
    ModuleType,
    WrapperDescriptorType,
)
from typing import Any, Final

__all__ = ["sender_name"]

# Objects named by their own dotted path rather than by their type's.
_NAMED_BY_PATH: Final = (
    type,
    FunctionType,
    BuiltinFunctionType,
    MethodType,
    MethodDescriptorType,
    ClassMethodDescriptorType,
    WrapperDescriptorType,
    MethodWrapperType,
)


def sender_name(sender: object) -> str | None:
    """
    Return the name that identifies ``sender`` in every process.

    Arguments:

        sender
            The sender of a signal. A ``str`` is its own name and ``None``
            (any sender) stays ``None``. A class, a function (builtins
            included) or a method is named by its dotted path,
            ``"module.QualifiedName"``; a module by its ``__name__``. Any other
            object is named by the dotted path of its type, so all instances of
            a class share one name.
    """
    if sender is None:
        return None
    if isinstance(sender, str):
        # str.__str__ gives the plain text of a str subclass (a StrEnum, say).
        return str.__str__(sender)
    if isinstance(sender, ModuleType):
        return sender.__name__
    if isinstance(sender, _NAMED_BY_PATH):
        return _dotted_path(sender)
    return _dotted_path(type(sender))


def _dotted_path(obj: Any) -> str:
    """Return ``"module.qualname"`` for a class, function or method."""
    qualname: str = getattr(obj, "__qualname__", None) or obj.__name__
    module = getattr(obj, "__module__", None)
    if module is None:
        # Methods of builtin types (``[].append``, ``str.upper``) have no
        # __module__: take it from the type that defines them.
        owner = getattr(obj, "__objclass__", None)
        if owner is None:
            bound = getattr(obj, "__self__", None)
            if isinstance(bound, ModuleType):
                return f"{bound.__name__}.{qualname}"
            owner = bound if isinstance(bound, type) else type(bound)
        module = getattr(owner, "__module__", None)
    return f"{module}.{qualname}" if module else qualname
