"""
Signals for the presence tests' workers: ``relay worker tests.procs.presence_app``.

Each worker hears ``presence.ping`` and counts it.
"""

from __future__ import annotations

from typing import Any

from relay import Signal

ping = Signal(name="presence.ping")
heard: list[dict[str, Any]] = []


def on_ping(sender: Any, **kwargs: Any) -> None:
    heard.append(kwargs)


ping.connect(on_ping)

SIGNALS = [ping]
