"""
Presence: what every bridge tells the others of its namespace about itself.

A running bridge announces itself, then heartbeats every ``heartbeat``
seconds: who it is (origin, host, pid, ``worker_id``, relay version, start
time), the signals it sends and hears, its ``stats()`` counters and, per
signal, what it sent, received and fired and how late messages reached it.

A heartbeat is a wire frame (``relay.wire``) with one message of the reserved
signal ``relay.presence``, signed like every other frame of the namespace. It
is not published on a signal's channel: the broker keeps the last one of each
process under the namespace's presence key (``relay.transport.base.Presence``),
so a process that starts later, or the ``relay workers`` command, sees every
peer at once. Heartbeats are therefore never fired as signals, never numbered
with a signal's messages and never counted as gaps.

This module is pure: it builds and reads heartbeats, and keeps the per-signal
meters that they carry. The bridge core sends them (``relay.core``).
"""

from __future__ import annotations

import bisect
import math
import os
import socket
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from relay import wire
from relay._version import __version__

__all__ = [
    "GONE_AFTER",
    "LATENCY_BUCKETS",
    "PRESENCE_SIGNAL",
    "WORKER_COUNTERS",
    "Meters",
    "Peer",
    "SignalMeter",
    "SignalStats",
    "decode_peer",
    "encode_heartbeat",
    "latency_quantile",
    "presence_key",
]

#: The reserved signal name of heartbeat messages.
PRESENCE_SIGNAL: Final = "relay.presence"
#: Heartbeats a peer may miss before it is shown as gone.
GONE_AFTER: Final = 3
#: The schema of a heartbeat's keyword arguments (field ``"v"``).
PRESENCE_VERSION: Final = 1
#: Upper bounds (seconds) of the delivery-latency histogram; a last bucket
#: takes the rest. Prometheus's defaults, with a finer start for loopback.
LATENCY_BUCKETS: Final = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
_BUCKET_COUNT: Final = len(LATENCY_BUCKETS) + 1
#: SignalMeter.observe's loop in C (relay._speedups), when it is in use.
_c_latency_counts = wire._c_latency_counts
#: The ``stats()`` counters that ``relay workers`` and the dashboard show per worker, in order.
WORKER_COUNTERS: Final = (
    "published",
    "received",
    "fired",
    "gaps",
    "missed",
    "replayed",
    "dropped",
    "rejected",
    "receiver_errors",
    "duplicates",
)

State = Literal["alive", "gone", "stopped"]


def presence_key(namespace: str) -> str:
    """Where the broker keeps the last heartbeat of every process of ``namespace``."""
    return f"relay:{namespace}:presence"


class SignalMeter:
    """
    What one bridge counts of one signal as it receives it: messages received
    live, receiver calls fired and failed, and a histogram of delivery latency
    (receipt time minus ``sent_at``, by two clocks) over ``LATENCY_BUCKETS``.

    Only the listener writes it, so it takes no lock; readers may see a count
    a message behind.
    """

    __slots__ = ("errors", "fired", "latency", "latency_sum", "received")

    def __init__(self) -> None:
        self.received = 0
        self.fired = 0
        self.errors = 0
        self.latency = [0] * _BUCKET_COUNT
        self.latency_sum = 0.0

    def observe(self, now: float, messages: Iterable[wire.Message]) -> None:
        """Count ``messages`` received at ``now`` (``time.time()``)."""
        counts = self.latency
        if _c_latency_counts is not None and type(messages) is list:
            counted = _c_latency_counts(counts, LATENCY_BUCKETS, now, messages)
            if counted is not None:
                self.received += counted[0]
                self.latency_sum += counted[1]
                return
        bucket = bisect.bisect_left
        total = 0.0
        received = 0
        for message in messages:
            delay = now - message.sent_at
            # A negative delay (the sender's clock is ahead of ours) lands in
            # the first bucket; it is taken as 0 in the sum.
            counts[bucket(LATENCY_BUCKETS, delay)] += 1
            if delay > 0.0:
                total += delay
            received += 1
        self.received += received
        self.latency_sum += total


class Meters(dict[str, SignalMeter]):
    """The ``SignalMeter`` of every signal a bridge hears, by name, made when first asked for."""

    def __missing__(self, name: str) -> SignalMeter:
        return self.setdefault(name, SignalMeter())


@dataclass(frozen=True, slots=True)
class SignalStats:
    """
    One peer's counts of one signal, since it started.

    ``sent`` messages it numbered (sent, queued or dropped); ``received``
    messages of other processes it accepted live (not duplicates, not
    replays); ``fired`` receiver calls
    for them and ``errors`` the calls that raised; ``latency`` the histogram
    of delivery latency, one count per bucket of ``LATENCY_BUCKETS`` and a
    last one above them, and ``latency_sum`` the seconds they add up to.
    """

    sent: int = 0
    received: int = 0
    fired: int = 0
    errors: int = 0
    latency: tuple[int, ...] = (0,) * _BUCKET_COUNT
    latency_sum: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "received": self.received,
            "fired": self.fired,
            "errors": self.errors,
            "latency": list(self.latency),
            "latency_sum": self.latency_sum,
        }


@dataclass(frozen=True, slots=True)
class Peer:
    """
    A process of the namespace, as its last heartbeat describes it.

    Fields:

        id
            Unique to the bridge: its process's origin id and ``#`` and the
            bridge's number in that process (``host:pid:random#1``).

        origin
            Its origin id (``host:pid:random``), unique to the process.

        namespace, host, pid, worker_id, version
            Where it runs and what it is: ``worker_id`` as given to the bridge
            (or None), ``version`` relay's version.

        kind
            ``"Relay"`` or ``"AsyncRelay"``.

        sends, hears
            The names of the signals it has registered (and so may send), and
            of those it listens to.

        started_at, last_seen
            ``time.time()`` in the peer when its bridge started and when it
            sent this heartbeat.

        heartbeat
            Its heartbeat interval in seconds.

        state
            ``"alive"``; ``"gone"`` once it has missed ``GONE_AFTER``
            heartbeats (it died, hangs, or lost the broker); ``"stopped"`` if
            its bridge was stopped.

        stats
            Its ``stats()`` counters.

        signals
            Its ``SignalStats`` per signal name.
    """

    id: str
    origin: str
    namespace: str
    host: str
    pid: int
    worker_id: str | None
    version: str
    kind: str
    sends: tuple[str, ...]
    hears: tuple[str, ...]
    started_at: float
    last_seen: float
    heartbeat: float
    state: State
    stats: Mapping[str, int] = field(default_factory=dict)
    signals: Mapping[str, SignalStats] = field(default_factory=dict)

    @property
    def alive(self) -> bool:
        return self.state == "alive"

    def as_dict(self) -> dict[str, Any]:
        """The peer as plain JSON-friendly values."""
        return {
            "id": self.id,
            "origin": self.origin,
            "namespace": self.namespace,
            "host": self.host,
            "pid": self.pid,
            "worker_id": self.worker_id,
            "version": self.version,
            "kind": self.kind,
            "sends": list(self.sends),
            "hears": list(self.hears),
            "started_at": self.started_at,
            "last_seen": self.last_seen,
            "heartbeat": self.heartbeat,
            "state": self.state,
            "stats": dict(self.stats),
            "signals": {name: s.as_dict() for name, s in self.signals.items()},
        }


def member(origin: str, bridge: int) -> str:
    """The id of bridge number ``bridge`` of the process ``origin`` (see ``Peer.id``)."""
    return f"{origin}#{bridge}"


def heartbeat_kwargs(
    *,
    bridge: int,
    namespace: str,
    kind: str,
    worker_id: str | None,
    sends: Sequence[str],
    hears: Sequence[str],
    started_at: float,
    heartbeat: float,
    stopped: bool,
    stats: Mapping[str, int],
    signals: Mapping[str, SignalStats],
) -> dict[str, Any]:
    """The keyword arguments of a heartbeat message (schema ``PRESENCE_VERSION``)."""
    return {
        "v": PRESENCE_VERSION,
        "bridge": bridge,
        "namespace": namespace,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "worker_id": worker_id,
        "version": __version__,
        "kind": kind,
        "sends": list(sends),
        "hears": list(hears),
        "started_at": started_at,
        "heartbeat": heartbeat,
        "state": "stopped" if stopped else "running",
        "stats": dict(stats),
        "signals": {
            name: [s.sent, s.received, s.fired, s.errors, list(s.latency), s.latency_sum]
            for name, s in signals.items()
        },
    }


def encode_heartbeat(
    prefix: bytes, number: int, sent_at: float, kwargs: Mapping[str, Any], key: bytes | None
) -> bytes:
    """
    A heartbeat frame: one message of ``PRESENCE_SIGNAL`` carrying ``kwargs``
    (see ``heartbeat_kwargs``), numbered ``number``, from the origin whose
    ``wire.frame_prefix()`` is ``prefix``, signed with ``key`` if given.
    """
    from relay.origin import new_message_id

    body = wire.MessagePacker(PRESENCE_SIGNAL).body(None, sent_at, wire.encode_kwargs(kwargs))
    message = wire.number_message(new_message_id(), number, body)
    return wire.build_frame(prefix, [message], key=key)


def decode_peer(
    data: bytes,
    *,
    now: float,
    keys: Sequence[bytes] | None = None,
    clock_skew: float = 1.0,
    max_size: int = wire.DEFAULT_MAX_MESSAGE_SIZE,
) -> Peer:
    """
    The ``Peer`` a heartbeat frame describes, judged alive or gone at ``now``
    (``time.time()``): gone once ``GONE_AFTER`` heartbeats are overdue, give
    or take ``clock_skew`` seconds between the two clocks.

    Raises ``wire.WireError`` for anything that is not a well-formed
    heartbeat, unsigned or badly signed where ``keys`` are given.
    """
    frame = wire.read_frame(data, max_size=max_size, keys=keys)
    if len(frame.messages) != 1 or frame.messages[0].signal != PRESENCE_SIGNAL:
        raise wire.WireError("not a heartbeat")
    message = frame.messages[0]
    fields = message.kwargs
    if fields.get("v") != PRESENCE_VERSION:
        raise wire.WireError(f"unknown heartbeat version {fields.get('v')!r}")
    try:
        heartbeat = _number(fields["heartbeat"])
        state: State
        if fields["state"] == "stopped":
            state = "stopped"
        elif now - message.sent_at > GONE_AFTER * heartbeat + clock_skew:
            state = "gone"
        else:
            state = "alive"
        return Peer(
            id=member(frame.origin, _integer(fields["bridge"])),
            origin=frame.origin,
            namespace=_text(fields["namespace"]),
            host=_text(fields["host"]),
            pid=_integer(fields["pid"]),
            worker_id=None if fields["worker_id"] is None else _text(fields["worker_id"]),
            version=_text(fields["version"]),
            kind=_text(fields["kind"]),
            sends=tuple(_text(name) for name in fields["sends"]),
            hears=tuple(_text(name) for name in fields["hears"]),
            started_at=_number(fields["started_at"]),
            last_seen=message.sent_at,
            heartbeat=heartbeat,
            state=state,
            stats={_text(k): _integer(v) for k, v in fields["stats"].items()},
            signals={_text(k): _signal_stats(v) for k, v in fields["signals"].items()},
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise wire.WireError(f"bad heartbeat: {exc!r}") from None


def _text(value: Any) -> str:
    if type(value) is not str:
        raise TypeError(f"expected a str, not {type(value).__name__}")
    return value


def _integer(value: Any) -> int:
    if type(value) is not int:
        raise TypeError(f"expected an int, not {type(value).__name__}")
    return value


def _number(value: Any) -> float:
    if type(value) not in (int, float) or not math.isfinite(value):
        raise TypeError(f"expected a finite number, not {value!r}")
    return float(value)


def _signal_stats(value: Any) -> SignalStats:
    sent, received, fired, errors, latency, latency_sum = value
    counts = tuple(_integer(count) for count in latency)
    if len(counts) != _BUCKET_COUNT:
        raise ValueError(f"a latency histogram of {len(counts)} buckets")
    return SignalStats(
        _integer(sent),
        _integer(received),
        _integer(fired),
        _integer(errors),
        counts,
        _number(latency_sum),
    )


def latency_quantile(counts: Sequence[int], quantile: float) -> float | None:
    """
    The ``quantile`` (0 to 1) of a latency histogram over ``LATENCY_BUCKETS``,
    interpolated linearly inside its bucket as Prometheus's
    ``histogram_quantile`` does; None for an empty histogram. A quantile in
    the last, open bucket is given as the highest bound.
    """
    total = sum(counts)
    if total == 0:
        return None
    rank = quantile * total
    seen = 0
    for index, count in enumerate(counts):
        if count and seen + count >= rank:
            if index >= len(LATENCY_BUCKETS):
                return LATENCY_BUCKETS[-1]
            lower = LATENCY_BUCKETS[index - 1] if index else 0.0
            upper = LATENCY_BUCKETS[index]
            return lower + (upper - lower) * (rank - seen) / count
        seen += count
    return LATENCY_BUCKETS[-1]
