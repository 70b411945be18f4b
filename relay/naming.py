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

__all__ = ["class_named", "register_name", "sender_name"]

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

# Classes given a name of their own with ``register_name``, and the reverse.
_CLASS_NAMES: dict[type, str] = {}
_NAMED_CLASSES: dict[str, type] = {}


def sender_name(sender: object) -> str | None:
    """
    Return the name that identifies ``sender`` in every process.

    Arguments:

        sender
            The sender of a signal. A ``str`` is its own name and ``None``
            (any sender) stays ``None``. A class, a function (builtins
            included) or a method is named by its dotted path,
            ``"module.QualifiedName"``, unless ``register_name`` gave it
            another name; a module by its ``__name__``. Any other object is
            named by its type's name, so all instances of a class share one
            name.
    """
    if sender is None:
        return None
    if isinstance(sender, str):
        # str.__str__ gives the plain text of a str subclass (a StrEnum, say).
        return str.__str__(sender)
    if isinstance(sender, type) and _CLASS_NAMES:
        registered = _CLASS_NAMES.get(sender)
        if registered is not None:
            return registered
    if isinstance(sender, ModuleType):
        return sender.__name__
    if isinstance(sender, _NAMED_BY_PATH):
        return _dotted_path(sender)
    if _CLASS_NAMES:
        registered = _CLASS_NAMES.get(type(sender))
        if registered is not None:
            return registered
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


def register_name(cls: type, name: str) -> None:
    """
    Give a class a name of its own across processes.

    A send from ``cls`` (or from one of its instances) then carries ``name``
    instead of the class's dotted path, and a send from ``name`` arriving
    from another process reaches receivers as ``cls`` itself, whether or not
    they were connected for it.
    ``relay.contrib.django`` names every model this way, by its label
    (``"shop.Order"``).

    Arguments:

        cls
            The class.

        name
            Its name; every process must register the same one.

    Registering the same pair again does nothing. Raises ``ValueError`` if
    ``cls`` already has another name or ``name`` another class.
    """
    if not isinstance(cls, type):
        raise TypeError(f"register_name() takes a class, not {type(cls).__qualname__}")
    if type(name) is not str or not name:
        raise TypeError(f"name must be a non-empty str, not {name!r}")
    known = _CLASS_NAMES.get(cls)
    if known is not None and known != name:
        raise ValueError(f"{_dotted_path(cls)} is already named {known!r}")
    owner = _NAMED_CLASSES.get(name)
    if owner is not None and owner is not cls:
        raise ValueError(f"the name {name!r} already belongs to {_dotted_path(owner)}")
    _NAMED_CLASSES[name] = cls
    _CLASS_NAMES[cls] = name


def class_named(name: str | None) -> type | None:
    """Return the class ``register_name`` gave ``name``, or None."""
    if name is None:
        return None
    return _NAMED_CLASSES.get(name)
