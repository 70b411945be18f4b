"""
relay's optional C accelerator, ``relay._speedups``, as ``speedups``.

``speedups`` is None where the extension was not built, or when the
environment variable ``RELAY_PURE_PYTHON`` is set (read once, at import):
every module that uses it then takes its pure-Python path, which gives the
same results.
"""

from __future__ import annotations

import os

__all__ = ["speedups"]

try:
    if os.environ.get("RELAY_PURE_PYTHON"):
        raise ImportError("RELAY_PURE_PYTHON is set")
    from relay import _speedups as speedups
except ImportError:
    speedups = None  # type: ignore[assignment]
