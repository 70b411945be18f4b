"""Edge cases of the precomputed fast path of ``Signal.send`` and ``send_robust``."""

from __future__ import annotations

import gc
import threading
import types
from typing import Any

import pytest

from relay.signals import Signal

pytestmark = pytest.mark.usefixtures("implementation")


class Sender:
    def method(self) -> None:
        pass


def _make(label: str) -> Any:
    def receiver(sender: object = None, **kwargs: Any) -> str:
        return label

    return receiver


SENDS = ("send", "send_robust")


@pytest.mark.parametrize("method", SENDS)
@pytest.mark.parametrize("count", [1, 2, 10])
def test_a_receiver_that_dies_between_sends_is_not_called(method: str, count: int) -> None:
    sig = Signal()
    receivers = [_make(f"r{i}") for i in range(count)]
    for receiver in receivers:
        sig.connect(receiver)
    del receiver  # the loop variable holds the last one
    send = getattr(sig, method)
    assert send(None) == [(r, f"r{i}") for i, r in enumerate(receivers)]
    del receivers[0]
    gc.collect()
    assert send(None) == [(r, f"r{i + 1}") for i, r in enumerate(receivers)]
    assert len(sig.receivers) == count - 1


@pytest.mark.parametrize("method", SENDS)
def test_a_receiver_released_by_an_earlier_one_during_a_send_still_runs(method: str) -> None:
    sig = Signal()
    holder: list[Any] = []
    calls: list[str] = []

    def first(sender: object = None, **kwargs: Any) -> None:
        calls.append("first")
        holder.clear()
        gc.collect()

    def second(sender: object = None, **kwargs: Any) -> None:
        calls.append("second")

    holder.append(second)
    sig.connect(first)
    sig.connect(second)
    del second
    getattr(sig, method)(None)
    assert calls == ["first", "second"]
    calls.clear()
    getattr(sig, method)(None)
    assert calls == ["first"]


@pytest.mark.parametrize("method", SENDS)
def test_connect_and_disconnect_during_a_send_affect_the_next_send(method: str) -> None:
    sig = Signal()
    late = _make("late")
    calls: list[str] = []

    def first(sender: object = None, **kwargs: Any) -> None:
        calls.append("first")
        sig.connect(late)
        sig.disconnect(second)

    def second(sender: object = None, **kwargs: Any) -> None:
        calls.append("second")

    sig.connect(first)
    sig.connect(second)
    send = getattr(sig, method)
    assert [r for r, _ in send(None)] == [first, second]
    assert calls == ["first", "second"]
    assert [r for r, _ in send(None)] == [first, late]


@pytest.mark.parametrize("method", SENDS)
def test_the_sender_table_follows_connects_disconnects_and_dead_senders(method: str) -> None:
    sig = Signal()
    send = getattr(sig, method)
    anyone, mine = _make("any"), _make("mine")
    sender = Sender()
    sig.connect(anyone)
    assert send(sender) == [(anyone, "any")]
    sig.connect(mine, sender=sender)
    assert send(sender) == [(anyone, "any"), (mine, "mine")]
    assert send(Sender()) == [(anyone, "any")]
    assert send(None) == [(anyone, "any")]
    assert sig.disconnect(mine, sender=sender)
    assert send(sender) == [(anyone, "any")]
    sig.connect(mine, sender=sender)
    assert send(sender) == [(anyone, "any"), (mine, "mine")]
    del sender
    gc.collect()
    for _ in range(50):  # new objects may reuse the dead sender's id
        assert send(Sender()) == [(anyone, "any")]
    assert len(sig.receivers) == 1


@pytest.mark.parametrize("method", SENDS)
def test_unweakrefable_and_bound_method_senders(method: str) -> None:
    sig = Signal()
    send = getattr(sig, method)
    for_int, for_method, anyone = _make("int"), _make("method"), _make("any")
    obj = Sender()
    sig.connect(anyone)
    sig.connect(for_int, sender=12345)
    assert send(12345) == [(anyone, "any"), (for_int, "int")]
    sig.connect(for_method, sender=obj.method)
    # A bound method is keyed by (instance, function): a new bound method matches.
    assert send(obj.method) == [(anyone, "any"), (for_method, "method")]
    assert send(Sender().method) == [(anyone, "any")]
    assert send(12345) == [(anyone, "any"), (for_int, "int")]
    assert send(obj) == [(anyone, "any")]


@pytest.mark.parametrize("count", [0, 1, 3])
def test_a_signal_keyword_is_refused_only_when_a_receiver_would_get_it(count: int) -> None:
    sig = Signal()
    receivers = [_make(str(i)) for i in range(count)]
    for receiver in receivers:
        sig.connect(receiver)
    for send in (sig.send, sig.send_robust):
        if count:
            with pytest.raises(TypeError, match="multiple values for keyword argument 'signal'"):
                send(None, signal=1)
        else:
            assert send(None, signal=1) == []


@pytest.mark.parametrize("count", [1, 3])
def test_send_raises_and_send_robust_catches(count: int, caplog: pytest.LogCaptureFixture) -> None:
    sig = Signal()
    error = ValueError("boom")
    calls: list[int] = []

    def failing(sender: object = None, **kwargs: Any) -> None:
        calls.append(0)
        raise error

    others = [_make(str(i)) for i in range(count - 1)]
    sig.connect(failing)
    for receiver in others:
        sig.connect(receiver)
    with pytest.raises(ValueError, match="boom"):
        sig.send(None)
    assert calls == [0]
    responses = sig.send_robust(None)
    assert responses == [(failing, error), *((r, str(i)) for i, r in enumerate(others))]
    assert error.__traceback__ is not None
    assert "Error calling" in caplog.text
    # BaseException is not caught.
    sig2 = Signal()

    def interrupting(sender: object = None, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    sig2.connect(interrupting)
    with pytest.raises(KeyboardInterrupt):
        sig2.send_robust(None)


@pytest.mark.parametrize("method", SENDS)
def test_receivers_get_signal_sender_and_named_in_djangos_order(method: str) -> None:
    sig = Signal()
    seen: list[list[str]] = []

    def receiver(**kwargs: Any) -> None:
        seen.append(list(kwargs))

    sig.connect(receiver)
    getattr(sig, method)("s", a=1, b=2)
    assert seen == [["signal", "sender", "a", "b"]]


@pytest.mark.parametrize("method", SENDS)
def test_falsy_callable_receivers_are_called(method: str) -> None:
    class Falsy:
        def __len__(self) -> int:
            return 0

        def __call__(self, sender: object = None, **kwargs: Any) -> str:
            return "falsy"

    sig = Signal()
    one, two = Falsy(), Falsy()
    sig.connect(one)
    assert getattr(sig, method)(None) == [(one, "falsy")]
    sig.connect(two)
    assert getattr(sig, method)(None) == [(one, "falsy"), (two, "falsy")]


@pytest.mark.parametrize("method", SENDS)
def test_an_async_receiver_takes_the_general_path_and_back(method: str) -> None:
    sig = Signal()
    plain = _make("plain")

    async def coroutine(sender: object = None, **kwargs: Any) -> str:
        return "async"

    sig.connect(plain)
    sig.connect(coroutine)
    assert getattr(sig, method)(None) == [(plain, "plain"), (coroutine, "async")]
    sig.disconnect(coroutine)
    assert getattr(sig, method)(None) == [(plain, "plain")]


@pytest.mark.parametrize("method", SENDS)
def test_once_receivers_never_run_in_a_local_send(method: str) -> None:
    sig = Signal()
    plain, once = _make("plain"), _make("once")
    sig.connect(plain)
    sig.connect(once, dispatch_uid="once-uid", scope="once")
    assert getattr(sig, method)(None) == [(plain, "plain")]


class _RecordingOutbox:
    namespace = "test"

    def __init__(self) -> None:
        self.events: list[str] = []

    def prepare(self, signal: Signal, sender: object, named: dict[str, Any]) -> Any:
        self.events.append("prepare")
        return dict(named)

    def hand_off(self, prepared: Any) -> None:
        self.events.append(f"hand_off {sorted(prepared)}")

    async def ahand_off(self, prepared: Any) -> None:
        self.hand_off(prepared)

    def check_scope(self, scope: str | None) -> None:
        pass

    def receiver_connected(self, registration: Any) -> None:
        pass


@pytest.mark.parametrize("method", SENDS)
def test_attaching_and_detaching_an_outbox_switches_paths(method: str) -> None:
    sig = Signal()
    outbox = _RecordingOutbox()
    events = outbox.events

    def receiver(sender: object = None, **kwargs: Any) -> str:
        events.append("receiver")
        return "ok"

    sig.connect(receiver)
    send = getattr(sig, method)
    assert send(None, a=1) == [(receiver, "ok")]  # the snapshot is built, fast
    sig._attach(outbox)
    assert send(None, a=1) == [(receiver, "ok")]
    assert events == ["receiver", "prepare", "receiver", "hand_off ['a']"]
    sig._detach(outbox)
    events.clear()
    assert send(None, a=1) == [(receiver, "ok")]
    assert events == ["receiver"]


def test_hand_off_happens_even_when_a_receiver_raises() -> None:
    sig = Signal()
    outbox = _RecordingOutbox()

    def failing(sender: object = None, **kwargs: Any) -> None:
        raise ValueError("boom")

    sig.connect(failing)
    sig._attach(outbox)
    with pytest.raises(ValueError, match="boom"):
        sig.send(None)
    assert outbox.events == ["prepare", "hand_off []"]


def test_strong_receivers_copies_of_one_function() -> None:
    sig = Signal()
    code = _make("x")
    copies = [
        types.FunctionType(code.__code__, globals(), f"c{i}", None, code.__closure__)
        for i in range(5)
    ]
    for receiver in copies:
        sig.connect(receiver, weak=False)
    del receiver
    gc.collect()
    assert [r for r, _ in sig.send(None)] == copies


def test_concurrent_sends_connects_and_disconnects() -> None:
    sig = Signal()
    sender = Sender()
    stable = _make("stable")
    sig.connect(stable)
    stop = threading.Event()
    errors: list[BaseException] = []

    def churn() -> None:
        try:
            while not stop.is_set():
                temporary = _make("temporary")
                sig.connect(temporary, sender=sender)
                sig.connect(_make("dies at once"))
                sig.disconnect(temporary, sender=sender)
        except BaseException as err:  # pragma: no cover - reported below
            errors.append(err)

    def sends() -> None:
        try:
            for _ in range(3000):
                for send in (sig.send, sig.send_robust):
                    responses = send(sender)
                    assert (stable, "stable") in responses
                    assert all(r is not None for r, _ in responses)
        except BaseException as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=churn), *(threading.Thread(target=sends) for _ in range(2))]
    for thread in threads:
        thread.start()
    for thread in threads[1:]:
        thread.join()
    stop.set()
    threads[0].join()
    assert errors == []


def _stale_snapshot_with_a_dead_receiver(
    count: int, dead: int, *extra: Any
) -> tuple[Signal, list[Any]]:
    """
    A signal whose current snapshot still holds a receiver that has died (the
    one at ``dead``), as when another thread's send runs between the clearing
    of the weak reference and its callback. ``extra`` receivers come last.
    """
    sig = Signal()
    receivers = [_make(f"r{i}") for i in range(count)]
    for receiver in (*receivers, *extra):
        sig.connect(receiver)
    del receiver
    sig._refresh()
    snapshot = sig._snapshot
    assert snapshot is not None
    del receivers[dead]
    gc.collect()
    assert sig._snapshot is None  # the callback ran...
    sig._snapshot = snapshot  # ...but this send sees the snapshot from before
    sig._dead_receivers = False
    return sig, receivers


@pytest.mark.parametrize("method", SENDS)
@pytest.mark.parametrize("dead", [0, 1, 4])
def test_a_receiver_dead_in_a_stale_snapshot_is_skipped(method: str, dead: int) -> None:
    sig, receivers = _stale_snapshot_with_a_dead_receiver(5, dead)
    labels = [f"r{i}" for i in range(5) if i != dead]
    assert getattr(sig, method)(None) == list(zip(receivers, labels, strict=True))


def _raising(sender: object = None, **kwargs: Any) -> None:
    raise TypeError("from the receiver")


def _after(sender: object = None, **kwargs: Any) -> str:
    return "after"


def test_type_errors_of_receivers_still_propagate_unchained() -> None:
    sig = Signal()
    sig.connect(_raising)
    sig.connect(_after)
    with pytest.raises(TypeError, match="from the receiver") as info:
        sig.send(None)
    assert info.value.__context__ is None

    # A dead receiver skipped first: the receiver's error is not chained to it.
    sig, receivers = _stale_snapshot_with_a_dead_receiver(2, 0, _raising, _after)
    with pytest.raises(TypeError, match="from the receiver") as info:
        sig.send(None)
    assert info.value.__context__ is None

    sig, receivers = _stale_snapshot_with_a_dead_receiver(2, 1, _after)
    assert sig.send(None) == [(receivers[0], "r0"), (_after, "after")]


@pytest.mark.parametrize("method", SENDS)
def test_many_receivers_with_many_keyword_arguments(method: str) -> None:
    # More receivers and arguments than the C path keeps on its stack.
    sig = Signal()
    named = {f"k{i}": i for i in range(40)}
    calls: list[int] = []

    def make(index: int) -> Any:
        def receiver(signal: Signal, sender: object, **kwargs: Any) -> int:
            assert (signal, sender, kwargs) == (sig, "s", named)
            calls.append(index)
            if index % 10 == 3:
                raise ValueError(index)
            return index

        return receiver

    receivers = [make(i) for i in range(30)]
    for receiver in receivers:
        sig.connect(receiver)
    if method == "send":
        with pytest.raises(ValueError, match=r"^3$"):
            sig.send("s", **named)
        assert calls == [0, 1, 2, 3]
        return
    responses = sig.send_robust("s", **named)
    assert calls == list(range(30))
    assert [r for r, _ in responses] == receivers
    for index, (_, response) in enumerate(responses):
        if index % 10 == 3:
            assert isinstance(response, ValueError) and response.args == (index,)
            assert response.__traceback__ is not None
        else:
            assert response == index
