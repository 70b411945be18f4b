"""
relay on a real Redis Cluster (3 primaries, 3 replicas on loopback), through a
``redis+cluster://`` URL: sharded pub/sub, per-signal durable logs on their
channel's slot, and the faults of a cluster (a primary SIGKILLed, a graceful
``CLUSTER FAILOVER``, a slot migration), with every count asserted exactly.

The producers are real processes (``benchmarks/fault_worker.py producer``)
sending ``n = 1, 2, ...`` (so their sequence numbers are ``n``); the listener
is a ``Relay`` in the test process.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from relay import AsyncRelay, Relay, Signal, gap, reconnected
from relay.core import channel_for
from relay.testing import RedisCluster, RedisServerUnavailable
from relay.transport.cluster import AsyncClusterTransport, ClusterTransport, parse_url

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
def cluster() -> Iterator[RedisCluster]:
    try:
        started = RedisCluster().start()
    except RedisServerUnavailable as exc:
        if os.environ.get("RELAY_REQUIRE_REDIS") == "1":
            pytest.fail(f"RELAY_REQUIRE_REDIS=1 but the cluster could not start: {exc}")
        pytest.skip(str(exc))
    with started:
        yield started


def two_shard_names(namespace: str, cluster: RedisCluster) -> tuple[str, str]:
    """Two signal names whose channels live on different primaries."""
    first = "cluster.a"
    home = cluster.primary_for(channel_for(namespace, first, sharded=True))
    for i in range(100):
        other = f"cluster.b{i}"
        if cluster.primary_for(channel_for(namespace, other, sharded=True)) is not home:
            return first, other
    raise AssertionError("no two names on different shards")


class Listener:
    """A Relay in this process that records every n it fires per signal, and every gap."""

    def __init__(self, url: str, namespace: str, names: tuple[str, ...], durable: bool) -> None:
        self.fired: dict[str, list[Any]] = {name: [] for name in names}
        self.reported: dict[str, list[tuple[int, int]]] = {name: [] for name in names}
        self.reconnects = 0
        self.bridge = Relay(url, namespace=namespace, durable=durable, backoff=Fast())
        self.signals = []
        for name in names:
            signal = Signal(name=name)
            signal.connect(self._receiver(name), weak=False)
            self.bridge.register(signal)
            self.signals.append(signal)
        gap.connect(self._gap, weak=False)
        reconnected.connect(self._reconnected, weak=False)

    def _receiver(self, name: str) -> Callable[..., None]:
        def fire(sender: Any, n: Any, **kwargs: Any) -> None:
            self.fired[name].append(n)

        return fire

    def _gap(
        self, sender: Any, signal_name: str, first_missing: int, count: int, **kwargs: Any
    ) -> None:
        if sender is self.bridge:
            self.reported[signal_name].append((first_missing, count))

    def _reconnected(self, sender: Any, **kwargs: Any) -> None:
        if sender is self.bridge:
            self.reconnects += 1

    def accounted(self, name: str, sent: int) -> bool:
        reported = sum(count for _, count in self.reported[name])
        return len(set(self.fired[name])) + reported >= sent

    def close(self) -> None:
        gap.disconnect(self._gap)
        reconnected.disconnect(self._reconnected)
        self.bridge.close()


FINAL = 20


def producer(
    url: str, namespace: str, name: str, count: int, rate: int, durable: bool, final: int = 0
) -> subprocess.Popen[str]:
    """
    A producer process sending ``n = 1..count``; with ``final``, it then waits
    for ``send_final()`` before sending ``final`` more, so that a loss at the
    end of the stream is followed by messages that reveal it.
    """
    args = [
        sys.executable, str(PRODUCER), "producer", "--url", url, "--namespace", namespace,
        "--signal", name, "--count", str(count), "--rate", str(rate),
        "--max-queue", str(count + final + 10), "--final", str(final),
    ]  # fmt: skip
    if durable:
        args.append("--durable")
    process = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    assert process.stdout.readline().startswith("READY")
    return process


def send_final(process: subprocess.Popen[str]) -> None:
    """Wait until the producer has sent its stream, then let it send the final messages."""
    assert process.stdout is not None and process.stdin is not None
    assert process.stdout.readline().startswith("SENT")
    process.stdin.write("go\n")
    process.stdin.flush()


def finish(process: subprocess.Popen[str]) -> dict[str, Any]:
    out, _ = process.communicate(timeout=120)
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_the_url_names_some_nodes_and_the_options() -> None:
    parsed = parse_url("rediss+cluster://u:p%40ss@h1:7000,h2:7001/0?socket_timeout=5")
    assert parsed.nodes == [("h1", 7000), ("h2", 7001)]
    assert parsed.options == {
        "username": "u", "password": "p@ss", "ssl": True, "socket_timeout": 5.0,
    }  # fmt: skip
    assert parsed.description == "rediss+cluster://h1:7000,h2:7001"
    with pytest.raises(ValueError, match="only database 0"):
        parse_url("redis+cluster://h1:7000/1")
    with pytest.raises(ValueError, match="unknown option"):
        parse_url("redis+cluster://h1:7000?nope=1")


@pytest.mark.parametrize(
    ("fault", "durable"),
    [(None, True), ("failover", True), ("kill", False)],
    ids=["durable", "failover-durable", "kill-pubsub"],
)
def test_async_relay_on_a_cluster_relays_two_shards_through_a_fault(
    cluster: RedisCluster, namespace: str, fault: str | None, durable: bool
) -> None:
    names = two_shard_names(namespace, cluster)
    count = 1000 + FINAL
    fired: dict[str, list[Any]] = {name: [] for name in names}
    reported: dict[str, list[tuple[int, int]]] = {name: [] for name in names}

    def receiver(name: str) -> Callable[..., None]:
        def fire(sender: Any, n: Any, **kwargs: Any) -> None:
            fired[name].append(n)

        return fire

    def on_gap(sender: Any, signal_name: str, first_missing: int, count: int, **kw: Any) -> None:
        reported[signal_name].append((first_missing, count))

    def accounted() -> bool:
        return all(
            len(set(fired[name])) + sum(c for _, c in reported[name]) >= count for name in names
        )

    async def main() -> dict[str, int]:
        bridge = AsyncRelay(cluster.url, namespace=namespace, durable=durable, backoff=Fast())
        assert isinstance(bridge.transport, AsyncClusterTransport)
        for name in names:
            signal = Signal(name=name)
            signal.connect(receiver(name), weak=False)
            bridge.register(signal)
        gap.connect(on_gap, weak=False)
        try:
            async with bridge:
                processes = [
                    await asyncio.to_thread(
                        producer, cluster.url, namespace, name, count - FINAL, 500, durable, FINAL
                    )
                    for name in names
                ]
                while len(fired[names[0]]) < 200:
                    await asyncio.sleep(0.01)
                owner = cluster.primary_for(channel_for(namespace, names[0], sharded=True))
                if fault == "failover":
                    await asyncio.to_thread(cluster.failover, cluster.replicas_of(owner)[0])
                elif fault == "kill":
                    cluster.kill(owner)
                    await asyncio.to_thread(cluster.wait_ok)
                if fault:
                    # Once back, the final messages reveal any loss at the end.
                    while bridge.stats()["reconnects"] < 1:
                        await asyncio.sleep(0.02)
                for process in processes:
                    await asyncio.to_thread(send_final, process)
                reports = await asyncio.to_thread(lambda: [finish(p) for p in processes])
                assert all(report["stats"]["dropped"] == 0 for report in reports)
                deadline = time.monotonic() + 60
                while not accounted():
                    assert time.monotonic() < deadline, "not every message was accounted for"
                    await asyncio.sleep(0.02)
                return bridge.stats()
        finally:
            gap.disconnect(on_gap)

    stats = asyncio.run(main())
    for name in names:
        times = Counter(fired[name])
        lost = set(range(1, count + 1)) - set(times)
        numbers: set[int] = set()
        for first, n in reported[name]:
            assert not numbers & set(range(first, first + n))
            numbers |= set(range(first, first + n))
        assert sum(t - 1 for t in times.values()) == 0  # no duplicates
        if durable:
            assert (lost, numbers) == (set(), set())
        else:
            assert numbers == lost
    if fault:
        assert stats["reconnects"] >= 1


@pytest.mark.parametrize("durable", [True, False], ids=["durable", "pubsub"])
def test_signals_on_two_shards_are_relayed_each_on_its_own_shard(
    cluster: RedisCluster, namespace: str, durable: bool
) -> None:
    names = two_shard_names(namespace, cluster)
    # One node is enough: the client discovers the rest.
    url = "redis+cluster://" + "{}:{}".format(*cluster.startup_nodes[-1])
    # More signals than primaries: some reader holds several channels (of several slots).
    extras = tuple(f"cluster.x{i}" for i in range(6))
    listener = Listener(url, namespace, names + extras, durable=durable)
    assert isinstance(listener.bridge.transport, ClusterTransport)
    with pytest.raises(ValueError, match="hash tag"):
        listener.bridge.register(Signal(name="bad.{name}"))
    with listener.bridge:
        late = Signal(name="cluster.late")  # subscribed while running
        late.connect(lambda sender, **kwargs: None, weak=False)
        listener.bridge.register(late)
        for name in (*names, *extras, "cluster.late"):
            channel = channel_for(namespace, name, sharded=True)
            owner = cluster.primary_for(channel)
            with owner.client(decode=False) as client:
                subscribers = client.execute_command("PUBSUB", "SHARDNUMSUB", channel)
                assert subscribers[1] == 1
            for node in cluster.primaries:
                if node is not owner:  # not subscribed on any other primary
                    with node.client(decode=False) as client:
                        shard_channels = client.execute_command("PUBSUB", "SHARDCHANNELS")
                        assert channel.encode() not in shard_channels
        processes = [producer(url, namespace, name, 300, 0, durable) for name in names]
        reports = [finish(process) for process in processes]
        for name in names:
            wait_until(lambda name=name: len(listener.fired[name]) == 300)  # type: ignore[misc]
    listener.close()
    for name in names:
        assert listener.fired[name] == list(range(1, 301))
        assert listener.reported[name] == []
    assert all(report["stats"]["dropped"] == 0 for report in reports)
    if durable:
        with cluster.client() as client:
            for name in names:
                key = f"relay:{namespace}:log:{{{name}}}"
                assert client.xlen(key) >= 1
                assert cluster.slot_for(key) == cluster.slot_for(
                    channel_for(namespace, name, sharded=True)
                )
            assert not client.exists(f"relay:{namespace}:log")


@pytest.mark.parametrize(
    ("fault", "durable"),
    [
        ("migrate", True), ("migrate", False),
        ("failover", True), ("failover", False),
        ("kill", True), ("kill", False),
    ],
    ids=[
        "migrate-durable", "migrate-pubsub", "failover-durable", "failover-pubsub",
        "kill-durable", "kill-pubsub",
    ],
)  # fmt: skip
def test_a_cluster_fault_mid_stream_loses_nothing_durably_and_reports_every_loss(
    cluster: RedisCluster, namespace: str, fault: str, durable: bool
) -> None:
    count, final = 2000, 20
    name = "cluster.n"
    channel = channel_for(namespace, name, sharded=True)
    listener = Listener(cluster.url, namespace, (name,), durable=durable)
    with listener.bridge:
        process = producer(cluster.url, namespace, name, count, 1000, durable, final)
        wait_until(lambda: len(listener.fired[name]) >= 400)
        owner = cluster.primary_for(channel)
        if fault == "migrate":
            target = next(node for node in cluster.primaries if node is not owner)
            cluster.migrate_slot(cluster.slot_for(channel), target)
        elif fault == "failover":
            cluster.failover(cluster.replicas_of(owner)[0])
        else:
            cluster.kill(owner)
            cluster.wait_ok()
        # Once the listener is back, the final messages reveal any loss at the end.
        wait_until(lambda: listener.reconnects >= 1)
        send_final(process)
        report = finish(process)
        count += final
        wait_until(lambda: listener.accounted(name, count), timeout=60)
        stats = listener.bridge.stats()
        assert cluster.primary_for(channel) is not owner
    listener.close()
    fired = Counter(listener.fired[name])
    lost = set(range(1, count + 1)) - set(fired)
    duplicated = sum(times - 1 for times in fired.values())
    reported: set[int] = set()
    for first, n in listener.reported[name]:
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


def test_the_relay_command_sends_and_monitors_through_a_cluster_url(
    cluster: RedisCluster, namespace: str
) -> None:
    listener = Listener(cluster.url, namespace, ("cluster.cli",), durable=False)
    with listener.bridge:
        result = subprocess.run(
            [sys.executable, "-m", "relay", "send", "cluster.cli", "n=7", "--redis-url",
             cluster.url, "--namespace", namespace],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        wait_until(lambda: listener.fired["cluster.cli"] == ["7"])
    listener.close()
    watch_all = subprocess.run(
        [sys.executable, "-m", "relay", "monitor", "--redis-url", cluster.url,
         "--namespace", namespace, "--count", "1"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert watch_all.returncode == 2
    assert "name the signals to watch" in watch_all.stderr


def test_presence_works_on_a_cluster_threaded_and_asyncio(
    cluster: RedisCluster, namespace: str
) -> None:
    heard = Signal(name="cluster.presence")
    heard.connect(lambda sender, **kwargs: None, weak=False)
    threaded = Relay(cluster.url, namespace=namespace, worker_id="t", heartbeat=0.1)
    threaded.register(heard)

    async def main() -> tuple[set[Any], set[Any]]:
        bridge = AsyncRelay(cluster.url, namespace=namespace, worker_id="a", heartbeat=0.1)
        async with bridge:
            live = {(p.worker_id, p.kind, p.hears) for p in await bridge.peers()}
        return live, {(p.worker_id, p.state) for p in await bridge.peers(include_gone=True)}

    with threaded:
        live, after = asyncio.run(main())
        assert live == {("t", "Relay", ("cluster.presence",)), ("a", "AsyncRelay", ())}
        assert after == {("t", "alive"), ("a", "stopped")}
    assert {(p.worker_id, p.state) for p in threaded.peers(include_gone=True)} == {
        ("t", "stopped"),
        ("a", "stopped"),
    }
    threaded.close()


def test_a_cluster_client_is_taken_as_it_is(cluster: RedisCluster, namespace: str) -> None:
    import redis.asyncio.cluster

    client = cluster.client()
    bridge = Relay(client=client, namespace=namespace)
    assert isinstance(bridge.transport, ClusterTransport)
    bridge.close()
    with pytest.raises(ValueError, match="decode_responses"):
        Relay(client=cluster.client(decode_responses=True), namespace=namespace)
    with pytest.raises(TypeError, match="AsyncRelay takes a"):
        AsyncRelay(client=cluster.client(), namespace=namespace)
    host, port = cluster.startup_nodes[0]
    async_client = redis.asyncio.cluster.RedisCluster(host=host, port=port)
    with pytest.raises(TypeError, match="use it with"):
        Relay(client=async_client, namespace=namespace)
    assert isinstance(
        AsyncRelay(client=async_client, namespace=namespace).transport, AsyncClusterTransport
    )


def test_a_batch_to_several_shards_is_one_round_per_node(
    cluster: RedisCluster, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import redis.connection

    from relay.transport.base import Log, Outgoing

    names = two_shard_names(namespace, cluster)
    transport = ClusterTransport(cluster.url)
    transport.check()
    rounds: Counter[int] = Counter()
    original = redis.connection.AbstractConnection.send_packed_command

    def counted(self: Any, command: Any, check_health: bool = True) -> None:
        rounds[self.port] += 1
        original(self, command, check_health)

    items = [
        Outgoing(
            channel_for(namespace, name, sharded=True), b"x", "ab", "o:1:ab", i,
            Log(f"relay:{namespace}:log:{{{name}}}", 100),
        )
        for i in range(4)
        for name in names
    ]  # fmt: skip
    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counted)
    transport.publish_many(items)
    monkeypatch.undo()
    owners = {cluster.primary_for(item.channel).port for item in items}
    assert len(owners) == 2 and rounds == dict.fromkeys(owners, 1)
    with cluster.client() as client:
        for name in names:
            assert client.xlen(f"relay:{namespace}:log:{{{name}}}") == 4
    transport.close()
