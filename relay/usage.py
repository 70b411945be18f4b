"""The error a ``relay`` command reports to its user in one line."""

from __future__ import annotations

__all__ = ["UsageError"]


class UsageError(Exception):
    """A mistake of the command line or its environment, reported in one line (exit 2)."""
