"""
The relay bridge: sends on registered signals reach every other process.

A ``Relay`` attaches an outbox to each registered ``Signal``. A send encodes its
keyword arguments, fires the local receivers as usual, and hands the message
to a background publisher thread. A listener thread receives the messages of
other processes and fires the same signals' receivers there, robustly. This
module is the threaded driver of ``relay.core``.
"""

from __future__ import annotations

import asyncio
import logging
import signal as os_signal
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any, TypeVar

from relay import ops, wire
from relay._accelerator import speedups
from relay._async import run_coroutine_sync
from relay.core import (
    _CHANGE_WAIT,
    _DEFERRED,
    _MAX_BATCH,
    _NO_SENDER,
    _POLL_SECONDS,
    DEFAULT_MAX_FRAME_SIZE,
    STAT_NAMES,
    Bridge,
    _current_message,
    _has_once_receivers,
    _Item,
    _OnceCall,
    _Prepared,
    _remote_calls,
    _RemoteCall,
    _Won,
    channel_for,
    current_message,
    disconnected,
    gap,
    predecessors,
    reconnected,
    signing_key,
    stop_draining,
)
from relay.ops import Steps as _Steps
from relay.presence import Peer
from relay.signals import Signal
from relay.transport.base import Subscription, Transport, TransportError

__all__ = [
    "DEFAULT_MAX_FRAME_SIZE",
    "STAT_NAMES",
    "Relay",
    "channel_for",
    "current_message",
    "disconnected",
    "gap",
    "reconnected",
    "signing_key",
]

logger = logging.getLogger("relay.bridge")

_T = TypeVar("_T")
#: The common case of Relay._handle's firing loop in C (relay._speedups), when it is in use.
_c_fire_messages = None if speedups is None else speedups.fire_messages


class _Publisher:
    """A background thread that publishes queued messages in order, in batches."""

    def __init__(self, bridge: Relay) -> None:
        self.bridge = bridge
        self._items: deque[_Item] = deque()
        # put() takes the bare lock (cheaper than the condition's own with).
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._queued = 0  # messages ever queued
        self._done = 0  # messages ever published or dropped
        self._stopping = False
        self._idle = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        with self._cond:
            self._stopping = False
        self._thread = threading.Thread(
            target=self._run, name=f"relay-publisher[{self.bridge.namespace}]", daemon=True
        )
        self._thread.start()

    def put(self, prepared: _Prepared) -> None:
        with self._lock:
            if len(self._items) >= self.bridge.max_queue:
                self._make_room()
            self._items.append(prepared[0].number(prepared))
            self._queued += 1
            if self._idle:
                self._cond.notify()

    def _make_room(self) -> None:
        """Wait up to ``queue_wait`` for room in the full queue, else drop its oldest message."""
        bridge = self.bridge
        if bridge._publisher_connected and bridge.queue_wait > 0:
            self._cond.wait_for(lambda: len(self._items) < bridge.max_queue, bridge.queue_wait)
        if len(self._items) >= bridge.max_queue:
            bridge._drop_oldest(self._items)
            self._done += 1

    def flush(self, timeout: float | None) -> bool:
        with self._cond:
            target = self._queued
            if self._thread is None:
                return self._done >= target
            return self._cond.wait_for(lambda: self._done >= target, timeout)

    def stop(self, timeout: float | None) -> bool:
        flushed = self.flush(timeout)
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        with self._cond:
            left = len(self._items)
            if left:
                self._items.clear()
                self._done += left
                self.bridge._stats.add("dropped", left)
                logger.error("relay stopped with %d messages still unpublished; dropped them", left)
        return flushed

    def discard_all(self) -> None:
        """Forget everything queued (a forked child must not publish its parent's sends)."""
        self._items = deque()
        self._queued = self._done = 0
        self._thread = None
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)

    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    while not self._items and not self._stopping:
                        self._idle = True
                        self._cond.wait()
                        self._idle = False
                    if self._stopping:
                        return
                    count = min(len(self._items), _MAX_BATCH)
                    batch = [self._items.popleft() for _ in range(count)]
                    self._cond.notify_all()
                self._publish(batch)
        except BaseException:
            logger.critical("relay publisher thread crashed", exc_info=True)
            raise

    def _publish(self, batch: list[_Item]) -> None:
        for earlier in predecessors(self.bridge):
            earlier.wait()
        self.bridge._drive(self.bridge._publish_steps(batch))
        with self._cond:
            self._done += len(batch)
            self._cond.notify_all()

    def wait_for_stop(self, seconds: float) -> bool:
        """Wait up to ``seconds``; True if the publisher is being stopped."""
        with self._cond:
            return self._cond.wait_for(lambda: self._stopping, seconds)


class Relay(Bridge):
    """
    A bridge that relays sends on registered signals to every other process
    on the same namespace, through Redis pub/sub, with a publisher and a
    listener thread.

    Use it as a context manager, or call ``start()`` and ``stop()``::

        order_placed = Signal(name="shop.order_placed")
        bridge = Relay("redis://127.0.0.1:6379/0", namespace="shop")
        bridge.register(order_placed)
        bridge.start()

    See ``__init__`` for the options (shared with ``relay.aio.AsyncRelay``).
    """

    transport: Transport

    def _setup(self) -> None:
        self._publisher = _Publisher(self)
        self._listener: threading.Thread | None = None
        self._subscription: Subscription | None = None
        self._stop_event = threading.Event()
        self._changes: deque[tuple[str, str, threading.Event]] = deque()
        self._keeper: threading.Thread | None = None
        self._keeper_stop = threading.Event()
        self._leases_lock = threading.Lock()  # renewing and finishing, one at a time
        self._presence_thread: threading.Thread | None = None
        self._presence_stop = threading.Event()

    def _subscribe(self, channel: str) -> None:
        # Caller holds self._lock.
        self._subscribed.add(channel)
        self._request("subscribe", channel)

    # -- lifecycle ----------------------------------------------------------

    def start(self) -> Relay:
        """
        Start the publisher and the listener threads.

        Returns once the listener is subscribed to every registered signal, so
        every send made anywhere afterwards reaches this process. Calling it on
        a running bridge does nothing. Raises ``TransportError`` if Redis
        cannot be reached, also in a process that only sends.
        """
        with self._lock:
            if self._running:
                return self
            subscription = self._go_live()
            self._listener = threading.Thread(
                target=self._listen,
                args=(subscription,),
                name=f"relay-listener[{self.namespace}]",
                daemon=True,
            )
            self._listener.start()
        logger.info(
            "relay bridge started: namespace %r on %s, %d signals",
            self.namespace,
            self.transport.description,
            len(self._signals),
        )
        return self

    def _go_live(self) -> Subscription:
        """Subscribe, attach to the signals and start publishing. Caller holds the lock."""
        self._check_open()
        self.transport.check()
        listening = self._listening_channels()
        subscription = self.transport.subscription()
        try:
            subscription.subscribe(sorted(listening))
        except BaseException:
            subscription.close()
            raise
        self._subscription = subscription
        self._subscribed = listening
        self._reaps = any(_has_once_receivers(sig) for sig in self._signals.values())
        self._drive(self._subscribed_steps(listening))
        self._stop_event.clear()
        # Attached first: a send made once running reads True is relayed.
        self._attach_all()
        self._running = True
        if self.publish_mode == "async":
            self._publisher.start()
        self._start_presence()
        return subscription

    def stop(self, timeout: float | None = 10.0) -> bool:
        """
        Publish what is queued, unsubscribe and join the threads.

        Arguments:

            timeout
                How long to wait for queued messages to be published. What is
                still unpublished then is dropped (and counted).

        Returns True if everything queued was published. Safe to call twice.
        """
        with self._lock:
            if not self._running:
                return True
            draining = self._stop_publishing()
        flushed = True
        try:
            if self.publish_mode == "async":
                flushed = self._publisher.stop(timeout)
        finally:
            stop_draining(self, draining)
        self._stop_event.set()
        listener = self._listener
        if listener is not None and listener is not threading.current_thread():
            listener.join()
        self._listener = None
        # After the listener: a receiver it was running keeps its lease to the end.
        self._keeper_stop.set()
        if self._keeper is not None and self._keeper is not threading.current_thread():
            self._keeper.join()
        self._keeper = None
        self._stop_presence()
        logger.info("relay bridge stopped: namespace %r", self.namespace)
        return flushed

    def close(self) -> None:
        """
        Stop the bridge, detach it from its signals and close its Redis
        connections. A closed bridge cannot be started again.
        """
        self.stop()
        self._forget()
        self.transport.close()

    def __enter__(self) -> Relay:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def run(self, install_signal_handlers: bool = True) -> None:
        """
        Listen in the calling thread until ``stop()`` is called, or until
        SIGINT or SIGTERM arrives (worker processes). Receivers of remote
        sends then run in this thread.

        Arguments:

            install_signal_handlers
                Whether to handle SIGINT and SIGTERM by stopping (only possible
                in the main thread). The previous handlers are restored after.
        """
        with self._lock:
            if self._running:
                raise RuntimeError(
                    "this bridge is already running; call run() or start(), not both"
                )
            subscription = self._go_live()
            self._listener = threading.current_thread()
        previous: dict[int, Any] = {}
        if install_signal_handlers and threading.current_thread() is threading.main_thread():

            def handle(signum: int, frame: FrameType | None) -> None:
                logger.info("relay bridge got signal %d; stopping", signum)
                self._stop_event.set()

            for stop_on in (os_signal.SIGINT, os_signal.SIGTERM):
                previous[stop_on] = os_signal.signal(stop_on, handle)
        logger.info(
            "relay bridge running: namespace %r on %s, %d signals",
            self.namespace,
            self.transport.description,
            len(self._signals),
        )
        try:
            self._listen(subscription)
        finally:
            for signum, handler in previous.items():
                os_signal.signal(signum, handler)
            self.stop()

    def flush(self, timeout: float | None = None) -> bool:
        """
        Wait until every message sent so far is published (or dropped).

        Arguments:

            timeout
                The longest wait in seconds; None waits as long as it takes.

        Returns True if all was published in time.
        """
        if self.publish_mode == "sync":
            return True
        return self._publisher.flush(timeout)

    def peers(self, *, include_gone: bool = False) -> list[Peer]:
        """
        The processes of this namespace, from their last heartbeats: the live
        ones, or with ``include_gone`` also those that stopped or missed 3
        heartbeats (kept for an hour). A running bridge is among them.

        Works on a bridge that is not started, too. Raises ``TransportError``
        if Redis cannot be reached.
        """
        return self._drive(self._peers_steps(include_gone))

    def _start_presence(self) -> None:
        self._started_at = time.time()
        if not self._presence_on():
            return
        # The first one before start() returns, so that peers() has this process at once.
        self._drive(self._heartbeat_steps())
        self._presence_stop.clear()
        self._presence_thread = threading.Thread(
            target=self._beat, name=f"relay-presence[{self.namespace}]", daemon=True
        )
        self._presence_thread.start()

    def _beat(self) -> None:
        try:
            while not self._presence_stop.wait(self.heartbeat):
                self._drive(self._heartbeat_steps())
        except BaseException:
            logger.critical("relay presence thread crashed; no more heartbeats", exc_info=True)
            raise

    def _stop_presence(self) -> None:
        thread = self._presence_thread
        if thread is None:
            return
        self._presence_stop.set()
        if thread is not threading.current_thread():
            thread.join()
        self._presence_thread = None
        self._drive(self._heartbeat_steps(stopped=True))

    # -- publishing ---------------------------------------------------------

    def _hand_off_function(self) -> Callable[[_Prepared], None]:
        if self.publish_mode == "async":
            return self._publisher.put
        return self._hand_off

    def _hand_off(self, prepared: _Prepared) -> None:
        if self.publish_mode == "async":
            self._publisher.put(prepared)
            return
        outbox = prepared[0]
        for earlier in predecessors(self):
            earlier.wait()
        # Numbered and published under one lock, so numbers follow the channel.
        with outbox.numbering.lock:
            # _publish_one_steps, performed here: one call per send, no generator to drive.
            frames = self._frames_of_one(outbox.number(prepared))
            try:
                self.transport.publish_many(frames, self._publish_log)
            except TransportError:
                self._stats.add("publish_errors")
                self._stats.add("dropped")
                raise
            self._stats.add("published")

    async def _ahand_off(self, prepared: _Prepared) -> None:
        if self.publish_mode == "async":
            self._publisher.put(prepared)
        else:
            await asyncio.get_running_loop().run_in_executor(None, self._hand_off, prepared)

    # -- listening ----------------------------------------------------------

    def _request(self, action: str, channel: str) -> None:
        """Have the listener thread (un)subscribe, and wait until it has."""
        if threading.current_thread() is self._listener and self._subscription is not None:
            getattr(self._subscription, action)([channel])
            return
        done = threading.Event()
        self._changes.append((action, channel, done))
        deadline = time.monotonic() + _CHANGE_WAIT
        while not done.wait(0.05):
            if not self._running:
                return
            if time.monotonic() > deadline:
                logger.warning(
                    "relay listener has not confirmed %s %s yet (Redis unreachable?); "
                    "it will once it is connected",
                    action,
                    channel,
                )
                return

    def _apply_changes(self, subscription: Subscription) -> None:
        while self._changes:
            action, channel, done = self._changes.popleft()
            try:
                getattr(subscription, action)([channel])
                if action == "subscribe":
                    self._drive(self._subscribed_steps([channel]))
            finally:
                done.set()

    def _listen(self, subscription: Subscription) -> None:
        try:
            if self.durable:
                self._drive(self._start_durable_steps())
            ping_sent: float | None = None
            while not self._stop_event.is_set():
                try:
                    if self._changes:
                        self._apply_changes(subscription)
                    if self._watch_due():
                        self._drive(self._watch_steps())
                    received = subscription.get(_POLL_SECONDS)
                    if received is None:
                        ping, ping_sent = self._health_check(subscription.last_activity, ping_sent)
                        if ping:
                            subscription.ping()
                        continue
                except TransportError as exc:
                    ping_sent = None
                    if not self._drive(self._recover_steps(subscription, exc)):
                        return
                    continue
                try:
                    self._handle(*received)
                except Exception:
                    self._stats.add("listener_errors")
                    logger.exception("relay listener could not handle a message; going on")
        except BaseException:
            logger.critical(
                "relay listener crashed; this process no longer receives signals", exc_info=True
            )
            raise
        finally:
            subscription.close()

    def _drive(self, steps: _Steps[_T]) -> _T:
        """Run one of the shared step generators, performing its operations here."""
        value: Any = None
        error: Exception | None = None
        while True:
            try:
                op = steps.send(value) if error is None else steps.throw(error)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
            value, error = None, None
            try:
                value = self._perform(op)
            except Exception as exc:
                error = exc

    def _perform(self, op: ops.Op) -> Any:
        match op:
            case ops.Call(method, args):
                return getattr(self.transport, method)(*args)
            case ops.Handle(channel, data):
                return self._handle(channel, data, replay=True)
            case ops.Wait(seconds):
                return self._stop_event.wait(seconds)
            case ops.PublisherWait(seconds):
                return self._publisher.wait_for_stop(seconds)
            case ops.Stopping():
                return self._stop_event.is_set()
            case ops.Reconnect(subscription):
                return subscription.reconnect()
            case ops.Send(signal, kwargs):
                return signal.send_robust(self, **kwargs)
            case ops.RunOnce(signal, message, call, claim):
                return self._run_once(signal, message, call, claim)
        raise AssertionError(f"unknown operation {op!r}")

    def _handle(self, channel: str, data: bytes, replay: bool = False) -> int:
        """Decode a frame and fire its messages; return how many were fired."""
        accepted = self._accept(channel, data, replay, defer=self.durable and not replay)
        if accepted is _DEFERRED:
            # A loss: fire the missing messages from the log first, in order
            # (this frame among them, as it is logged before it is published).
            self._drive(self._recover_from_log_steps(channel))
            accepted = self._accept(channel, data, replay)
        if accepted is None:
            return 0
        signal = accepted.signal
        for message in accepted.own:
            self._fire(signal, message, only_once=True)
        for kwargs in accepted.gaps:
            gap.send_robust(self, **kwargs)
        if not accepted.fresh:
            return 0
        fired = errors = 0
        name: Any = _NO_SENDER
        set_current, reset_current = _current_message.set, _current_message.reset
        fresh = accepted.fresh
        index, count = 0, len(fresh)
        while index < count:
            message = fresh[index]
            index += 1
            if message.sender != name:
                name = message.sender
                sync, asynchronous, once = _remote_calls(signal, name)
                special = bool(asynchronous or once)
            if special or message.trace is not None:
                self._fire(signal, message)
                continue
            # The common case: synchronous receivers only, called here as
            # _call_sync would, without the claims, coroutines and spans of _fire;
            # in C, for this message and those after it with the same sender.
            calls = sync
            if _c_fire_messages is not None:
                fired_run = _c_fire_messages(
                    fresh, index - 1, name, sync, signal, _current_message, self._log_receiver_error
                )
                if fired_run is not None:
                    stop, fired_now, errors_now, resume = fired_run
                    fired += fired_now
                    errors += errors_now
                    if resume >= 0:  # the rest of message ``stop`` is fired below
                        message, calls, index = fresh[stop], sync[resume:], stop + 1
                    elif stop >= index:
                        index = stop
                        continue
            kwargs = message.kwargs
            token = set_current(message)
            try:
                for ref, weak, sender in calls:
                    receiver = ref() if weak else ref
                    if receiver is None:
                        continue
                    fired += 1
                    try:
                        receiver(signal=signal, sender=sender, **kwargs)
                    except Exception as err:
                        errors += 1
                        self._log_receiver_error(receiver, message, err)
            finally:
                reset_current(token)
        if fired:
            self._count_fired(fresh[0].signal, fired, errors)
        if self.durable and self.worker_id is not None:
            self._drive(self._remember_steps(fresh[-1]))
        return count

    def _fire(self, signal: Signal, message: wire.Message, only_once: bool = False) -> None:
        """Fire the receivers a remote message reaches, with ``current_message()`` set."""
        sync, asynchronous, once = _remote_calls(signal, message.sender)
        if only_once:
            sync = asynchronous = ()
        claims: list[str] = []
        if once:
            won = self._drive(self._claim_steps(signal, message, once))
            sync, asynchronous = (*sync, *won.sync), (*asynchronous, *won.asynchronous)
            claims = won.claims
        if sync or asynchronous:
            self._call_receivers(signal, message, sync, asynchronous, claims)

    def _call_receivers(
        self,
        signal: Signal,
        message: wire.Message,
        sync: Sequence[_RemoteCall],
        asynchronous: Sequence[_RemoteCall],
        claims: Sequence[str],
    ) -> None:
        """Call receivers robustly with ``current_message()`` set, then finish ``claims``."""
        if claims:
            self._keep_leases()
        token = _current_message.set(message)
        try:
            fired, errors = self._call_sync(signal, message, sync)
            if asynchronous:
                factories, failures = self._coroutine_calls(signal, message, asynchronous)
                run_coroutine_sync(factories, "send")
                fired += len(factories)
                errors += len(failures)
        finally:
            _current_message.reset(token)
            if claims:
                with self._leases_lock:
                    self._drive(self._finish_steps(claims))
        self._count_fired(message.signal, fired, errors)

    def _keep_leases(self) -> None:
        """Start the thread that renews the leases of running once receivers, if need be."""
        if self._keeper is not None and self._keeper.is_alive():
            return
        self._keeper_stop.clear()
        self._keeper = threading.Thread(
            target=self._renew_leases, name=f"relay-leases[{self.namespace}]", daemon=True
        )
        self._keeper.start()

    def _renew_leases(self) -> None:
        try:
            while not self._keeper_stop.wait(self.once_lease / 3):
                with self._leases_lock:
                    self._drive(self._renew_steps())
        except BaseException:
            logger.critical("relay lease thread crashed", exc_info=True)
            raise

    def _run_once(self, signal: Signal, message: wire.Message, call: _OnceCall, claim: str) -> None:
        won = _Won([], [], [])
        won.add(call, claim)
        self._call_receivers(signal, message, won.sync, won.asynchronous, won.claims)

    def _after_fork(self) -> None:
        super()._after_fork()
        self._listener = None
        self._subscription = None
        self._keeper = None
        self._keeper_stop = threading.Event()
        self._leases_lock = threading.Lock()
        self._presence_thread = None
        self._presence_stop = threading.Event()
        self._changes.clear()
        self._stop_event = threading.Event()
        self._publisher.discard_all()
