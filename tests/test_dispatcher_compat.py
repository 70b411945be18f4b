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
    # The Signal's own send reaches the receiver through its adapter.
    [(_adapter, response)] = sig.send(None)
    assert response == "handled"
    assert send(sig, None, extra=1) == [(handler, "handled")]
    # PyDispatcher: disconnect returns None, and raises for what is not connected.
    assert disconnect(handler, sig) is None
    assert sig.receivers == []
    with pytest.raises(dispatcher.DispatcherKeyError), pytest.warns(DeprecationWarning):
        dispatcher.disconnect(handler, sig)


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
    assert [response for _, response in sig.send(None)] == ["handled"]
    assert [response for _, response in sig.send(Sender())] == ["handled"]
    assert send(sig, dispatcher.Any) == [(handler, "handled")]
    assert send(sig) == [(handler, "handled")]
    assert disconnect(handler, sig, sender=dispatcher.Any) is None
    assert sig.receivers == []


def test_default_sender_is_any():
    sig = Signal()
    connect(handler, sig)
    assert [response for _, response in sig.send(Sender())] == ["handled"]
    assert sig.has_listeners(Sender()) is True
    disconnect(handler, sig)
    assert sig.has_listeners() is False


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
    for wrong in (dispatcher.Any, Sender()):
        with pytest.raises(dispatcher.DispatcherKeyError), pytest.warns(DeprecationWarning):
            dispatcher.disconnect(handler, sig, sender=wrong)
    assert disconnect(handler, sig, sender=owner) is None
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
    assert repr(dispatcher.Anonymous) == "relay.dispatcher.Anonymous"


# -- hashable objects standing for signals ------------------------------------------------------


def test_object_signal():
    key = object()
    connect(handler, key)
    try:
        assert send(key) == [(handler, "handled")]
        assert send(key, Sender()) == [(handler, "handled")]
        assert send(object()) == []
    finally:
        assert disconnect(handler, key) is None
    assert send(key) == []


def test_receivers_of_an_object_signal_get_that_object():
    # PyDispatcher passes the signal as it was sent (relay 0.1 made a hidden Signal of it).
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
    assert seen == [key, key]


def test_different_objects_are_independent_signals():
    first, second = object(), object()
    connect(handler, first)
    connect(other_handler, second)
    try:
        assert send(first) == [(handler, "handled")]
        assert send(second) == [(other_handler, "other")]
        with pytest.raises(dispatcher.DispatcherKeyError), pytest.warns(DeprecationWarning):
            dispatcher.disconnect(handler, second)
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
        assert disconnect(handler, equal_name) is None
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
        assert disconnect(handler, name, sender=owner) is None


@pytest.mark.parametrize("unhashable", [[], {}, {"a"}], ids=["list", "dict", "set"])
def test_unhashable_signal_is_a_type_error(unhashable):
    for call in (
        lambda: dispatcher.connect(handler, unhashable),
        lambda: dispatcher.send(unhashable),
        lambda: dispatcher.disconnect(handler, unhashable),
    ):
        with pytest.raises(dispatcher.DispatcherTypeError), pytest.warns(DeprecationWarning):
            call()
    assert issubclass(dispatcher.DispatcherTypeError, TypeError)


def test_receivers_without_kwargs_are_accepted():
    # relay 0.1 refused these (ValueError); PyDispatcher's old code is full of them.
    sig = Signal()

    def no_kwargs(sender):
        return sender

    connect(no_kwargs, sig)
    owner = Sender()
    assert send(sig, owner) == [(no_kwargs, owner)]
    assert [response for _, response in sig.send(owner)] == [owner]


def test_receivers_that_cannot_be_called_are_refused():
    sig = Signal()
    with pytest.raises(TypeError, match="callable"), pytest.warns(DeprecationWarning):
        dispatcher.connect("not callable", sig)

    async def coroutine(**kwargs):
        return None

    with pytest.raises(TypeError, match=r"signal\.connect"), pytest.warns(DeprecationWarning):
        dispatcher.connect(coroutine, sig)
    assert sig.receivers == []


# -- the migration table, old and new side by side ------------------------------------------------
#
# before                                                 after
# def my_handler(sender)                                 def my_handler(sender, **kwargs)
# my_signal = object()                                   my_signal = relay.Signal()
# dispatcher.connect(my_handler, my_signal)              my_signal.connect(my_handler)
# dispatcher.send(my_signal, sender)                     my_signal.send(sender)
# dispatcher.connect(my_handler, my_signal, sender=Any)  my_signal.connect(my_handler, sender=None)


def test_table_receiver_and_signal_rows():
    heard_before, heard_after = [], []

    def before_handler(sender):
        heard_before.append(sender)

    def after_handler(sender, **kwargs):
        heard_after.append(sender)

    before_signal = object()
    after_signal = Signal()
    connect(before_handler, before_signal)
    after_signal.connect(after_handler)
    owner = Sender()
    try:
        assert send(before_signal, owner) == [(before_handler, None)]
        assert after_signal.send(owner) == [(after_handler, None)]
    finally:
        disconnect(before_handler, before_signal)
    assert heard_before == heard_after == [owner]


def test_table_connect_and_send_rows_on_one_signal():
    # Old and new code on the same Signal hear each other's sends.
    my_signal = Signal()
    heard = []

    def old_handler(sender):
        heard.append(("old", sender))

    def new_handler(sender, **kwargs):
        heard.append(("new", sender))

    connect(old_handler, my_signal)  # dispatcher.connect(my_handler, my_signal)
    my_signal.connect(new_handler)  # my_signal.connect(my_handler)
    owner = Sender()
    assert send(my_signal, owner) == [(old_handler, None), (new_handler, None)]
    assert [response for _, response in my_signal.send(owner)] == [None, None]
    assert heard == [("old", owner), ("new", owner)] * 2


def test_table_any_sender_row():
    my_signal = Signal()
    heard = []

    def old_handler(sender):
        heard.append(("old", sender))

    def new_handler(sender, **kwargs):
        heard.append(("new", sender))

    connect(old_handler, my_signal, sender=dispatcher.Any)
    my_signal.connect(new_handler, sender=None)
    first, second = Sender(), Sender()
    my_signal.send(first)
    send(my_signal, second)
    assert heard == [("old", first), ("new", first), ("old", second), ("new", second)]


def test_table_senders_filter_the_same_way():
    my_signal = Signal()
    owner, stranger = Sender(), Sender()
    heard = []

    def old_handler(sender):
        heard.append("old")

    def new_handler(sender, **kwargs):
        heard.append("new")

    connect(old_handler, my_signal, sender=owner)
    my_signal.connect(new_handler, sender=owner)
    for call in (lambda s: send(my_signal, s), my_signal.send):
        call(stranger)
        assert heard == []
        call(owner)
        assert heard == ["old", "new"]
        heard.clear()


# -- a relay Signal through the old API -----------------------------------------------------------


def test_the_old_api_on_a_signal_goes_through_the_signal():
    sig = Signal()
    seen = []

    def old(signal, sender, colour):
        seen.append(("old", signal, sender, colour))

    def new(signal, sender, colour, **kwargs):
        seen.append(("new", signal, sender, colour))
        return "new"

    connect(old, sig)
    sig.connect(new)
    owner = Sender()
    assert send(sig, owner, colour="red") == [(old, None), (new, "new")]
    assert seen == [("old", sig, owner, "red"), ("new", sig, owner, "red")]


def test_no_sender_on_a_signal_is_none_for_new_code_and_anonymous_for_old():
    sig = Signal()
    seen = []

    def old(sender):
        seen.append(("old", sender))

    def new(sender, **kwargs):
        seen.append(("new", sender))

    connect(old, sig)
    sig.connect(new)
    send(sig)
    sig.send(None)
    assert seen == [("old", dispatcher.Anonymous), ("new", None)] * 2


def test_anonymous_receivers_on_a_signal_hear_sends_without_a_sender():
    sig = Signal()
    heard = []

    def anonymous(sender):
        heard.append(sender)

    connect(anonymous, sig, sender=dispatcher.Anonymous)
    sig.send(Sender())
    send(sig, Sender())
    assert heard == []
    sig.send(None)
    send(sig)
    send(sig, None)
    assert heard == [dispatcher.Anonymous] * 3
    # On a Signal, None is Anonymous.
    assert disconnect(anonymous, sig, sender=None) is None
    assert sig.receivers == []


def test_positional_arguments_on_a_signal_are_a_type_error():
    sig = Signal()
    connect(handler, sig)
    with pytest.raises(TypeError, match="by name"), pytest.warns(DeprecationWarning):
        dispatcher.send(sig, None, "positional")


def test_send_robust_on_a_signal_catches_old_and_new_receivers():
    sig = Signal()

    def old_fails(sender):
        raise ValueError("old")

    def new_fails(sender, **kwargs):
        raise KeyError("new")

    connect(old_fails, sig)
    sig.connect(new_fails)
    with pytest.warns(DeprecationWarning, match=re.escape("Signal.send_robust(")):
        responses = dispatcher.robust.sendRobust(sig, Sender())
    assert [receiver for receiver, _ in responses] == [old_fails, new_fails]
    assert isinstance(responses[0][1], ValueError) and isinstance(responses[1][1], KeyError)
    # And the Signal's own send_robust catches the old-API receiver's error too.
    assert isinstance(sig.send_robust(None)[0][1], ValueError)


def test_a_weak_old_api_receiver_on_a_signal_goes_with_its_object():
    sig = Signal()

    class Listener:
        def on(self, sender):
            return "listener"

    listener = Listener()
    connect(listener.on, sig)
    assert len(sig.receivers) == 1
    assert [response for _, response in sig.send(None)] == ["listener"]
    del listener
    gc.collect()
    # The adapter goes as soon as the receiver does: the Signal's own send no longer calls it.
    assert sig.send(None) == []
    assert sig.receivers == []


def test_a_strong_old_api_receiver_on_a_signal_stays():
    sig = Signal()
    connect(lambda sender: "strong", sig, weak=False)
    gc.collect()
    assert [response for _, response in sig.send(None)] == ["strong"]


def test_a_receiver_connected_for_a_sender_and_for_any_fires_once():
    sig = Signal()
    owner = Sender()
    calls = []

    def twice_connected(sender):
        calls.append(sender)
        return len(calls)

    connect(twice_connected, sig)
    connect(twice_connected, sig, sender=owner)
    assert send(sig, owner) == [(twice_connected, 1)]
    assert [response for _, response in sig.send(Sender())] == [2]
    # The new API's own send: the Any-sender adapter stands aside for the exact one.
    assert [response for _, response in sig.send(owner)] == [None, 3]
    assert len(calls) == 3


def test_reconnecting_on_a_signal_moves_the_receiver_to_the_end():
    sig = Signal()

    def first(sender):
        return "first"

    def second(sender):
        return "second"

    connect(first, sig)
    connect(second, sig)
    connect(first, sig)
    assert send(sig) == [(second, "second"), (first, "first")]
    assert len(sig.receivers) == 2


def test_wildcard_signal_receivers_hear_old_api_sends_on_a_signal_only():
    sig = Signal()
    heard = []

    def every_signal(signal, sender):
        heard.append((signal, sender))
        return "wildcard"

    connect(every_signal, dispatcher.Any)
    owner = Sender()
    try:
        assert send(sig, owner) == [(every_signal, "wildcard")]
        # The Signal's own send does not go through relay.dispatcher.
        assert sig.send(owner) == []
    finally:
        disconnect(every_signal, dispatcher.Any)
    assert heard == [(sig, owner)]


def test_a_wildcard_signal_receiver_also_connected_to_the_signal_fires_once():
    sig = Signal()
    calls = []

    def both(signal):
        calls.append(signal)

    connect(both, sig)
    connect(both, dispatcher.Any)
    try:
        assert send(sig) == [(both, None)]
    finally:
        disconnect(both, dispatcher.Any)
    assert calls == [sig]


# -- the deprecation warnings, per call site ------------------------------------------------------


def test_every_function_names_its_replacement():
    sig = Signal()
    expected = {
        "connect": "Signal.connect(",
        "send": "Signal.send(",
        "sendExact": "Signal.send(",
        "getReceivers": "Signal.receivers",
        "getAllReceivers": "Signal.has_listeners(",
        "liveReceivers": "Signal.receivers",
        "robust.sendRobust": "Signal.send_robust(",
        "robustapply.robustApply": "**kwargs",
        "disconnect": "Signal.disconnect(",
    }
    calls = {
        "connect": lambda: dispatcher.connect(handler, sig),
        "send": lambda: dispatcher.send(sig),
        "sendExact": lambda: dispatcher.sendExact(sig),
        "getReceivers": lambda: dispatcher.getReceivers(dispatcher.Any, sig),
        "getAllReceivers": lambda: dispatcher.getAllReceivers(dispatcher.Any, sig),
        "liveReceivers": lambda: dispatcher.liveReceivers([]),
        "robust.sendRobust": lambda: dispatcher.robust.sendRobust(sig),
        "robustapply.robustApply": lambda: dispatcher.robustapply.robustApply(handler),
        "disconnect": lambda: dispatcher.disconnect(handler, sig),
    }
    for name, call in calls.items():
        pattern = rf"^relay\.dispatcher\.{re.escape(name)}\(\) is deprecated; use .*"
        with pytest.warns(DeprecationWarning, match=pattern + re.escape(expected[name])) as rec:
            call()
        assert [w.filename for w in rec] == [__file__]


def test_python_shows_each_call_site_once_and_w_error_finds_them(tmp_path):
    import subprocess
    import sys

    script = tmp_path / "old_code.py"
    script.write_text(
        "from relay import dispatcher\n"
        "def my_handler(sender):\n"
        "    return sender\n"
        "my_signal = object()\n"
        "dispatcher.connect(my_handler, my_signal)\n"
        "for _ in range(3):\n"
        "    dispatcher.send(my_signal, 'sender')\n"
        "print(dispatcher.send(my_signal, 'sender')[0][1])\n"
    )
    shown = subprocess.run(
        [sys.executable, "-W", "default::DeprecationWarning", str(script)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert shown.stdout == "sender\n"
    # connect once, the send in the loop once, the last send once.
    assert shown.stderr.count("DeprecationWarning") == 3
    assert f"{script}:7: DeprecationWarning: relay.dispatcher.send()" in shown.stderr
    failing = subprocess.run(
        [sys.executable, "-W", "error::DeprecationWarning", str(script)],
        capture_output=True,
        text=True,
    )
    assert failing.returncode == 1
    assert "DeprecationWarning: relay.dispatcher.connect() is deprecated" in failing.stderr
    assert f'File "{script}", line 5' in failing.stderr


def test_sends_on_threads_while_old_api_receivers_come_and_go():
    import threading
    import warnings

    sig = Signal()
    owner = Sender()
    stop = threading.Event()
    errors = []

    def steady(sender):
        return "steady"

    connect(steady, sig, sender=owner)

    def sender_thread():
        try:
            while not stop.is_set():
                responses = sig.send(owner)
                assert "steady" in [response for _, response in responses]
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=sender_thread) for _ in range(3)]
    for thread in threads:
        thread.start()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        for _ in range(200):
            comer = Sender()

            def method(sender, comer=comer):
                return "comer"

            dispatcher.connect(method, sig)
            dispatcher.connect(method, sig, sender=owner)
            dispatcher.disconnect(method, sig)
            del comer, method
    stop.set()
    for thread in threads:
        thread.join(10)
    assert not errors
    gc.collect()
    assert send(sig, owner) == [(steady, "steady")]
    assert len(sig.receivers) == 1
