"""
A worker whose receivers are connected through the deprecated ``relay.dispatcher`` API.

    python tests/procs/dispatcher_worker.py URL NAMESPACE

Connects old-API receivers of every kind (no ``**kwargs``, no arguments, for a
sender class, a sender name, ``Anonymous``, both a sender and ``Any``, a bound
method, a bound method whose object is gone, ``signal=Any``) plus one new-API
receiver to ``shop.order_placed``, prints ``READY <origin>`` once subscribed,
and when ``test.stop`` arrives (heard by an old-API receiver too) prints one
JSON line: what each receiver got, and the bridge's stats.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import threading
import warnings
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from shopmodels import Order

from relay import Relay, Signal, current_message, dispatcher
from relay.origin import origin_id

warnings.simplefilter("ignore", DeprecationWarning)

order_placed = Signal(name="shop.order_placed")
stop = Signal(name="test.stop")
got: dict[str, list[Any]] = {}
stopped = threading.Event()


def describe(sender: Any) -> Any:
    if sender is None or isinstance(sender, str):
        return sender
    if sender is dispatcher.Anonymous:
        return "Anonymous"
    return f"<{sender.__module__}.{sender.__qualname__}>"


def record(label: str, n: Any, sender: Any = "-") -> None:
    got.setdefault(label, []).append(
        {"n": n, "sender": describe(sender), "remote": current_message() is not None}
    )


# The "before" column: receivers without **kwargs, taking what they declare.
def any_sender(sender, n):
    record("any_sender", n, sender)


calls_without_arguments: list[None] = []


def no_arguments():
    calls_without_arguments.append(None)


def by_class(n, sender):
    record("by_class", n, sender)


def by_name(n, sender):
    record("by_name", n, sender)


def anonymous_only(n, sender):
    record("anonymous", n, sender)


def class_and_any(n):
    record("class_and_any", n)


def every_signal(signal, n=None):
    record("every_signal", n)


def new_api(sender: Any, n: int, **kwargs: Any) -> None:
    record("new_api", n, sender)


class Listener:
    def __init__(self, label: str) -> None:
        self.label = label

    def on_order(self, n):
        record(self.label, n)


def on_stop():
    stopped.set()


def main() -> None:
    url, namespace = sys.argv[1], sys.argv[2]
    dispatcher.connect(any_sender, order_placed)
    dispatcher.connect(no_arguments, order_placed, sender=dispatcher.Any)
    dispatcher.connect(by_class, order_placed, sender=Order)
    dispatcher.connect(by_name, order_placed, sender="shopmodels.Order")
    dispatcher.connect(anonymous_only, order_placed, sender=dispatcher.Anonymous)
    dispatcher.connect(class_and_any, order_placed, sender=Order)
    dispatcher.connect(class_and_any, order_placed)
    dispatcher.connect(every_signal)  # signal=Any: hears only sends made through dispatcher
    order_placed.connect(new_api)
    listener = Listener("method")
    dispatcher.connect(listener.on_order, order_placed)
    gone = Listener("gone")
    dispatcher.connect(gone.on_order, order_placed)
    del gone
    gc.collect()
    dispatcher.connect(on_stop, stop)

    bridge = Relay(url, namespace=namespace)
    bridge.register(order_placed)
    bridge.register(stop)
    with bridge:
        print(f"READY {origin_id()}", flush=True)
        stopped.wait(float(os.environ.get("WORKER_TIMEOUT", "60")))
    result = {
        "got": got,
        "no_arguments": len(calls_without_arguments),
        "stats": bridge.stats(),
        "origin": origin_id(),
        "heard_stop": stopped.is_set(),
        "listener_alive": listener.label,
    }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
