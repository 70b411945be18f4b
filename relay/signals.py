"""
The in-process signal dispatcher: ``Signal`` and the ``receiver`` decorator.

``Signal`` behaves like ``django.dispatch.Signal`` (Django 6.1) and imports
nothing of Redis. A bridge that relays sends to other processes plugs in
through ``Signal._outboxes`` (see ``relay.bridge``); without one, this module
is all there is.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import itertools
import logging
import threading
import weakref
from collections.abc import Awaitable, Callable, Hashable, Iterator, Sequence
from operator import call
from types import FunctionType, MethodType
from typing import Any, Final, NamedTuple, Protocol, TypeVar

from relay._accelerator import speedups
from relay._async import (
    ensure_no_running_loop,
    is_async_callable,
    restore_context,
    run_coroutine_sync,
    run_parallel,
)

__all__ = ["SCOPES", "Registration", "Signal", "receiver"]

logger = logging.getLogger("relay.dispatch")

F = TypeVar("F", bound=Callable[..., Any])

#: The values ``Signal.connect(scope=...)`` accepts, besides ``None``.
SCOPES: Final = ("all", "local", "once")

_CO_VARKEYWORDS: Final = inspect.CO_VARKEYWORDS

#: The receiver calls of send and send_robust in C (relay._speedups), when it
#: is in use: the same calls, in the same order, with the same results.
_c_send_to = None if speedups is None else speedups.send_to


def _make_id(target: object) -> Hashable:
    """Identity key of a receiver or sender; bound methods by (instance, function)."""
    if type(target) is MethodType:
        return (id(target.__self__), id(target.__func__))
    return id(target)


NONE_ID: Final = _make_id(None)


def _accepts_kwargs(func: Callable[..., Any]) -> bool:
    """Return True if ``func`` accepts arbitrary keyword arguments."""
    plain = func.__func__ if type(func) is MethodType else func
    if type(plain) is FunctionType and not plain.__dict__:
        return bool(plain.__code__.co_flags & _CO_VARKEYWORDS)
    try:
        parameters = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):
        # No signature to inspect (some builtins): let the call decide.
        return True
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


class _StrongRef:
    """A strong reference with the call interface of ``weakref.ref``."""

    __slots__ = ("obj",)

    def __init__(self, obj: object) -> None:
        self.obj = obj

    def __call__(self) -> object:
        return self.obj


class Registration(NamedTuple):
    """
    One entry of ``Signal.receivers``.

    The first four fields match Django's tuples: the lookup key
    ``(receiver id or dispatch_uid, sender id)``, the receiver (a weak
    reference when connected with ``weak=True``), a reference to the sender
    (``None`` for any sender) and whether the receiver is a coroutine function.
    """

    key: tuple[Hashable, Hashable]
    receiver: Any
    sender_ref: Callable[[], object] | None
    is_async: bool
    weak: bool
    scope: str | None
    dispatch_uid: Hashable | None


# How a snapshot holds a receiver: a zero-argument callable returning it, or
# None once it is gone (its weak reference, or a C-level getter for a strong one).
_Getter = Callable[[], Any]
_Calls = tuple[_Getter, ...]


def _getter(entry: Registration) -> _Getter:
    return entry.receiver if entry.weak else itertools.repeat(entry.receiver).__next__


class _Snapshot:
    """
    The receivers a send should call, precomputed after every change.

    ``any`` holds the ``(sync, async)`` getters of receivers for any sender;
    ``by_sender`` maps the id of each sender that has receivers of its own to
    the merged ``(sync, async)`` getters, in connection order. ``cache`` is
    free for consumers such as the bridge and dies with the snapshot.

    ``sync_only`` is True when a send needs nothing but synchronous calls:
    no async receiver and no sender that is a bound method; ``fast`` when
    moreover no bridge is attached (``relayed``). Such a send takes ``sync``
    (the getters for any sender) or ``by_id[id(sender)]``: ``by_id`` is
    keyed by the ``id()`` of each live sender that has receivers of its own.
    That is ``_make_id(sender)`` for every sender but a bound method, and a
    bound method sent as the sender cannot share the id of a live registered
    one, so it falls through to ``sync`` exactly as ``by_sender`` would send
    it to ``any``. A sender that dies flags the signal, which drops the
    snapshot before its id can be reused.

    ``outbox`` is the one outbox a sync-only send hands itself to, when
    exactly one bridge publishes the signal (``outboxes``), else None.
    """

    __slots__ = (
        "any",
        "by_id",
        "by_sender",
        "cache",
        "entries",
        "fast",
        "has_async",
        "outbox",
        "sync",
        "sync_only",
    )

    def __init__(self, entries: Sequence[Registration], outboxes: Sequence[Outbox] = ()) -> None:
        self.entries = tuple(entries)
        specific = {e.key[1] for e in self.entries if e.key[1] != NONE_ID}
        calls: dict[Hashable, tuple[list[_Getter], list[_Getter]]] = {
            key: ([], []) for key in (NONE_ID, *specific)
        }
        for entry in self.entries:
            if entry.scope == "once":
                continue  # run by one process's bridge listener, never in a local send
            getter = _getter(entry)
            sender_key = entry.key[1]
            targets = calls.values() if sender_key == NONE_ID else (calls[sender_key],)
            for sync, asynchronous in targets:
                (asynchronous if entry.is_async else sync).append(getter)
        any_sync, any_async = calls.pop(NONE_ID)
        self.any: tuple[_Calls, _Calls] = (tuple(any_sync), tuple(any_async))
        self.by_sender: dict[Hashable, tuple[_Calls, _Calls]] = {
            key: (tuple(sync), tuple(asynchronous)) for key, (sync, asynchronous) in calls.items()
        }
        self.cache: dict[Any, Any] = {}
        self.has_async = any(e.is_async and e.scope != "once" for e in self.entries)
        self.sync: _Calls = self.any[0]
        self.by_id: dict[int, _Calls] = {}
        method_senders = False
        for entry in self.entries:
            if entry.sender_ref is None:
                continue
            live_sender = entry.sender_ref()
            if live_sender is None:
                continue  # dead: flagged, pruned by the next refresh; never matches
            if type(live_sender) is MethodType:
                method_senders = True
                break
            self.by_id[id(live_sender)] = self.by_sender[entry.key[1]][0]
        self.sync_only = not (self.has_async or method_senders)
        self.fast = self.sync_only and not outboxes
        self.outbox = outboxes[0] if self.sync_only and len(outboxes) == 1 else None
        if not self.sync_only:
            self.by_id = {}

    def calls_for(self, sender: object) -> tuple[_Calls, _Calls]:
        if self.by_sender:
            return self.by_sender.get(_make_id(sender), self.any)
        return self.any


def _live(getters: _Calls) -> list[Callable[..., Any]]:
    return [receiver for receiver in map(call, getters) if receiver is not None]


def once_name(receiver: object) -> str:
    """The dotted name by which processes recognise a receiver: ``module.qualname``."""
    function = receiver.__func__ if type(receiver) is MethodType else receiver
    module = getattr(function, "__module__", None) or "<unknown>"
    qualname = getattr(function, "__qualname__", None) or "<unnamed>"
    return f"{module}.{qualname}"


def _receiver_name(receiver: object) -> str:
    name = getattr(receiver, "__qualname__", None)
    return name if isinstance(name, str) else repr(receiver)


def _log_robust_failure(receiver: object, err: Exception) -> None:
    logger.error(
        "Error calling %s in Signal.send_robust() (%s)",
        _receiver_name(receiver),
        err,
        exc_info=err,
    )


class Outbox(Protocol):
    """
    What a bridge attaches to a signal to see its sends (see ``relay.bridge``).

    ``prepare`` runs before any receiver: it validates and encodes the send and
    raises if that is impossible. What it returns goes to ``hand_off`` once
    the local receivers have run (``ahand_off`` after ``asend``, which must
    not block the event loop). ``check_scope`` may refuse a receiver before it
    is connected, with an error saying why; ``receiver_connected`` hears of
    every new registration.
    """

    namespace: str

    def prepare(self, signal: Signal, sender: object, named: dict[str, Any]) -> Any: ...

    def hand_off(self, prepared: Any) -> None: ...

    async def ahand_off(self, prepared: Any) -> None: ...

    def check_scope(self, scope: str | None) -> None: ...

    def receiver_connected(self, registration: Registration) -> None: ...


class Signal:
    """
    Base class for all signals.

    Internal attributes:

        receivers
            A list of ``Registration`` tuples, one per live connection.
    """

    def __init__(self, use_caching: bool = False, name: str | None = None) -> None:
        """
        Create a new signal.

        Arguments:

            use_caching
                Accepted for compatibility with Django. relay always resolves
                receivers through a table built once per change, so sends are
                as fast as Django's cached path for every sender (including
                ``None`` and unhashable ones) and no sender is kept alive.

            name
                The signal's identity across processes, such as
                ``"shop.order_placed"``. Needed only to relay the signal through
                a bridge; ``Relay.register(signal, name=...)`` can give it later.
        """
        self.receivers: list[Registration] = []
        self.lock = threading.Lock()
        self.use_caching = use_caching
        self.name = name
        self._keys: set[tuple[Hashable, Hashable]] = set()
        self._dead_receivers = False
        self._snapshot: _Snapshot | None = _Snapshot(())
        self._attached: list[Outbox] = []
        self._outboxes: tuple[Outbox, ...] = ()
        self.default_scope = "all"

    def __repr__(self) -> str:
        label = f" {self.name!r}" if self.name else ""
        return f"<{type(self).__name__}{label} receivers={len(self.receivers)}>"

    # -- connecting ---------------------------------------------------------

    def connect(
        self,
        receiver: Callable[..., Any],
        sender: object = None,
        weak: bool = True,
        dispatch_uid: Hashable | None = None,
        *,
        scope: str | None = None,
    ) -> None:
        """
        Connect receiver to sender for signal.

        Arguments:

            receiver
                A function or an instance method which is to receive signals.
                Receivers must be callable, accept keyword arguments
                (``**kwargs``) and, if ``weak`` is True, be weak referenceable.
                ``async def`` receivers are recognised here and awaited by
                ``send``/``asend``.

                If a receiver is connected with a ``dispatch_uid``, it is not
                added if another receiver was already connected with that
                ``dispatch_uid`` for the same sender. Connecting the same
                receiver (or ``dispatch_uid``) for the same sender twice keeps
                the first registration.

            sender
                The sender to which the receiver should respond. Must either be
                a Python object, or None to receive events from any sender.
                Weakly referenced when possible: when the sender is garbage
                collected, its receivers are dropped.

            weak
                Whether to use weak references to the receiver. By default, a
                weak reference is kept, so a receiver that is garbage collected
                (a lambda or a local function, for instance) disappears. If
                False, the signal keeps the receiver alive.

            dispatch_uid
                An identifier used to uniquely identify a particular instance of
                a receiver. This will usually be a string, though it may be
                anything hashable.

            scope
                Which sends fire the receiver once the signal is registered
                with a bridge: ``"all"`` (sends from every process),
                ``"local"`` (sends from this process only) or ``"once"``
                (for each send anywhere, exactly one process that has this
                receiver connected runs it, in its bridge's listener; never
                inside the local ``send``). ``None`` takes the signal's
                default, ``"all"`` unless ``Relay.register(..., scope=...)``
                said otherwise. Without a bridge, ``"all"`` and ``"local"``
                mean the same and ``"once"`` receivers never run. A ``"once"``
                receiver needs a ``dispatch_uid`` or a module-level name: that
                is how processes agree it is the same receiver.
        """
        self._connect(receiver, sender, weak, dispatch_uid, scope)

    def _connect(
        self,
        receiver: Callable[..., Any],
        sender: object,
        weak: bool,
        dispatch_uid: Hashable | None,
        scope: str | None,
    ) -> bool:
        """Connect as ``connect`` does; return False if the key was already there."""
        if not callable(receiver):
            raise TypeError("Signal receivers must be callable.")
        if not _accepts_kwargs(receiver):
            raise ValueError("Signal receivers must accept keyword arguments (**kwargs).")
        if scope is not None and scope not in SCOPES:
            raise ValueError(
                f"Unknown scope {scope!r}; use one of {', '.join(map(repr, SCOPES))} or None."
            )

        if scope == "once" and not dispatch_uid and "<" in once_name(receiver):
            raise ValueError(
                f"scope='once' needs a dispatch_uid, or a receiver defined at module level "
                f"(its dotted name is its identity across processes), not {receiver!r}"
            )
        for outbox in tuple(self._attached):
            outbox.check_scope(scope)
        sender_id = _make_id(sender)
        lookup_key = (dispatch_uid if dispatch_uid else _make_id(receiver), sender_id)
        is_async = is_async_callable(receiver)

        stored: Any = receiver
        if weak:
            if type(receiver) is MethodType or (
                hasattr(receiver, "__self__") and hasattr(receiver, "__func__")
            ):
                stored = weakref.WeakMethod(receiver, self._flag_dead_receivers)
            else:
                stored = weakref.ref(receiver, self._flag_dead_receivers)

        sender_ref: Callable[[], object] | None = None
        if sender is not None:
            sender_ref = self._sender_ref(sender)

        entry = Registration(
            lookup_key, stored, sender_ref, is_async, weak, scope, dispatch_uid or None
        )
        with self.lock:
            self._clear_dead_receivers()
            if lookup_key in self._keys:
                return False
            self._keys.add(lookup_key)
            self.receivers.append(entry)
            self._snapshot = None
            attached = tuple(self._attached)
        for outbox in attached:
            outbox.receiver_connected(entry)
        return True

    def _sender_ref(self, sender: object) -> Callable[[], object]:
        try:
            if type(sender) is MethodType:
                return weakref.WeakMethod(sender, self._flag_dead_receivers)
            return weakref.ref(sender, self._flag_dead_receivers)
        except TypeError:
            # Unweakrefable (object(), str, int): hold it, so its id stays taken.
            return _StrongRef(sender)

    def disconnect(
        self,
        receiver: Callable[..., Any] | None = None,
        sender: object = None,
        dispatch_uid: Hashable | None = None,
    ) -> bool:
        """
        Disconnect receiver from sender for signal.

        If weak references are used, disconnect need not be called. The
        receiver will be removed from dispatch automatically.

        Arguments:

            receiver
                The registered receiver to disconnect. May be None if
                ``dispatch_uid`` is specified.

            sender
                The registered sender to disconnect: the same ``sender`` the
                receiver was connected with (also when using ``dispatch_uid``).

            dispatch_uid
                The unique identifier of the receiver to disconnect.

        Returns True if a receiver was disconnected, False if none matched.
        """
        lookup_key = (dispatch_uid if dispatch_uid else _make_id(receiver), _make_id(sender))
        with self.lock:
            self._clear_dead_receivers()
            if lookup_key not in self._keys:
                return False
            self._keys.discard(lookup_key)
            self.receivers = [e for e in self.receivers if e.key != lookup_key]
            self._snapshot = None
            return True

    def has_listeners(self, sender: object = None) -> bool:
        """
        Return True if any live receiver would be called for ``sender``.

        Arguments:

            sender
                The sender to ask about. None (the default) asks about the
                receivers connected for any sender only.
        """
        sync, asynchronous = self._current().calls_for(sender)
        return bool(_live(sync) or _live(asynchronous))

    @contextlib.contextmanager
    def connected_to(self, receiver: F, sender: object = None) -> Iterator[F]:
        """
        Connect ``receiver`` for the duration of a ``with`` block (handy in tests).

        The receiver is held strongly and always disconnected on exit, even when
        the block raises. If it was already connected for that sender, the
        existing registration is left as it was.

        Arguments:

            receiver
                The receiver to connect, as for ``connect``.

            sender
                The sender to which the receiver should respond, or None for any.
        """
        added = self._connect(receiver, sender, False, None, None)
        try:
            yield receiver
        finally:
            if added:
                self.disconnect(receiver, sender=sender)

    # -- sending ------------------------------------------------------------

    def send(self, sender: object, **named: Any) -> list[tuple[Callable[..., Any], Any]]:
        """
        Send signal from sender to all connected receivers.

        If any receiver raises an error, the error propagates back through
        send, terminating the dispatch loop. So it's possible that all
        receivers won't be called if an error is raised.

        If any receivers are asynchronous, they are called after all the
        synchronous receivers, concurrently, on a private event loop. Calling
        ``send`` from a thread that runs an event loop then raises
        RuntimeError: use ``asend`` there.

        Arguments:

            sender
                The sender of the signal. Either a specific object or None.

            named
                Named arguments which will be passed to receivers.

        Returns a list of tuple pairs [(receiver, response), ... ], synchronous
        receivers first, then asynchronous ones, each in connection order.
        """
        snapshot = self._snapshot or self._refresh()
        if snapshot.fast:
            by_id = snapshot.by_id
            getters = by_id.get(id(sender), snapshot.sync) if by_id else snapshot.sync
            if not getters:
                return []
            if _c_send_to is not None:
                responses = _c_send_to(getters, self, sender, named, None)
                if responses is not None:
                    return responses
            if "signal" in named:
                raise TypeError("receivers got multiple values for keyword argument 'signal'")
            kwargs = {"signal": self, "sender": sender, **named}
            if len(getters) == 1:
                receiver = getters[0]()
                if receiver is None:
                    return []
                return [(receiver, receiver(**kwargs))]
            # Resolve every weak reference first, as Django does: a receiver
            # that an earlier one lets go of during this send still runs.
            receivers = [*map(call, getters)]
            responses = []
            # A receiver that died is None here only if its weakref callback
            # has not run yet (a race with another thread), so the loop does
            # not test each one: calling None raises TypeError, and the loop
            # goes on after it. (``responses.append`` in the loop, not a local
            # alias: CPython specialises that call.)
            try:
                for receiver in receivers:
                    responses.append((receiver, receiver(**kwargs)))
                return responses
            except TypeError:
                if receivers[len(responses)] is not None:
                    raise  # from the receiver itself
            # Outside the except block, so that errors raised by later
            # receivers are not chained to that TypeError.
            for receiver in receivers[len(responses) + 1 :]:
                if receiver is not None:
                    responses.append((receiver, receiver(**kwargs)))
            return responses
        if snapshot.outbox is not None:
            return self._send_relayed(snapshot, snapshot.outbox, sender, named, False)
        return self._send_general(snapshot, sender, named, "send")

    def send_robust(self, sender: object, **named: Any) -> list[tuple[Callable[..., Any], Any]]:
        """
        Send signal from sender to all connected receivers catching errors.

        If any receiver raises an error (specifically any subclass of
        Exception), the error instance is returned as the result for that
        receiver, with its traceback at ``__traceback__``, and logged on the
        ``relay.dispatch`` logger. The other receivers still run.

        Arguments:

            sender
                The sender of the signal. Can be any Python object (normally
                one registered with a connect if you actually want something
                to occur).

            named
                Named arguments which will be passed to receivers.

        Returns a list of tuple pairs [(receiver, response), ... ].
        """
        snapshot = self._snapshot or self._refresh()
        if snapshot.fast:
            by_id = snapshot.by_id
            getters = by_id.get(id(sender), snapshot.sync) if by_id else snapshot.sync
            if not getters:
                return []
            if _c_send_to is not None:
                responses = _c_send_to(getters, self, sender, named, _log_robust_failure)
                if responses is not None:
                    return responses
            if "signal" in named:
                raise TypeError("receivers got multiple values for keyword argument 'signal'")
            kwargs = {"signal": self, "sender": sender, **named}
            if len(getters) == 1:
                receiver = getters[0]()
                if receiver is None:
                    return []
                try:
                    return [(receiver, receiver(**kwargs))]
                except Exception as err:
                    _log_robust_failure(receiver, err)
                    return [(receiver, err)]
            responses = []
            for receiver in [*map(call, getters)]:
                if receiver is not None:
                    try:
                        response = receiver(**kwargs)
                    except Exception as err:
                        _log_robust_failure(receiver, err)
                        response = err
                    responses.append((receiver, response))
            return responses
        if snapshot.outbox is not None:
            return self._send_relayed(snapshot, snapshot.outbox, sender, named, True)
        return self._send_general(snapshot, sender, named, "send_robust")

    def _send_relayed(
        self,
        snapshot: _Snapshot,
        outbox: Outbox,
        sender: object,
        named: dict[str, Any],
        robust: bool,
    ) -> list[tuple[Callable[..., Any], Any]]:
        """``send`` or ``send_robust`` with synchronous receivers and one bridge."""
        # The bridge validates and encodes the send before any receiver runs,
        # and gets it once they have (even if one raised).
        prepared = outbox.prepare(self, sender, named)
        try:
            by_id = snapshot.by_id
            getters = by_id.get(id(sender), snapshot.sync) if by_id else snapshot.sync
            return self._call_sync(getters, sender, named, robust) if getters else []
        finally:
            outbox.hand_off(prepared)

    def _send_general(
        self, snapshot: _Snapshot, sender: object, named: dict[str, Any], what: str
    ) -> list[tuple[Callable[..., Any], Any]]:
        """``send`` or ``send_robust`` (``what``) with async receivers or bridges."""
        outboxes = self._outboxes
        if not outboxes:
            return self._send_local(snapshot, sender, named, what)
        # Each attached bridge validates and encodes the send before any
        # receiver runs, and gets it once they have (even if one raised).
        if snapshot.has_async and snapshot.calls_for(sender)[1]:
            ensure_no_running_loop(what)
        if len(outboxes) == 1:
            outbox = outboxes[0]
            prepared = outbox.prepare(self, sender, named)
            try:
                return self._send_local(snapshot, sender, named, what)
            finally:
                outbox.hand_off(prepared)
        relayed = [(outbox, outbox.prepare(self, sender, named)) for outbox in outboxes]
        try:
            return self._send_local(snapshot, sender, named, what)
        finally:
            for outbox, prepared in relayed:
                outbox.hand_off(prepared)

    def _call_sync(
        self, getters: _Calls, sender: object, named: dict[str, Any], robust: bool
    ) -> list[tuple[Callable[..., Any], Any]]:
        """Call the receivers of ``getters`` (not empty) as ``send``'s fast path does."""
        if _c_send_to is not None:
            responses = _c_send_to(
                getters, self, sender, named, _log_robust_failure if robust else None
            )
            if responses is not None:
                return responses
        if "signal" in named:
            raise TypeError("receivers got multiple values for keyword argument 'signal'")
        kwargs = {"signal": self, "sender": sender, **named}
        responses = []
        # Resolve every weak reference first, as Django does.
        for receiver in [*map(call, getters)] if len(getters) > 1 else (getters[0](),):
            if receiver is None:
                continue
            if not robust:
                responses.append((receiver, receiver(**kwargs)))
                continue
            try:
                response = receiver(**kwargs)
            except Exception as err:
                _log_robust_failure(receiver, err)
                response = err
            responses.append((receiver, response))
        return responses

    def _send_local(
        self, snapshot: _Snapshot, sender: object, named: dict[str, Any], what: str
    ) -> list[tuple[Callable[..., Any], Any]]:
        if not self.receivers:
            return []
        sync, asynchronous = snapshot.calls_for(sender)
        if asynchronous:
            ensure_no_running_loop(what)
        robust = what == "send_robust"
        responses: list[tuple[Callable[..., Any], Any]] = []
        if sync:
            # Resolve every weak reference first, as Django does: a receiver
            # that an earlier one lets go of during this send still runs.
            run_sync = self._send_robust_to if robust else self._send_to
            responses = run_sync(_live(sync), sender, named)
        if asynchronous:
            responses.extend(
                self._run_async(_live(asynchronous), sender, named, what, robust=robust)
            )
        return responses

    async def asend(self, sender: object, **named: Any) -> list[tuple[Callable[..., Any], Any]]:
        """
        Send signal from sender to all connected receivers, in async code.

        Synchronous receivers run first, in order, in a worker thread so they
        do not block the event loop; then the asynchronous receivers run
        concurrently. All share one copy of the caller's context, so
        context-variable changes are seen by later receivers and by the caller.
        If any receiver raises an error, it propagates back through asend.

        Arguments:

            sender
                The sender of the signal. Either a specific object or None.

            named
                Named arguments which will be passed to receivers.

        Returns a list of tuple pairs [(receiver, response), ... ], synchronous
        receivers first, then asynchronous ones, each in connection order.
        """
        return await self._asend(sender, named, robust=False)

    async def asend_robust(
        self, sender: object, **named: Any
    ) -> list[tuple[Callable[..., Any], Any]]:
        """
        Send signal from sender to all connected receivers catching errors, in
        async code.

        Receivers run as for ``asend``; errors are handled as for
        ``send_robust``.

        Arguments:

            sender
                The sender of the signal. Can be any Python object.

            named
                Named arguments which will be passed to receivers.

        Returns a list of tuple pairs [(receiver, response), ... ].
        """
        return await self._asend(sender, named, robust=True)

    async def _asend(
        self, sender: object, named: dict[str, Any], robust: bool
    ) -> list[tuple[Callable[..., Any], Any]]:
        relayed = self._prepare_relay(sender, named, None) if self._outboxes else ()
        try:
            if not self.receivers:
                return []
            sync_calls, async_calls = self._current().calls_for(sender)
            sync_receivers, async_receivers = _live(sync_calls), _live(async_calls)
            responses: list[tuple[Callable[..., Any], Any]] = []
            context = contextvars.copy_context()
            try:
                if sync_receivers:
                    run_sync = self._send_robust_to if robust else self._send_to
                    loop = asyncio.get_running_loop()
                    responses = await loop.run_in_executor(
                        None, context.run, run_sync, sync_receivers, sender, named
                    )
                if async_receivers:
                    calls = self._coroutine_calls(async_receivers, sender, named, robust=robust)
                    results = await run_parallel(calls, context)
                    responses.extend(zip(async_receivers, results, strict=True))
            finally:
                restore_context(context)
            return responses
        finally:
            for outbox, prepared in relayed:
                await outbox.ahand_off(prepared)

    def _receiver_kwargs(self, sender: object, named: dict[str, Any]) -> dict[str, Any]:
        if "signal" in named:
            raise TypeError("receivers got multiple values for keyword argument 'signal'")
        return {"signal": self, "sender": sender, **named}

    def _send_to(
        self, receivers: list[Callable[..., Any]], sender: object, named: dict[str, Any]
    ) -> list[tuple[Callable[..., Any], Any]]:
        kwargs = self._receiver_kwargs(sender, named)
        return [(r, r(**kwargs)) for r in receivers]

    def _send_robust_to(
        self, receivers: list[Callable[..., Any]], sender: object, named: dict[str, Any]
    ) -> list[tuple[Callable[..., Any], Any]]:
        kwargs = self._receiver_kwargs(sender, named)
        responses: list[tuple[Callable[..., Any], Any]] = []
        append = responses.append
        for receiver in receivers:
            try:
                response = receiver(**kwargs)
            except Exception as err:
                _log_robust_failure(receiver, err)
                response = err
            append((receiver, response))
        return responses

    def _run_async(
        self,
        receivers: list[Callable[..., Any]],
        sender: object,
        named: dict[str, Any],
        what: str,
        robust: bool = False,
    ) -> list[tuple[Callable[..., Any], Any]]:
        calls = self._coroutine_calls(receivers, sender, named, robust=robust)
        return list(zip(receivers, run_coroutine_sync(calls, what), strict=True))

    def _coroutine_calls(
        self,
        receivers: list[Callable[..., Any]],
        sender: object,
        named: dict[str, Any],
        robust: bool = False,
    ) -> list[Callable[[], Awaitable[Any]]]:
        def plain(receiver: Callable[..., Any]) -> Callable[[], Awaitable[Any]]:
            return lambda: receiver(signal=self, sender=sender, **named)

        def caught(receiver: Callable[..., Any]) -> Callable[[], Awaitable[Any]]:
            async def call() -> Any:
                try:
                    return await receiver(signal=self, sender=sender, **named)
                except Exception as err:
                    _log_robust_failure(receiver, err)
                    return err

            return call

        wrap = caught if robust else plain
        return [wrap(receiver) for receiver in receivers]

    # -- relaying (used by relay.bridge) -----------------------------------

    def _prepare_relay(
        self, sender: object, named: dict[str, Any], what: str | None
    ) -> list[tuple[Outbox, Any]]:
        """
        Let each attached bridge validate and encode this send, before any
        receiver runs; return what to hand each one afterwards.
        """
        if what is not None:
            snapshot = self._snapshot or self._refresh()
            if snapshot.has_async and snapshot.calls_for(sender)[1]:
                ensure_no_running_loop(what)
        outboxes = self._outboxes
        if len(outboxes) == 1:
            outbox = outboxes[0]
            return [(outbox, outbox.prepare(self, sender, named))]
        return [(outbox, outbox.prepare(self, sender, named)) for outbox in outboxes]

    def _attach(self, outbox: Outbox) -> None:
        """
        Attach a bridge's outbox. Only the first outbox of each namespace
        publishes, so two bridges on one namespace never publish a send twice;
        the next one takes over when it is detached.
        """
        with self.lock:
            if outbox not in self._attached:
                self._attached.append(outbox)
                self._outboxes = self._publishing_outboxes()
                self._snapshot = None  # sends take the relaying path from now on

    def _detach(self, outbox: Outbox) -> None:
        with self.lock:
            if outbox in self._attached:
                self._attached.remove(outbox)
                self._outboxes = self._publishing_outboxes()
                self._snapshot = None

    def _publishing_outboxes(self) -> tuple[Outbox, ...]:
        first: dict[str, Outbox] = {}
        for outbox in self._attached:
            first.setdefault(outbox.namespace, outbox)
        return tuple(first.values())

    # -- bookkeeping --------------------------------------------------------

    def _current(self) -> _Snapshot:
        return self._snapshot or self._refresh()

    def _refresh(self) -> _Snapshot:
        with self.lock:
            while True:
                self._clear_dead_receivers()
                snapshot = _Snapshot(self.receivers, self._outboxes)
                self._snapshot = snapshot
                # A weakref callback may have run while the snapshot was built.
                if not self._dead_receivers:
                    return snapshot

    def _clear_dead_receivers(self) -> None:
        # Note: caller is assumed to hold self.lock.
        if self._dead_receivers:
            self._dead_receivers = False
            alive = []
            for entry in self.receivers:
                if entry.weak and entry.receiver() is None:
                    continue
                if entry.sender_ref is not None and entry.sender_ref() is None:
                    continue
                alive.append(entry)
            if len(alive) != len(self.receivers):
                self.receivers = alive
                self._keys = {e.key for e in alive}
                self._snapshot = None

    def _flag_dead_receivers(self, reference: object = None) -> None:
        # Called by the garbage collector, possibly while self.lock is held:
        # only flag, the next connect, disconnect, send or has_listeners prunes.
        self._dead_receivers = True
        self._snapshot = None


def receiver(signal: Signal | list[Signal] | tuple[Signal, ...], **kwargs: Any) -> Callable[[F], F]:
    """
    A decorator for connecting receivers to signals. Used by passing in the
    signal (or list of signals) and keyword arguments to connect::

        @receiver(post_save, sender=MyModel)
        def signal_receiver(sender, **kwargs):
            ...

        @receiver([post_save, post_delete], sender=MyModel)
        def signals_receiver(sender, **kwargs):
            ...

    Returns the function itself, so it must be the outermost decorator.
    """

    def _decorator(func: F) -> F:
        if isinstance(signal, (list, tuple)):
            for s in signal:
                s.connect(func, **kwargs)
        else:
            signal.connect(func, **kwargs)
        return func

    return _decorator
