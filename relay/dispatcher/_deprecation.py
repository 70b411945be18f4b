"""The one warning every function of the deprecated module-level API gives."""

from __future__ import annotations

import warnings

__all__ = ["deprecated"]


def deprecated(old: str, new: str) -> None:
    """
    Warn that ``old`` is deprecated in favour of ``new``, at the caller's call site.

    Called by the public function itself, so the warning points one frame
    further up: at the code that called ``relay.dispatcher``. Python's default
    filters show it once per call site; ``python -W error::DeprecationWarning``
    turns every one into an error.
    """
    warnings.warn(
        f"relay.dispatcher.{old}() is deprecated; use {new} instead.",
        DeprecationWarning,
        stacklevel=3,
    )
