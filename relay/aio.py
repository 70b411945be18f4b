"""
The relay bridge for asyncio: ``AsyncRelay``, on ``redis.asyncio``.

It speaks the same wire format, names, scopes and signatures as the threaded
``relay.Relay``, so asyncio and threaded processes share one namespace. Its
publisher and listener are tasks on the event loop that started it; receivers
of remote sends run as ``Signal.asend`` runs them: synchronous ones in a worker
thread, asynchronous ones concurrently on the loop.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from relay import ops, wire
from relay._accelerator import speedups
from relay._async import run_parallel
from relay.core import (
    _DEFERRED,
    _MAX_BATCH,
    _NO_SENDER,
    _POLL_SECONDS,
    _T,
    Bridge,
    _current_message,
    _has_once_receivers,
    _Item,
    _Prepared,
    _remote_calls,
    _RemoteCall,
    _Won,
    gap,
    predecessors,
    stop_draining,
)
from relay.ops import Steps as _Steps
from relay.presence import Peer
from relay.signals import Signal
from relay.transport.base import AsyncSubscription, AsyncTransport, TransportError

__all__ = ["AsyncRelay"]

_listening: contextvars.ContextVar[AsyncRelay | None] = contextvars.ContextVar(
    "relay_aio_listening", default=None
)
_LOOP_CLOSED = (
    "the event loop this AsyncRelay was started on is closed, so it cannot publish; "
    "await bridge.stop() (or leave 'async with') before the loop ends"
)

logger = logging.getLogger("relay.bridge")

#: AsyncRelay's batches of synchronous receivers in C (relay._speedups), when it is in use.
_c_fire_messages = None if speedups is None else speedups.fire_messages


class AsyncRelay(Bridge):
    """
    A bridge for asyncio programs: sends on registered signals reach every
    other process on the namespace, threaded or asyncio, through Redis pub/sub.

    Use it as an async context manager (leaving the block closes it), or
    await ``start()`` and ``stop()``::

        order_placed = Signal(name="shop.order_placed")
        async with AsyncRelay("redis://127.0.0.1:6379/0", namespace="shop") as bridge:
            bridge.register(order_placed)
            await order_placed.asend(sender=Order, order_id=42)

    It takes the same options as ``Relay`` (see ``__init__``); ``client=`` is a
    ``redis.asyncio.Redis``. ``await signal.asend(...)`` publishes without
    blocking the event loop (with ``publish="sync"`` it waits for Redis, as a
    coroutine). A plain ``signal.send(...)`` works too: from a worker thread it
    behaves as with ``Relay``; on the event loop's own thread it can only queue
    the message, whatever ``publish`` says.
    """

    transport: AsyncTransport
    _asynchronous = True

    def _setup(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._items: deque[_Item] = deque()
        self._queued = 0  # messages ever queued
        self._done = 0  # messages ever published or dropped
        self._publisher_task: asyncio.Task[None] | None = None
        self._listener_task: asyncio.Task[None] | None = None
        self._keeper_task: asyncio.Task[None] | None = None
        self._presence_task: asyncio.Task[None] | None = None
        # Renewing and finishing once claims, one at a time (see Bridge._finish_steps).
        self._leases_lock = asyncio.Lock()
        self._subscription: AsyncSubscription | None = None
        self._changes: deque[tuple[str, str]] = deque()
        self._changes_requested = 0
        self._changes_applied = 0
        self._starting = False
        self._sync_publish: asyncio.Lock | None = None
        # Created on the loop by start(); until then nothing waits on them.
        self._wakeup: asyncio.Event | None = None
        self._progress: asyncio.Event | None = None
        self._stop_requested: asyncio.Event | None = None

    # -- lifecycle ----------------------------------------------------------

    async def start(self) -> AsyncRelay:
        """
        Start the publisher and the listener as tasks on the running loop.

        Returns once the listener is subscribed to every registered signal, so
        every send made anywhere afterwards reaches this process. Awaiting it
        on a running bridge does nothing. Raises ``TransportError`` if Redis
        cannot be reached.
        """
        with self._lock:
            self._check_open()
            if self._running and self._loop is not None and self._loop.is_closed():
                self._abandon()
            starting = self._starting
            if not (self._running or starting):
                self._starting = True
        if self._running:
            return self
        if starting:
            # Another start() is under way: return when it is done, as it does.
            while self._starting:
                await asyncio.sleep(_POLL_SECONDS / 10)
            return self if self._running else await self.start()
        try:
            await self.transport.check()
            listening = self._listening_channels()
            subscription = self.transport.subscription()
            try:
                await subscription.subscribe(sorted(listening))
                await self._drive(self._subscribed_steps(listening))
            except BaseException:
                await subscription.close()
                raise
            loop = asyncio.get_running_loop()
            with self._lock:
                self._loop = loop
                self._loop_thread = threading.get_ident()
                self._subscription = subscription
                self._subscribed = listening
                self._wakeup = asyncio.Event()
                self._progress = asyncio.Event()
                self._stop_requested = asyncio.Event()
                self._sync_publish = asyncio.Lock()
                self._reaps = any(_has_once_receivers(sig) for sig in self._signals.values())
                # Attached first: a send made once running reads True is relayed.
                self._attach_all()
                self._running = True
                # Registered, or given remote receivers, while SUBSCRIBE was under way.
                for channel in sorted(self._listening_channels() - listening):
                    self._subscribe(channel)
                # Also in sync mode: a plain send() on the loop's thread queues.
                self._publisher_task = loop.create_task(
                    self._publish_loop(), name=f"relay-publisher[{self.namespace}]"
                )
                self._listener_task = loop.create_task(
                    self._listen(subscription), name=f"relay-listener[{self.namespace}]"
                )
                self._started_at = time.time()
            if self._presence_on():
                # The first one before start() returns (see Relay._start_presence).
                await self._drive(self._heartbeat_steps())
                self._presence_task = loop.create_task(
                    self._beat(), name=f"relay-presence[{self.namespace}]"
                )
        finally:
            self._starting = False
        logger.info(
            "relay asyncio bridge started: namespace %r on %s, %d signals",
            self.namespace,
            self.transport.description,
            len(self._signals),
        )
        return self

    def _abandon(self) -> None:
        """Forget a run whose event loop ended without ``stop()``. Caller holds the lock."""
        left = len(self._items)
        logger.error(
            "relay: the event loop of this AsyncRelay ended without stop(); %d queued "
            "messages were never published",
            left,
        )
        self._stats.add("dropped", left)
        self._running = False
        self._detach_all()
        self._forget_run()
        # Its connections belong to the dead loop: forget them, unclosed.
        self.transport.after_fork()

    def _forget_run(self) -> None:
        """Drop everything tied to the event loop of the last run, and its queue."""
        self._loop = self._loop_thread = None
        self._publisher_task = self._listener_task = self._keeper_task = None
        self._presence_task = None
        self._subscription = None
        self._changes.clear()
        self._changes_requested = self._changes_applied = 0
        self._items = deque()
        self._queued = self._done = 0

    async def stop(self, timeout: float | None = 10.0) -> bool:
        """
        Publish what is queued, unsubscribe and end the tasks.

        Arguments:

            timeout
                How long to wait for queued messages to be published. What is
                still unpublished then is dropped (and counted).

        Returns True if everything queued was published. Safe to call twice.
        """
        with self._lock:
            if not self._running:
                return True
            if self._loop is not None and self._loop.is_closed():
                self._abandon()
                return False
            draining = self._stop_publishing()
        try:
            flushed = await self._flush(timeout)
        finally:
            stop_draining(self, draining)
        assert self._stop_requested is not None and self._wakeup is not None
        self._stop_requested.set()
        self._wakeup.set()
        current = asyncio.current_task()
        inside_listener = _listening.get() is self
        beating = self._presence_task is not None
        tasks = (self._publisher_task, self._listener_task, self._keeper_task, self._presence_task)
        for task in tasks:
            if task is None or task is current:
                continue
            if task is self._listener_task and inside_listener:
                # Called by a receiver: the listener waits for it, and ends
                # on its own once the receiver returns.
                continue
            await asyncio.gather(task, return_exceptions=True)
        self._publisher_task = self._listener_task = self._keeper_task = None
        self._presence_task = None
        if beating:
            await self._drive(self._heartbeat_steps(stopped=True))
        with self._lock:
            self._loop = self._loop_thread = None
            left = len(self._items)
            if left:
                self._items.clear()
                self._done += left
                self._stats.add("dropped", left)
                logger.error("relay stopped with %d messages still unpublished; dropped them", left)
        logger.info("relay asyncio bridge stopped: namespace %r", self.namespace)
        return flushed

    async def close(self) -> None:
        """
        Stop the bridge, detach it from its signals and close its Redis
        connections. A closed bridge cannot be started again.
        """
        await self.stop()
        self._forget()
        await self.transport.close()

    async def __aenter__(self) -> AsyncRelay:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def flush(self, timeout: float | None = None) -> bool:
        """
        Wait until every message sent so far is published (or dropped).

        Arguments:

            timeout
                The longest wait in seconds; None waits as long as it takes.

        Returns True if all was published in time.
        """
        return await self._flush(timeout)

    async def _flush(self, timeout: float | None) -> bool:
        target = self._queued
        if self._publisher_task is not None:
            await self._wait_for_progress(lambda: self._done >= target, timeout)
        return self._done >= target

    async def _wait_for_progress(self, done: Callable[[], bool], timeout: float | None) -> None:
        """Wait until ``done()``, re-checking after each published batch, or the timeout."""
        progress = self._progress
        if progress is None:
            return
        try:
            async with asyncio.timeout(timeout):
                while not done():
                    progress.clear()
                    await progress.wait()
        except TimeoutError:
            pass

    async def peers(self, *, include_gone: bool = False) -> list[Peer]:
        """See ``Relay.peers``."""
        return await self._drive(self._peers_steps(include_gone))

    async def _beat(self) -> None:
        try:
            while not await self._wait_for_stop(self.heartbeat):
                await self._drive(self._heartbeat_steps())
        except asyncio.CancelledError:
            raise
        except BaseException:
            logger.critical("relay presence task crashed; no more heartbeats", exc_info=True)
            raise

    # -- publishing ---------------------------------------------------------

    def _on_loop_thread(self) -> bool:
        return self._loop_thread == threading.get_ident()

    def _hand_off(self, prepared: _Prepared) -> None:
        loop = self._loop
        if loop is None:
            self._enqueue(prepared)
        elif loop.is_closed():
            raise RuntimeError(_LOOP_CLOSED)
        elif self._on_loop_thread():
            self._enqueue(prepared)
        elif self.publish_mode == "sync":
            asyncio.run_coroutine_threadsafe(self._publish_now(prepared), loop).result()
        else:
            loop.call_soon_threadsafe(self._enqueue, prepared)

    async def _ahand_off(self, prepared: _Prepared) -> None:
        loop = self._loop
        if loop is None or (self.publish_mode == "async" and not self._on_loop_thread()):
            self._hand_off(prepared)
        elif self.publish_mode == "async":
            if len(self._items) >= self.max_queue:
                await self._wait_for_room()
            self._enqueue(prepared)
            if len(self._items) >= _MAX_BATCH:
                # A loop of sends that never awaits anything else would starve
                # the publisher task: let it take a batch.
                await asyncio.sleep(0)
        elif self._on_loop_thread():
            await self._publish_now(prepared)
        else:
            # asend on another thread's event loop: wait without blocking that loop.
            await asyncio.wrap_future(
                asyncio.run_coroutine_threadsafe(self._publish_now(prepared), loop)
            )

    async def _wait_for_room(self) -> None:
        """Wait (up to ``queue_wait``, while Redis is reachable) for the queue to have room."""
        if self._publisher_connected and self.queue_wait > 0:
            await self._wait_for_progress(
                lambda: len(self._items) < self.max_queue, self.queue_wait
            )

    def _enqueue(self, prepared: _Prepared) -> None:
        # Runs on the loop's thread (or before start), so numbers follow the queue.
        if len(self._items) >= self.max_queue:
            self._drop_oldest(self._items)
            self._done += 1
        self._items.append(prepared[0].number(prepared))
        self._queued += 1
        if self._wakeup is not None:
            self._wakeup.set()

    async def _publish_now(self, prepared: _Prepared) -> None:
        lock = self._sync_publish
        assert lock is not None
        # Numbered and published under one lock, after what plain sends on the
        # loop queued, so that numbers follow the channel.
        async with lock:
            await self._wait_for_predecessors()
            if self._items:
                await self._flush(None)
            await self._drive(self._publish_one_steps(prepared[0].number(prepared)))

    async def _publish_loop(self) -> None:
        assert self._wakeup is not None and self._stop_requested is not None
        try:
            while True:
                while not self._items:
                    if self._stop_requested.is_set():
                        return
                    self._wakeup.clear()
                    await self._wakeup.wait()
                if self._stop_requested.is_set():
                    return
                count = min(len(self._items), _MAX_BATCH)
                batch = [self._items.popleft() for _ in range(count)]
                await self._publish(batch)
        except asyncio.CancelledError:
            if self._running:
                logger.warning(
                    "relay publisher task cancelled while the bridge runs (its event loop "
                    "ended without stop()?); %d messages are not published",
                    len(self._items),
                )
            raise
        except BaseException:
            logger.critical("relay publisher task crashed", exc_info=True)
            raise

    async def _wait_for_predecessors(self) -> None:
        """Wait (without blocking the loop) for other bridges still draining (see core)."""
        while any(not done.is_set() for done in predecessors(self)):
            await asyncio.sleep(0.005)

    async def _publish(self, batch: list[_Item]) -> None:
        assert self._progress is not None
        await self._wait_for_predecessors()
        await self._drive(self._publish_steps(batch))
        self._done += len(batch)
        self._progress.set()

    async def _wait_for_stop(self, seconds: float) -> bool:
        """Wait up to ``seconds``; True if the bridge is being stopped."""
        assert self._stop_requested is not None
        try:
            async with asyncio.timeout(seconds):
                await self._stop_requested.wait()
        except TimeoutError:
            pass
        return self._stop_requested.is_set()

    # -- listening ----------------------------------------------------------

    def _subscribe(self, channel: str) -> None:
        # Caller holds self._lock. The listener task subscribes within
        # _POLL_SECONDS; connect() cannot wait for it on the event loop.
        self._subscribed.add(channel)
        self._changes.append(("subscribe", channel))
        self._changes_requested += 1

    async def subscribed(self, timeout: float | None = 10.0) -> bool:
        """
        Wait until the listener has subscribed to every signal registered, or
        given its first remote-capable receiver, since ``start()``.

        ``start()`` itself returns subscribed to what was registered before;
        ``register()`` and ``connect()`` cannot wait on the event loop, so the
        listener subscribes for them a moment later. Await this when a send
        from elsewhere must be heard right after.

        Arguments:

            timeout
                The longest wait in seconds; None waits as long as it takes.

        Returns True once subscribed, False on timeout or if not running.
        """
        target = self._changes_requested
        try:
            async with asyncio.timeout(timeout):
                while self._running and self._changes_applied < target:
                    await asyncio.sleep(_POLL_SECONDS / 10)
        except TimeoutError:
            pass
        return self._running and self._changes_applied >= target

    async def _listen(self, subscription: AsyncSubscription) -> None:
        assert self._stop_requested is not None
        _listening.set(self)  # seen by the receivers it runs (their contexts are copies)
        try:
            if self.durable:
                await self._drive(self._start_durable_steps())
            ping_sent: float | None = None
            while not self._stop_requested.is_set():
                try:
                    while self._changes:
                        action, channel = self._changes[0]
                        await getattr(subscription, action)([channel])
                        if action == "subscribe":
                            await self._drive(self._subscribed_steps([channel]))
                        self._changes.popleft()
                        self._changes_applied += 1
                    if self._watch_due():
                        await self._drive(self._watch_steps())
                    received = await subscription.get(_POLL_SECONDS)
                    if received is None:
                        ping, ping_sent = self._health_check(subscription.last_activity, ping_sent)
                        if ping:
                            await subscription.ping()
                        continue
                except TransportError as exc:
                    ping_sent = None
                    if not await self._drive(self._recover_steps(subscription, exc)):
                        return
                    continue
                try:
                    await self._handle(*received)
                except Exception:
                    self._stats.add("listener_errors")
                    logger.exception("relay listener could not handle a message; going on")
        except asyncio.CancelledError:
            raise
        except BaseException:
            logger.critical(
                "relay listener crashed; this process no longer receives signals", exc_info=True
            )
            raise
        finally:
            await subscription.close()

    async def _drive(self, steps: _Steps[_T]) -> _T:
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
                value = await self._perform(op)
            except Exception as exc:
                error = exc

    async def _perform(self, op: ops.Op) -> Any:
        match op:
            case ops.Call(method, args):
                return await getattr(self.transport, method)(*args)
            case ops.Handle(channel, data):
                return await self._handle(channel, data, replay=True)
            case ops.Wait(seconds) | ops.PublisherWait(seconds):
                return await self._wait_for_stop(seconds)
            case ops.Stopping():
                return self._stop_requested is not None and self._stop_requested.is_set()
            case ops.Reconnect(subscription):
                return await subscription.reconnect()
            case ops.Send(signal, kwargs):
                return await signal.asend_robust(self, **kwargs)
            case ops.RunOnce(signal, message, call, claim):
                won = _Won([], [], [])
                won.add(call, claim)
                return await self._run_message(
                    signal, message, won.sync, won.asynchronous, won.claims
                )
        raise AssertionError(f"unknown operation {op!r}")

    async def _handle(self, channel: str, data: bytes, replay: bool = False) -> int:
        """Decode a frame and fire its messages; return how many were fired."""
        accepted = self._accept(channel, data, replay, defer=self.durable and not replay)
        if accepted is _DEFERRED:
            # See Relay._handle.
            await self._drive(self._recover_from_log_steps(channel))
            accepted = self._accept(channel, data, replay)
        if accepted is None:
            return 0
        signal = accepted.signal
        for message in accepted.own:
            await self._fire(signal, message, only_once=True)
        for kwargs in accepted.gaps:
            await gap.asend_robust(self, **kwargs)
        if not accepted.fresh:
            return 0
        await self._fire_all(signal, accepted.fresh)
        if self.durable and self.worker_id is not None:
            await self._drive(self._remember_steps(accepted.fresh[-1]))
        return len(accepted.fresh)

    async def _fire_all(self, signal: Signal, messages: list[wire.Message]) -> None:
        """
        Fire the receivers each message reaches, in order. The synchronous
        receivers of consecutive messages without coroutine receivers run in
        one trip to a worker thread rather than one each.
        """
        pending: list[tuple[wire.Message, Sequence[_RemoteCall]]] = []
        claims: list[str] = []
        name: Any = _NO_SENDER
        for message in messages:
            if message.sender != name:
                name = message.sender
                calls = _remote_calls(signal, name)
            won: Sequence[str] = ()
            if calls[2]:  # once receivers, claimed message by message
                sync, asynchronous, won = await self._calls_for(signal, message)
            else:
                sync, asynchronous = calls[0], calls[1]
            if asynchronous:
                await self._run_sync(signal, pending, claims)
                pending, claims = [], []
                await self._run_message(signal, message, sync, asynchronous, won)
                name = _NO_SENDER  # the receivers may have changed them
            elif sync:
                pending.append((message, sync))
                claims.extend(won)
        await self._run_sync(signal, pending, claims)

    async def _fire(self, signal: Signal, message: wire.Message, only_once: bool = False) -> None:
        """Fire the receivers a remote message reaches, as ``asend`` would."""
        sync, asynchronous, claims = await self._calls_for(signal, message, only_once)
        if sync or asynchronous:
            await self._run_message(signal, message, sync, asynchronous, claims)

    async def _calls_for(
        self, signal: Signal, message: wire.Message, only_once: bool = False
    ) -> tuple[Sequence[_RemoteCall], Sequence[_RemoteCall], list[str]]:
        """
        The (sync, async) receivers to call for a message, claiming the once
        ones, and the claims won.
        """
        sync, asynchronous, once = _remote_calls(signal, message.sender)
        if only_once:
            sync = asynchronous = ()
        if not once:
            return sync, asynchronous, []
        won = await self._drive(self._claim_steps(signal, message, once))
        if won.claims:
            self._keep_leases()
        return (*sync, *won.sync), (*asynchronous, *won.asynchronous), won.claims

    def _keep_leases(self) -> None:
        """Start the task that renews the leases of running once receivers, if need be."""
        if self._keeper_task is None or self._keeper_task.done():
            self._keeper_task = asyncio.get_running_loop().create_task(
                self._renew_leases(), name=f"relay-leases[{self.namespace}]"
            )

    async def _renew_leases(self) -> None:
        while not await self._wait_for_stop(self.once_lease / 3):
            async with self._leases_lock:
                await self._drive(self._renew_steps())
        # Stopping: the listener may still be running a receiver; keep its lease.
        while self._held and self._listener_task is not None and not self._listener_task.done():
            await asyncio.sleep(min(self.once_lease / 3, _POLL_SECONDS))
            async with self._leases_lock:
                await self._drive(self._renew_steps())

    async def _run_message(
        self,
        signal: Signal,
        message: wire.Message,
        sync: Sequence[_RemoteCall],
        asynchronous: Sequence[_RemoteCall],
        claims: Sequence[str] = (),
    ) -> None:
        try:
            await self._call_message(signal, message, sync, asynchronous)
        finally:
            if claims:
                async with self._leases_lock:
                    await self._drive(self._finish_steps(claims))

    async def _call_message(
        self,
        signal: Signal,
        message: wire.Message,
        sync: Sequence[_RemoteCall],
        asynchronous: Sequence[_RemoteCall],
    ) -> None:
        token = _current_message.set(message)
        try:
            context = contextvars.copy_context()
        finally:
            _current_message.reset(token)
        fired = errors = 0
        if sync:
            loop = asyncio.get_running_loop()
            fired, errors = await loop.run_in_executor(
                None, context.run, self._call_sync, signal, message, sync
            )
        if asynchronous:
            factories, failures = self._coroutine_calls(signal, message, asynchronous)
            if len(factories) == 1:
                # What run_parallel does for one call, without a task group.
                await asyncio.get_running_loop().create_task(factories[0](), context=context)
            else:
                await run_parallel(factories, context)
            fired += len(factories)
            errors += len(failures)
        self._count_fired(message.signal, fired, errors)

    async def _run_sync(
        self,
        signal: Signal,
        batch: list[tuple[wire.Message, Sequence[_RemoteCall]]],
        claims: Sequence[str] = (),
    ) -> None:
        if not batch:
            return
        try:
            await self._call_batch(signal, batch)
        finally:
            if claims:
                async with self._leases_lock:
                    await self._drive(self._finish_steps(claims))

    async def _call_batch(
        self, signal: Signal, batch: list[tuple[wire.Message, Sequence[_RemoteCall]]]
    ) -> None:
        context = contextvars.copy_context()

        def call_all() -> tuple[int, int]:
            fired = errors = 0
            index, count = 0, len(batch)
            while index < count:
                message, calls = batch[index]
                index += 1
                if _c_fire_messages is not None and message.trace is None:
                    # Consecutive messages with the same receivers in one C
                    # run, as Relay._handle fires them.
                    end = index
                    while end < count and batch[end][1] is calls:
                        end += 1
                    run = [queued for queued, _ in batch[index - 1 : end]]
                    fired_run = _c_fire_messages(
                        run,
                        0,
                        message.sender,
                        calls,
                        signal,
                        _current_message,
                        self._log_receiver_error,
                    )
                    if fired_run is not None:
                        stop, fired_now, errors_now, resume = fired_run
                        fired += fired_now
                        errors += errors_now
                        if resume >= 0:  # the rest of run[stop] is fired below
                            message, calls = run[stop], calls[resume:]
                            index += stop
                        elif stop > 0:
                            index += stop - 1
                            continue
                token = _current_message.set(message)
                try:
                    counts = self._call_sync(signal, message, calls)
                finally:
                    _current_message.reset(token)
                fired += counts[0]
                errors += counts[1]
            return fired, errors

        loop = asyncio.get_running_loop()
        fired, errors = await loop.run_in_executor(None, context.run, call_all)
        self._count_fired(batch[0][0].signal, fired, errors)

    def _after_fork(self) -> None:
        # An event loop does not survive a fork: the child starts afresh.
        super()._after_fork()
        self._forget_run()
        self._wakeup = self._progress = self._stop_requested = None
        self._sync_publish = None
        self._leases_lock = asyncio.Lock()
