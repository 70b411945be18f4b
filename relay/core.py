"""
The I/O-free core of a bridge: what the threaded ``relay.Relay`` and the
asyncio ``relay.AsyncRelay`` share.

It registers signals and their outboxes, numbers and frames outgoing
messages, accepts incoming frames (signatures, windows, gaps, dedup), and
plans the work that needs the broker: publishing with retries, reconnecting,
durable catch-up and ``scope="once"`` leases. That work is written as
generators of typed operations (``relay.ops``), which each driver performs its
own way, with threads or with asyncio, sending the results back in.
"""

from __future__ import annotations

import contextlib
import contextvars
import heapq
import itertools
import logging
import math
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Coroutine, Iterable, Sequence
from typing import Any, Final, Literal, NamedTuple, TypeVar

from redis.backoff import EqualJitterBackoff

from relay import ops, origin, presence, tracing, wire
from relay.naming import class_named, sender_name
from relay.ops import Steps as _Steps
from relay.signals import Registration, Signal, once_name
from relay.transport import registry
from relay.transport.base import (
    AsyncClaims,
    AsyncDurableLog,
    AsyncPresence,
    Claims,
    DurableLog,
    Log,
    LogEntry,
    Outgoing,
    Presence,
    Resubscribed,
    TransportError,
)

__all__ = [
    "Bridge",
    "channel_for",
    "current_message",
    "disconnected",
    "gap",
    "reconnected",
    "signing_key",
]

logger = logging.getLogger("relay.bridge")

REGISTER_SCOPES: Final = ("all", "local")
STAT_NAMES: Final = (
    "published",
    "publish_errors",
    "dropped",
    "received",
    "fired",
    "duplicates",
    "rejected",
    "receiver_errors",
    "listener_errors",
    "disconnects",
    "reconnects",
    "gaps",
    "missed",
    "replayed",
    "once_skipped",
    "once_retried",
    "once_lost",
    "once_errors",
)
_CHANNEL_PREFIX: Final = "relay"
_POLL_SECONDS: Final = 0.2
_MAX_BATCH: Final = 1000
_REMOTE_CACHE_LIMIT: Final = 1024
_CHANGE_WAIT: Final = 5.0
_LOG_BATCH: Final = 500
_MAX_WATCHED: Final = 100_000
# Bytes a frame adds around its messages, besides its origin: version, array
# headers, the header map, the signature field. Origins are at most a few
# hundred bytes.
_FRAME_OVERHEAD: Final = 512
# The most a message's trace context adds to its frame's header (see relay.wire).
_TRACE_OVERHEAD: Final = 1400
_context_to_send: Final = tracing.context_to_send if tracing.ENABLED else None
_NO_SPAN: Final = contextlib.nullcontext()
#: How long the broker keeps the heartbeat of a process that stopped sending
#: them (and the presence key of a namespace nobody heartbeats on).
PRESENCE_RETENTION: Final = 3600.0
#: Every this many heartbeats a bridge forgets the records of long-gone peers.
_SWEEP_EVERY: Final = 60
#: The default largest batched frame: far below Redis's default pub/sub
#: output-buffer limits (``client-output-buffer-limit pubsub 32mb 8mb 60``).
DEFAULT_MAX_FRAME_SIZE: Final = 64 * 1024

#: Sent (locally, with the bridge as sender) when a bridge's listener loses
#: Redis. Keyword arguments: ``reason`` (text).
disconnected = Signal(name="relay.disconnected")
#: Sent (locally) when the listener is connected and subscribed again.
#: Keyword arguments: ``reason`` (why it was lost), ``downtime`` (seconds from
#: losing the connection to having it back, not counting a durable catch-up).
reconnected = Signal(name="relay.reconnected")
#: Sent (locally) when messages from another process were lost: a jump in
#: that origin's sequence numbers. Keyword arguments: ``origin``,
#: ``signal_name``, ``first_missing`` (a sequence number) and ``count``.
gap = Signal(name="relay.gap")

_T = TypeVar("_T")

_bridge_numbers = itertools.count(1)  # see Peer.id

_current_message: contextvars.ContextVar[wire.Message | None] = contextvars.ContextVar(
    "relay_current_message", default=None
)


def current_message() -> wire.Message | None:
    """
    The message being handled, inside a receiver fired for a remote send.

    It has ``id``, ``origin``, ``seq``, ``signal``, ``sender`` (the sender's
    name), ``sent_at`` (Unix time), ``kwargs`` and ``trace`` (the sender's W3C
    trace context, or None; see ``relay.tracing``). During a local send,
    returns None.
    """
    return _current_message.get()


# Every bridge of this process that is not closed, to keep names unambiguous.
_open_bridges: weakref.WeakSet[Bridge] = weakref.WeakSet()
_open_bridges_lock = threading.Lock()


# Bridges of this process still publishing what was queued when they stopped,
# and the event each sets when done, per namespace. Another bridge of the
# namespace, publishing the same signals with the same numbering after them,
# waits for them, so that a handover never reorders a channel.
_draining: dict[str, list[tuple[object, threading.Event]]] = {}


def _renew_lock_after_fork() -> None:
    global _open_bridges_lock
    _open_bridges_lock = threading.Lock()
    _draining.clear()


def start_draining(bridge: Bridge) -> threading.Event:
    """Say that ``bridge`` stopped and publishes what it has queued; set the event when done."""
    done = threading.Event()
    with _open_bridges_lock:
        _draining.setdefault(bridge.namespace, []).append((bridge, done))
    return done


def stop_draining(bridge: Bridge, done: threading.Event) -> None:
    done.set()
    with _open_bridges_lock:
        entries = _draining.get(bridge.namespace, [])
        if (bridge, done) in entries:
            entries.remove((bridge, done))


def predecessors(bridge: Bridge) -> list[threading.Event]:
    """What ``bridge`` must wait for before it publishes: others of its namespace still draining."""
    entries = _draining.get(bridge.namespace)
    if not entries:
        return []
    return [done for other, done in list(entries) if other is not bridge]


origin.after_fork(_renew_lock_after_fork)


def channel_for(namespace: str, name: str, sharded: bool = False) -> str:
    """
    The pub/sub channel of signal ``name`` on ``namespace``; ``sharded`` (a
    Redis Cluster) puts the name in a hash tag, so that the signal's channel
    and keys share one slot.
    """
    if sharded:
        return f"{_CHANNEL_PREFIX}:{namespace}:{{{name}}}"
    return f"{_CHANNEL_PREFIX}:{namespace}:{name}"


class _LogRef(NamedTuple):
    """A durable log, and the key of this worker's cursor in it (None without ``worker_id``)."""

    log: Log
    cursor: str | None


def signing_key(namespace: str, secret: str | bytes) -> bytes:
    """The key that signs the frames of ``namespace`` with ``secret``."""
    if not secret:
        raise ValueError("secret must not be empty")
    raw = secret.encode() if isinstance(secret, str) else secret
    return wire.derive_key(namespace.encode() + b"\0" + raw)


def _check_namespace(namespace: object) -> str:
    if not isinstance(namespace, str) or not namespace:
        raise ValueError(f"namespace must be a non-empty string, not {namespace!r}")
    if ":" in namespace or any(c.isspace() for c in namespace):
        raise ValueError(
            f"namespace {namespace!r} may not contain ':' or whitespace; "
            "use something like 'shop' or 'shop-staging'"
        )
    return namespace


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not name or any(c.isspace() for c in name):
        raise ValueError(
            f"signal name must be a non-empty string without whitespace, not {name!r}; "
            "use a dotted name such as 'shop.order_placed'"
        )
    return name


class _Stats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(STAT_NAMES, 0)

    def add(self, name: str, count: int = 1) -> None:
        with self._lock:
            self._counts[name] += count

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


class _RateLimitedLog:
    """Log a warning per reason at most once every ``interval`` seconds, counting the rest."""

    def __init__(self, interval: float = 10.0) -> None:
        self.interval = interval
        self._last: dict[str, tuple[float, int]] = {}
        self._lock = threading.Lock()

    def warning(self, reason: str, message: str, *args: object) -> None:
        now = time.monotonic()
        with self._lock:
            last, suppressed = self._last.get(reason, (-self.interval, 0))
            if now - last < self.interval:
                self._last[reason] = (last, suppressed + 1)
                return
            self._last[reason] = (now, 0)
        if suppressed:
            message += f" ({suppressed} more like this since the last report)"
        logger.warning(message, *args)


# A send, encoded but not numbered yet: (outbox, message id, wire.MessagePacker.body(),
# the trace context of the span current at the send or None).
_Prepared = tuple["_Outbox", bytes, bytes, dict[str, str] | None]
# A numbered message, ready for a frame: (outbox, packed message, message id, sequence
# number, trace context).
_Item = tuple["_Outbox", bytes, bytes, int, dict[str, str] | None]


class _Outbox:
    """What a bridge attaches to one registered signal (see ``Signal._attach``)."""

    hand_off: Callable[[_Prepared], None]

    def __init__(self, bridge: Bridge, name: str) -> None:
        self.bridge = bridge
        self.namespace = bridge.namespace
        self.name = name
        self.channel = channel_for(bridge.namespace, name, bridge._sharded)
        #: Its own durable log (sharded, durable), else None: the namespace's.
        self.log = bridge._signal_log(name)
        self.renew_origin()
        # What hand_off() calls, bound once: the driver's queue, in the common case.
        self.hand_off = bridge._hand_off_function()

    def renew_origin(self) -> None:
        self.numbering = origin.numbering((self.namespace, self.name))
        self._packer = wire.MessagePacker(self.name)

    def prepare(self, signal: Signal, sender: object, named: dict[str, Any]) -> _Prepared:
        # A str (not a subclass) or None is its own name, as sender_name() says.
        name = sender if sender is None or type(sender) is str else sender_name(sender)
        body = self._packer.encode(name, time.time(), named)
        if len(body) + _FRAME_OVERHEAD > self.bridge.max_message_size:
            raise ValueError(
                f"signal {self.name!r}: the message would take {len(body)} bytes, over the "
                f"{self.bridge.max_message_size}-byte limit; send less data (an id to look "
                "up, say) or raise Relay(max_message_size=...) in every process"
            )
        return (
            self,
            origin.new_message_id(),
            body,
            None if _context_to_send is None else _context_to_send(),
        )

    def number(self, prepared: _Prepared) -> _Item:
        """
        Give a prepared send its sequence number. Callers number messages in
        the order they queue or publish them (under their queue's lock, say),
        so that numbers follow the order of the channel.
        """
        seq = self.numbering.take()
        message = wire.number_message(prepared[1], seq, prepared[2])
        return (self, message, prepared[1], seq, prepared[3])

    async def ahand_off(self, prepared: _Prepared) -> None:
        await self.bridge._ahand_off(prepared)

    def check_scope(self, scope: str | None) -> None:
        if scope == "once":
            self.bridge._check_claims(f"signal {self.name!r}")

    def receiver_connected(self, registration: Registration) -> None:
        self.bridge._receiver_connected(self, registration)


def _frames(
    prefix: bytes, batch: list[_Item], limit: int, key: bytes | None, logged: bool
) -> list[Outgoing]:
    """
    Pack consecutive messages of one channel into as few frames as the size
    limit allows (a larger message goes alone); ``logged`` adds what the
    durable log records of each frame.
    """
    frames: list[Outgoing] = []
    run: list[bytes] = []
    ids: list[bytes] = []
    traces: list[tuple[int, str, str | None]] = []
    run_outbox: _Outbox | None = None
    run_size = _FRAME_OVERHEAD
    last_seq = 0
    origin_id = origin.origin_id() if logged else ""

    def close_run(outbox: _Outbox) -> None:
        data = wire.build_frame(
            prefix, run, key=key, started_at=outbox.numbering.started_at, traces=traces
        )
        if logged:
            frames.append(
                Outgoing(
                    outbox.channel,
                    data,
                    ",".join(i.hex() for i in ids),
                    origin_id,
                    last_seq,
                    outbox.log,
                )
            )
        else:
            frames.append(Outgoing(outbox.channel, data))

    for outbox, packed, message_id, seq, context in batch:
        size = len(packed) + 1
        if context is not None:
            size += _TRACE_OVERHEAD
        if run_outbox is not None and (outbox is not run_outbox or run_size + size > limit):
            close_run(run_outbox)
            run, ids, traces, run_size = [], [], [], _FRAME_OVERHEAD
        run_outbox = outbox
        if context is not None:
            traces.append((len(run), context["traceparent"], context.get("tracestate")))
        run.append(packed)
        if logged:
            ids.append(message_id)
            last_seq = seq
        run_size += size
    if run_outbox is not None:
        close_run(run_outbox)
    return frames


class _Accepted(NamedTuple):
    """What a received frame holds that this process must act on."""

    signal: Signal
    own: list[wire.Message]  # this process's own messages (only once receivers may fire)
    fresh: list[wire.Message]  # messages of other processes seen for the first time
    gaps: list[dict[str, Any]]  # keyword arguments for the ``gap`` signal


#: What ``Bridge._accept`` returns for a frame it defers (see there).
_DEFERRED: Final = _Accepted(Signal(), [], [], [])
#: No message's sender: a frame's first message looks its receivers up.
_NO_SENDER: Final[Any] = object()


# The algorithms below that need the broker (publishing, reconnecting, durable
# catch-up, claiming) are generators of ``relay.ops`` operations, so the
# threaded and the asyncio bridge drive the same code: each performs the
# operations its own way (see ``Relay._perform`` and ``AsyncRelay._perform``)
# and sends the result back, or throws the error in.


class Bridge:
    """What the threaded ``Relay`` and ``relay.aio.AsyncRelay`` share."""

    def __init__(
        self,
        url: str | None = None,
        *,
        namespace: str,
        client: Any = None,
        transport: Any = None,
        publish: Literal["async", "sync"] = "async",
        max_queue: int = 10_000,
        queue_wait: float = 0.1,
        max_message_size: int = wire.DEFAULT_MAX_MESSAGE_SIZE,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        backoff: Any = None,
        health_check_interval: float = 5.0,
        health_check_timeout: float = 3.0,
        max_reconnect_attempts: int | None = None,
        durable: bool = False,
        retention: int = 100_000,
        retention_seconds: float | None = None,
        worker_id: str | None = None,
        secret: str | bytes | None = None,
        secrets: Sequence[str | bytes] | None = None,
        replay_window: float = 300.0,
        clock_skew: float = 1.0,
        once_ttl: float = 3600.0,
        once_lease: float = 30.0,
        heartbeat: float = 5.0,
        **redis_options: Any,
    ) -> None:
        """
        Create a bridge; it does nothing until it is started.

        Arguments:

            url
                The Redis URL, such as ``redis://127.0.0.1:6379/0``,
                ``rediss://user:secret@host:6380/0`` or ``unix:///run/redis.sock``.

            namespace
                Which processes hear each other: every channel name carries it
                (Redis pub/sub ignores database numbers). No ``:`` or spaces.

            client
                An existing redis-py client, instead of ``url``: a
                ``redis.Redis`` for ``Relay``, a ``redis.asyncio.Redis`` for
                ``AsyncRelay``.

            transport
                An object implementing ``relay.transport.Transport`` (for
                ``Relay``) or ``relay.transport.AsyncTransport`` (for
                ``AsyncRelay``), instead of ``url`` or ``client``.

            publish
                ``"async"`` (the default): a send queues the message and a
                background publisher sends it on, so a send never waits on
                the network. ``"sync"``: a send publishes before it returns
                and raises ``relay.transport.TransportError`` if Redis fails.

            max_queue
                How many messages may wait to be published. When the queue is
                full, ``Relay`` waits up to ``queue_wait`` seconds for room
                (only while Redis is reachable), then drops the oldest message,
                logs it and counts it in ``stats()["dropped"]``. With
                ``AsyncRelay``, ``await signal.asend()`` waits the same way
                without blocking the event loop; a plain ``send()`` on the
                loop's thread cannot wait and drops the oldest at once.

            queue_wait
                See ``max_queue``. 0 never waits.

            max_message_size
                The largest encoded message, in bytes (1 MiB by default). A
                larger send raises ValueError before any receiver runs.

            max_frame_size
                The largest frame the publisher packs several queued messages
                into, in bytes (64 KiB by default), so that no single payload
                comes near Redis's pub/sub output-buffer limits. A message
                larger than this goes out in a frame of its own. Never more than
                ``max_message_size``, the largest frame a receiver accepts.

            backoff
                How long to wait between reconnection attempts: any object with
                redis-py's ``compute(failures) -> seconds`` (``redis.backoff``).
                Default: ``EqualJitterBackoff(cap=5.0, base=0.05)``.

            health_check_interval
                After this many seconds without traffic, the listener sends
                Redis a PING on its connection.

            health_check_timeout
                If no reply comes within this many seconds after the PING, the
                connection is taken for dead (a half-open socket) and replaced:
                a lost connection is noticed within ``health_check_interval +
                health_check_timeout`` seconds at worst.

            max_reconnect_attempts
                Give up reconnecting after this many failed attempts in a row,
                loudly (a CRITICAL log line; the listener stops). None, the
                default, never gives up.

            durable
                Also append every message to a bounded Redis Stream of the
                namespace. After a reconnect the listener reads what it missed
                there and fires it, in order, without duplicates. Pub/sub stays
                the fast path.

            retention
                Durable mode: keep at least the last ``retention`` messages
                (the stream is trimmed approximately, by frames).

            retention_seconds
                Durable mode: also drop messages older than this.

            worker_id
                A stable name for this process (``"web-1"``), shown by
                ``peers()``, ``relay workers`` and the dashboard. In durable
                mode the listener also records what it has fired under this
                name, and a restarted process with the same ``worker_id``
                resumes from there (within the retention); without one, a
                process starts from now.

            secret
                Sign every message with HMAC-SHA256 using this secret, and
                reject messages that are unsigned, badly signed, older than
                ``replay_window`` or already seen. Every process of the
                namespace needs the secret.

            secrets
                Several secrets, for key rotation: sign with the first, accept
                any. Use instead of ``secret``.

            replay_window
                With a secret: how old (in seconds, by the sender's clock) a
                message may be to be accepted.

            clock_skew
                How far apart (seconds) the clocks of two processes may be.
                A process that hears an origin for the first time at sequence
                number n > 1 counts numbers 1 to n - 1 as lost if the origin
                numbered its first message more than ``clock_skew`` after this
                process subscribed; otherwise it takes them for messages sent
                before it listened.

            once_ttl
                How long (seconds) Redis remembers that a ``scope="once"``
                receiver has run for a message, so that it never runs twice.

            once_lease
                How long (seconds) the claim of a ``scope="once"`` receiver
                lasts while it runs; the running process renews it every third
                of that. If the process dies before the receiver finishes,
                another process with the receiver runs the message once the
                lease has ended (``stats()["once_retried"]``).

            heartbeat
                Every this many seconds (5 by default) the running bridge
                announces itself and its counters to the namespace, for
                ``peers()``, ``relay workers``, the dashboard and metrics; a
                peer that misses 3 heartbeats is shown as gone. 0 turns
                presence off. Needs a transport that keeps presence (Redis
                does); with another, presence is off and a warning says so.

            redis_options
                Passed on to redis-py's ``Redis.from_url``.
        """
        self.namespace = _check_namespace(namespace)
        if publish not in ("async", "sync"):
            raise ValueError(f"publish must be 'async' or 'sync', not {publish!r}")
        if max_queue < 1:
            raise ValueError(f"max_queue must be at least 1, not {max_queue}")
        if max_message_size < 1024:
            raise ValueError(
                f"max_message_size must be at least 1024 bytes, not {max_message_size}"
            )
        if max_frame_size < 1024:
            raise ValueError(f"max_frame_size must be at least 1024 bytes, not {max_frame_size}")
        if clock_skew < 0:
            raise ValueError(f"clock_skew must not be negative, not {clock_skew}")
        if once_lease <= 0 or once_ttl < once_lease:
            raise ValueError(
                f"once_lease must be positive and at most once_ttl, not {once_lease} "
                f"(once_ttl={once_ttl})"
            )
        if transport is None:
            if url is None and client is None:
                raise TypeError(f"{type(self).__name__} needs a Redis URL, client= or transport=")
            transport = self._make_transport(url, client, redis_options)
        elif url is not None or client is not None:
            raise TypeError("pass only one of url, client= and transport=")
        if durable and not isinstance(transport, (DurableLog, AsyncDurableLog)):
            raise TypeError(
                f"durable=True needs a transport with a durable log, and "
                f"{type(transport).__qualname__} ({transport.description}) has none; "
                "use durable=False or a broker that keeps a log (Redis)"
            )
        if max_message_size > transport.max_payload:
            raise ValueError(
                f"max_message_size={max_message_size} is over the largest payload the broker "
                f"takes ({transport.max_payload} bytes)"
            )
        self.transport = transport
        # A sharded broker (Redis Cluster): each signal's channel and keys go
        # under the hash tag {<signal name>}, and each signal has its own log.
        self._sharded = bool(getattr(transport, "sharded", False))
        if self._sharded and ("{" in self.namespace or "}" in self.namespace):
            raise ValueError(
                f"namespace {self.namespace!r} may not contain '{{' or '}}' on "
                f"{transport.description}: relay puts hash tags in the key names"
            )
        self.publish_mode = publish
        self.max_queue = max_queue
        self.queue_wait = queue_wait
        self.max_message_size = max_message_size
        # A frame is never larger than what receivers accept (max_message_size).
        self.max_frame_size = min(max_frame_size, max_message_size)
        self.backoff = backoff or EqualJitterBackoff(cap=5.0, base=0.05)
        if health_check_interval <= 0 or health_check_timeout <= 0:
            raise ValueError("health_check_interval and health_check_timeout must be positive")
        self.health_check_interval = health_check_interval
        self.health_check_timeout = health_check_timeout
        self.max_reconnect_attempts = max_reconnect_attempts
        if retention < 1:
            raise ValueError(f"retention must be at least 1, not {retention}")
        if heartbeat < 0 or not math.isfinite(heartbeat):
            raise ValueError(
                f"heartbeat must be a number of seconds, or 0 for no presence, not {heartbeat!r}"
            )
        if worker_id is not None and (not isinstance(worker_id, str) or not worker_id):
            raise ValueError(f"worker_id must be a non-empty string, not {worker_id!r}")
        self.durable = durable
        self.worker_id = worker_id
        self.retention = retention
        self.retention_seconds = retention_seconds
        self._durable_log = (
            Log(f"{_CHANNEL_PREFIX}:{self.namespace}:log", retention, retention_seconds)
            if durable
            else None
        )
        # What publish_many() is given: sharded, each frame carries its log.
        self._publish_log = None if self._sharded else self._durable_log
        if secret is not None and secrets is not None:
            raise TypeError("pass secret= or secrets=, not both")
        all_secrets = [secret] if secret is not None else list(secrets or ())
        # The namespace is part of the key: a frame signed for one namespace
        # is refused on another that shares the secret.
        self._keys = [signing_key(self.namespace, s) for s in all_secrets]
        self._key = self._keys[0] if self._keys else None
        self.replay_window = replay_window
        self.clock_skew = clock_skew
        self.once_ttl = once_ttl
        self.once_lease = once_lease

        self._signals: dict[str, Signal] = {}
        self._outboxes: dict[str, _Outbox] = {}
        self._channels: dict[str, str] = {}  # channel -> signal name
        self._stats = _Stats()
        self._log = _RateLimitedLog()
        self._lock = threading.RLock()
        self._running = False
        self._closed = False
        self._renew_frame_prefix()
        self._subscribed: set[str] = set()
        # time.time() when each channel was first subscribed in this process.
        self._subscribed_at: dict[str, float] = {}
        # Durable mode: where the log ended when each channel was subscribed
        # (what is older was sent before this process listened), and the
        # position up to which every entry of the log has been handled.
        self._since: dict[str, str] = {}
        # Per log key (one log per namespace, or per signal when sharded);
        # None until the listener has found where to resume.
        self._verified: dict[str, str] | None = None
        # worker_id: the last message fired, per log key (None: none recorded).
        self._cursor_ids: dict[str, str | None] = {}
        # scope="once": the claims this process holds (it renews their leases),
        # the claims of other processes it watches, by due time, and whether
        # it reaps leases nobody finished.
        self._leases_key = f"{_CHANNEL_PREFIX}:{self.namespace}:once:leases"
        self._held: dict[str, float] = {}
        self._watched: list[tuple[float, int, Signal, wire.Message, _OnceCall]] = []
        self._watch_order = itertools.count()
        self._reaps = False
        self._next_reap = 0.0
        self._publisher_connected = True  # False while publishing fails
        # Presence: the heartbeat interval (0: none), what they carry, and
        # when this bridge last started.
        self.heartbeat = heartbeat
        self._presence_key = presence.presence_key(self.namespace)
        self._meters = presence.Meters()
        self._started_at = 0.0
        self._beats = 0
        self._number = next(_bridge_numbers)
        self._setup()
        self._remove_fork_hook = origin.after_fork(self._after_fork)
        with _open_bridges_lock:
            _open_bridges.add(self)

    def _setup(self) -> None:
        """Create what the concrete bridge needs besides the shared state."""

    def _renew_frame_prefix(self) -> None:
        self._frame_prefix = wire.frame_prefix(origin.origin_id())
        # What follows the array header in every frame of this origin, with or without a header.
        self._origin_mark = self._frame_prefix[1:]

    #: True for a bridge that drives an ``AsyncTransport``.
    _asynchronous = False

    def _make_transport(self, url: str | None, client: Any, options: dict[str, Any]) -> Any:
        return registry.transport_for(url, client, asynchronous=self._asynchronous, options=options)

    def _check_claims(self, what: str) -> None:
        """Raise unless the transport can claim (``scope="once"`` receivers need it)."""
        if not isinstance(self.transport, (Claims, AsyncClaims)):
            raise TypeError(
                f"{what}: scope='once' needs a transport with claims, and "
                f"{type(self.transport).__qualname__} ({self.transport.description}) has none; "
                "use a scope of 'all' or 'local', or a broker that can claim (Redis)"
            )

    def __repr__(self) -> str:
        state = "running" if self._running else "stopped"
        return (
            f"<{type(self).__name__} namespace={self.namespace!r} "
            f"{self.transport.description} {state} signals={len(self._signals)}>"
        )

    # -- registration -------------------------------------------------------

    def register(
        self, signal: Signal, name: str | None = None, *, scope: Literal["all", "local"] = "all"
    ) -> Signal:
        """
        Relay ``signal`` through this bridge.

        Arguments:

            signal
                The ``Signal`` to relay.

            name
                Its name across processes. Defaults to ``signal.name``; needed
                for a signal created without one (one from another library,
                say). Every process must use the same name for the same signal.

            scope
                The default scope of the signal's receivers connected with
                ``scope=None``: ``"all"`` (fire for sends from every process)
                or ``"local"`` (only for sends made in their own process).

        Returns the signal. Registering the same signal under the same name
        again does nothing.
        """
        if not isinstance(signal, Signal):
            raise TypeError(f"register() takes a relay Signal, not {type(signal).__name__}")
        if scope not in REGISTER_SCOPES:
            raise ValueError(f"scope must be 'all' or 'local', not {scope!r}")
        if name is None:
            if signal.name is None:
                raise ValueError(
                    f"{signal!r} has no name; create it with Signal(name='app.signal') or "
                    "register it with register(signal, name='app.signal')"
                )
            name = signal.name
        elif signal.name is not None and signal.name != name:
            raise ValueError(
                f"signal {signal.name!r} cannot be registered as {name!r}: it already has a "
                "name; register it under that name"
            )
        name = _check_name(name)
        if self._sharded and ("{" in name or "}" in name):
            raise ValueError(
                f"signal name {name!r} may not contain '{{' or '}}' on "
                f"{self.transport.description}: relay puts each signal's name in a hash tag"
            )
        with self._lock:
            self._check_open()
            if self._signals.get(name) is signal:
                return signal
            for other_name, other in self._signals.items():
                if other is signal:
                    raise ValueError(
                        f"this signal is already registered as {other_name!r}; a signal has "
                        "one name"
                    )
            with _open_bridges_lock:
                others = [b for b in _open_bridges if b.namespace == self.namespace]
            for bridge in others:
                existing = bridge._signals.get(name)
                if existing is not None and existing is not signal:
                    raise ValueError(
                        f"signal {name!r} is already registered to a different Signal object "
                        f"on namespace {self.namespace!r}; register each name once"
                    )
            if _has_once_receivers(signal):
                self._check_claims(f"signal {name!r} has scope='once' receivers")
            if signal.default_scope != scope and signal._outboxes:
                raise ValueError(
                    f"signal {name!r} is already registered with scope="
                    f"{signal.default_scope!r}; register it with one default scope"
                )
            signal.default_scope = scope
            outbox = _Outbox(self, name)
            self._signals[name] = signal
            self._outboxes[name] = outbox
            self._channels[outbox.channel] = name
            signal._attach(outbox)
            if self._running and _hears_remote(signal):
                self._subscribe(outbox.channel)
        return signal

    def _receiver_connected(self, outbox: _Outbox, registration: Registration) -> None:
        signal = self._signals.get(outbox.name)
        if signal is None or (registration.scope or signal.default_scope) == "local":
            return
        if registration.scope == "once":
            self._reaps = True
        with self._lock:
            if self._running and outbox.channel not in self._subscribed:
                self._subscribe(outbox.channel)

    def _subscribe(self, channel: str) -> None:
        """Have the listener subscribe to ``channel`` (the caller holds the lock)."""
        raise NotImplementedError

    def _hand_off(self, prepared: _Prepared) -> None:
        raise NotImplementedError

    def _hand_off_function(self) -> Callable[[_Prepared], None]:
        """What an outbox's ``hand_off`` calls: ``_hand_off`` unless a driver has quicker."""
        return self._hand_off

    async def _ahand_off(self, prepared: _Prepared) -> None:
        raise NotImplementedError

    def _listening_channels(self) -> set[str]:
        # Only signals with receivers that remote sends can fire are heard: a
        # process that only sends never reads its own messages back.
        return {
            outbox.channel
            for name, outbox in self._outboxes.items()
            if _hears_remote(self._signals[name])
        }

    def _attach_all(self) -> None:
        for name, outbox in self._outboxes.items():
            self._signals[name]._attach(outbox)

    def _detach_all(self) -> None:
        for name, outbox in self._outboxes.items():
            self._signals[name]._detach(outbox)

    def _stop_publishing(self) -> threading.Event:
        """
        Mark the bridge stopped and detach it from its signals; the caller
        holds ``_lock``, and passes the returned draining mark to
        ``stop_draining`` once what is queued here is published. Another
        bridge publishing these signals from now on waits for that mark
        first. ``running`` turns False only once the bridge is detached, so
        that a send made after it has goes to the bridge that takes over, not
        into this one's queue.
        """
        draining = start_draining(self)
        try:
            self._detach_all()
        except BaseException:
            stop_draining(self, draining)
            raise
        finally:
            self._running = False
        return draining

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"this bridge is closed; create a new {type(self).__name__}")

    def _forget(self) -> None:
        """Mark the bridge closed and free its signal names (the caller stops it first)."""
        with self._lock:
            self._detach_all()
            self._closed = True
        with _open_bridges_lock:
            _open_bridges.discard(self)
        self._remove_fork_hook()

    def stats(self) -> dict[str, int]:
        """
        Counters since the bridge was created:

        ``published`` messages handed to Redis; ``publish_errors`` failed
        publish attempts; ``dropped`` messages never published (queue full,
        stopped while Redis was away); ``received`` messages from other
        processes, live; ``fired`` receiver calls for them; ``duplicates``
        messages received again and ignored (also live copies of messages
        already fired from the durable log); ``rejected`` frames or messages
        that did not decode, were malformed, unsigned, badly signed, outside
        the replay window or older than the anti-replay window;
        ``receiver_errors`` exceptions raised by receivers fired for remote
        sends; ``listener_errors`` unexpected errors the listener survived;
        ``disconnects`` and ``reconnects`` of the listener, also those the
        Redis client hid; ``gaps`` losses in another process's sequence
        numbers and ``missed`` the messages they lost; ``replayed`` messages
        fired from the durable log; ``once_skipped`` ``scope="once"`` runs
        another process claimed first, ``once_retried`` runs taken over here
        after their process died, ``once_lost`` runs whose process died with
        nobody left to take them over, and ``once_errors`` claims that could
        not be made or marked done.
        """
        return self._stats.snapshot()

    @property
    def running(self) -> bool:
        """
        True between start and stop. Once it reads True, sends of the
        registered signals are relayed (by this bridge, unless another
        bridge of the namespace in this process was attached first); once it
        reads False again, this bridge takes no more of them.
        """
        return self._running

    # -- handling messages (shared) ------------------------------------------

    def _accept(
        self, channel: str, data: bytes, replay: bool, defer: bool = False
    ) -> _Accepted | None:
        """
        Decode and check a frame; sort its messages into own and fresh ones.

        ``replay`` is True for a frame read from the durable log. With
        ``defer``, a frame that reveals a loss is recorded nowhere and
        ``_DEFERRED`` is returned, so that the missing messages can be
        recovered from the log first.
        """
        name = self._channels.get(channel)
        if name is None:
            return None
        signal = self._signals[name]
        own = data.startswith(self._origin_mark, 1)
        if own and not _has_once_receivers(signal):
            return None  # our own send coming back
        try:
            frame = wire.read_frame(data, max_size=self.max_message_size, keys=self._keys or None)
        except wire.WireError as exc:
            self._reject(channel, str(exc))
            return None
        messages = frame.messages
        if not messages:
            return None
        if self._keys and not replay:
            now = time.time()
            window = self.replay_window
            if frame.signal != name or any(abs(now - m.sent_at) > window for m in messages):
                messages = self._checked(channel, name, messages, now)
        elif frame.signal != name:
            messages = self._checked(channel, name, messages, None)
        if not messages:
            return None
        if own:
            return _Accepted(signal, messages, [], [])
        started_at = frame.started_at
        verdict = origin.accepted.observe(
            (self.namespace, frame.origin, name),
            frame.seqs if messages is frame.messages else [m.seq for m in messages],
            earlier_missing=started_at is not None
            and started_at > self._subscribed_at.get(channel, started_at) + self.clock_skew,
            settled=not replay,
            defer_losses=defer,
        )
        if verdict.deferred:
            return _DEFERRED
        if not replay:
            self._stats.add("received", len(messages))
            if verdict.duplicates:
                self._stats.add("duplicates", verdict.duplicates)
            if verdict.stale:
                self._stats.add("rejected", verdict.stale)
                self._log.warning(
                    "reject:stale",
                    "relay rejected %d messages on %s: older than the anti-replay window "
                    "(a replay, or a copy delivered very late)",
                    verdict.stale,
                    channel,
                )
        fresh = verdict.fresh
        accepted = messages if len(fresh) == len(messages) else [messages[i] for i in fresh]
        if not replay and accepted:
            self._meters[name].observe(time.time(), accepted)
        if verdict.lost:
            gaps = [self._gap_noted(frame.origin, name, *lost) for lost in verdict.lost]
        elif accepted:
            return _Accepted(signal, [], accepted, [])
        else:
            return None
        return _Accepted(signal, [], accepted, gaps)

    def _checked(
        self, channel: str, name: str, messages: list[wire.Message], now: float | None
    ) -> list[wire.Message]:
        """The messages that belong on the channel (and, with ``now``, in the replay window)."""
        kept = []
        for message in messages:
            if message.signal != name:
                self._reject(channel, f"message for signal {message.signal!r} on this channel")
            elif now is not None and abs(now - message.sent_at) > self.replay_window:
                self._reject(channel, f"message outside the {self.replay_window:g} s replay window")
            else:
                kept.append(message)
        return kept

    def _gap_noted(self, origin_id: str, name: str, first: int, count: int) -> dict[str, Any]:
        self._stats.add("gaps")
        self._stats.add("missed", count)
        self._log.warning(
            f"gap:{origin_id}",
            "relay lost %d messages of %r from %s (from sequence number %d)",
            count,
            name,
            origin_id,
            first,
        )
        return {
            "origin": origin_id,
            "signal_name": name,
            "first_missing": first,
            "count": count,
        }

    def _reject(self, channel: str, reason: str) -> None:
        self._stats.add("rejected")
        self._log.warning(f"reject:{reason}", "relay rejected a message on %s: %s", channel, reason)

    def _count_fired(self, name: str, fired: int, errors: int) -> None:
        meter = self._meters[name]
        meter.fired += fired
        meter.errors += errors
        if fired:
            self._stats.add("fired", fired)
        if errors:
            self._stats.add("receiver_errors", errors)

    def _call_sync(
        self, signal: Signal, message: wire.Message, calls: Iterable[_RemoteCall]
    ) -> tuple[int, int]:
        """Call synchronous receivers robustly; return (calls, errors)."""
        fired = errors = 0
        with _NO_SPAN if message.trace is None else tracing.receiving(message):
            for ref, weak, sender in calls:
                receiver = ref() if weak else ref
                if receiver is None:
                    continue
                fired += 1
                try:
                    receiver(signal=signal, sender=sender, **message.kwargs)
                except Exception as err:
                    errors += 1
                    self._log_receiver_error(receiver, message, err)
        return fired, errors

    def _coroutine_calls(
        self, signal: Signal, message: wire.Message, calls: Iterable[_RemoteCall]
    ) -> tuple[list[Callable[[], Coroutine[Any, Any, None]]], list[Exception]]:
        """Robust coroutine factories for async receivers, and the list their errors go to."""
        errors: list[Exception] = []

        def call(
            receiver: Callable[..., Any], sender: object
        ) -> Callable[[], Coroutine[Any, Any, None]]:
            async def run() -> None:
                with tracing.receiving(message):
                    try:
                        await receiver(signal=signal, sender=sender, **message.kwargs)
                    except Exception as err:
                        errors.append(err)
                        self._log_receiver_error(receiver, message, err)

            return run

        factories = []
        for ref, weak, sender in calls:
            receiver = ref() if weak else ref
            if receiver is not None:
                factories.append(call(receiver, sender))
        return factories, errors

    def _log_receiver_error(self, receiver: object, message: wire.Message, err: Exception) -> None:
        name = getattr(receiver, "__qualname__", None) or repr(receiver)
        logger.error(
            "Error calling %s for signal %r from %s (%s)",
            name,
            message.signal,
            message.origin,
            err,
            exc_info=err,
        )

    def _claim_steps(
        self, signal: Signal, message: wire.Message, calls: Iterable[_OnceCall]
    ) -> _Steps[_Won]:
        """
        Claim each ``scope="once"`` receiver; return the ones this process won.
        The claims it lost are watched (see ``_watch_steps``), in case their
        holder dies before finishing.
        """
        won = _Won([], [], [])
        for call in calls:
            claim = self._claim_key(message, call[3])
            leases = self._leases_for(message.signal)
            try:
                mine = yield ops.Call("claim", (claim, self.once_lease, leases))
            except TransportError as exc:
                self._stats.add("once_errors")
                self._log.warning(
                    "once", "relay could not claim a once receiver (%s); not running it", exc
                )
                continue
            if not mine:
                self._stats.add("once_skipped")
                self._watch(time.monotonic() + min(1.0, self.once_lease), signal, message, call)
                continue
            self._hold(claim)
            won.add(call, claim)
        return won

    def _claim_key(self, message: wire.Message, receiver_key: str) -> str:
        if self._sharded:
            return (
                f"{_CHANNEL_PREFIX}:{self.namespace}:once:{{{message.signal}}}:"
                f"{message.id}:{receiver_key}"
            )
        return f"{_CHANNEL_PREFIX}:{self.namespace}:once:{message.id}:{receiver_key}"

    def _leases_for(self, name: str) -> str:
        """The sorted set of the leases of signal ``name``'s once claims."""
        if self._sharded:
            return f"{self._leases_key}:{{{name}}}"
        return self._leases_key

    def _leases_of_claim(self, claim: str) -> str:
        """The leases ``claim`` (a ``_claim_key``) is recorded in."""
        if not self._sharded:
            return self._leases_key
        prefix = f"{_CHANNEL_PREFIX}:{self.namespace}:once:{{"
        return self._leases_for(claim[len(prefix) : claim.index("}", len(prefix))])

    def _all_leases(self) -> list[str]:
        """Every leases key this process reaps: those of the signals with once receivers."""
        if not self._sharded:
            return [self._leases_key]
        return sorted(
            self._leases_for(name)
            for name, signal in list(self._signals.items())
            if _has_once_receivers(signal)
        )

    def _hold(self, claim: str) -> None:
        """Keep renewing ``claim`` until it is finished (see ``_renew_steps``)."""
        self._held[claim] = time.monotonic()

    def _finish_steps(self, claims: Sequence[str]) -> _Steps[None]:
        """
        Mark claims whose receivers have run as done, for ``once_ttl``. The
        drivers never run this and ``_renew_steps`` at the same time: a renewal
        that reached Redis after the done mark would make it expire with the
        lease, and another process would run the message again.
        """
        for claim in claims:
            self._held.pop(claim, None)
            try:
                yield ops.Call(
                    "finish", (claim, "done", self.once_ttl, self._leases_of_claim(claim))
                )
            except TransportError as exc:
                self._stats.add("once_errors")
                self._log.warning(
                    "once-finish",
                    "relay could not mark a once receiver's run as done (%s); another process "
                    "may run it again once its lease ends",
                    exc,
                )

    def _renew_steps(self) -> _Steps[None]:
        """Extend the leases of the once receivers running here (see ``_finish_steps``)."""
        groups: dict[str, list[str]] = {}
        for claim in list(self._held):
            groups.setdefault(self._leases_of_claim(claim), []).append(claim)
        for leases, claims in groups.items():
            try:
                yield ops.Call("renew", (claims, self.once_lease, leases))
            except TransportError as exc:
                self._log.warning(
                    "once-renew", "relay could not renew the lease of a once receiver (%s)", exc
                )

    def _watch(self, due: float, signal: Signal, message: wire.Message, call: _OnceCall) -> None:
        if len(self._watched) >= _MAX_WATCHED:
            heapq.heappop(self._watched)
            self._log.warning(
                "once-watch",
                "relay is watching %d once claims of other processes; forgot the oldest",
                _MAX_WATCHED,
            )
        heapq.heappush(self._watched, (due, next(self._watch_order), signal, message, call))

    def _watch_due(self) -> bool:
        """True if a watched claim or the reaping of abandoned leases is due."""
        now = time.monotonic()
        return bool(self._watched and self._watched[0][0] <= now) or (
            self._reaps and now >= self._next_reap
        )

    def _watch_steps(self) -> _Steps[None]:
        """
        Check the claims other processes won: a claim whose lease ended
        without the receiver finishing (its process died) is claimed again
        and run here (``once_retried``). Then report leases that ended
        without anybody taking them over (``once_lost``).
        """
        now = time.monotonic()
        due: list[tuple[float, int, Signal, wire.Message, _OnceCall]] = []
        while self._watched and self._watched[0][0] <= now and len(due) < _LOG_BATCH:
            due.append(heapq.heappop(self._watched))
        try:
            if due:
                claims = [self._claim_key(entry[3], entry[4][3]) for entry in due]
                states = yield ops.Call("get_values", (claims,))
                for entry, claim, state in zip(due, claims, states, strict=True):
                    if state == "done":
                        continue
                    if state is None and (
                        yield ops.Call(
                            "claim", (claim, self.once_lease, self._leases_of_claim(claim))
                        )
                    ):
                        self._hold(claim)
                        self._stats.add("once_retried")
                        logger.warning(
                            "relay: the process running once receiver %s for message %s did "
                            "not finish within its lease; running it here",
                            entry[4][3],
                            entry[3].id,
                        )
                        yield ops.RunOnce(entry[2], entry[3], entry[4], claim)
                        continue
                    # Still running (its lease is renewed), or taken over elsewhere.
                    self._watch(now + self.once_lease / 3, *entry[2:])
                due = []
            if self._reaps and now >= self._next_reap:
                self._next_reap = now + self.once_lease / 2
                yield from self._reap_steps()
        except TransportError as exc:
            for entry in due:
                self._watch(now + self.once_lease / 3, *entry[2:])
            self._log.warning("once-watch", "relay could not check once claims (%s)", exc)

    def _reap_steps(self) -> _Steps[None]:
        for leases in self._all_leases():
            yield from self._reap_leases_steps(leases)

    def _reap_leases_steps(self, leases: str) -> _Steps[None]:
        # A lease over for a whole lease period was taken over by nobody.
        overdue = yield ops.Call("overdue", (leases, time.time() - self.once_lease, 100))
        if not overdue:
            return
        states = yield ops.Call("get_values", (overdue,))
        for claim, state in zip(overdue, states, strict=True):
            if state == "run":
                continue  # renewed meanwhile
            if (yield ops.Call("discard", (leases, claim))) and state is None:
                self._stats.add("once_lost")
                logger.error(
                    "relay: a once receiver's run (%s) ended with its process and no process "
                    "that has the receiver took it over; it did not complete",
                    claim,
                )

    def _frames_of_one(self, item: _Item) -> list[Outgoing]:
        """``_frames()`` of one message published now, made directly for the common one."""
        outbox, packed, _, _, context = item
        if context is not None or self.durable:
            return _frames(self._frame_prefix, [item], self.max_frame_size, self._key, self.durable)
        started_at = outbox.numbering.started_at
        frame = wire.build_frame(
            self._frame_prefix, (packed,), key=self._key, started_at=started_at
        )
        return [Outgoing(outbox.channel, frame)]

    def _publish_one_steps(self, item: _Item) -> _Steps[None]:
        """Publish one message now (``publish="sync"``); a Redis failure is raised."""
        frames = self._frames_of_one(item)
        try:
            yield ops.Call("publish_many", (frames, self._publish_log))
        except TransportError:
            self._stats.add("publish_errors")
            self._stats.add("dropped")
            raise
        self._stats.add("published")

    def _drop_oldest(self, items: deque[_Item]) -> None:
        """Drop the oldest message of a full publish queue, counting and logging it.

        The driver that owns ``items`` counts the message as done itself.
        """
        items.popleft()
        self._stats.add("dropped")
        self._log.warning(
            "queue-full",
            "relay publish queue is full (%d messages, Redis %s); dropped the oldest "
            "message. Raise max_queue=... or check the broker.",
            self.max_queue,
            "unreachable" if not self._publisher_connected else "too slow",
        )

    def _publish_steps(self, batch: list[_Item]) -> _Steps[None]:
        """Publish a batch, retrying with backoff while Redis is unreachable, until stopped."""
        frames = _frames(self._frame_prefix, batch, self.max_frame_size, self._key, self.durable)
        failures = 0
        while True:
            try:
                yield ops.Call("publish_many", (frames, self._publish_log))
            except TransportError as exc:
                self._stats.add("publish_errors")
                self._publisher_connected = False
                delay = self.backoff.compute(failures)
                failures += 1
                self._log.warning(
                    "publish-error",
                    "relay could not publish %d messages (%s); retrying in %.2f s",
                    len(batch),
                    exc,
                    delay,
                )
                if (yield ops.PublisherWait(delay)):
                    self._stats.add("dropped", len(batch))
                    logger.error(
                        "relay stopped while Redis was unreachable; dropped %d unpublished "
                        "messages",
                        len(batch),
                    )
                    return
                continue
            except Exception:
                self._stats.add("publish_errors")
                self._stats.add("dropped", len(batch))
                logger.exception("relay could not publish %d messages; dropped them", len(batch))
                return
            self._stats.add("published", len(batch))
            if not self._publisher_connected:
                logger.info("relay publisher reconnected to %s", self.transport.description)
            self._publisher_connected = True
            return

    # -- health and reconnecting (shared) -------------------------------------

    def _health_check(
        self, last_activity: float, ping_sent: float | None
    ) -> tuple[bool, float | None]:
        """
        After a silence, whether to PING now, and when the unanswered PING
        went out; raise ``TransportError`` once a PING went unanswered too long.
        """
        if not self._subscribed:
            # Nothing to hear (a process that only sends): redis-py does not
            # even read such a connection, so a PING would go unanswered.
            return False, None
        now = time.monotonic()
        if ping_sent is not None and last_activity < ping_sent:
            if now - ping_sent > self.health_check_timeout:
                raise TransportError(
                    f"no reply to PING within {self.health_check_timeout:g} s "
                    "(the connection looks half-open)"
                )
            return False, ping_sent
        if now - last_activity >= self.health_check_interval:
            return True, now
        return False, None

    def _recover_steps(self, subscription: Any, error: TransportError) -> _Steps[bool]:
        """
        Reconnect with backoff until it works (at once if the connection was
        restored underneath), then catch up in durable mode; False if stopped
        or given up.
        """
        reason = str(error)
        restored = isinstance(error, Resubscribed)
        lost_at = time.monotonic()
        self._stats.add("disconnects")
        logger.warning(
            "relay listener lost Redis (%s); %s",
            reason,
            "catching up" if restored else "reconnecting",
        )
        yield ops.Send(disconnected, {"reason": reason})
        attempts = 0
        while True:
            if not (restored and attempts == 0) and (
                yield ops.Wait(self.backoff.compute(attempts))
            ):
                return False
            attempts += 1
            try:
                if not restored or attempts > 1:
                    yield ops.Reconnect(subscription)
                # The outage ends here; a durable catch-up after it is not downtime.
                downtime = time.monotonic() - lost_at
                if self.durable:
                    # A subscription that knows which channels it lost (one
                    # reader of several, in a cluster) names them.
                    lost = getattr(subscription, "restored_channels", None)
                    yield from self._catch_up_steps(only=lost)
            except TransportError as again:
                if self.max_reconnect_attempts is not None and (
                    attempts >= self.max_reconnect_attempts
                ):
                    logger.critical(
                        "relay listener gave up after %d reconnection attempts (%s); this "
                        "process no longer receives signals from namespace %r",
                        attempts,
                        again,
                        self.namespace,
                    )
                    return False
                self._log.warning(
                    "reconnect", "relay listener still cannot reach Redis (%s)", again
                )
                continue
            self._stats.add("reconnects")
            logger.info(
                "relay listener reconnected to %s after %.2f s",
                self.transport.description,
                downtime,
            )
            yield ops.Send(reconnected, {"reason": reason, "downtime": downtime})
            return True

    # -- durable mode (shared) ------------------------------------------------

    def _signal_log(self, name: str) -> Log | None:
        """Signal ``name``'s own durable log (sharded, durable), else None."""
        if not (self._sharded and self.durable):
            return None
        return Log(
            f"{_CHANNEL_PREFIX}:{self.namespace}:log:{{{name}}}",
            self.retention,
            self.retention_seconds,
        )

    def _cursor_key(self, name: str | None = None) -> str:
        if self._sharded:
            return f"{_CHANNEL_PREFIX}:{self.namespace}:cursor:{self.worker_id}:{{{name}}}"
        return f"{_CHANNEL_PREFIX}:{self.namespace}:cursor:{self.worker_id}"

    def _log_ref(self, name: str) -> _LogRef:
        """The durable log signal ``name`` is kept in, and this worker's cursor there."""
        cursor = None if self.worker_id is None else self._cursor_key(name)
        if self._sharded:
            log = self._outboxes[name].log
            assert log is not None
            return _LogRef(log, cursor)
        assert self._durable_log is not None
        return _LogRef(self._durable_log, cursor)

    def _log_refs(self, channels: Iterable[str]) -> list[_LogRef]:
        """The logs of ``channels`` (always the namespace's one, unsharded), by key."""
        if not self._sharded:
            assert self._durable_log is not None
            cursor = None if self.worker_id is None else self._cursor_key()
            return [_LogRef(self._durable_log, cursor)]
        refs: dict[str, _LogRef] = {}
        for channel in channels:
            name = self._channels.get(channel)
            if name is not None and name in self._outboxes:
                ref = self._log_ref(name)
                refs[ref.log.key] = ref
        return [refs[key] for key in sorted(refs)]

    def _log_key_of(self, channel: str) -> str | None:
        name = self._channels.get(channel)
        if name is None:
            return None
        if not self._sharded:
            assert self._durable_log is not None
            return self._durable_log.key
        return self._log_ref(name).log.key

    def _start_durable_steps(self) -> _Steps[None]:
        """
        Find where to resume in each log: after this worker's last message,
        else where the log ends now; catch up from there.
        """
        restarted = self._verified is not None
        positions = dict(self._verified or {})
        fresh: set[str] = set()  # logs started from their end: nothing to catch up on
        while True:
            try:
                for ref in self._log_refs(self._subscribed):
                    key = ref.log.key
                    if key in positions:
                        continue
                    resume = None
                    if ref.cursor is not None:
                        if key not in self._cursor_ids:
                            self._cursor_ids[key] = yield ops.Call("get_value", (ref.cursor,))
                        cursor_id = self._cursor_ids[key]
                        if cursor_id is not None:
                            resume = yield from self._find_in_log_steps(ref.log, cursor_id)
                            if resume is None:
                                logger.warning(
                                    "relay: the last message this worker saw is no longer in "
                                    "the durable log; replaying all it retains"
                                )
                                resume = "0-0"
                    if resume is None:
                        fresh.add(key)
                    positions[key] = resume or (yield from self._log_end_steps(ref.log))
                self._verified = positions
                for channel in self._subscribed:
                    log_key = self._log_key_of(channel)
                    if log_key is not None and log_key in positions:
                        self._since.setdefault(channel, positions[log_key])
                if restarted or len(fresh) < len(positions):
                    yield from self._catch_up_steps(skip=() if restarted else fresh)
                return
            except TransportError as exc:
                self._log.warning("durable", "relay listener cannot read the durable log (%s)", exc)
                if (yield ops.Wait(1.0)):
                    return

    def _log_end_steps(self, log: Log) -> _Steps[str]:
        """The position of the newest entry of ``log`` ("0-0" for an empty log)."""
        newest = yield ops.Call("read_log_backwards", (log, None, 1))
        return str(newest[0].position) if newest else "0-0"

    def _subscribed_steps(self, channels: Iterable[str]) -> _Steps[None]:
        """Note when ``channels`` were subscribed (and, durable, where their logs ended then)."""
        now = time.time()
        fresh = [c for c in channels if c not in self._subscribed_at]
        for channel in fresh:
            self._subscribed_at[channel] = now
        verified = self._verified
        if not (self.durable and verified is not None and fresh):
            return
        for ref in self._log_refs(fresh):
            key = ref.log.key
            try:
                end = yield from self._log_end_steps(ref.log)
            except TransportError:
                # Replay what came since the last catch-up (or since a little
                # before now, for a new log): late, not lost.
                end = verified.get(key) or f"{int((now - self.clock_skew) * 1000)}-0"
            verified.setdefault(key, end)
            for channel in fresh:
                if self._log_key_of(channel) == key:
                    self._since.setdefault(channel, end)

    def _catch_up_steps(
        self, skip: Iterable[str] = (), only: Iterable[str] | None = None
    ) -> _Steps[None]:
        """
        Fire, in order, what the durable logs hold that this process has not
        handled (skipping the logs whose keys are in ``skip``; with ``only``,
        just the logs of those channels).
        """
        skipped = set(skip)
        channels = self._subscribed if only is None else set(only) & self._subscribed
        for ref in self._log_refs(channels):
            if ref.log.key in skipped:
                continue
            if (yield from self._catch_up_log_steps(ref.log)):
                return

    def _catch_up_log_steps(self, log: Log) -> _Steps[bool]:
        """
        Fire, in order, what ``log`` holds that this process has not handled:
        every entry after the last position handled, up to where the log
        ends now, skipping what was sent on a channel before this process
        subscribed to it and what it has fired already. True if stopped.
        """
        if self._verified is None:
            self._verified = {}
        verified = self._verified
        after = verified.get(log.key) or "0-0"
        end = yield from self._log_end_steps(log)
        end_key = _position(end)
        replayed = 0
        stopped = False
        while _position(after) < end_key:
            entries = yield ops.Call("read_log", (log, after, _LOG_BATCH))
            if not entries:
                break
            fired = 0
            for entry in entries:
                position = _position(entry.position)
                if position > end_key:
                    break
                if self._unhandled(entry, position):
                    try:
                        fired += yield ops.Handle(entry.channel, entry.data)
                    except TransportError:
                        raise
                    except Exception:
                        # As on the live path: count it and go on.
                        self._stats.add("listener_errors")
                        logger.exception("relay listener could not handle a logged message")
                after = verified[log.key] = entry.position
            if fired:
                self._stats.add("replayed", fired)
                replayed += fired
            if (yield ops.Stopping()):
                stopped = True
                break
        else:
            verified[log.key] = end if _position(end) > _position(after) else after
        if replayed:
            logger.info("relay listener replayed %d missed messages from the log", replayed)
        return stopped

    def _recover_from_log_steps(self, channel: str | None = None) -> _Steps[None]:
        """
        Catch up after a loss (on ``channel``'s log, or all); if the log cannot
        be read, the loss is reported instead.
        """
        try:
            yield from self._catch_up_steps(only=None if channel is None else [channel])
        except TransportError as exc:
            self._log.warning(
                "recover",
                "relay could not read the durable log to recover lost messages (%s); "
                "reporting them as a gap",
                exc,
            )

    def _unhandled(self, entry: LogEntry, position: tuple[int, int]) -> bool:
        """Whether a log entry may hold messages this process should fire and has not."""
        since = self._since.get(entry.channel)
        if since is None or entry.channel not in self._subscribed or position <= _position(since):
            return False
        if entry.origin and entry.last and entry.origin != origin.origin_id():
            name = self._channels.get(entry.channel)
            highest = origin.accepted.highest((self.namespace, entry.origin, name))
            if highest is not None and highest >= entry.last:
                return False  # fired already: no need to decode it
        return True

    def _find_in_log_steps(self, log: Log, message_id: str) -> _Steps[str | None]:
        before = None
        while True:
            entries = yield ops.Call("read_log_backwards", (log, before, _LOG_BATCH))
            if not entries:
                return None
            for entry in entries:
                if message_id in entry.ids:
                    return str(entry.position)
            before = entries[-1].position

    def _remember_steps(self, message: wire.Message) -> _Steps[None]:
        ref = self._log_ref(message.signal)
        self._cursor_ids[ref.log.key] = message.id
        try:
            yield ops.Call("set_value", (ref.cursor, message.id))
        except TransportError as exc:
            self._log.warning("cursor", "relay could not record this worker's place (%s)", exc)

    def _after_fork(self) -> None:
        # In a forked child: none of the parent's threads exist here, its
        # sockets must not be used, and its queued sends are the parent's.
        self._running = False
        self._lock = threading.RLock()
        self._stats = _Stats()
        self._log = _RateLimitedLog()
        for outbox in self._outboxes.values():
            outbox.renew_origin()
        self._renew_frame_prefix()
        self._subscribed = set()
        self._subscribed_at = {}
        self._since = {}
        self._verified = None
        self._cursor_ids = {}
        self._held = {}
        self._watched = []
        self._meters = presence.Meters()
        self._beats = 0
        self.transport.after_fork()

    # -- presence --------------------------------------------------------------

    @property
    def _keeps_presence(self) -> bool:
        return isinstance(self.transport, (Presence, AsyncPresence))

    def _presence_on(self) -> bool:
        """Whether a starting bridge heartbeats (a warning says why not, if it cannot)."""
        if not self.heartbeat:
            return False
        if not self._keeps_presence:
            logger.warning(
                "relay presence is off: %s keeps no presence (heartbeat=%g); pass "
                "heartbeat=0 to say so",
                self.transport.description,
                self.heartbeat,
            )
            return False
        return True

    def signal_stats(self) -> dict[str, presence.SignalStats]:
        """
        Counters per signal name (``relay.presence.SignalStats``): ``sent``
        messages this process numbered on the signal (sent, queued or
        dropped), and what this bridge ``received`` live and ``fired`` of
        other processes' messages, the receiver ``errors``, and the histogram
        of their delivery latency (``relay.presence.LATENCY_BUCKETS``).
        """
        found: dict[str, presence.SignalStats] = {}
        meters = dict(self._meters)
        for name in sorted(set(self._outboxes) | set(meters)):
            outbox = self._outboxes.get(name)
            meter = meters.get(name)
            sent = outbox.numbering.taken if outbox is not None else 0
            if meter is None:
                found[name] = presence.SignalStats(sent=sent)
            else:
                found[name] = presence.SignalStats(
                    sent,
                    meter.received,
                    meter.fired,
                    meter.errors,
                    tuple(meter.latency),
                    meter.latency_sum,
                )
        return found

    def _heartbeat(self, stopped: bool = False) -> bytes:
        """This bridge's heartbeat frame, now."""
        with self._lock:
            sends = sorted(self._outboxes)
            hears = sorted(self._channels[c] for c in self._subscribed if c in self._channels)
        kwargs = presence.heartbeat_kwargs(
            bridge=self._number,
            namespace=self.namespace,
            kind=type(self).__name__,
            worker_id=self.worker_id,
            sends=sends,
            hears=hears,
            started_at=self._started_at,
            heartbeat=self.heartbeat,
            stopped=stopped,
            stats=self.stats(),
            signals=self.signal_stats(),
        )
        self._beats += 1
        return presence.encode_heartbeat(
            self._frame_prefix, self._beats, time.time(), kwargs, self._key
        )

    def _heartbeat_steps(self, stopped: bool = False) -> _Steps[None]:
        """
        Announce this bridge (``stopped``: that it stopped); now and then also
        forget peers not heard of for ``PRESENCE_RETENTION`` seconds. A broker
        that cannot be reached is logged, never raised: the next heartbeat
        tries again.
        """
        try:
            record = self._heartbeat(stopped)
            member = presence.member(origin.origin_id(), self._number)
            yield ops.Call("announce", (self._presence_key, member, record, PRESENCE_RETENTION))
            if self._beats % _SWEEP_EVERY == 1 and not stopped:
                records = yield ops.Call("members", (self._presence_key,))
                now = time.time()
                stale = [
                    member
                    for member, peer in self._decode_peers(records, now, quiet=True)
                    if peer is not None and now - peer.last_seen > PRESENCE_RETENTION
                ]
                yield ops.Call("forget", (self._presence_key, stale))
        except TransportError as exc:
            self._log.warning("presence", "relay could not send its heartbeat (%s)", exc)

    def _peers_steps(self, include_gone: bool) -> _Steps[list[presence.Peer]]:
        if not self._keeps_presence:
            raise TypeError(
                f"{self.transport.description} keeps no presence: peers() needs a transport "
                "with relay.transport.Presence (Redis has it)"
            )
        records = yield ops.Call("members", (self._presence_key,))
        peers = [
            peer
            for _, peer in self._decode_peers(records, time.time())
            if peer is not None and (include_gone or peer.alive)
        ]
        peers.sort(key=lambda p: (p.worker_id or "", p.host, p.pid, p.origin))
        return peers

    def _decode_peers(
        self, records: dict[str, bytes], now: float, quiet: bool = False
    ) -> list[tuple[str, presence.Peer | None]]:
        """Each record decoded, or None (and a warning unless ``quiet``) if it is no heartbeat."""
        decoded: list[tuple[str, presence.Peer | None]] = []
        for member, data in records.items():
            try:
                peer: presence.Peer | None = presence.decode_peer(
                    data,
                    now=now,
                    keys=self._keys or None,
                    clock_skew=self.clock_skew,
                    max_size=self.max_message_size,
                )
            except wire.WireError as exc:
                peer = None
                if not quiet:
                    self._log.warning(
                        f"presence:{exc}",
                        "relay ignored the presence record of %s on %r: %s",
                        member,
                        self.namespace,
                        exc,
                    )
            decoded.append((member, peer))
        return decoded


def _position(position: str) -> tuple[int, int]:
    """A log position (``"<ms>-<n>"``) as a tuple that sorts like it."""
    ms, _, n = position.partition("-")
    return int(ms), int(n or 0)


def _hears_remote(signal: Signal) -> bool:
    """True if some receiver of ``signal`` fires for sends from other processes."""
    default = signal.default_scope
    return any((entry.scope or default) != "local" for entry in signal.receivers)


_RemoteCall = tuple[Any, bool, object]  # (receiver or weak reference, is weak, sender to pass)
_OnceCall = tuple[Any, bool, object, str, bool]  # ... plus the receiver's key and is_async


class _Won(NamedTuple):
    """The ``scope="once"`` receivers a process won the claims of, and the claims."""

    sync: list[_RemoteCall]
    asynchronous: list[_RemoteCall]
    claims: list[str]

    def add(self, call: _OnceCall, claim: str) -> None:
        (self.asynchronous if call[4] else self.sync).append(call[:3])
        self.claims.append(claim)


def _has_once_receivers(signal: Signal) -> bool:
    return any(entry.scope == "once" for entry in signal.receivers)


def _remote_calls(
    signal: Signal, name: str | None
) -> tuple[tuple[_RemoteCall, ...], tuple[_RemoteCall, ...], tuple[_OnceCall, ...]]:
    """
    The receivers of ``signal`` that a remote send from sender ``name`` fires:
    ``(sync, async, once)``.

    Receivers connected for any sender always fire, and are given the local
    sender of that name (a class named with ``relay.naming.register_name``, or
    the sender another receiver was connected for), else the name itself; one
    connected for a sender fires when the sender's name equals ``name``. Receivers whose scope
    is ``"local"`` never fire; those whose scope is ``"once"`` fire where they
    are claimed. A receiver registered for two senders that share the name
    fires once. Cached until the signal's receivers change.
    """
    snapshot = signal._current()
    cached = snapshot.cache.get(("remote", name))
    if cached is not None:
        return cached  # type: ignore[no-any-return]
    default_scope = signal.default_scope
    registered = class_named(name)
    local_sender: object = name if registered is None else registered
    for entry in snapshot.entries:
        candidate = entry.sender_ref() if entry.sender_ref is not None else None
        if candidate is not None and sender_name(candidate) == name:
            local_sender = candidate
            break
    sync: list[_RemoteCall] = []
    asynchronous: list[_RemoteCall] = []
    once: list[_OnceCall] = []
    seen: set[tuple[object, bool]] = set()
    for entry in snapshot.entries:
        scope = entry.scope or default_scope
        if scope == "local":
            continue
        if entry.sender_ref is None:
            sender: object = local_sender
        else:
            sender = entry.sender_ref()
            if sender is None or sender_name(sender) != name:
                continue
        dedup = (entry.key[0], entry.sender_ref is None)
        if dedup in seen:
            continue
        seen.add(dedup)
        if scope == "once":
            receiver = entry.receiver() if entry.weak else entry.receiver
            if receiver is None:
                continue
            key = str(entry.dispatch_uid) if entry.dispatch_uid else once_name(receiver)
            once.append((entry.receiver, entry.weak, sender, key, entry.is_async))
            continue
        call = (entry.receiver, entry.weak, sender)
        (asynchronous if entry.is_async else sync).append(call)
    result = (tuple(sync), tuple(asynchronous), tuple(once))
    if len(snapshot.cache) >= _REMOTE_CACHE_LIMIT:
        snapshot.cache.clear()
    snapshot.cache[("remote", name)] = result
    return result
