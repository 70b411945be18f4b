"""
A relay worker process for the multi-process tests.

    python tests/procs/worker.py URL NAMESPACE [threaded|asyncio]

Connects receivers of every kind to ``shop.order_placed`` on two bridges
(``Relay``, or ``AsyncRelay`` on an event loop), prints
``READY <origin>`` once subscribed, and on the first ``test.stop`` signal
stops the bridge and prints one JSON line: what each receiver got, the gaps
``relay.gap`` reported, and the bridge's stats.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
import threading
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from shopmodels import Order

from relay import AsyncRelay, Relay, Signal, current_message, gap
from relay.origin import origin_id

order_placed = Signal(name="shop.order_placed")
stop = Signal(name="test.stop")
got: dict[str, list[Any]] = {}
gaps: list[dict[str, Any]] = []  # what relay.gap reported
stopped = threading.Event()
loop_thread: int | None = None  # the event loop's thread, in asyncio mode


def record(label: str, sender: Any, kwargs: dict[str, Any]) -> None:
    message = current_message()
    got.setdefault(label, []).append(
        {
            "n": kwargs.get("n"),
            "sender": sender
            if isinstance(sender, str) or sender is None
            else (f"<{sender.__module__}.{sender.__qualname__}>"),
            "remote": message is not None,
            "origin": message.origin if message else None,
            "on_loop": threading.get_ident() == loop_thread,
        }
    )


def any_sender(sender: Any, **kwargs: Any) -> None:
    record("any", sender, kwargs)


def by_class(sender: Any, **kwargs: Any) -> None:
    record("by_class", sender, kwargs)


def by_name(sender: Any, **kwargs: Any) -> None:
    record("by_name", sender, kwargs)


def uid_first(sender: Any, **kwargs: Any) -> None:
    record("uid_first", sender, kwargs)


def uid_second(sender: Any, **kwargs: Any) -> None:
    record("uid_second", sender, kwargs)


def local_only(sender: Any, **kwargs: Any) -> None:
    record("local_only", sender, kwargs)


def failing(sender: Any, **kwargs: Any) -> None:
    record("failing", sender, kwargs)
    raise RuntimeError("this receiver always fails")


def once_anywhere(sender: Any, **kwargs: Any) -> None:
    record("once", sender, kwargs)


async def async_any(sender: Any, **kwargs: Any) -> None:
    record("async_any", sender, kwargs)


def on_stop(sender: Any, **kwargs: Any) -> None:
    stopped.set()


def on_gap(sender: Any, **kwargs: Any) -> None:
    fields = ("origin", "signal_name", "first_missing", "count")
    gaps.append({name: kwargs[name] for name in fields})


def run_threaded(url: str, namespace: str) -> tuple[Relay, Relay]:
    bridge = Relay(url, namespace=namespace)
    bridge.register(order_placed)
    bridge.register(order_placed)  # registering twice never fires twice
    bridge.register(stop)
    twin = Relay(url, namespace=namespace)  # a second bridge on the same namespace
    twin.register(order_placed)
    with bridge, twin:
        print(f"READY {origin_id()}", flush=True)
        stopped.wait(float(os.environ.get("WORKER_TIMEOUT", "60")))
    return bridge, twin


async def run_asyncio(url: str, namespace: str) -> tuple[AsyncRelay, AsyncRelay]:
    global loop_thread
    loop_thread = threading.get_ident()
    bridge = AsyncRelay(url, namespace=namespace)
    bridge.register(order_placed)
    bridge.register(stop)
    twin = AsyncRelay(url, namespace=namespace)
    twin.register(order_placed)
    async with bridge, twin:
        print(f"READY {origin_id()}", flush=True)
        timeout = float(os.environ.get("WORKER_TIMEOUT", "60"))
        await asyncio.get_running_loop().run_in_executor(None, stopped.wait, timeout)
    return bridge, twin


def main() -> None:
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(threadName)s %(message)s"
    )
    url, namespace = sys.argv[1], sys.argv[2]
    order_placed.connect(any_sender)
    order_placed.connect(by_class, sender=Order)
    order_placed.connect(by_name, sender="shopmodels.Order")
    order_placed.connect(uid_first, dispatch_uid="dedup")
    order_placed.connect(uid_second, dispatch_uid="dedup")
    order_placed.connect(local_only, scope="local")
    order_placed.connect(failing)
    order_placed.connect(async_any)
    order_placed.connect(once_anywhere, scope="once")
    stop.connect(on_stop)
    gap.connect(on_gap)

    if len(sys.argv) > 3 and sys.argv[3] == "asyncio":
        bridge, twin = asyncio.run(run_asyncio(url, namespace))
    else:
        bridge, twin = run_threaded(url, namespace)
    stats = bridge.stats()
    twin_stats = twin.stats()
    result = {
        "got": got,
        "gaps": gaps,
        "stats": stats,
        "twin": twin_stats,
        "origin": origin_id(),
        "heard_stop": stopped.is_set(),
        "kind": type(bridge).__name__,
    }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
