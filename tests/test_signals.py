"""Unit tests for the synchronous side of ``relay.signals.Signal``."""

from __future__ import annotations

import functools
import gc
import logging
import re
import threading
import weakref
from unittest import mock

import pytest

from relay import signals
from relay.signals import Signal, receiver

pytestmark = pytest.mark.usefixtures("implementation")

NOT_CALLABLE = "Signal receivers must be callable."
NO_KWARGS = "Signal receivers must accept keyword arguments (**kwargs)."


def echo(**kwargs):
    """A module-level receiver with a recognisable response."""
    return "echo"


def live_receivers(sig: Signal) -> list[object]:
    """The receivers behind ``sig.receivers``, dereferencing weak entries."""
    return [entry.receiver() if entry.weak else entry.receiver for entry in sig.receivers]


class Listener:
    def __init__(self, tag: str = "listener") -> None:
        self.tag = tag
        self.calls = 0

    def on_event(self, **kwargs):
        self.calls += 1
        return self.tag

    def without_kwargs(self, sender):
        return sender


class Sender:
    """A plain weak-referenceable sender."""


class Unweakrefable:
    """A callable receiver whose instances cannot be weakly referenced."""

    __slots__ = ()

    def __call__(self, **kwargs):
        return "slotted"

    def method(self, **kwargs):
        return "slotted method"


# -- calling convention ---------------------------------------------------------


def test_receiver_gets_signal_sender_and_named_arguments():
    sig = Signal()
    seen = []

    def record(signal, sender, **kwargs):
        seen.append((signal, sender, kwargs))
        return "ok"

    sig.connect(record)
    owner = Sender()
    result = sig.send(owner, colour="red", size=3)

    assert seen == [(sig, owner, {"colour": "red", "size": 3})]
    assert result == [(record, "ok")]


def test_send_returns_pairs_in_connection_order():
    sig = Signal()

    def first(**kwargs):
        return 1

    def second(**kwargs):
        return 2

    sig.connect(first)
    sig.connect(second)
    assert sig.send(None) == [(first, 1), (second, 2)]


def test_send_without_receivers_returns_empty_list():
    sig = Signal()
    assert sig.send(None) == []
    assert sig.send(Sender(), extra=1) == []
    assert sig.send_robust(None) == []

    sig.connect(echo)
    sig.disconnect(echo)
    assert sig.send(None) == []


@pytest.mark.parametrize("method", ["send", "send_robust"])
def test_extra_positional_argument_is_a_type_error(method):
    sig = Signal()
    calls = []

    def record(**kwargs):
        calls.append(kwargs)

    sig.connect(record)
    with pytest.raises(TypeError):
        getattr(sig, method)(None, "unexpected")
    assert calls == []


# -- registration keys -----------------------------------------------------------


def test_connecting_same_function_twice_keeps_one_registration():
    sig = Signal()
    sig.connect(echo)
    sig.connect(echo)
    assert len(sig.receivers) == 1
    assert len(sig.send(None)) == 1


def test_bound_methods_of_same_instance_and_function_share_a_key():
    sig = Signal()
    listener = Listener()
    first, second = listener.on_event, listener.on_event
    assert first is not second

    sig.connect(first)
    sig.connect(second)
    assert len(sig.receivers) == 1
    sig.send(None)
    assert listener.calls == 1

    # A fresh bound-method object disconnects the registration.
    assert sig.disconnect(listener.on_event) is True
    assert sig.receivers == []


def test_bound_methods_of_different_instances_are_different_keys():
    sig = Signal()
    one, two = Listener("one"), Listener("two")
    sig.connect(one.on_event)
    sig.connect(two.on_event)
    assert [response for _, response in sig.send(None)] == ["one", "two"]


def test_same_receiver_for_different_senders_is_registered_per_sender():
    sig = Signal()
    a, b = Sender(), Sender()
    sig.connect(echo, sender=a)
    sig.connect(echo, sender=b)
    sig.connect(echo)
    assert len(sig.receivers) == 3

    # Only the registrations for b and for any sender remain.
    assert sig.disconnect(echo, sender=a) is True
    assert sig.send(a) == [(echo, "echo")]
    assert sig.send(b) == [(echo, "echo"), (echo, "echo")]


def test_dispatch_uid_identifies_the_registration():
    sig = Signal()

    def first(**kwargs):
        return "first"

    def second(**kwargs):
        return "second"

    sig.connect(first, dispatch_uid="uid")
    sig.connect(second, dispatch_uid="uid")
    assert sig.send(None) == [(first, "first")]

    # Disconnecting by uid works without naming the receiver.
    assert sig.disconnect(dispatch_uid="uid") is True
    assert sig.send(None) == []


def test_dispatch_uid_is_scoped_per_sender():
    sig = Signal()
    a = Sender()

    def for_any(**kwargs):
        return "any"

    def for_a(**kwargs):
        return "a"

    sig.connect(for_any, dispatch_uid="uid")
    sig.connect(for_a, sender=a, dispatch_uid="uid")
    assert sig.send(a) == [(for_any, "any"), (for_a, "a")]


def test_disconnect_by_dispatch_uid_needs_the_connected_sender():
    sig = Signal()
    a = Sender()
    sig.connect(echo, sender=a, dispatch_uid="uid")

    assert sig.disconnect(dispatch_uid="uid") is False
    assert sig.disconnect(dispatch_uid="uid", sender=Sender()) is False
    assert len(sig.receivers) == 1

    assert sig.disconnect(dispatch_uid="uid", sender=a) is True
    assert sig.receivers == []


@pytest.mark.parametrize("uid", [0, "", None])
def test_falsy_dispatch_uid_falls_back_to_receiver_identity(uid):
    sig = Signal()

    def first(**kwargs):
        return "first"

    def second(**kwargs):
        return "second"

    sig.connect(first, dispatch_uid=uid)
    sig.connect(second, dispatch_uid=uid)
    assert sig.send(None) == [(first, "first"), (second, "second")]

    assert sig.disconnect(first) is True
    assert sig.send(None) == [(second, "second")]


def test_first_registration_wins_when_it_was_weak():
    sig = Signal()

    def handler(**kwargs):
        return "handler"

    sig.connect(handler)
    sig.connect(handler, weak=False)  # ignored: the weak registration stays
    assert len(sig.receivers) == 1

    ref = weakref.ref(handler)
    del handler
    gc.collect()
    assert ref() is None
    assert sig.send(None) == []


def test_first_registration_wins_when_it_was_strong():
    sig = Signal()

    def handler(**kwargs):
        return "handler"

    sig.connect(handler, weak=False)
    sig.connect(handler)  # ignored: the strong registration stays
    del handler
    gc.collect()
    assert [response for _, response in sig.send(None)] == ["handler"]


def test_disconnect_reports_whether_something_was_removed():
    sig = Signal()
    assert sig.disconnect(echo) is False
    sig.connect(echo)
    assert sig.disconnect(echo) is True
    assert sig.disconnect(echo) is False
    assert sig.receivers == []


def test_disconnect_with_wrong_sender_keeps_registration():
    sig = Signal()
    a = Sender()
    sig.connect(echo, sender=a)
    assert sig.disconnect(echo) is False
    assert sig.disconnect(echo, sender=Sender()) is False
    assert sig.send(a) == [(echo, "echo")]


# -- senders ---------------------------------------------------------------------


def test_none_sender_at_connect_means_any_sender():
    sig = Signal()
    sig.connect(echo)
    for sender in (None, Sender(), 1, "text", Sender):
        assert sig.send(sender) == [(echo, "echo")]


def test_send_none_reaches_only_any_sender_receivers():
    sig = Signal()
    a = Sender()

    def for_any(**kwargs):
        return "any"

    def for_a(**kwargs):
        return "a"

    sig.connect(for_a, sender=a)
    sig.connect(for_any)
    assert sig.send(None) == [(for_any, "any")]


def test_receiver_for_one_sender_ignores_other_senders():
    sig = Signal()
    a, b = Sender(), Sender()
    sig.connect(echo, sender=a)
    assert sig.send(b) == []
    assert sig.send(Sender) == []
    assert sig.send(a) == [(echo, "echo")]


def test_equal_but_distinct_senders_do_not_match():
    class AlwaysEqual:
        def __eq__(self, other):
            return True

        def __hash__(self):
            return 0

    sig = Signal()
    registered = AlwaysEqual()
    sig.connect(echo, sender=registered)
    assert sig.send(AlwaysEqual()) == []
    assert sig.send(registered) == [(echo, "echo")]

    sig.connect(echo, sender=[1, 2])
    assert sig.send([1, 2]) == []

    text = "sender-" + "text"
    sig.connect(echo, sender=text)
    same_text = "".join(["sender-", "text"])
    assert same_text == text
    assert same_text is not text
    assert sig.send(same_text) == []


def test_bound_method_as_sender():
    sig = Signal()
    owner = Listener()
    sig.connect(echo, sender=owner.on_event)

    # Another bound-method object for the same instance and function matches.
    assert sig.send(owner.on_event) == [(echo, "echo")]
    assert sig.send(Listener().on_event) == []
    assert sig.send(owner.without_kwargs) == []

    assert sig.disconnect(echo, sender=owner.on_event) is True
    assert sig.send(owner.on_event) == []


def test_bound_method_sender_is_dropped_when_its_instance_dies():
    sig = Signal()
    owner = Listener()
    sig.connect(echo, sender=owner.on_event, weak=False)
    assert sig.has_listeners(owner.on_event)

    del owner
    gc.collect()
    sig.has_listeners()
    assert sig.receivers == []


def test_unweakrefable_senders_work_and_can_be_disconnected():
    sig = Signal()
    token = object()
    name = "plain-string-sender"

    def for_token(**kwargs):
        return "token"

    def for_name(**kwargs):
        return "name"

    sig.connect(for_token, sender=token)
    sig.connect(for_name, sender=name)

    assert sig.send(token) == [(for_token, "token")]
    assert sig.send(name) == [(for_name, "name")]
    assert sig.send(object()) == []

    assert sig.disconnect(for_token, sender=token) is True
    assert sig.send(token) == []
    assert sig.disconnect(for_name, sender=name) is True
    assert sig.send(name) == []
    assert sig.receivers == []


def test_dead_sender_never_matches_an_object_that_reuses_its_key(monkeypatch):
    real_make_id = signals._make_id

    def make_id(target):
        # Every Sender instance gets the same key, as if id() were reused.
        if isinstance(target, Sender):
            return "reused-id"
        return real_make_id(target)

    monkeypatch.setattr(signals, "_make_id", make_id)
    sig = Signal()

    def old_receiver(attempt, **kwargs):
        return ("old", attempt)

    def new_receiver(attempt, **kwargs):
        return ("new", attempt)

    sender = Sender()
    sig.connect(old_receiver, sender=sender)
    assert sig.send(sender, attempt=1) == [(old_receiver, ("old", 1))]

    del sender
    gc.collect()

    # A newcomer with the same key gets nothing from the dead sender...
    sender = Sender()
    assert sig.send(sender, attempt=2) == []

    # ...and only its own receivers once it has some.
    sig.connect(new_receiver, sender=sender)
    assert sig.send(sender, attempt=3) == [(new_receiver, ("new", 3))]
    assert len(sig.receivers) == 1


def test_dead_sender_registrations_are_dropped():
    sig = Signal()
    sender = Sender()
    sig.connect(echo, sender=sender)
    sig.connect(echo)

    del sender
    gc.collect()

    # The next object of that class very likely reuses the dead sender's memory.
    newcomer = Sender()
    assert sig.send(newcomer) == [(echo, "echo")]
    assert len(sig.receivers) == 1
    assert sig.receivers[0].sender_ref is None


# -- ordering ----------------------------------------------------------------------


def test_any_sender_and_sender_specific_receivers_merge_in_connection_order():
    sig = Signal()
    a = Sender()
    calls = []

    def make(tag):
        def handler(**kwargs):
            calls.append(tag)
            return tag

        return handler

    handlers = {tag: make(tag) for tag in ("any1", "a1", "any2", "a2", "any3")}
    sig.connect(handlers["any1"])
    sig.connect(handlers["a1"], sender=a)
    sig.connect(handlers["any2"])
    sig.connect(handlers["a2"], sender=a)
    sig.connect(handlers["any3"])

    assert [r for _, r in sig.send(a)] == ["any1", "a1", "any2", "a2", "any3"]
    assert calls == ["any1", "a1", "any2", "a2", "any3"]
    assert [r for _, r in sig.send(None)] == ["any1", "any2", "any3"]
    assert [r for _, r in sig.send(Sender())] == ["any1", "any2", "any3"]


def test_order_after_disconnect_and_reconnect():
    sig = Signal()

    def first(**kwargs):
        return 1

    def second(**kwargs):
        return 2

    sig.connect(first)
    sig.connect(second)
    sig.disconnect(first)
    sig.connect(first)
    assert sig.send(None) == [(second, 2), (first, 1)]


# -- weak references --------------------------------------------------------------


def test_weakly_connected_function_disappears_when_collected():
    sig = Signal()

    def handler(**kwargs):
        return "alive"

    sig.connect(handler)
    assert sig.send(None) == [(handler, "alive")]
    del handler
    gc.collect()
    assert sig.send(None) == []
    assert sig.receivers == []


def test_weakly_connected_lambda_vanishes():
    sig = Signal()
    sig.connect(lambda **kwargs: "lambda")
    gc.collect()
    assert sig.send(None) == []
    assert sig.has_listeners() is False


def test_strongly_connected_lambda_is_kept_alive():
    sig = Signal()
    sig.connect(lambda **kwargs: "lambda", weak=False)
    gc.collect()
    assert [response for _, response in sig.send(None)] == ["lambda"]
    assert len(sig.receivers) == 1


def test_weak_bound_method_lives_as_long_as_its_instance():
    sig = Signal()
    listener = Listener()
    sig.connect(listener.on_event)
    gc.collect()
    # Held through a WeakMethod: the temporary bound method is not what counts.
    assert [response for _, response in sig.send(None)] == ["listener"]
    assert listener.calls == 1

    del listener
    gc.collect()
    assert sig.send(None) == []
    assert sig.receivers == []


def test_strong_bound_method_keeps_its_instance_alive():
    sig = Signal()
    listener = Listener("kept")
    ref = weakref.ref(listener)
    sig.connect(listener.on_event, weak=False)
    del listener
    gc.collect()
    assert ref() is not None
    assert [response for _, response in sig.send(None)] == ["kept"]


def test_unweakrefable_receiver_with_weak_true_is_a_type_error():
    sig = Signal()
    with pytest.raises(TypeError):
        sig.connect(Unweakrefable())
    with pytest.raises(TypeError):
        sig.connect(Unweakrefable().method)
    assert sig.receivers == []

    # The same receivers are fine when held strongly.
    slotted = Unweakrefable()
    sig.connect(slotted, weak=False)
    sig.connect(slotted.method, weak=False)
    assert [r for _, r in sig.send(None)] == ["slotted", "slotted method"]


def test_builtin_method_without_kwargs_is_rejected_before_weak_referencing():
    # ``[].append`` takes no **kwargs, so validation rejects it whatever ``weak`` is.
    sig = Signal()
    with pytest.raises(ValueError, match=re.escape(NO_KWARGS)):
        sig.connect([].append)
    with pytest.raises(ValueError, match=re.escape(NO_KWARGS)):
        sig.connect([].append, weak=False)
    assert sig.receivers == []


# -- the receivers list and pruning --------------------------------------------------


def test_receivers_has_one_entry_per_live_registration():
    sig = Signal()
    assert sig.receivers == []
    a = Sender()
    listener = Listener()

    sig.connect(echo)
    sig.connect(echo)
    sig.connect(echo, sender=a)
    sig.connect(listener.on_event)
    sig.connect(listener.on_event)
    assert len(sig.receivers) == 3
    assert live_receivers(sig) == [echo, echo, listener.on_event]

    sig.disconnect(echo)
    sig.disconnect(echo, sender=a)
    sig.disconnect(listener.on_event)
    assert sig.receivers == []


def _trigger_connect(sig, keep):
    sig.connect(keep)  # already connected: a no-op apart from pruning


def _trigger_disconnect(sig, keep):
    assert sig.disconnect(echo) is False


def _trigger_send(sig, keep):
    assert sig.send(None) == [(keep, "keep")]


def _trigger_has_listeners(sig, keep):
    assert sig.has_listeners() is True


TRIGGERS = {
    "connect": _trigger_connect,
    "disconnect": _trigger_disconnect,
    "send": _trigger_send,
    "has_listeners": _trigger_has_listeners,
}


@pytest.mark.parametrize("trigger", sorted(TRIGGERS))
@pytest.mark.parametrize("what_dies", ["receiver", "sender"])
def test_dead_entries_are_pruned_by(trigger, what_dies):
    sig = Signal()

    def keep(**kwargs):
        return "keep"

    def doomed(**kwargs):
        return "doomed"

    sender = Sender()
    sig.connect(keep)
    if what_dies == "receiver":
        sig.connect(doomed)
        del doomed
    else:
        sig.connect(doomed, sender=sender, weak=False)
    del sender
    gc.collect()

    TRIGGERS[trigger](sig, keep)
    assert len(sig.receivers) == 1
    assert live_receivers(sig) == [keep]


# -- validation ----------------------------------------------------------------------


@pytest.mark.parametrize("bad", [1, "text", object(), None])
@pytest.mark.parametrize("weak", [True, False])
def test_non_callable_receiver_is_rejected(bad, weak):
    sig = Signal()
    with pytest.raises(TypeError, match=f"^{re.escape(NOT_CALLABLE)}$"):
        sig.connect(bad, weak=weak)
    assert sig.receivers == []


def _no_kwargs(sender):
    return sender


def _keyword_only(*, sender, signal):
    return sender


def _with_kwargs(sender, **kwargs):
    return sender


class CallableWithoutKwargs:
    def __call__(self, sender):
        return sender


class CallableWithKwargs:
    def __call__(self, sender, **kwargs):
        return sender


def _wrap(func):
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        return func(*args, **kwargs)

    return wrapper


REJECTED = {
    "function": lambda: _no_kwargs,
    "keyword-only function": lambda: _keyword_only,
    "bound method": lambda: Listener().without_kwargs,
    "callable object": lambda: CallableWithoutKwargs(),
    "partial": lambda: functools.partial(_no_kwargs),
    "wraps of function without kwargs": lambda: _wrap(_no_kwargs),
}

ACCEPTED = {
    "function": lambda: _with_kwargs,
    "bound method": lambda: Listener().on_event,
    "callable object": lambda: CallableWithKwargs(),
    "partial": lambda: functools.partial(_with_kwargs),
    "wraps of function with kwargs": lambda: _wrap(_with_kwargs),
    "Mock": lambda: mock.Mock(),
}


@pytest.mark.parametrize("kind", list(REJECTED))
@pytest.mark.parametrize("weak", [True, False])
def test_receiver_without_kwargs_is_rejected(kind, weak):
    sig = Signal()
    with pytest.raises(ValueError, match=f"^{re.escape(NO_KWARGS)}$"):
        sig.connect(REJECTED[kind](), weak=weak)
    assert sig.receivers == []


@pytest.mark.parametrize("kind", list(ACCEPTED))
def test_receiver_with_kwargs_is_accepted(kind):
    sig = Signal()
    target = ACCEPTED[kind]()
    sig.connect(target, weak=False)
    assert len(sig.receivers) == 1
    [(called, _)] = sig.send("the-sender")
    assert called is target


def test_mock_receiver_is_called_with_the_send_arguments():
    sig = Signal()
    handler = mock.Mock(return_value="mocked")
    sig.connect(handler)
    assert sig.send("s", extra=1) == [(handler, "mocked")]
    handler.assert_called_once_with(signal=sig, sender="s", extra=1)


@pytest.mark.parametrize("scope", ["bogus", "", "ALL", 1])
def test_invalid_scope_is_rejected(scope):
    sig = Signal()
    with pytest.raises(ValueError):
        sig.connect(echo, scope=scope)
    assert sig.receivers == []


@pytest.mark.parametrize("scope", [None, "all", "local"])
def test_valid_scopes_are_accepted(scope):
    sig = Signal()
    sig.connect(echo, scope=scope)
    assert len(sig.receivers) == 1
    assert sig.receivers[0].scope == scope


# -- errors: send and send_robust ------------------------------------------------------


def test_send_propagates_and_stops_at_the_first_error():
    sig = Signal()
    calls = []

    def before(**kwargs):
        calls.append("before")

    def failing(**kwargs):
        calls.append("failing")
        raise ValueError("boom")

    def after(**kwargs):
        calls.append("after")

    for handler in (before, failing, after):
        sig.connect(handler)
    with pytest.raises(ValueError, match="boom"):
        sig.send(None)
    assert calls == ["before", "failing"]


def _innermost_code(tb):
    while tb.tb_next is not None:
        tb = tb.tb_next
    return tb.tb_frame.f_code


def test_send_robust_returns_the_error_and_runs_the_others(caplog):
    caplog.set_level(logging.ERROR, logger="relay.dispatch")
    sig = Signal()
    calls = []

    def before(**kwargs):
        calls.append("before")
        return "before"

    def failing(**kwargs):
        calls.append("failing")
        raise ValueError("boom")

    def after(**kwargs):
        calls.append("after")
        return "after"

    for handler in (before, failing, after):
        sig.connect(handler)
    result = sig.send_robust(None)

    assert calls == ["before", "failing", "after"]
    assert [r for r, _ in result] == [before, failing, after]
    assert result[0][1] == "before"
    assert result[2][1] == "after"
    err = result[1][1]
    assert isinstance(err, ValueError)
    assert str(err) == "boom"
    assert err.__traceback__ is not None
    assert _innermost_code(err.__traceback__) is failing.__code__

    records = [r for r in caplog.records if r.name == "relay.dispatch"]
    assert len(records) == 1
    [record] = records
    assert record.levelno == logging.ERROR
    assert record.getMessage() == (
        f"Error calling {failing.__qualname__} in Signal.send_robust() (boom)"
    )
    assert "<locals>.failing" in record.getMessage()
    assert record.exc_info is not None
    assert record.exc_info[0] is ValueError
    assert record.exc_info[1] is err


def test_send_robust_logs_once_per_failing_receiver(caplog):
    caplog.set_level(logging.ERROR, logger="relay.dispatch")
    sig = Signal()

    def one(**kwargs):
        raise KeyError("one")

    def two(**kwargs):
        raise RuntimeError("two")

    sig.connect(one)
    sig.connect(two)
    result = sig.send_robust(None)
    assert [type(response) for _, response in result] == [KeyError, RuntimeError]
    messages = [r.getMessage() for r in caplog.records if r.name == "relay.dispatch"]
    assert messages == [
        f"Error calling {one.__qualname__} in Signal.send_robust() ('one')",
        f"Error calling {two.__qualname__} in Signal.send_robust() (two)",
    ]


def _raise_value_error(**kwargs):
    raise ValueError("nameless")


class FailingCallable:
    def __call__(self, **kwargs):
        raise ValueError("nameless")

    def __repr__(self):
        return "<FailingCallable instance>"


@pytest.mark.parametrize(
    "make",
    [lambda: functools.partial(_raise_value_error), FailingCallable],
    ids=["partial", "callable-object"],
)
def test_send_robust_names_receivers_without_qualname_by_repr(caplog, make):
    caplog.set_level(logging.ERROR, logger="relay.dispatch")
    sig = Signal()
    target = make()
    assert not hasattr(target, "__qualname__")
    sig.connect(target)

    [(called, err)] = sig.send_robust(None)
    assert called is target
    assert isinstance(err, ValueError)
    [record] = [r for r in caplog.records if r.name == "relay.dispatch"]
    assert record.getMessage() == f"Error calling {target!r} in Signal.send_robust() (nameless)"
    assert record.exc_info[1] is err


@pytest.mark.parametrize("error", [KeyboardInterrupt, SystemExit])
def test_send_robust_lets_base_exceptions_through(error):
    sig = Signal()
    calls = []

    def failing(**kwargs):
        calls.append("failing")
        raise error

    def after(**kwargs):
        calls.append("after")

    sig.connect(failing)
    sig.connect(after)
    with pytest.raises(error):
        sig.send_robust(None)
    assert calls == ["failing"]


# -- use_caching ----------------------------------------------------------------------


def test_caching_signal_sends_like_any_other():
    sig = Signal(use_caching=True)
    a = Sender()

    def for_any(**kwargs):
        return "any"

    def for_a(**kwargs):
        return "a"

    sig.connect(for_any)
    sig.connect(for_a, sender=a)
    assert sig.send(a) == [(for_any, "any"), (for_a, "a")]
    assert sig.send(None) == [(for_any, "any")]
    sig.disconnect(for_a, sender=a)
    assert sig.send(a) == [(for_any, "any")]


def test_caching_signal_does_not_keep_a_sender_class_alive():
    sig = Signal(use_caching=True)

    class Model:
        pass

    sig.connect(echo, sender=Model)
    sig.connect(echo)
    assert len(sig.send(Model)) == 2

    ref = weakref.ref(Model)
    del Model
    gc.collect()
    assert ref() is None
    assert sig.has_listeners() is True
    assert len(sig.receivers) == 1


@pytest.mark.parametrize(
    "sender",
    [None, 1, {"a": 1}, [1, 2], object(), "text"],
    ids=["None", "int", "dict", "list", "object", "str"],
)
def test_caching_signal_handles_all_kinds_of_senders(sender):
    sig = Signal(use_caching=True)

    def for_any(**kwargs):
        return "any"

    def for_sender(**kwargs):
        return "sender"

    sig.connect(for_any)
    assert sig.send(sender) == [(for_any, "any")]
    if sender is not None:
        sig.connect(for_sender, sender=sender)
        assert sig.send(sender) == [(for_any, "any"), (for_sender, "sender")]
        assert sig.has_listeners(sender) is True
        assert sig.disconnect(for_sender, sender=sender) is True
    assert sig.send(sender) == [(for_any, "any")]


def test_caching_signal_with_unhashable_sender_not_confused_with_equal_one():
    sig = Signal(use_caching=True)
    registered = {"k": 1}
    sig.connect(echo, sender=registered)
    assert sig.send({"k": 1}) == []
    assert sig.send(registered) == [(echo, "echo")]


# -- has_listeners ---------------------------------------------------------------------


def test_has_listeners_for_any_sender():
    sig = Signal()
    assert sig.has_listeners() is False
    sig.connect(echo)
    assert sig.has_listeners() is True
    assert sig.has_listeners(Sender()) is True
    sig.disconnect(echo)
    assert sig.has_listeners() is False


def test_has_listeners_for_a_specific_sender():
    sig = Signal()
    a = Sender()
    assert sig.has_listeners(a) is False
    sig.connect(echo, sender=a)
    assert sig.has_listeners(a) is True
    assert sig.has_listeners(Sender()) is False
    # None asks about any-sender receivers only.
    assert sig.has_listeners() is False
    assert sig.has_listeners(None) is False
    sig.disconnect(echo, sender=a)
    assert sig.has_listeners(a) is False


# -- thread safety ---------------------------------------------------------------------


def test_connect_and_disconnect_from_another_thread_during_send():
    sig = Signal()
    calls = []
    errors = []

    def newcomer(**kwargs):
        calls.append("newcomer")

    def victim(**kwargs):
        calls.append("victim")

    def spawner(**kwargs):
        calls.append("spawner")

        def rewire():
            try:
                sig.connect(newcomer)
                sig.disconnect(victim)
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)

        worker = threading.Thread(target=rewire)
        worker.start()
        worker.join(timeout=30)
        assert not worker.is_alive(), "connect/disconnect blocked during a send"

    sig.connect(spawner)
    sig.connect(victim)
    sig.send(None)
    assert errors == []
    assert calls[0] == "spawner"

    calls.clear()
    sig.disconnect(spawner)
    sig.send(None)
    assert calls == ["newcomer"]
    assert live_receivers(sig) == [newcomer]


def test_sends_while_another_thread_connects_and_disconnects():
    sig = Signal()
    iterations = 2000
    errors = []
    start = threading.Barrier(2)

    def stable(**kwargs):
        return "stable"

    def churn_one(**kwargs):
        return "one"

    def churn_two(**kwargs):
        return "two"

    sig.connect(stable)
    bad_results = []

    def sender_loop():
        try:
            start.wait()
            for _ in range(iterations):
                responses = [r for _, r in sig.send(None)]
                if responses.count("stable") != 1:
                    bad_results.append(responses)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def churn_loop():
        try:
            start.wait()
            for i in range(iterations):
                sig.connect(churn_one)
                sig.connect(churn_two, dispatch_uid=i % 3)
                sig.disconnect(churn_one)
                sig.disconnect(churn_two, dispatch_uid=i % 3)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=sender_loop), threading.Thread(target=churn_loop)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)

    assert errors == []
    assert bad_results == []
    assert live_receivers(sig) == [stable]
    assert sig.send(None) == [(stable, "stable")]


def test_receivers_that_disconnect_themselves_do_not_stop_the_others():
    sig = Signal()
    calls = []

    def first(**kwargs):
        calls.append("first")
        sig.disconnect(first)

    def second(**kwargs):
        calls.append("second")
        sig.disconnect(second)

    sig.connect(first)
    sig.connect(second)
    sig.send(None)
    assert calls == ["first", "second"]
    assert sig.receivers == []
    assert sig.send(None) == []
    assert calls == ["first", "second"]


# -- the receiver decorator ------------------------------------------------------------


def test_receiver_decorator_connects_to_one_signal():
    sig = Signal()

    @receiver(sig)
    def handler(**kwargs):
        return "decorated"

    assert sig.send(None) == [(handler, "decorated")]


@pytest.mark.parametrize("container", [list, tuple])
def test_receiver_decorator_connects_to_several_signals(container):
    first, second = Signal(), Signal()

    @receiver(container([first, second]))
    def handler(**kwargs):
        return "decorated"

    assert first.send(None) == [(handler, "decorated")]
    assert second.send(None) == [(handler, "decorated")]


def test_receiver_decorator_passes_connect_arguments():
    sig = Signal()
    a = Sender()

    @receiver(sig, sender=a, dispatch_uid="decorated-uid")
    def handler(**kwargs):
        return "decorated"

    @receiver(sig, sender=a, dispatch_uid="decorated-uid")
    def duplicate(**kwargs):
        return "duplicate"

    assert sig.send(None) == []
    assert sig.send(a) == [(handler, "decorated")]
    assert sig.disconnect(sender=a, dispatch_uid="decorated-uid") is True


def test_receiver_decorator_returns_the_original_function():
    sig = Signal()

    def handler(**kwargs):
        return "plain"

    assert receiver(sig)(handler) is handler
    assert receiver([sig, Signal()])(handler) is handler


# -- connected_to ----------------------------------------------------------------------


def test_connected_to_holds_the_receiver_strongly_for_the_block():
    sig = Signal()
    with sig.connected_to(lambda **kwargs: "temporary") as connected:
        gc.collect()
        assert [r for _, r in sig.send(None)] == ["temporary"]
        assert sig.receivers[0].weak is False
        assert sig.send(None)[0][0] is connected
    assert sig.receivers == []
    assert sig.send(None) == []


def test_connected_to_with_sender():
    sig = Signal()
    a = Sender()
    with sig.connected_to(echo, sender=a):
        assert sig.send(a) == [(echo, "echo")]
        assert sig.send(None) == []
    assert sig.has_listeners(a) is False


def test_connected_to_disconnects_when_the_block_raises():
    sig = Signal()
    with pytest.raises(RuntimeError, match="inside"), sig.connected_to(echo):
        assert sig.send(None) == [(echo, "echo")]
        raise RuntimeError("inside")
    assert sig.receivers == []


def test_connected_to_leaves_an_earlier_registration_in_place():
    sig = Signal()
    sig.connect(echo)
    with sig.connected_to(echo):
        assert sig.send(None) == [(echo, "echo")]
    assert sig.send(None) == [(echo, "echo")]
    assert len(sig.receivers) == 1


@pytest.mark.parametrize("method", ["send", "send_robust"])
def test_receiver_released_by_an_earlier_receiver_still_runs_in_that_send(method: str) -> None:
    sig = Signal()
    calls: list[str] = []

    class Holder:
        def later(self, **kwargs: object) -> None:
            calls.append("later")

    holder: list[Holder] = [Holder()]

    def first(**kwargs: object) -> None:
        calls.append("first")
        holder.clear()  # drops the only strong reference to the later receiver
        gc.collect()

    sig.connect(first)
    sig.connect(holder[0].later)
    getattr(sig, method)(sender=None)
    assert calls == ["first", "later"]
    # It is gone for the next send.
    calls.clear()
    getattr(sig, method)(sender=None)
    assert calls == ["first"]
