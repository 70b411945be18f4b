"""Unit tests for coroutine receivers and the async sends of ``relay.signals.Signal``."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import threading

import pytest

from relay.signals import Signal

pytestmark = pytest.mark.usefixtures("implementation")

# A generous guard so that a broken implementation fails instead of hanging.
GUARD = 30

trail: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar("trail", default=())


async def async_echo(**kwargs):
    return "async echo"


def sync_echo(**kwargs):
    return "sync echo"


class AsyncListener:
    async def on_event(self, **kwargs):
        return "async method"


class AsyncCallable:
    async def __call__(self, **kwargs):
        return "async callable"


def _send(sig, method, sender=None, **named):
    """Run any of the four sends from synchronous test code."""
    if method.startswith("a"):
        return asyncio.run(getattr(sig, method)(sender, **named))
    return getattr(sig, method)(sender, **named)


ALL_SENDS = ["send", "send_robust", "asend", "asend_robust"]


# -- recognising coroutine receivers ------------------------------------------------


ASYNC_KINDS = {
    "async function": (lambda: async_echo, "async echo"),
    "async bound method": (lambda: AsyncListener().on_event, "async method"),
    "partial of async function": (lambda: functools.partial(async_echo), "async echo"),
    "async __call__": (lambda: AsyncCallable(), "async callable"),
}


@pytest.mark.parametrize("kind", list(ASYNC_KINDS))
@pytest.mark.parametrize("method", ALL_SENDS)
def test_coroutine_receivers_are_recognised_and_awaited(kind, method):
    make, expected = ASYNC_KINDS[kind]
    sig = Signal()
    target = make()
    sig.connect(target, weak=False)
    assert sig.receivers[0].is_async is True

    [(called, response)] = _send(sig, method)
    assert called is target
    assert response == expected


def test_sync_receivers_are_not_marked_async():
    sig = Signal()
    sig.connect(sync_echo)
    sig.connect(functools.partial(sync_echo), weak=False)
    assert [entry.is_async for entry in sig.receivers] == [False, False]


# -- ordering -----------------------------------------------------------------------


@pytest.mark.parametrize("method", ALL_SENDS)
def test_sync_receivers_run_first_then_async_ones(method):
    sig = Signal()
    calls = []

    def make_sync(tag):
        def handler(**kwargs):
            calls.append(tag)
            return tag

        return handler

    def make_async(tag):
        async def handler(**kwargs):
            calls.append(tag)
            return tag

        return handler

    a = object()
    handlers = [
        (make_async("async1"), None),
        (make_sync("sync1"), None),
        (make_async("async2"), a),
        (make_sync("sync2"), a),
        (make_async("async3"), None),
        (make_sync("sync3"), None),
    ]
    for handler, sender in handlers:
        sig.connect(handler, sender=sender)

    result = _send(sig, method, a)
    assert [r for _, r in result] == ["sync1", "sync2", "sync3", "async1", "async2", "async3"]
    assert [r.__name__ for r, _ in result] == ["handler"] * 6
    assert calls == ["sync1", "sync2", "sync3", "async1", "async2", "async3"]

    calls.clear()
    result = _send(sig, method, None)
    assert [r for _, r in result] == ["sync1", "sync3", "async1", "async3"]


@pytest.mark.parametrize("method", ["asend", "asend_robust"])
def test_async_sends_without_receivers_return_empty_list(method):
    assert _send(Signal(), method) == []


@pytest.mark.parametrize("method", ["asend", "asend_robust"])
def test_async_sends_reject_extra_positional_arguments(method):
    sig = Signal()
    sig.connect(async_echo)
    with pytest.raises(TypeError):
        asyncio.run(getattr(sig, method)(None, "unexpected"))


@pytest.mark.parametrize("method", ["asend", "asend_robust"])
def test_async_sends_with_only_async_receivers(method):
    # Django ticket 35174: no sync receivers must not break the async sends.
    sig = Signal()

    async def other(**kwargs):
        return kwargs["value"] * 2

    sig.connect(async_echo)
    sig.connect(other)
    assert _send(sig, method, value=21) == [(async_echo, "async echo"), (other, 42)]


@pytest.mark.parametrize("method", ["asend", "asend_robust"])
def test_async_sends_with_only_sync_receivers(method):
    sig = Signal()
    seen = []

    def record(signal, sender, **kwargs):
        seen.append((signal, sender, kwargs))
        return "recorded"

    sig.connect(record)
    assert _send(sig, method, "the-sender", extra=1) == [(record, "recorded")]
    assert seen == [(sig, "the-sender", {"extra": 1})]


# -- where receivers run and concurrency ------------------------------------------------


@pytest.mark.parametrize("method", ["asend", "asend_robust"])
def test_async_sends_run_sync_receivers_off_the_event_loop(method):
    sig = Signal()
    threads = {}

    def sync_receiver(**kwargs):
        threads["sync"] = threading.get_ident()

    async def async_receiver(**kwargs):
        threads["async"] = threading.get_ident()

    sig.connect(sync_receiver)
    sig.connect(async_receiver)

    async def main():
        threads["loop"] = threading.get_ident()
        await getattr(sig, method)(None)

    asyncio.run(main())
    assert threads["sync"] != threads["loop"]
    assert threads["async"] == threads["loop"]


@pytest.mark.parametrize("method", ALL_SENDS)
def test_async_receivers_run_concurrently(method):
    # Each receiver waits for an event only the other one sets: run one after
    # the other, the first would wait forever (here: until the guard fires).
    sig = Signal()
    first_started = asyncio.Event()
    second_started = asyncio.Event()

    async def first(**kwargs):
        first_started.set()
        await asyncio.wait_for(second_started.wait(), GUARD)
        return "first"

    async def second(**kwargs):
        second_started.set()
        await asyncio.wait_for(first_started.wait(), GUARD)
        return "second"

    sig.connect(first)
    sig.connect(second)
    assert _send(sig, method) == [(first, "first"), (second, "second")]


# -- context variables --------------------------------------------------------------------


def _recorder(tag, is_async):
    """A receiver that returns the trail it saw and appends its tag to it."""
    if is_async:

        async def handler(**kwargs):
            seen = trail.get()
            trail.set((*seen, tag))
            return seen

    else:

        def handler(**kwargs):
            seen = trail.get()
            trail.set((*seen, tag))
            return seen

    return handler


CONTEXT_CASES = {
    "sync": (
        [("s1", False), ("s2", False)],
        [(), ("s1",)],
        ("s1", "s2"),
    ),
    "async": (
        [("a1", True), ("a2", True)],
        [(), ("a1",)],
        ("a1", "a2"),
    ),
    "mixed": (
        # Connected interleaved; sync ones run first, then async ones.
        [("a1", True), ("s1", False), ("a2", True), ("s2", False)],
        [(), ("s1",), ("s1", "s2"), ("s1", "s2", "a1")],
        ("s1", "s2", "a1", "a2"),
    ),
}


@pytest.mark.parametrize("kind", list(CONTEXT_CASES))
@pytest.mark.parametrize("method", ALL_SENDS)
def test_context_variables_flow_through_receivers_and_back(method, kind):
    specs, expected_seen, expected_final = CONTEXT_CASES[kind]
    sig = Signal()
    handlers = [_recorder(tag, is_async) for tag, is_async in specs]
    for handler in handlers:
        sig.connect(handler)

    def sync_caller():
        result = getattr(sig, method)(None)
        return result, trail.get()

    async def async_caller():
        result = await getattr(sig, method)(None)
        return result, trail.get()

    if method.startswith("a"):
        result, final = asyncio.run(async_caller())
    else:
        # A fresh context, so nothing leaks into other tests.
        result, final = contextvars.Context().run(sync_caller)

    assert [seen for _, seen in result] == expected_seen
    assert final == expected_final
    assert trail.get() == ()


@pytest.mark.parametrize("method", ["send", "send_robust"])
def test_context_set_by_caller_is_visible_to_receivers(method):
    sig = Signal()
    handlers = [_recorder("s", False), _recorder("a", True)]
    for handler in handlers:
        sig.connect(handler)

    def caller():
        trail.set(("caller",))
        return getattr(sig, method)(None), trail.get()

    result, final = contextvars.Context().run(caller)
    assert [seen for _, seen in result] == [("caller",), ("caller", "s")]
    assert final == ("caller", "s", "a")


# -- errors ------------------------------------------------------------------------------


def _innermost_code(tb):
    while tb.tb_next is not None:
        tb = tb.tb_next
    return tb.tb_frame.f_code


@pytest.mark.parametrize("method", ["send_robust", "asend_robust"])
def test_robust_sends_capture_a_failing_async_receiver(method, caplog):
    caplog.set_level(logging.ERROR, logger="relay.dispatch")
    sig = Signal()
    failed = asyncio.Event()
    calls = []

    def sync_after(**kwargs):
        calls.append("sync")
        return "sync"

    async def sibling(**kwargs):
        # Still waiting when the other receiver fails: it must not be cancelled.
        await asyncio.wait_for(failed.wait(), GUARD)
        calls.append("sibling")
        return "sibling"

    async def failing(**kwargs):
        failed.set()
        raise ValueError("async boom")

    sig.connect(sibling)
    sig.connect(failing)
    sig.connect(sync_after)

    result = _send(sig, method)
    assert [r for r, _ in result] == [sync_after, sibling, failing]
    assert result[0][1] == "sync"
    assert result[1][1] == "sibling"
    err = result[2][1]
    assert isinstance(err, ValueError)
    assert str(err) == "async boom"
    assert err.__traceback__ is not None
    assert _innermost_code(err.__traceback__) is failing.__code__
    assert calls == ["sync", "sibling"]

    [record] = [r for r in caplog.records if r.name == "relay.dispatch"]
    assert record.levelno == logging.ERROR
    assert record.getMessage() == (
        f"Error calling {failing.__qualname__} in Signal.send_robust() (async boom)"
    )
    assert record.exc_info[1] is err


@pytest.mark.parametrize("method", ["send_robust", "asend_robust"])
def test_robust_sends_capture_failing_sync_receivers_next_to_async_ones(method, caplog):
    caplog.set_level(logging.ERROR, logger="relay.dispatch")
    sig = Signal()

    def failing(**kwargs):
        raise KeyError("sync boom")

    sig.connect(failing)
    sig.connect(async_echo)
    result = _send(sig, method)
    assert [r for r, _ in result] == [failing, async_echo]
    assert isinstance(result[0][1], KeyError)
    assert result[1][1] == "async echo"
    [record] = [r for r in caplog.records if r.name == "relay.dispatch"]
    assert record.getMessage() == (
        f"Error calling {failing.__qualname__} in Signal.send_robust() ('sync boom')"
    )


@pytest.mark.parametrize("method", ["send", "asend"])
def test_one_failing_async_receiver_raises_its_exception_bare(method):
    sig = Signal()

    async def failing(**kwargs):
        raise ValueError("only one")

    sig.connect(async_echo)
    sig.connect(failing)
    with pytest.raises(ValueError, match="only one") as excinfo:
        _send(sig, method)
    assert type(excinfo.value) is ValueError


@pytest.mark.parametrize("method", ["send", "asend"])
def test_several_failing_async_receivers_raise_an_exception_group(method):
    sig = Signal()

    async def first(**kwargs):
        raise ValueError("first")

    async def second(**kwargs):
        raise KeyError("second")

    sig.connect(first)
    sig.connect(second)
    with pytest.raises(ExceptionGroup) as excinfo:
        _send(sig, method)
    errors = excinfo.value.exceptions
    assert sorted(type(e).__name__ for e in errors) == ["KeyError", "ValueError"]


def test_asend_propagates_a_failing_sync_receiver_and_skips_async_ones():
    sig = Signal()
    calls = []

    def failing(**kwargs):
        raise RuntimeError("sync failure")

    async def later(**kwargs):
        calls.append("later")

    sig.connect(failing)
    sig.connect(later)
    with pytest.raises(RuntimeError, match="sync failure"):
        asyncio.run(sig.asend(None))
    assert calls == []


# -- sync send from inside an event loop --------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "suggestion"), [("send", r"\basend\b"), ("send_robust", r"\basend_robust\b")]
)
def test_sync_send_with_async_receivers_inside_a_running_loop_is_refused(method, suggestion):
    sig = Signal()
    calls = []

    def sync_receiver(**kwargs):
        calls.append("sync")

    async def async_receiver(**kwargs):
        calls.append("async")

    sig.connect(sync_receiver)
    sig.connect(async_receiver)

    async def main():
        with pytest.raises(RuntimeError, match=suggestion):
            getattr(sig, method)(None)

    asyncio.run(main())
    assert calls == []


@pytest.mark.parametrize("method", ["send", "send_robust"])
def test_sync_send_with_only_sync_receivers_works_inside_a_running_loop(method):
    sig = Signal()
    sig.connect(sync_echo)

    async def main():
        return getattr(sig, method)(None)

    assert asyncio.run(main()) == [(sync_echo, "sync echo")]


@pytest.mark.parametrize("method", ["send", "send_robust"])
def test_sync_send_with_async_receivers_leaves_the_threads_event_loop_alone(method):
    # The private loop that runs async receivers must not replace, or on exit
    # clear, an event loop the calling thread has set but is not running.
    sig = Signal()
    sig.connect(async_echo)
    outcome = {}

    def worker():
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            outcome["result"] = getattr(sig, method)(None)
            try:
                outcome["same_loop"] = asyncio.get_event_loop() is loop
            except RuntimeError as exc:
                outcome["same_loop"] = exc
        finally:
            asyncio.set_event_loop(None)
            loop.close()

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(timeout=GUARD)
    assert not thread.is_alive()
    assert outcome == {"result": [(async_echo, "async echo")], "same_loop": True}
