"""
Failover benchmark: how soon delivery resumes after Sentinel and Redis Cluster
failovers, and what was lost, with a real producer process and real servers.

How to run (from the repository root)::

    .venv/bin/python benchmarks/failover.py            # every fault, both modes
    .venv/bin/python benchmarks/failover.py --rounds 3 # medians of 3 runs each

Each run starts its own topology (``relay.testing.RedisSentinels``: a master, a
replica and 3 sentinels; ``relay.testing.RedisCluster``: 3 primaries and 3
replicas), a listening ``Relay`` in this process and a producer process
(``benchmarks/fault_worker.py producer``) sending ``n = 1, 2, ...`` at 1,000
messages/s. About 1.5 s in, the fault: ``SENTINEL FAILOVER``, SIGKILL of the
Sentinel master, ``CLUSTER FAILOVER`` of the signal's shard, SIGKILL of its
primary, or a migration of its slot. The moment the topology helper returns is
when the new primary is in place. Measured:

- *resumed*: from then to the first message fired after it (0 when delivery
  never stopped);
- *longest pause*: the longest time between two fires around the fault;
- lost, duplicated and reported (messages covered by ``relay.gap``), after the
  producer sent 20 final messages once the listener was back, so that a loss
  at the end is revealed.

Claims: durable mode loses and duplicates nothing; pub/sub mode reports every
loss and duplicates nothing; delivery resumes within 2 s of the new primary
being in place. Exit code 0 if every claim holds.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from relay import Relay, Signal, gap, reconnected  # noqa: E402
from relay.core import channel_for  # noqa: E402
from relay.testing import RedisCluster, RedisSentinels  # noqa: E402

WORKER = os.path.join(HERE, "fault_worker.py")
SIGNAL = "failover.n"
COUNT, RATE, FINAL = 5000, 1000, 20
LIMIT = 2.0


class Fast:
    def compute(self, failures: int) -> float:
        return 0.05


def wait_until(predicate: Callable[[], bool], timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError("condition not reached")
        time.sleep(0.01)


def run(topology: str, fault: str, durable: bool) -> dict[str, Any]:
    namespace = f"fo{os.getpid()}{int(time.time() * 1000) % 100000}"
    fires: list[tuple[float, int]] = []
    reported: list[tuple[int, int]] = []
    reconnects = 0
    lock = threading.Lock()

    def fire(sender: Any, n: int, **kwargs: Any) -> None:
        with lock:
            fires.append((time.monotonic(), n))

    def on_gap(sender: Any, first_missing: int, count: int, **kwargs: Any) -> None:
        reported.append((first_missing, count))

    def on_reconnected(sender: Any, **kwargs: Any) -> None:
        nonlocal reconnects
        reconnects += 1

    made: Any = RedisSentinels() if topology == "sentinel" else RedisCluster()
    with made.start() as servers:
        sig = Signal(name=SIGNAL)
        sig.connect(fire, weak=False)
        bridge = Relay(servers.url, namespace=namespace, durable=durable, backoff=Fast())
        bridge.register(sig)
        gap.connect(on_gap, weak=False)
        reconnected.connect(on_reconnected, weak=False)
        try:
            with bridge:
                args = [
                    sys.executable, WORKER, "producer", "--url", servers.url,
                    "--namespace", namespace, "--signal", SIGNAL, "--count", str(COUNT),
                    "--rate", str(RATE), "--final", str(FINAL),
                    "--max-queue", str(COUNT + FINAL + 10),
                ]  # fmt: skip
                if durable:
                    args.append("--durable")
                producer = subprocess.Popen(
                    args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
                )
                assert producer.stdout is not None and producer.stdin is not None
                producer.stdout.readline()
                wait_until(lambda: len(fires) >= 1500)
                fault_at = time.monotonic()
                if topology == "sentinel":
                    (servers.failover if fault == "failover" else servers.kill_master)()
                else:
                    channel = channel_for(namespace, SIGNAL, sharded=True)
                    owner = servers.primary_for(channel)
                    if fault == "failover":
                        servers.failover(servers.replicas_of(owner)[0])
                    elif fault == "kill":
                        servers.kill(owner)
                        servers.wait_ok()
                    else:
                        target = next(p for p in servers.primaries if p is not owner)
                        servers.migrate_slot(servers.slot_for(channel), target)
                in_place = time.monotonic()
                wait_until(lambda: producer.stdout.readline().startswith("SENT"))  # type: ignore[union-attr]
                if reconnects == 0:
                    time.sleep(1.0)  # a graceful move may need no reconnect
                producer.stdin.write("go\n")
                producer.stdin.flush()
                out, _ = producer.communicate(timeout=120)
                report = json.loads(out.strip().splitlines()[-1])
                sent = report["sent"]
                wait_until(lambda: len({n for _, n in fires}) + sum(c for _, c in reported) >= sent)
                stats = bridge.stats()
        finally:
            gap.disconnect(on_gap)
            reconnected.disconnect(on_reconnected)
            bridge.close()
    times = sorted(t for t, _ in fires)
    after = [t for t in times if t >= in_place]
    around = [t for t in times if fault_at - 1.0 <= t <= in_place + 5.0]
    pauses = [b - a for a, b in itertools.pairwise(around)]
    fired = Counter(n for _, n in fires)
    lost = set(range(1, sent + 1)) - set(fired)
    covered: set[int] = set()
    for first, count in reported:
        covered |= set(range(first, first + count))
    return {
        "topology": topology,
        "fault": fault,
        "mode": "durable" if durable else "pub/sub",
        "sent": sent,
        "fired": sum(fired.values()),
        "lost": len(lost),
        "duplicated": sum(c - 1 for c in fired.values()),
        "reported": len(covered),
        "reported_is_lost": covered == lost,
        "replayed": stats["replayed"],
        "reconnects": stats["reconnects"],
        "fault_seconds": in_place - fault_at,
        "resumed": (after[0] - in_place) if after else float("inf"),
        "longest_pause": max(pauses, default=0.0),
        "dropped": report["stats"]["dropped"],
    }


def verdict(row: dict[str, Any]) -> bool:
    if row["duplicated"] or row["dropped"] or row["resumed"] > LIMIT:
        return False
    if row["mode"] == "durable":
        return row["lost"] == 0 and row["reported"] == 0
    return bool(row["reported_is_lost"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--json", default="")
    args = parser.parse_args(argv)
    cases = [
        ("sentinel", "failover"),
        ("sentinel", "kill"),
        ("cluster", "failover"),
        ("cluster", "kill"),
        ("cluster", "migrate"),
    ]
    rows: list[dict[str, Any]] = []
    ok = True
    print(
        "| topology | fault | mode | sent | fired | lost | dup | reported | replayed "
        "| new primary after | resumed after it | longest pause | claim |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for topology, fault in cases:
        for durable in (True, False):
            runs = [run(topology, fault, durable) for _ in range(args.rounds)]
            passed = all(verdict(r) for r in runs)
            ok = ok and passed
            row = runs[-1]
            med = {
                k: statistics.median(r[k] for r in runs)
                for k in ("resumed", "longest_pause", "fault_seconds")
            }
            rows.extend(runs)
            print(
                f"| {topology} | {fault} | {row['mode']} | {row['sent']:,} | {row['fired']:,} "
                f"| {row['lost']:,} | {row['duplicated']} | {row['reported']:,} "
                f"| {row['replayed']:,} | {med['fault_seconds']:.2f} s | {med['resumed']:.2f} s "
                f"| {med['longest_pause']:.2f} s | {'PASS' if passed else 'FAIL'} |",
                flush=True,
            )
    if args.json:
        with open(args.json, "w") as out:
            json.dump(rows, out, indent=1)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
