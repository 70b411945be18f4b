"""Unit tests for the deprecated module-level API in ``relay.dispatcher``."""

from __future__ import annotations

import gc
import re
import uuid

import pytest

from relay import dispatcher
from relay.signals import Signal

CONNECT_HINT = re.escape("Signal.connect(")
SEND_HINT = re.escape("Signal.send(")
DISCONNECT_HINT = re.escape("Signal.disconnect(")


def handler(**kwargs):
    return "handled"


def other_handler(**kwargs):
    return "other"


class Sender:
    pass


def connect(*args, **kwargs):
    with pytest.warns(DeprecationWarning, match=CONNECT_HINT):
        return dispatcher.connect(*args, **kwargs)


def send(*args, **kwargs):
    with pytest.warns(DeprecationWarning, match=SEND_HINT):
        return dispatcher.send(*args, **kwargs)


def disconnect(*args, **kwargs):
    with pytest.warns(DeprecationWarning, match=DISCONNECT_HINT):
        return dispatcher.disconnect(*args, **kwargs)


def unique_name() -> str:
    return f"relay-test-signal-{uuid.uuid4().hex}"


# -- deprecation warnings ---------------------------------------------------------------


def test_each_call_warns_and_names_its_replacement():
    sig = Signal()
    with pytest.warns(DeprecationWarning, match=r"use Signal\.connect\(") as connect_record:
        dispatcher.connect(handler, sig)
    with pytest.warns(DeprecationWarning, match=r"use Signal\.send\(") as send_record:
        dispatcher.send(sig)
    with pytest.warns(DeprecationWarning, match=r"use Signal\.disconnect\(") as dis_record:
        dispatcher.disconnect(handler, sig)
    for record in (connect_record, send_record, dis_record):
        deprecations = [w for w in record if issubclass(w.category, DeprecationWarning)]
        assert len(deprecations) == 1
        # The warning points at the caller, not at relay's own code.
        assert deprecations[0].filename == __file__


def test_every_call_warns_not_just_the_first():
    sig = Signal()
    for _ in range(3):
        send(sig)


# -- behaviour with a Signal ----------------------------------------------------------------


def test_connect_send_disconnect_with_a_signal():
    sig = Signal()
    connect(handler, sig)
    assert sig.send(None) == [(handler, "handled")]
    assert send(sig, None, extra=1) == [(handler, "handled")]
    assert disconnect(handler, sig) is True
    assert sig.receivers == []
    assert disconnect(handler, sig) is False


def test_receivers_get_signal_sender_and_named_arguments():
    sig = Signal()
    seen = []

    def record(signal, sender, **kwargs):
        seen.append((signal, sender, kwargs))

    connect(record, sig)
    owner = Sender()
    send(sig, owner, colour="red")
    assert seen == [(sig, owner, {"colour": "red"})]


def test_any_means_any_sender():
    sig = Signal()
    connect(handler, sig, sender=dispatcher.Any)
    assert sig.has_listeners() is True
    assert sig.send(None) == [(handler, "handled")]
    assert sig.send(Sender()) == [(handler, "handled")]
    assert send(sig, dispatcher.Any) == [(handler, "handled")]
    assert send(sig) == [(handler, "handled")]
    assert disconnect(handler, sig, sender=dispatcher.Any) is True
    assert sig.receivers == []


def test_default_sender_is_any():
    sig = Signal()
    connect(handler, sig)
    assert sig.send(Sender()) == [(handler, "handled")]
    # Connected for any sender, so removable with Signal.disconnect's None too.
    assert sig.disconnect(handler) is True


def test_send_with_any_reaches_only_any_sender_receivers():
    sig = Signal()
    owner = Sender()
    connect(handler, sig, sender=owner)
    connect(other_handler, sig)
    assert send(sig) == [(other_handler, "other")]
    assert send(sig, dispatcher.Any) == [(other_handler, "other")]
    assert send(sig, owner) == [(handler, "handled"), (other_handler, "other")]


def test_specific_sender():
    sig = Signal()
    owner = Sender()
    connect(handler, sig, sender=owner)
    assert send(sig, owner) == [(handler, "handled")]
    assert send(sig, Sender()) == []
    assert disconnect(handler, sig) is False
    assert disconnect(handler, sig, sender=Sender()) is False
    assert disconnect(handler, sig, sender=owner) is True
    assert send(sig, owner) == []


def test_weak_argument():
    sig = Signal()
    connect(lambda **kwargs: "strong", sig, weak=False)
    connect(lambda **kwargs: "weak", sig)
    gc.collect()
    assert [response for _, response in sig.send(None)] == ["strong"]


def test_any_is_not_none_but_stands_for_it():
    assert dispatcher.Any is not None
    assert repr(dispatcher.Any) == "relay.dispatcher.Any"


# -- hashable objects standing for signals ------------------------------------------------------


def test_object_signal_gets_a_hidden_signal_of_its_own():
    key = object()
    connect(handler, key)
    try:
        assert send(key) == [(handler, "handled")]
        assert send(key, Sender()) == [(handler, "handled")]
        assert send(object()) == []
    finally:
        assert disconnect(handler, key) is True
    assert send(key) == []


def test_receivers_of_a_hidden_signal_get_a_signal_instance():
    key = object()
    seen = []

    def record(signal, **kwargs):
        seen.append(signal)

    connect(record, key)
    try:
        send(key)
        send(key)
    finally:
        disconnect(record, key)
    assert len(seen) == 2
    assert isinstance(seen[0], Signal)
    assert seen[0] is seen[1]


def test_different_objects_are_independent_signals():
    first, second = object(), object()
    connect(handler, first)
    connect(other_handler, second)
    try:
        assert send(first) == [(handler, "handled")]
        assert send(second) == [(other_handler, "other")]
        assert disconnect(handler, second) is False
        assert send(first) == [(handler, "handled")]
    finally:
        disconnect(handler, first)
        disconnect(other_handler, second)


def test_string_signal_is_looked_up_by_value():
    name = unique_name()
    equal_name = "".join(list(name))
    assert equal_name == name
    assert equal_name is not name

    connect(handler, name)
    try:
        assert send(equal_name) == [(handler, "handled")]
        assert send(unique_name()) == []
    finally:
        assert disconnect(handler, equal_name) is True
    assert send(name) == []


def test_hidden_signal_respects_senders():
    name = unique_name()
    owner = Sender()
    connect(handler, name, sender=owner)
    try:
        assert send(name) == []
        assert send(name, Sender()) == []
        assert send(name, owner) == [(handler, "handled")]
    finally:
        assert disconnect(handler, name, sender=owner) is True


@pytest.mark.parametrize("unhashable", [[], {}, {"a"}], ids=["list", "dict", "set"])
def test_unhashable_signal_is_a_type_error(unhashable):
    with pytest.raises(TypeError), pytest.warns(DeprecationWarning):
        dispatcher.connect(handler, unhashable)
    with pytest.raises(TypeError), pytest.warns(DeprecationWarning):
        dispatcher.send(unhashable)
    with pytest.raises(TypeError), pytest.warns(DeprecationWarning):
        dispatcher.disconnect(handler, unhashable)


def test_validation_still_applies():
    sig = Signal()

    def no_kwargs(sender):
        return sender

    with pytest.raises(ValueError), pytest.warns(DeprecationWarning):
        dispatcher.connect(no_kwargs, sig)
    assert sig.receivers == []
