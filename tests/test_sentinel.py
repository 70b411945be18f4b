"""
relay on Redis Sentinel, against a real master, replica and 3 sentinels on
loopback: delivery through a ``redis+sentinel://`` URL, and the faults of a
failover, with every count asserted exactly.

The producer is a real process (``benchmarks/fault_worker.py producer``)
sending ``n = 1, 2, ...`` (so its sequence numbers are ``n``); the listener is
a ``Relay`` in the test process.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from relay import Relay, Signal, gap, reconnected
from relay.testing import RedisSentinels, RedisServerUnavailable
from relay.transport.sentinel import SentinelTransport

pytestmark = pytest.mark.redis

PRODUCER = Path(__file__).resolve().parent.parent / "benchmarks" / "fault_worker.py"


class Fast:
    def compute(self, failures: int) -> float:
        return 0.05


def wait_until(predicate: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.02)


@pytest.fixture
def sentinels() -> Iterator[RedisSentinels]:
    import os

    try:
        group = RedisSentinels().start()
    except RedisServerUnavailable as exc:
        if os.environ.get("RELAY_REQUIRE_REDIS") == "1":
            pytest.fail(f"RELAY_REQUIRE_REDIS=1 but Sentinel could not start: {exc}")
        pytest.skip(str(exc))
    with group:
        yield group


class Listener:
    """A Relay in this process that records every n it fires and every gap."""

    def __init__(self, url: str, namespace: str, durable: bool) -> None:
        self.fired: list[Any] = []
        self.reported: list[tuple[int, int]] = []
        self.reconnects = 0
        self.signal = Signal(name="sentinel.n")
        self.signal.connect(self._fire, weak=False)
        self.bridge = Relay(url, namespace=namespace, durable=durable, backoff=Fast())
        self.bridge.register(self.signal)
        gap.connect(self._gap, weak=False)
        reconnected.connect(self._reconnected, weak=False)

    def _fire(self, sender: Any, n: Any, **kwargs: Any) -> None:
        self.fired.append(n)

    def _gap(self, sender: Any, first_missing: int, count: int, **kwargs: Any) -> None:
        if sender is self.bridge:
            self.reported.append((first_missing, count))

    def _reconnected(self, sender: Any, **kwargs: Any) -> None:
        if sender is self.bridge:
            self.reconnects += 1

    def accounted(self, sent: int) -> bool:
        reported = sum(count for _, count in self.reported)
        return len(set(self.fired)) + reported >= sent

    def close(self) -> None:
        gap.disconnect(self._gap)
        reconnected.disconnect(self._reconnected)
        self.bridge.close()


def producer(
    url: str, namespace: str, count: int, rate: int, durable: bool
) -> subprocess.Popen[str]:
    args = [
        sys.executable,
        str(PRODUCER),
        "producer",
        "--url",
        url,
        "--namespace",
        namespace,
        "--signal",
        "sentinel.n",
        "--count",
        str(count),
        "--rate",
        str(rate),
        "--max-queue",
        str(count + 10),
    ]
    if durable:
        args.append("--durable")
    process = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    assert process.stdout.readline().startswith("READY")
    return process


def finish(process: subprocess.Popen[str]) -> dict[str, Any]:
    out, _ = process.communicate(timeout=120)
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_a_sentinel_url_finds_the_master_and_relays(
    sentinels: RedisSentinels, namespace: str
) -> None:
    listener = Listener(sentinels.url, namespace, durable=True)
    assert isinstance(listener.bridge.transport, SentinelTransport)
    with listener.bridge:
        # Presence through the sentinels, too.
        assert [p.kind for p in listener.bridge.peers()] == ["Relay"]
        process = producer(sentinels.url, namespace, 200, 0, durable=True)
        report = finish(process)
        wait_until(lambda: len(listener.fired) == 200)
    assert [p.state for p in listener.bridge.peers(include_gone=True)] == ["stopped"] * len(
        listener.bridge.peers(include_gone=True)
    )
    listener.close()
    assert listener.fired == list(range(1, 201))
    # The log lives on the master.
    client = redis.Redis(*sentinels.master)
    assert client.xlen(f"relay:{namespace}:log") >= 1
    client.close()
    assert report["stats"]["dropped"] == 0


@pytest.mark.parametrize(
    ("fault", "durable"),
    [("failover", True), ("kill", True), ("kill", False)],
    ids=["failover-durable", "kill-durable", "kill-pubsub"],
)
def test_a_failover_mid_stream_loses_nothing_durably_and_reports_every_loss(
    sentinels: RedisSentinels, namespace: str, fault: str, durable: bool
) -> None:
    count = 4000
    listener = Listener(sentinels.url, namespace, durable=durable)
    old_master = sentinels.master
    with listener.bridge:
        process = producer(sentinels.url, namespace, count, 1000, durable=durable)
        wait_until(lambda: len(listener.fired) >= 800)
        faulting = threading.Thread(
            target=sentinels.failover if fault == "failover" else sentinels.kill_master
        )
        faulting.start()
        faulting.join()
        report = finish(process)
        wait_until(lambda: listener.accounted(count), timeout=60)
        stats = listener.bridge.stats()
    listener.close()
    assert sentinels.master != old_master
    fired = Counter(listener.fired)
    lost = set(range(1, count + 1)) - set(fired)
    duplicated = sum(times - 1 for times in fired.values())
    reported = set()
    for first, n in listener.reported:
        numbers = set(range(first, first + n))
        assert not numbers & reported  # nothing reported twice
        reported |= numbers
    assert duplicated == 0
    assert report["stats"]["dropped"] == 0
    assert stats["reconnects"] >= 1 and listener.reconnects == stats["reconnects"]
    if durable:
        assert (len(lost), len(reported)) == (0, 0)
    else:
        assert reported == lost
        assert stats["missed"] == len(lost)


def test_the_relay_command_takes_a_sentinel_url(sentinels: RedisSentinels, namespace: str) -> None:
    listener = Listener(sentinels.url, namespace, durable=False)
    with listener.bridge:
        result = subprocess.run(
            [sys.executable, "-m", "relay", "send", "sentinel.n", "n=7", "--redis-url",
             sentinels.url, "--namespace", namespace],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        wait_until(lambda: listener.fired == ["7"])  # key=value arrives as a string
    listener.close()
    nowhere = "redis+sentinel://127.0.0.1:1/nothing?socket_connect_timeout=0.5"
    bad = subprocess.run(
        [sys.executable, "-m", "relay", "send", "x.y", "--redis-url", nowhere,
         "--namespace", namespace],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1 and bad.stderr.startswith("relay: ")
