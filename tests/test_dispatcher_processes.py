"""
The deprecated ``relay.dispatcher`` API across real processes and a real Redis:
old-API sends on a registered Signal are relayed, and receivers connected
through the old API in another process fire for them, with sender names
matched as for the new API.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from relay import Relay, Signal, current_message, dispatcher
from relay.origin import origin_id

pytestmark = [pytest.mark.redis, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

PROCS = Path(__file__).parent / "procs"
sys.path.insert(0, str(PROCS))

from shopmodels import Invoice, Order  # noqa: E402

DEADLINE = 60.0
WORKER_TIMEOUT = 20.0


class Worker:
    def __init__(self, url: str, namespace: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(PROCS / "dispatcher_worker.py"), url, namespace],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "WORKER_TIMEOUT": str(WORKER_TIMEOUT)},
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line.startswith("READY "):
            self.process.kill()
            raise AssertionError(f"worker did not start: {line!r} {self.process.stderr.read()}")
        self.origin = line.split()[1]

    def result(self) -> dict[str, Any]:
        out, err = self.process.communicate(timeout=DEADLINE)
        assert self.process.returncode == 0, err
        result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        assert result["heard_stop"], f"the worker never heard test.stop:\n{err}"
        return result


@pytest.fixture
def workers(redis_url: str, namespace: str) -> Iterator[list[Worker]]:
    started = [Worker(redis_url, namespace) for _ in range(2)]
    yield started
    for w in started:
        if w.process.poll() is None:
            w.process.kill()
            w.process.wait()


def stop_workers(url: str, namespace: str, workers: list[Worker]) -> list[dict[str, Any]]:
    """Send test.stop, through the old API, until every worker has exited."""
    stop = Signal(name="test.stop")
    with Relay(url, namespace=namespace, publish="sync") as bridge:
        bridge.register(stop)
        deadline = time.monotonic() + WORKER_TIMEOUT + 5
        while any(w.process.poll() is None for w in workers):
            if time.monotonic() > deadline:
                for w in workers:
                    w.process.kill()
                logs = "\n".join(w.process.communicate()[1] for w in workers)
                raise AssertionError(f"workers did not hear test.stop:\n{logs}")
            dispatcher.send(stop)
            time.sleep(0.1)
    return [w.result() for w in workers]


def test_old_api_receivers_hear_old_and_new_api_sends_from_another_process(
    redis_url: str, namespace: str, workers: list[Worker]
) -> None:
    order_placed = Signal(name="shop.order_placed")
    here: list[tuple[int, Any, bool]] = []

    def local(n, sender):  # an old-API receiver in the sending process
        here.append((n, sender, current_message() is not None))

    dispatcher.connect(local, order_placed)
    every_signal: list[Any] = []

    def wildcard(signal, n=None):
        every_signal.append((signal, n))

    dispatcher.connect(wildcard)
    try:
        with Relay(redis_url, namespace=namespace) as bridge:
            bridge.register(order_placed)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                dispatcher.send(order_placed, Order, n=0)
                dispatcher.send(order_placed, "shopmodels.Order", n=1)
                dispatcher.send(order_placed, Invoice, n=2)
                dispatcher.send(order_placed, n=3)  # Anonymous: no sender
                dispatcher.send(order_placed, Order(), n=4)
            order_placed.send(Order, n=5)  # the new API, heard by old-API receivers
            assert bridge.flush(timeout=DEADLINE)
            stats = bridge.stats()
        results = stop_workers(redis_url, namespace, workers)
    finally:
        dispatcher.disconnect(local, order_placed)
        dispatcher.disconnect(wildcard)

    # The sending process: every send fired its old-API receiver once, locally.
    assert [(n, remote) for n, _, remote in here] == [(n, False) for n in range(6)]
    assert here[3][1] is dispatcher.Anonymous
    # signal=Any hears the sends made through relay.dispatcher, not the Signal's own.
    # (test.stop, sent through relay.dispatcher to stop the workers, too.)
    assert [n for signal, n in every_signal if signal is order_placed] == [0, 1, 2, 3, 4]
    assert {signal.name for signal, _ in every_signal} == {"shop.order_placed", "test.stop"}
    assert stats["published"] == 6 and stats["dropped"] == 0

    everything = list(range(6))
    order_named = [0, 1, 4, 5]  # from Order, its name, an instance of it

    def numbers(records: list[dict[str, Any]]) -> list[int]:
        return sorted(r["n"] for r in records)

    for worker in results:
        got = worker["got"]
        assert worker["stats"]["receiver_errors"] == 0
        assert worker["stats"]["rejected"] == 0
        assert numbers(got["any_sender"]) == everything
        assert all(r["remote"] for r in got["any_sender"])
        assert worker["no_arguments"] == 6
        assert numbers(got["new_api"]) == everything
        assert numbers(got["method"]) == everything
        assert "gone" not in got
        # Sender filtering by name, as for the new API: the class and its name
        # match sends from Order, "shopmodels.Order" and Order instances.
        assert numbers(got["by_class"]) == order_named
        assert {r["sender"] for r in got["by_class"]} == {"<shopmodels.Order>"}
        assert numbers(got["by_name"]) == order_named
        assert {r["sender"] for r in got["by_name"]} == {"shopmodels.Order"}
        # Anonymous hears only the send without a sender, and is told Anonymous.
        assert got["anonymous"] == [{"n": 3, "sender": "Anonymous", "remote": True}]
        # Connected for Order and for Any: fires once per send, as PyDispatcher does.
        assert numbers(got["class_and_any"]) == everything
        # Any-sender receivers get the local object whose name matched, else the name.
        senders = {r["n"]: r["sender"] for r in got["any_sender"]}
        assert senders == {
            0: "<shopmodels.Order>",
            1: "<shopmodels.Order>",
            2: "shopmodels.Invoice",
            3: "Anonymous",
            4: "<shopmodels.Order>",
            5: "<shopmodels.Order>",
        }
        # Receivers for any signal hear no Signal's sends relayed from elsewhere.
        assert "every_signal" not in got
        assert worker["origin"] != origin_id()
