"""
A worker app for the dashboard's browser test (``relay worker
tests.procs.dashboard_app``): four named signals with receivers, one of which
raises when a send asks it to (``fail=True``), so the page has receiver errors
to show.
"""

from __future__ import annotations

from typing import Any

from relay import Signal, receiver

order_placed = Signal(name="shop.order_placed")
cache_invalidated = Signal(name="shop.cache_invalidated")
config_changed = Signal(name="shop.config_changed")
report_ready = Signal(name="shop.report_ready")

SIGNALS = [order_placed, cache_invalidated, config_changed, report_ready]

seen: dict[str, int] = {}


def _count(name: str) -> None:
    seen[name] = seen.get(name, 0) + 1


@receiver(order_placed)
def on_order(sender: Any, **kwargs: Any) -> None:
    _count("order")


@receiver(cache_invalidated)
def on_cache(sender: Any, **kwargs: Any) -> None:
    _count("cache")


@receiver(config_changed)
def on_config(sender: Any, **kwargs: Any) -> None:
    _count("config")


@receiver(report_ready)
def on_report(sender: Any, fail: bool = False, **kwargs: Any) -> None:
    if fail:
        raise ValueError("the report could not be rendered")
    _count("report")
