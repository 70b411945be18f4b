"""
The routing table of the deprecated module-level API.

A route is one (sender, signal) pair and the receivers connected to it, in
connection order. Senders are told apart by identity (as ``relay.Signal``
does: ``id()``, bound methods by object and function), signals by hash and
equality, so equal strings are one signal.

A receiver connected to a ``relay.Signal`` is also put on that Signal, through
its public ``connect``, as an adapter: a receiver taking ``(signal, sender,
**kwargs)`` that calls the original robustly. So the Signal's own sends (local,
and relayed from other processes by a bridge) reach old-API receivers, and
old-API sends go through the Signal to every receiver it has. The adapter is
connected weakly and kept alive only by its route entry, which lets go of it
the moment the original receiver (or the sender) is garbage collected; the
Signal then drops it as it drops any dead receiver.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import weakref
from collections.abc import Callable, Hashable, Iterable, Iterator
from dataclasses import dataclass, field
from types import MethodType
from typing import Any, Final

from relay._async import is_async_callable
from relay.core import current_message
from relay.dispatcher._apply import robust_apply
from relay.dispatcher._wildcards import Anonymous
from relay.dispatcher._wildcards import Any as AnyMarker
from relay.dispatcher.errors import DispatcherKeyError, DispatcherTypeError
from relay.naming import sender_name
from relay.signals import Signal, once_name

__all__ = ["Responses", "routes"]

logger = logging.getLogger("relay.dispatch")

Responses = list[tuple[Callable[..., Any], Any]]


def _make_id(target: object) -> Hashable:
    """Identity key of a receiver or sender; bound methods by (instance, function)."""
    if type(target) is MethodType:
        return (id(target.__self__), id(target.__func__))
    return id(target)


ANY_KEY: Final = _make_id(AnyMarker)
ANONYMOUS_KEY: Final = _make_id(Anonymous)


def _is_method(target: object) -> bool:
    return type(target) is MethodType or (
        hasattr(target, "__self__") and hasattr(target, "__func__")
    )


class _Strong:
    """A strong reference with the call interface of ``weakref.ref``."""

    __slots__ = ("obj",)

    def __init__(self, obj: object) -> None:
        self.obj = obj

    def __call__(self) -> object:
        return self.obj


def check_signal(signal: object) -> None:
    """Raise ``DispatcherTypeError`` unless ``signal`` can name a route."""
    if signal is None:
        raise DispatcherTypeError("Signal cannot be None; use a relay.Signal or a hashable object")
    try:
        hash(signal)
    except TypeError:
        raise DispatcherTypeError(
            f"signal must be a relay.Signal or a hashable object, not {type(signal).__name__}"
        ) from None


def route_sender(signal: object, sender: object) -> object:
    """The sender a route is kept under: on a Signal, ``None`` is ``Anonymous``."""
    if sender is None and isinstance(signal, Signal):
        return Anonymous
    return sender


# -- adapters ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _AdapterUid:
    """
    The ``dispatch_uid`` of an adapter on a Signal.

    Equal for every adapter of one receiver of one kind, so that a bridge
    firing a remote send calls the receiver once even when it is connected for
    two senders that share a name; ``str()`` is the receiver's dotted name, the
    same in every process (what ``scope="once"`` claims by).
    """

    receiver_key: Hashable
    kind: str
    name: str = field(compare=False)

    def __str__(self) -> str:
        return f"relay.dispatcher:{self.name}:{self.kind}"


class _Frame:
    """What the adapters of one old-API send on a Signal did, for its return value."""

    __slots__ = ("fired", "signal", "skipped")

    def __init__(self, signal: Signal) -> None:
        self.signal = signal
        self.fired: dict[_Adapter, Callable[..., Any]] = {}
        self.skipped: set[_Adapter] = set()


# The old-API send on a Signal in progress in this context, if any. Reset to
# None while a receiver runs, so sends it makes are never mistaken for it.
_frame: contextvars.ContextVar[_Frame | None] = contextvars.ContextVar(
    "relay_dispatcher_frame", default=None
)


class _Adapter:
    """
    An old-API receiver as a Signal receiver.

    ``kind`` says which senders it was connected for: ``"exact"`` (one
    sender, and the Signal filters), ``"anonymous"`` (sends with no sender)
    or ``"any"`` (every sender, unless the same receiver is also connected for
    this send's own sender, where that registration fires it: PyDispatcher
    calls a receiver once per send).
    """

    __slots__ = ("__weakref__", "_reference", "_weak", "kind", "receiver_key", "signal")

    def __init__(self, connection: _Connection, signal: Signal, kind: str) -> None:
        self._reference = connection.reference
        self._weak = connection.weak
        self.receiver_key = connection.key
        self.signal = signal
        self.kind = kind

    def __repr__(self) -> str:
        return f"<relay.dispatcher receiver {self.receiver()!r} ({self.kind} sender)>"

    def receiver(self) -> Callable[..., Any] | None:
        found: Callable[..., Any] | None = self._reference() if self._weak else self._reference
        return found

    def __call__(self, signal: Signal, sender: object, **named: Any) -> Any:
        frame = _frame.get()
        if frame is not None and frame.signal is not self.signal:
            frame = None
        receiver = self.receiver()
        if receiver is None or not self._fires_for(sender):
            if frame is not None:
                frame.skipped.add(self)
            return None
        if frame is not None:
            frame.fired[self] = receiver
        token = _frame.set(None)
        try:
            return robust_apply(
                receiver,
                signal=signal,
                sender=Anonymous if sender is None else sender,
                **named,
            )
        finally:
            _frame.reset(token)

    def _fires_for(self, sender: object) -> bool:
        if self.kind == "exact":
            return True
        if self.kind == "anonymous":
            return sender is None
        return not routes.fires_specifically(self.signal, self.receiver_key, sender)


# -- the table --------------------------------------------------------------------------


class _Connection:
    """One receiver on one route: how it is held, and its adapter on a Signal."""

    __slots__ = ("__weakref__", "adapter", "key", "reference", "weak")

    def __init__(self, receiver: Callable[..., Any], weak: bool, table: _Routes) -> None:
        self.key = _make_id(receiver)
        self.weak = weak
        self.adapter: _Adapter | None = None
        self.reference: Any = receiver
        if weak:
            this = weakref.ref(self)

            def died(_: object) -> None:
                # Called by the garbage collector: no locks, only let go and flag.
                connection = this()
                if connection is not None:
                    connection.adapter = None
                table.flag_dead()

            try:
                if _is_method(receiver):
                    self.reference = weakref.WeakMethod(receiver, died)
                else:
                    self.reference = weakref.ref(receiver, died)
            except TypeError:
                raise TypeError(
                    f"cannot hold {receiver!r} through a weak reference; connect it with weak=False"
                ) from None

    def receiver(self) -> Callable[..., Any] | None:
        found: Callable[..., Any] | None = self.reference() if self.weak else self.reference
        return found


class _Route:
    """The receivers connected for one (sender, signal) pair, in connection order."""

    __slots__ = ("__weakref__", "connections", "sender_ref", "weak_sender")

    def __init__(self, sender: object, table: _Routes) -> None:
        self.connections: tuple[_Connection, ...] = ()
        self.weak_sender = False
        self.sender_ref: Callable[[], object] = _Strong(sender)
        if sender is AnyMarker or sender is Anonymous or sender is None:
            return
        this = weakref.ref(self)

        def gone(_: object) -> None:
            # The sender was garbage collected: its receivers go with it.
            route = this()
            if route is not None:
                for connection in route.connections:
                    connection.adapter = None
            table.flag_dead()

        try:
            if type(sender) is MethodType:
                self.sender_ref = weakref.WeakMethod(sender, gone)
            else:
                self.sender_ref = weakref.ref(sender, gone)
            self.weak_sender = True
        except TypeError:
            pass  # unweakrefable (object(), str, int): held, so its id stays taken

    def alive(self) -> bool:
        return not self.weak_sender or self.sender_ref() is not None

    def find(self, key: Hashable) -> _Connection | None:
        for connection in self.connections:
            if connection.key == key:
                return connection
        return None


class _Routes:
    """
    Every old-API connection of the process: ``{signal: {sender key: route}}``.

    The table's lock is held only while the table is read or changed, never
    while a receiver runs or a Signal is called (adapters take it from inside
    a Signal's send, on any thread). Connecting and disconnecting also hold
    ``_changing`` throughout, so they happen one at a time. Weak-reference
    callbacks only flag; the next operation prunes.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._changing = threading.RLock()
        self._by_signal: dict[Hashable, dict[Hashable, _Route]] = {}
        self._dead = False

    def flag_dead(self) -> None:
        self._dead = True

    def _prune(self) -> None:
        # Caller holds self._lock.
        if not self._dead:
            return
        self._dead = False
        for signal, routes in list(self._by_signal.items()):
            for key, route in list(routes.items()):
                if route.alive():
                    route.connections = tuple(
                        c for c in route.connections if c.receiver() is not None
                    )
                if not route.alive() or not route.connections:
                    for connection in route.connections:
                        connection.adapter = None
                    del routes[key]
            if not routes:
                del self._by_signal[signal]

    # -- connecting ---------------------------------------------------------------------

    def connect(
        self, receiver: Callable[..., Any], signal: Hashable, sender: object, weak: bool
    ) -> None:
        check_signal(signal)
        if not callable(receiver):
            raise TypeError(f"receivers must be callable, not {type(receiver).__name__}")
        if is_async_callable(receiver):
            raise TypeError(
                f"relay.dispatcher calls receivers synchronously; connect {receiver!r} "
                "with signal.connect() instead"
            )
        sender = route_sender(signal, sender)
        key = _make_id(sender)
        connection = _Connection(receiver, weak, self)
        with self._changing:
            with self._lock:
                self._prune()
                route = self._by_signal.get(signal, {}).get(key)
                old = route.find(connection.key) if route else None
                if route is not None and old is not None:
                    # Connecting again moves the receiver to the end.
                    route.connections = tuple(c for c in route.connections if c is not old)
            if old is not None:
                self._unplug(signal, sender, old)
            if isinstance(signal, Signal):
                self._plug(signal, sender, receiver, connection)
            with self._lock:
                routes = self._by_signal.setdefault(signal, {})
                route = routes.get(key)
                if route is None:
                    route = routes[key] = _Route(sender, self)
                route.connections = (*route.connections, connection)

    def _plug(
        self,
        signal: Signal,
        sender: object,
        receiver: Callable[..., Any],
        connection: _Connection,
    ) -> None:
        kind = _kind(sender)
        adapter = _Adapter(connection, signal, kind)
        uid = _AdapterUid(connection.key, kind, once_name(receiver))
        signal.connect(adapter, sender=None if kind != "exact" else sender, dispatch_uid=uid)
        connection.adapter = adapter

    def _unplug(self, signal: Hashable, sender: object, connection: _Connection) -> None:
        adapter, connection.adapter = connection.adapter, None
        if adapter is not None and isinstance(signal, Signal):
            kind = adapter.kind
            uid = _AdapterUid(connection.key, kind, "")
            signal.disconnect(sender=None if kind != "exact" else sender, dispatch_uid=uid)

    def disconnect(self, receiver: Callable[..., Any], signal: Hashable, sender: object) -> None:
        check_signal(signal)
        sender = route_sender(signal, sender)
        key = _make_id(sender)
        with self._changing:
            with self._lock:
                self._prune()
                routes = self._by_signal.get(signal, {})
                route = routes.get(key)
                if route is None:
                    raise DispatcherKeyError(
                        f"No receivers found for signal {signal!r} from sender {sender!r}"
                    )
                connection = route.find(_make_id(receiver))
                if connection is None:
                    raise DispatcherKeyError(
                        f"No connection to receiver {receiver!r} for signal {signal!r} "
                        f"from sender {sender!r}"
                    )
                route.connections = tuple(c for c in route.connections if c is not connection)
                if not route.connections:
                    del routes[key]
                    if not routes:
                        del self._by_signal[signal]
            self._unplug(signal, sender, connection)

    # -- looking up ---------------------------------------------------------------------

    def references(self, sender: object, signal: Hashable) -> list[Any]:
        """The raw references of one route: weak references, or strongly held receivers."""
        sender = route_sender(signal, sender)
        with self._lock:
            self._prune()
            route = self._by_signal.get(signal, {}).get(_make_id(sender))
            return [c.reference for c in route.connections] if route else []

    def _gather(self, pairs: Iterable[tuple[object, Hashable]]) -> list[_Connection]:
        # Caller holds self._lock. Each receiver once, at its first place.
        seen: set[Hashable] = set()
        found: list[_Connection] = []
        for sender, signal in pairs:
            route = self._by_signal.get(signal, {}).get(_make_id(sender))
            for connection in route.connections if route else ():
                if connection.key not in seen:
                    seen.add(connection.key)
                    found.append(connection)
        return found

    def all_references(self, sender: object, signal: Hashable) -> list[Any]:
        """The raw references, in the order ``send`` calls them, each receiver once."""
        sender = route_sender(signal, sender)
        with self._lock:
            self._prune()
            return [c.reference for c in self._gather(_lookup_order(sender, signal))]

    def fires_specifically(self, signal: Signal, receiver_key: Hashable, sender: object) -> bool:
        """
        Whether a send on ``signal`` from ``sender`` fires the receiver through
        a connection for that very sender (or for ``Anonymous``, when there is
        no sender), rather than through its connection for ``Any``.

        For a send relayed from another process, a connection for a sender
        fires when the sender's name matches, as the bridge matches them.
        """
        with self._lock:
            routes = self._by_signal.get(signal)
            if not routes:
                return False
            if sender is None:
                route = routes.get(ANONYMOUS_KEY)
                return route is not None and route.find(receiver_key) is not None
            message = current_message()
            if message is None:
                route = routes.get(_make_id(sender))
                return route is not None and route.find(receiver_key) is not None
            for key, route in routes.items():
                if key in (ANY_KEY, ANONYMOUS_KEY) or route.find(receiver_key) is None:
                    continue
                candidate = route.sender_ref()
                if candidate is not None and sender_name(candidate) == message.sender:
                    return True
            return False

    # -- sending ------------------------------------------------------------------------

    def send(
        self,
        signal: Hashable,
        sender: object,
        arguments: tuple[Any, ...],
        named: dict[str, Any],
        *,
        robust: bool = False,
        exact: bool = False,
    ) -> Responses:
        """Send as ``dispatcher.send`` (or ``sendExact``, ``sendRobust``) does."""
        check_signal(signal)
        if isinstance(signal, Signal) and not exact:
            if arguments:
                raise TypeError(
                    f"a relay.Signal takes named arguments only (they cross processes by "
                    f"name); pass the {len(arguments)} positional argument(s) by name"
                )
            return self._send_through(signal, sender, named, robust)
        sender = route_sender(signal, sender)
        pairs = [(sender, signal)] if exact else _lookup_order(sender, signal)
        with self._lock:
            self._prune()
            connections = self._gather(pairs)
        receivers = [r for r in (c.receiver() for c in connections) if r is not None]
        return _call(receivers, signal, sender, arguments, named, robust)

    def _send_through(
        self, signal: Signal, sender: object, named: dict[str, Any], robust: bool
    ) -> Responses:
        """
        An old-API send on a Signal: the Signal's own send (its receivers of
        either API, relayed to other processes when registered), then the
        receivers connected here for any signal.
        """
        no_sender = sender is None or sender is Anonymous or sender is AnyMarker
        frame = _Frame(signal)
        token = _frame.set(frame)
        try:
            if robust:
                sent = signal.send_robust(None if no_sender else sender, **named)
            else:
                sent = signal.send(None if no_sender else sender, **named)
        finally:
            _frame.reset(token)
        responses: Responses = []
        fired: set[Hashable] = set()
        for receiver, response in sent:
            if isinstance(receiver, _Adapter):
                original = frame.fired.get(receiver)
                if receiver in frame.skipped or original is None:
                    continue
                fired.add(receiver.receiver_key)
                responses.append((original, response))
            else:
                responses.append((receiver, response))
        seen = Anonymous if sender is None else sender
        pairs = _lookup_order(seen, AnyMarker)
        with self._lock:
            self._prune()
            connections = [c for c in self._gather(pairs) if c.key not in fired]
        receivers = [r for r in (c.receiver() for c in connections) if r is not None]
        responses.extend(_call(receivers, signal, seen, (), named, robust))
        return responses


def _kind(sender: object) -> str:
    if sender is AnyMarker:
        return "any"
    if sender is Anonymous:
        return "anonymous"
    return "exact"


def _lookup_order(sender: object, signal: Hashable) -> list[tuple[object, Hashable]]:
    """PyDispatcher's order: exact, then any signal, then any sender, then both."""
    return [(sender, signal), (sender, AnyMarker), (AnyMarker, signal), (AnyMarker, AnyMarker)]


def _call(
    receivers: list[Callable[..., Any]],
    signal: Hashable,
    sender: object,
    arguments: tuple[Any, ...],
    named: dict[str, Any],
    robust: bool,
) -> Responses:
    responses: Responses = []
    for receiver in receivers:
        if not robust:
            responses.append(
                (
                    receiver,
                    robust_apply(receiver, *arguments, signal=signal, sender=sender, **named),
                )
            )
            continue
        try:
            response = robust_apply(receiver, *arguments, signal=signal, sender=sender, **named)
        except Exception as err:
            logger.error(
                "Error calling %s in relay.dispatcher.robust.sendRobust() (%s)",
                getattr(receiver, "__qualname__", None) or repr(receiver),
                err,
                exc_info=err,
            )
            response = err
        responses.append((receiver, response))
    return responses


def live(references: Iterable[Any]) -> Iterator[Callable[..., Any]]:
    """Resolve weak references, skipping dead ones; yield other entries as they are."""
    for reference in references:
        if isinstance(reference, weakref.ref):
            receiver = reference()
            if receiver is not None:
                yield receiver
        else:
            yield reference


#: The one table of the process.
routes: Final = _Routes()
