"""
A relay worker APP for the metrics tests (``tests/test_prometheus.py``).

    relay worker tests.procs.metrics_app:SIGNALS --metrics-port N ...

Two named signals: every message of ``metrics.order_placed`` fires two
receivers, every message of ``metrics.failing`` one receiver that raises.
"""

from __future__ import annotations

from typing import Any

from relay import Signal, receiver

order_placed = Signal(name="metrics.order_placed")
failing = Signal(name="metrics.failing")

SIGNALS = [order_placed, failing]

#: Receiver calls per message of each signal, and how many of them raise.
CALLS = {"metrics.order_placed": 2, "metrics.failing": 1}
ERRORS = {"metrics.order_placed": 0, "metrics.failing": 1}


@receiver(order_placed)
def bill(sender: Any, **kwargs: Any) -> None:
    pass


@receiver(order_placed)
def ship(sender: Any, **kwargs: Any) -> None:
    pass


@receiver(failing)
def explode(sender: Any, **kwargs: Any) -> None:
    raise RuntimeError("this receiver always fails (metrics test)")
