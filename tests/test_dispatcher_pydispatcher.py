"""
PyDispatcher 2.0.7's documented behaviour, function by function, as ``relay.dispatcher`` keeps it.

The signals here are plain objects and strings (the "before" column); the
behaviour on a ``relay.Signal`` is in ``test_dispatcher_compat.py``.
"""

from __future__ import annotations

import functools
import gc
import logging
import pickle
import uuid
import weakref
from collections.abc import Iterator
from typing import Any

import pytest

from relay import dispatcher
from relay.dispatcher import Anonymous, errors, robust, robustapply
from relay.dispatcher import Any as AnySignal
from relay.dispatcher._routes import routes

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(autouse=True)
def _wildcards_left_clean() -> Iterator[None]:
    """A receiver left on signal=Any would hear every other test's sends."""
    yield
    gc.collect()
    assert not list(dispatcher.getReceivers(AnySignal, AnySignal))
    assert AnySignal not in routes._by_signal


def unique() -> str:
    return f"signal-{uuid.uuid4().hex}"


class Dummy:
    pass


class CallableObject:
    def __call__(self, a):
        return a

    def method(self, a):
        return a


def x(a):
    return a


# -- connect and send: PyDispatcher's own scenarios -----------------------------------------------


def test_exact_sender_and_signal():
    a = Dummy()
    signal = unique()
    dispatcher.connect(x, signal, a)
    assert dispatcher.send(signal, a, a=a) == [(x, a)]
    dispatcher.disconnect(x, signal, a)
    assert list(dispatcher.getAllReceivers(a, signal)) == []


def test_default_sender_of_connect_is_any_so_any_sender_is_heard():
    a = Dummy()
    signal = unique()
    dispatcher.connect(x, signal)
    try:
        assert dispatcher.send(signal, None, a=a) == [(x, a)]
        assert dispatcher.send(signal, a=a) == [(x, a)]  # Anonymous
        assert dispatcher.send(signal, object(), a=a) == [(x, a)]
    finally:
        dispatcher.disconnect(x, signal)
    assert list(dispatcher.getAllReceivers(None, signal)) == []


def test_any_sender_registration():
    a = Dummy()
    signal = unique()
    dispatcher.connect(x, signal, dispatcher.Any)
    assert dispatcher.send(signal, object(), a=a) == [(x, a)]
    dispatcher.disconnect(x, signal, dispatcher.Any)
    assert dispatcher.send(signal, object(), a=a) == []
    assert list(dispatcher.getAllReceivers(dispatcher.Any, signal)) == []


def test_any_signal_registration():
    a = Dummy()
    dispatcher.connect(x, AnySignal, a)
    try:
        assert dispatcher.send(unique(), a, a=a) == [(x, a)]
        assert dispatcher.send(unique(), Dummy(), a=a) == []
    finally:
        dispatcher.disconnect(x, AnySignal, a)
    assert list(dispatcher.getAllReceivers(a, AnySignal)) == []


def test_defaults_connect_to_every_signal_from_every_sender():
    heard = []

    def everything(signal, sender):
        heard.append((signal, sender))

    dispatcher.connect(everything)
    try:
        signal, owner = unique(), Dummy()
        dispatcher.send(signal, owner)
        dispatcher.send(signal)
        dispatcher.send()
    finally:
        dispatcher.disconnect(everything)
    assert heard == [(signal, owner), (signal, Anonymous), (AnySignal, Anonymous)]


def test_garbage_collected_bound_method_disappears():
    a = CallableObject()
    b = Dummy()
    signal = unique()
    dispatcher.connect(a.method, signal, b)
    del a
    gc.collect()
    assert dispatcher.send(signal, b, a=b) == []
    assert list(dispatcher.getAllReceivers(b, signal)) == []


def test_garbage_collected_callable_object_disappears():
    a = CallableObject()
    b = Dummy()
    signal = unique()
    dispatcher.connect(a, signal, b)
    del a
    gc.collect()
    assert dispatcher.send(signal, b, a=b) == []
    assert list(dispatcher.getAllReceivers(b, signal)) == []


def test_a_bound_method_lives_as_long_as_its_object():
    a = CallableObject()
    signal = unique()
    dispatcher.connect(a.method, signal)  # the bound method itself is gone at once
    gc.collect()
    assert dispatcher.send(signal, a=1) == [(a.method, 1)]
    dispatcher.disconnect(a.method, signal)


def test_weak_false_keeps_the_receiver_alive():
    signal = unique()
    dispatcher.connect(lambda a: ("strong", a), signal, weak=False)
    dispatcher.connect(lambda a: ("weak", a), signal)
    gc.collect()
    assert [response for _, response in dispatcher.send(signal, a=1)] == [("strong", 1)]


def test_receivers_of_a_dead_sender_go_with_it():
    signal = unique()
    owner = Dummy()
    strong = CallableObject()
    dispatcher.connect(strong, signal, owner, weak=False)
    assert len(dispatcher.getReceivers(owner, signal)) == 1
    strong_ref = weakref.ref(strong)
    del owner, strong
    gc.collect()
    assert dispatcher.getReceivers(dispatcher.Any, signal) == []  # any call prunes
    assert signal not in routes._by_signal
    gc.collect()
    assert strong_ref() is None


def test_a_sender_that_cannot_be_weakly_referenced_is_held_while_connected():
    signal = unique()
    owner = object()
    dispatcher.connect(x, signal, owner)
    assert dispatcher.send(signal, owner, a=1) == [(x, 1)]
    dispatcher.disconnect(x, signal, owner)


def test_multiple_registration_is_one():
    a = CallableObject()
    b = Dummy()
    signal = unique()
    for _ in range(6):
        dispatcher.connect(a, signal, b)
    assert len(dispatcher.send(signal, b, a=b)) == 1
    assert len(list(dispatcher.getAllReceivers(b, signal))) == 1
    dispatcher.disconnect(a, signal, b)


def test_reconnecting_moves_the_receiver_to_the_end():
    signal = unique()

    def first():
        return 1

    def second():
        return 2

    dispatcher.connect(first, signal)
    dispatcher.connect(second, signal)
    assert [r for r, _ in dispatcher.send(signal)] == [first, second]
    dispatcher.connect(first, signal)
    assert [r for r, _ in dispatcher.send(signal)] == [second, first]
    dispatcher.disconnect(first, signal)
    dispatcher.disconnect(second, signal)


# -- send: who hears, in which order, with which arguments ----------------------------------------


def test_lookup_order_is_exact_then_any_signal_then_any_sender_then_both():
    signal, owner = unique(), Dummy()

    def exact():
        return "exact"

    def any_signal():
        return "any signal"

    def any_sender():
        return "any sender"

    def both():
        return "both"

    # Connected in the reverse order, so only the lookup order explains the result.
    dispatcher.connect(both, AnySignal, dispatcher.Any)
    dispatcher.connect(any_sender, signal, dispatcher.Any)
    dispatcher.connect(any_signal, AnySignal, owner)
    dispatcher.connect(exact, signal, owner)
    try:
        expected = ["exact", "any signal", "any sender", "both"]
        assert [response for _, response in dispatcher.send(signal, owner)] == expected
        assert [r for r in dispatcher.liveReceivers(dispatcher.getAllReceivers(owner, signal))] == [
            exact,
            any_signal,
            any_sender,
            both,
        ]
        # Another sender hears only the Any-sender receivers; another signal only Any-signal ones.
        assert [resp for _, resp in dispatcher.send(signal, Dummy())] == ["any sender", "both"]
        assert [resp for _, resp in dispatcher.send(unique(), owner)] == ["any signal", "both"]
    finally:
        dispatcher.disconnect(both, AnySignal, dispatcher.Any)
        dispatcher.disconnect(any_signal, AnySignal, owner)


def test_a_receiver_on_several_lists_is_called_once_at_its_first_place():
    signal, owner = unique(), Dummy()
    calls = []

    def everywhere():
        calls.append(1)

    def other():
        return "other"

    dispatcher.connect(other, signal, owner)
    dispatcher.connect(everywhere, signal, owner)
    dispatcher.connect(everywhere, signal)
    dispatcher.connect(everywhere, AnySignal)
    try:
        assert [r for r, _ in dispatcher.send(signal, owner)] == [other, everywhere]
        assert calls == [1]
    finally:
        dispatcher.disconnect(everywhere, AnySignal)


def test_sending_from_any_reaches_only_receivers_for_any():
    signal = unique()

    def for_any():
        return "any"

    def for_anonymous():
        return "anonymous"

    def for_owner():
        return "owner"

    dispatcher.connect(for_any, signal, dispatcher.Any)
    dispatcher.connect(for_anonymous, signal, Anonymous)
    dispatcher.connect(for_owner, signal, Dummy())
    assert [resp for _, resp in dispatcher.send(signal, dispatcher.Any)] == ["any"]
    # Anonymous (the default sender of send) reaches Anonymous and Any.
    assert [resp for _, resp in dispatcher.send(signal)] == ["anonymous", "any"]
    assert [resp for _, resp in dispatcher.send(signal, Anonymous)] == ["anonymous", "any"]
    # A receiver for Anonymous never hears a send that names a sender.
    assert [resp for _, resp in dispatcher.send(signal, Dummy())] == ["any"]
    # None is a sender like any other here (on a relay.Signal it means Anonymous).
    assert [resp for _, resp in dispatcher.send(signal, None)] == ["any"]


def test_sending_to_any_signal_reaches_only_receivers_for_any_signal():
    signal = unique()
    dispatcher.connect(x, signal)

    def any_signal(a):
        return ("any signal", a)

    dispatcher.connect(any_signal, AnySignal)
    try:
        assert dispatcher.send(AnySignal, a=1) == [(any_signal, ("any signal", 1))]
    finally:
        dispatcher.disconnect(any_signal, AnySignal)


def test_receivers_are_offered_signal_and_sender_and_what_they_declare():
    signal, owner = unique(), Dummy()
    seen: dict[str, Any] = {}

    def nothing():
        seen["nothing"] = ()

    def only_sender(sender):
        seen["only_sender"] = sender

    def signal_and_one(signal, colour):
        seen["signal_and_one"] = (signal, colour)

    def keyword_only(*, sender, size=0):
        seen["keyword_only"] = (sender, size)

    def everything(**kwargs):
        seen["everything"] = kwargs

    for receiver in (nothing, only_sender, signal_and_one, keyword_only, everything):
        dispatcher.connect(receiver, signal)
    dispatcher.send(signal, owner, colour="red", size=3)
    assert seen == {
        "nothing": (),
        "only_sender": owner,
        "signal_and_one": (signal, "red"),
        "keyword_only": (owner, 3),
        "everything": {"signal": signal, "sender": owner, "colour": "red", "size": 3},
    }


def test_positional_arguments_go_to_every_receiver_first():
    signal = unique()

    def two(first, second, sender=None):
        return (first, second, sender)

    def star(*args, **kwargs):
        return (args, sorted(kwargs))

    dispatcher.connect(two, signal)
    dispatcher.connect(star, signal)
    assert [resp for _, resp in dispatcher.send(signal, "me", 1, 2, extra=3)] == [
        (1, 2, "me"),
        ((1, 2), ["extra", "sender", "signal"]),
    ]


def test_a_positional_argument_that_fills_sender_is_a_type_error():
    signal = unique()

    def takes_sender(sender):
        return sender

    dispatcher.connect(takes_sender, signal)
    with pytest.raises(TypeError, match="both positionally and as a keyword"):
        dispatcher.send(signal, "me", "positional")


def test_a_receiver_that_raises_stops_send():
    signal = unique()
    calls = []

    def fails():
        raise ValueError("no")

    def after():
        calls.append(1)

    dispatcher.connect(fails, signal)
    dispatcher.connect(after, signal)
    with pytest.raises(ValueError):
        dispatcher.send(signal)
    assert calls == []


def test_senders_are_told_apart_by_identity():
    signal = unique()
    first, equal = "".join(["s", "ender"]), "".join(["se", "nder"])
    assert first == equal and first is not equal
    dispatcher.connect(x, signal, first)
    assert dispatcher.send(signal, first, a=1) == [(x, 1)]
    assert dispatcher.send(signal, equal, a=1) == []
    dispatcher.disconnect(x, signal, first)


def test_signals_are_told_apart_by_equality():
    name = unique()
    dispatcher.connect(x, name)
    assert dispatcher.send("".join(list(name)), a=1) == [(x, 1)]
    dispatcher.disconnect(x, name)


# -- sendExact -------------------------------------------------------------------------------------


def test_send_exact_skips_every_wildcard():
    signal, owner = unique(), Dummy()

    def exact():
        return "exact"

    def wildcard():
        return "wildcard"

    dispatcher.connect(exact, signal, owner)
    dispatcher.connect(wildcard, signal, dispatcher.Any)
    dispatcher.connect(wildcard, AnySignal, owner)
    try:
        assert dispatcher.sendExact(signal, owner) == [(exact, "exact")]
        assert dispatcher.sendExact(signal, Dummy()) == []
        assert dispatcher.sendExact(signal, dispatcher.Any) == [(wildcard, "wildcard")]
        assert dispatcher.sendExact(signal) == []  # nothing is connected for Anonymous
    finally:
        dispatcher.disconnect(wildcard, AnySignal, owner)


def test_send_exact_on_a_signal_calls_the_old_api_receivers_for_that_pair_only():
    from relay import Signal

    sig, owner = Signal(), Dummy()
    heard = []

    def exact(sender):
        heard.append(("exact", sender))

    def new_api(sender, **kwargs):
        heard.append(("new", sender))

    dispatcher.connect(exact, sig, owner)
    sig.connect(new_api)
    assert dispatcher.sendExact(sig, owner) == [(exact, None)]
    assert heard == [("exact", owner)]


# -- getReceivers, getAllReceivers, liveReceivers -------------------------------------------------


def test_get_receivers_returns_the_raw_route_sender_first():
    signal, owner = unique(), Dummy()
    strong = CallableObject()
    dispatcher.connect(x, signal, owner)
    dispatcher.connect(strong, signal, owner, weak=False)
    raw = dispatcher.getReceivers(owner, signal)
    assert len(raw) == 2
    assert isinstance(raw[0], weakref.ref) and raw[0]() is x
    assert raw[1] is strong
    assert list(dispatcher.liveReceivers(raw)) == [x, strong]
    # A copy: changing it changes nothing.
    raw.clear()
    assert len(dispatcher.getReceivers(owner, signal)) == 2
    assert dispatcher.getReceivers(signal, owner) == []  # arguments the other way round
    assert dispatcher.getReceivers(Dummy(), signal) == []
    assert dispatcher.getReceivers(owner, unique()) == []
    dispatcher.disconnect(x, signal, owner)
    dispatcher.disconnect(strong, signal, owner)


def test_get_all_receivers_is_an_iterator_over_each_receiver_once():
    signal, owner = unique(), Dummy()
    dispatcher.connect(x, signal, owner)
    dispatcher.connect(x, signal)
    found = dispatcher.getAllReceivers(owner, signal)
    assert iter(found) is found
    assert list(dispatcher.liveReceivers(found)) == [x]
    dispatcher.disconnect(x, signal, owner)
    dispatcher.disconnect(x, signal)


def test_live_receivers_skips_dead_references_and_passes_others_through():
    a = CallableObject()
    dead = weakref.ref(CallableObject())
    gc.collect()
    assert list(dispatcher.liveReceivers([weakref.ref(a), dead, x])) == [a, x]


# -- disconnect and errors -------------------------------------------------------------------------


def test_none_is_not_a_signal():
    with pytest.raises(errors.DispatcherTypeError, match="None"):
        dispatcher.connect(x, signal=None)
    with pytest.raises(errors.DispatcherTypeError):
        dispatcher.disconnect(x, signal=None)
    with pytest.raises(errors.DispatcherTypeError):
        dispatcher.send(None)


def test_disconnecting_what_was_never_connected():
    with pytest.raises(errors.DispatcherKeyError, match="No receivers found"):
        dispatcher.disconnect(x, signal=unique())
    signal = unique()
    dispatcher.connect(x, signal)
    with pytest.raises(errors.DispatcherKeyError, match="No connection to receiver"):
        dispatcher.disconnect(CallableObject(), signal)
    with pytest.raises(KeyError):
        dispatcher.disconnect(x, signal, Dummy())
    dispatcher.disconnect(x, signal, weak=False)  # however it is held
    with pytest.raises(errors.DispatcherKeyError):
        dispatcher.disconnect(x, signal)


def test_error_classes():
    assert issubclass(errors.DispatcherKeyError, KeyError)
    assert issubclass(errors.DispatcherKeyError, errors.DispatcherError)
    assert issubclass(errors.DispatcherTypeError, TypeError)
    assert issubclass(errors.DispatcherTypeError, errors.DispatcherError)
    assert dispatcher.DispatcherKeyError is errors.DispatcherKeyError


class Slotted:
    __slots__ = ()

    def __call__(self):
        return "slotted"


def test_a_receiver_that_cannot_be_weakly_referenced_needs_weak_false():
    signal = unique()
    receiver = Slotted()
    with pytest.raises(TypeError, match="weak=False"):
        dispatcher.connect(receiver, signal)
    dispatcher.connect(receiver, signal, weak=False)
    assert dispatcher.send(signal) == [(receiver, "slotted")]
    dispatcher.disconnect(receiver, signal)


# -- robust.sendRobust -----------------------------------------------------------------------------


def test_send_robust_returns_the_error_in_the_receivers_slot(caplog):
    signal = unique()
    a = object()

    def fails():
        raise ValueError(signal)

    def works(a):
        return a

    dispatcher.connect(fails, AnySignal, a)
    dispatcher.connect(works, signal, a)
    try:
        with caplog.at_level(logging.ERROR, logger="relay.dispatch"):
            result = robust.sendRobust(signal, a, a=a)
    finally:
        dispatcher.disconnect(fails, AnySignal, a)
    assert [receiver for receiver, _ in result] == [works, fails]
    assert result[0][1] is a
    err = result[1][1]
    assert isinstance(err, ValueError) and err.args == (signal,)
    assert err.__traceback__ is not None
    assert [r.levelno for r in caplog.records] == [logging.ERROR]


def test_send_robust_does_not_catch_base_exceptions():
    signal = unique()

    def interrupts():
        raise KeyboardInterrupt

    dispatcher.connect(interrupts, signal)
    with pytest.raises(KeyboardInterrupt):
        robust.sendRobust(signal)


# -- robustapply.robustApply -----------------------------------------------------------------------


def no_argument():
    return "none"


def one_argument(blah):
    return blah


def test_robust_apply_as_pydispatcher_tests_it():
    assert robustapply.robustApply(no_argument) == "none"
    with pytest.raises(TypeError):
        robustapply.robustApply(no_argument, "this")
    with pytest.raises(TypeError):
        robustapply.robustApply(one_argument)
    with pytest.raises(TypeError, match="both positionally and as a keyword"):
        robustapply.robustApply(one_argument, "this", blah="that")


def test_robust_apply_filters_named_arguments_to_what_the_receiver_declares():
    apply = robustapply.robustApply
    assert apply(one_argument, blah=1, other=2) == 1
    assert apply(CallableObject(), a=1, b=2) == 1
    assert apply(CallableObject().method, a=1, self=2) == 1
    assert apply(lambda *, k=0: k, k=5, j=6) == 5
    assert apply(lambda p, /, **kw: (p, kw), 1, p=2) == (1, {"p": 2})
    assert apply(lambda p, /: p, 1, p=2) == 1  # positional-only: never by keyword
    assert apply(functools.partial(lambda a, b: (a, b), 1), b=2, c=3) == (1, 2)

    def wrapped(a):
        return a

    @functools.wraps(wrapped)
    def decorator(*args, **kwargs):
        return wrapped(*args, **kwargs)

    # functools.wraps is seen through: the wrapped function's parameters decide.
    assert apply(decorator, a=1, b=2) == 1

    class Cls:
        def __init__(self, a):
            self.a = a

    assert apply(Cls, a=1, b=2).a == 1


def test_robust_apply_with_closures_and_methods_of_the_same_code():
    def make(n):
        def inner(value, sender=None):
            return (n, value, sender)

        return inner

    first, second = make(1), make(2)
    assert robustapply.robustApply(first, value="a", other=0) == (1, "a", None)
    assert robustapply.robustApply(second, "b", sender="s") == (2, "b", "s")


# -- module layout and markers ---------------------------------------------------------------------


def test_module_layout():
    import importlib

    for name in (
        "relay.dispatcher.robust",
        "relay.dispatcher.robustapply",
        "relay.dispatcher.errors",
    ):
        module = importlib.import_module(name)
        assert getattr(dispatcher, name.rsplit(".", 1)[1]) is module
    from relay.dispatcher.errors import DispatcherKeyError, DispatcherTypeError
    from relay.dispatcher.robust import sendRobust
    from relay.dispatcher.robustapply import robustApply

    assert callable(sendRobust) and callable(robustApply)
    assert DispatcherKeyError and DispatcherTypeError


def test_markers_pickle_and_copy_as_themselves():
    import copy

    for marker in (dispatcher.Any, dispatcher.Anonymous):
        assert pickle.loads(pickle.dumps(marker)) is marker
        assert copy.copy(marker) is marker and copy.deepcopy(marker) is marker
    assert dispatcher.Any is not dispatcher.Anonymous
