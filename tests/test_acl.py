"""
The README's ACL line is enough for relay, durable mode, once leases and
presence, and no more.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from relay import Relay, Signal
from relay.core import PRESENCE_RETENTION
from relay.presence import encode_heartbeat, heartbeat_kwargs, presence_key
from relay.testing import RedisServer
from relay.wire import frame_prefix

pytestmark = pytest.mark.redis

README = Path(__file__).resolve().parent.parent / "README.md"
OLD_RECORD = heartbeat_kwargs(
    bridge=1,
    namespace="ns",
    kind="Relay",
    worker_id=None,
    sends=[],
    hears=[],
    started_at=0.0,
    heartbeat=5.0,
    stopped=False,
    stats={},
    signals={},
)


def readme_acl(namespace: str, password: str) -> list[str]:
    line = re.search(r"^\s*ACL SETUSER shop-relay (.+)$", README.read_text(), re.MULTILINE)
    assert line is not None, "the README has no ACL SETUSER line"
    rules = line.group(1).replace("shop", namespace).split()
    return [f">{password}" if rule.startswith(">") else rule for rule in rules]


def test_the_readme_acl_runs_relay_durably_with_once_leases_and_nothing_else(
    private_redis: RedisServer, namespace: str
) -> None:
    admin = redis.Redis.from_url(private_redis.url)
    admin.execute_command("ACL", "SETUSER", "shop-relay", *readme_acl(namespace, "pw"))
    url = f"redis://shop-relay:pw@127.0.0.1:{private_redis.port}/0"
    ran: list[Any] = []

    def job(sender: Any, n: int, **kwargs: Any) -> None:
        ran.append(n)

    sig = Signal(name="acl.job")
    sig.connect(job, scope="once", dispatch_uid="acl.job", weak=False)
    # A record of a process long gone, which the first heartbeat forgets (HDEL).
    old = encode_heartbeat(
        frame_prefix("gone:1:aa"), 1, time.time() - 2 * PRESENCE_RETENTION, OLD_RECORD, None
    )
    admin.hset(presence_key(namespace), "gone:1:aa#1", old)
    bridge = Relay(
        url, namespace=namespace, durable=True, worker_id="w1", once_lease=0.5, heartbeat=0.1
    )
    bridge.register(sig)
    with bridge:
        assert [p.worker_id for p in bridge.peers()] == ["w1"]
        sig.send(None, n=1)  # its own listener claims it
        deadline = time.monotonic() + 10
        while not ran and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(1.0)  # a lease check, a reap and heartbeats go by
        stats = bridge.stats()
        beats = bridge._beats
    assert [p.state for p in bridge.peers(include_gone=True)] == ["stopped"]
    bridge.close()
    assert beats >= 5
    assert admin.hexists(presence_key(namespace), "gone:1:aa#1") == 0
    assert ran == [1]
    assert (stats["once_errors"], stats["listener_errors"], stats["publish_errors"]) == (0, 0, 0)
    assert admin.xlen(f"relay:{namespace}:log") == 1
    # Another namespace is out of reach.
    user = redis.Redis.from_url(url)
    for command in (
        lambda: user.publish(f"relay:{namespace}x:acl.job", b"x"),
        lambda: user.xadd(f"relay:{namespace}x:log", {"f": b"x"}),
        lambda: user.set(f"relay:{namespace}x:once:leases", b"x"),
    ):
        with pytest.raises(redis.exceptions.NoPermissionError):
            command()
    user.close()
    admin.close()
