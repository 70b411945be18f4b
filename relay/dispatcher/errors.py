"""
The errors of the deprecated module-level API, as PyDispatcher names them.

Each is also a built-in error (``TypeError``, ``KeyError``), so code that
catches those keeps working.
"""

from __future__ import annotations

__all__ = ["DispatcherError", "DispatcherKeyError", "DispatcherTypeError"]


class DispatcherError(Exception):
    """Base class of every error ``relay.dispatcher`` raises."""


class DispatcherKeyError(KeyError, DispatcherError):
    """Raised by ``disconnect`` for a (receiver, signal, sender) that is not connected."""


class DispatcherTypeError(TypeError, DispatcherError):
    """Raised for an unusable signal: ``None``, or an object that is not hashable."""
