"""
Side-by-side micro-benchmark: ``relay.Signal`` against Django, blinker, psygnal,
pyee and a hand-written "floor" loop.

How to run (from the repository root)::

    .venv/bin/python benchmarks/bench_signals.py                  # 15 rounds, under a minute
    .venv/bin/python benchmarks/bench_signals.py --quick          # 5 short rounds (CI smoke)
    .venv/bin/python benchmarks/bench_signals.py --rounds 31 --json bench.json
    .venv/bin/python benchmarks/bench_signals.py --markdown > bench.md

Options:

    --rounds N   number of interleaved rounds (default 15, or 5 with --quick)
    --quick      5 rounds of ~5 ms measurements instead of ~30 ms ones
    --json PATH  also write every median, sample, ratio and target verdict to PATH
    --markdown   print the whole report as a Markdown document (headings, lists),
                 ready to paste into an issue; without it the header is plain text.
                 The tables are Markdown either way; progress goes to stderr.
    --relayed    also time the relayed case (below): needs ``redis-server`` on PATH,
                 started privately on a free port by ``relay.testing.RedisServer``.

Everything runs in one process. Each (case, contender) cell is calibrated once
(that also warms caches), so one measurement times a loop of ``n`` operations
that takes about 30 ms (5 ms with ``--quick``). Then every round measures every
cell once, cases and contenders in an order that rotates from round to round,
and the report gives the median over rounds, in µs per operation: the wall time
of the whole loop (``time.perf_counter_ns``) divided by ``n``, loop overhead
included, nothing subtracted. The garbage collector is off while a loop runs,
as in ``timeit``. The exit code is 0 whatever the numbers say (this is a report,
not a test); it is non-zero only when a contender crashes (1) or fails the
sanity check (2).

Every send passes the same sender object and exactly five keyword arguments
(``a=1, b="x", c=2.5, d=None, e=True``). Receivers are trivial functions
``def r(sender=None, **kw): return None``, distinct copies of one module-level
function.

Contenders (table columns):

    relay send      relay.Signal().send
    relay robust    relay.Signal().send_robust
    relay cached    relay.Signal(use_caching=True).send
    django send     django.dispatch.Signal().send (settings.configure(DEBUG=False))
    django cached   django.dispatch.Signal(use_caching=True).send
    django robust   django.dispatch.Signal().send_robust
    blinker         blinker.Signal().send(sender, **kw)
    psygnal         a psygnal.Signal(object) on a class, emit(payload): psygnal has no
                    keyword arguments and no sender, so each emit builds one dict
                    holding the sender and the five values and passes it as the
                    single positional argument (not strictly like for like).
    pyee            pyee.EventEmitter().emit("ev", sender, **kw)
    floor           def floor(sender, **named):
                        for r in receivers: r(signal=sig, sender=sender, **named)
                    the least any dispatcher with this calling convention can cost.
    honest floor    def honest_floor(sender, **named):
                        kwargs = {"signal": sig, "sender": sender, **named}
                        responses = []
                        for ref in refs:          # weakref.ref of each receiver
                            receiver = ref()
                            responses.append((receiver, receiver(**kwargs)))
                        return responses
                    the least a Django-API send with weak receivers can cost (issue
                    14): kwargs built once, a weak dereference and the response list.
                    Sends only (n/a for connect+disconnect and sender-filtered).

Cases (table rows):

    0 receivers          send with nothing connected.
    1 / 10 receivers     receivers connected for any sender. "weak (default)" rows
                         connect with weak=True, what users get by default (the
                         primary comparison); "strong" rows with weak=False. psygnal,
                         pyee and the floor have no weak mode for plain functions:
                         their weak rows re-measure their only (strong) mode.
    sender-filtered      10 receivers connected for 10 other sender objects plus 1
                         for the sender being sent (strong refs), so one call per
                         send. n/a for psygnal, pyee and the floor (no sender filter).
    connect+disconnect   connect one more receiver (a function, weak=False where the
                         library has the option) and disconnect it again, on a signal
                         that already has 1 receiver. floor: list.append + list.remove;
                         psygnal: connect/disconnect; pyee: add_listener/remove_listener.
                         "relay/django cached" use a use_caching=True signal; the
                         send_robust columns are n/a.
    connect+send+        the same with a send after each change (extra row, no target):
    disconnect+send      relay rebuilds its dispatch table lazily, on the first send
                         after a change, so connect+disconnect alone does not show what
                         a change costs it; this row does.

Issue 14 targets (their own table): relay send against the honest floor with 0,
1 and 10 weak receivers; sender-filtered against the honest floor with 1 receiver
(cells of two cases, paired by round); send_robust against send; and with
``--relayed``, the relayed case: a signal registered with a started
``relay.Relay(publish="async")`` (its publisher thread publishing to the private
redis-server meanwhile), 1 weak receiver, against an identical unregistered signal.
Each gives the median of the per-round ratios, their min-max spread and IQR. After
the rounds, the relayed case also reports where a relayed send's CPU goes: the
sending thread's (time.thread_time) and the publisher thread's (getrusage of the
process, queue flushed, less the sending thread's), per send, against the send
without a bridge (5 interleaved runs of 100,000 sends each).

Ratios are paired: each round gives one ratio from the two contenders' measurements
in that round (taken a fraction of a second apart), and the tables and targets use
the median of those. On a machine that drifts between fast and slow phases, as
virtual machines do, this cancels the drift where dividing the two medians of the
µs table would not (the JSON has both). Each target line also gives the
interquartile range of the per-round ratios as a gauge of noise and, for targets
against Django, where the floor itself lands against Django: a limit below that
cannot be met by any dispatcher that has to make the same receiver calls. The
column "relay / django, overhead over floor" compares what each adds to the floor,
(relay - floor) / (django - floor), per round: the dispatch overhead alone.

Before any timing, each cell is built once with counting receivers and run once,
to check that every receiver that should be called is called exactly once with the
payload, and no other; for connect+disconnect, that the receiver is live between
the two calls and gone after. Any mismatch aborts the run.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import hashlib
import importlib.metadata
import json
import os
import platform
import resource
import statistics
import sys
import time
import types
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path
from time import perf_counter_ns
from typing import Any

import blinker
import psygnal
import pyee

import relay

Receiver = Callable[..., Any]
Loop = Callable[[int], None]

PAYLOAD: dict[str, Any] = {"a": 1, "b": "x", "c": 2.5, "d": None, "e": True}
PSYGNAL_NOTE = (
    "psygnal has no keyword arguments and no sender: its emit builds one dict "
    "(sender + the 5 values) per call and passes it as the only positional argument."
)


class Sender:
    """A plain, hashable, weak-referenceable sender (like a model class or instance)."""

    def __repr__(self) -> str:
        return f"<Sender {id(self):#x}>"


SENDER = Sender()
OTHER_SENDERS = tuple(Sender() for _ in range(10))


def _receiver(sender: object = None, **kw: Any) -> None:
    return None


def _copy_receiver(index: int) -> Receiver:
    """A distinct function object with the code and globals of ``_receiver``."""
    func = types.FunctionType(_receiver.__code__, globals(), f"r{index}", _receiver.__defaults__)
    func.__qualname__ = f"r{index}"
    return func


#: Enough distinct receivers for every case (10 + 1 for sender-filtered).
RECEIVERS: tuple[Receiver, ...] = tuple(_copy_receiver(i) for i in range(12))


# -- timed loops: one call shape each, every argument a fast local -------------


def _loop_send(n: int, send: Callable[..., object], sender: object) -> None:
    for _ in repeat(None, n):
        send(sender, a=1, b="x", c=2.5, d=None, e=True)


def _loop_pyee(n: int, emit: Callable[..., object], sender: object) -> None:
    for _ in repeat(None, n):
        emit("ev", sender, a=1, b="x", c=2.5, d=None, e=True)


def _loop_psygnal(n: int, emit: Callable[..., object], sender: object) -> None:
    for _ in repeat(None, n):
        emit({"sender": sender, "a": 1, "b": "x", "c": 2.5, "d": None, "e": True})


def _loop_churn_strong(
    n: int, connect: Callable[..., object], disconnect: Callable[..., object], r: Receiver
) -> None:
    for _ in repeat(None, n):
        connect(r, weak=False)
        disconnect(r)


def _loop_churn_plain(
    n: int, connect: Callable[..., object], disconnect: Callable[..., object], r: Receiver
) -> None:
    for _ in repeat(None, n):
        connect(r)
        disconnect(r)


def _loop_churn_event(
    n: int, connect: Callable[..., object], disconnect: Callable[..., object], r: Receiver
) -> None:
    for _ in repeat(None, n):
        connect("ev", r)
        disconnect("ev", r)


# The same, with a send after each change: what a change really costs a library that
# rebuilds its dispatch table lazily (relay does, on the first send after a change).


def _loop_churn_send_strong(
    n: int,
    connect: Callable[..., object],
    disconnect: Callable[..., object],
    send: Callable[..., object],
    r: Receiver,
    sender: object,
) -> None:
    for _ in repeat(None, n):
        connect(r, weak=False)
        send(sender, a=1, b="x", c=2.5, d=None, e=True)
        disconnect(r)
        send(sender, a=1, b="x", c=2.5, d=None, e=True)


def _loop_churn_send_plain(
    n: int,
    connect: Callable[..., object],
    disconnect: Callable[..., object],
    send: Callable[..., object],
    r: Receiver,
    sender: object,
) -> None:
    for _ in repeat(None, n):
        connect(r)
        send(sender, a=1, b="x", c=2.5, d=None, e=True)
        disconnect(r)
        send(sender, a=1, b="x", c=2.5, d=None, e=True)


def _loop_churn_send_psygnal(
    n: int,
    connect: Callable[..., object],
    disconnect: Callable[..., object],
    emit: Callable[..., object],
    r: Receiver,
    sender: object,
) -> None:
    for _ in repeat(None, n):
        connect(r)
        emit({"sender": sender, "a": 1, "b": "x", "c": 2.5, "d": None, "e": True})
        disconnect(r)
        emit({"sender": sender, "a": 1, "b": "x", "c": 2.5, "d": None, "e": True})


def _loop_churn_send_event(
    n: int,
    connect: Callable[..., object],
    disconnect: Callable[..., object],
    emit: Callable[..., object],
    r: Receiver,
    sender: object,
) -> None:
    for _ in repeat(None, n):
        connect("ev", r)
        emit("ev", sender, a=1, b="x", c=2.5, d=None, e=True)
        disconnect("ev", r)
        emit("ev", sender, a=1, b="x", c=2.5, d=None, e=True)


@dataclass(frozen=True)
class Churn:
    """The timed connect+disconnect loops, and their two halves for the sanity check."""

    loop: Loop
    loop_with_sends: Loop
    add: Callable[[], object]
    remove: Callable[[], object]


# -- contenders --------------------------------------------------------------


class Contender:
    """How one library (or one method of it) connects, sends and disconnects."""

    key: str = ""
    label: str = ""
    filters_senders = True
    has_weak = True
    sends_only = False  # n/a for connect+disconnect (a send variant of another column)
    payload_as_arg = False  # psygnal: the payload arrives as the one positional argument

    def new(self) -> Any:
        raise NotImplementedError

    def connect(self, obj: Any, receiver: Receiver, sender: object, weak: bool) -> None:
        raise NotImplementedError

    def send_loop(self, obj: Any) -> Loop:
        raise NotImplementedError

    def churn(self, obj: Any, receiver: Receiver) -> Churn:
        raise NotImplementedError


class DjangoStyle(Contender):
    """relay and Django: ``connect(r, sender=, weak=)``, ``send``/``send_robust``."""

    def __init__(
        self, key: str, label: str, factory: Callable[[], Any], method: str, sends_only: bool
    ) -> None:
        self.key, self.label = key, label
        self.factory, self.method, self.sends_only = factory, method, sends_only

    def new(self) -> Any:
        return self.factory()

    def connect(self, obj: Any, receiver: Receiver, sender: object, weak: bool) -> None:
        obj.connect(receiver, sender=sender, weak=weak)

    def send_loop(self, obj: Any) -> Loop:
        send = getattr(obj, self.method)
        return lambda n: _loop_send(n, send, SENDER)

    def churn(self, obj: Any, receiver: Receiver) -> Churn:
        connect, disconnect, send = obj.connect, obj.disconnect, obj.send
        return Churn(
            loop=lambda n: _loop_churn_strong(n, connect, disconnect, receiver),
            loop_with_sends=lambda n: _loop_churn_send_strong(
                n, connect, disconnect, send, receiver, SENDER
            ),
            add=lambda: connect(receiver, weak=False),
            remove=lambda: disconnect(receiver),
        )


class Blinker(DjangoStyle):
    def __init__(self) -> None:
        super().__init__("blinker", "blinker", blinker.Signal, "send", sends_only=False)

    def connect(self, obj: Any, receiver: Receiver, sender: object, weak: bool) -> None:
        obj.connect(receiver, sender=blinker.ANY if sender is None else sender, weak=weak)


class _PsygnalHost:
    fired = psygnal.Signal(object)


class Psygnal(Contender):
    key, label = "psygnal", "psygnal"
    filters_senders = False
    has_weak = False
    payload_as_arg = True

    def new(self) -> Any:
        return _PsygnalHost().fired

    def connect(self, obj: Any, receiver: Receiver, sender: object, weak: bool) -> None:
        obj.connect(receiver)

    def send_loop(self, obj: Any) -> Loop:
        emit = obj.emit
        return lambda n: _loop_psygnal(n, emit, SENDER)

    def churn(self, obj: Any, receiver: Receiver) -> Churn:
        connect, disconnect, emit = obj.connect, obj.disconnect, obj.emit
        return Churn(
            loop=lambda n: _loop_churn_plain(n, connect, disconnect, receiver),
            loop_with_sends=lambda n: _loop_churn_send_psygnal(
                n, connect, disconnect, emit, receiver, SENDER
            ),
            add=lambda: connect(receiver),
            remove=lambda: disconnect(receiver),
        )


class Pyee(Contender):
    key, label = "pyee", "pyee"
    filters_senders = False
    has_weak = False

    def new(self) -> Any:
        return pyee.EventEmitter()

    def connect(self, obj: Any, receiver: Receiver, sender: object, weak: bool) -> None:
        obj.add_listener("ev", receiver)

    def send_loop(self, obj: Any) -> Loop:
        emit = obj.emit
        return lambda n: _loop_pyee(n, emit, SENDER)

    def churn(self, obj: Any, receiver: Receiver) -> Churn:
        connect, disconnect, emit = obj.add_listener, obj.remove_listener, obj.emit
        return Churn(
            loop=lambda n: _loop_churn_event(n, connect, disconnect, receiver),
            loop_with_sends=lambda n: _loop_churn_send_event(
                n, connect, disconnect, emit, receiver, SENDER
            ),
            add=lambda: connect("ev", receiver),
            remove=lambda: disconnect("ev", receiver),
        )


@dataclass
class _FloorSignal:
    receivers: list[Receiver] = field(default_factory=list)
    send: Callable[..., None] = field(init=False)

    def __post_init__(self) -> None:
        receivers, sig = self.receivers, self

        def floor(sender: object, **named: Any) -> None:
            for r in receivers:
                r(signal=sig, sender=sender, **named)

        self.send = floor


class Floor(Contender):
    key, label = "floor", "floor"
    filters_senders = False
    has_weak = False

    def new(self) -> Any:
        return _FloorSignal()

    def connect(self, obj: Any, receiver: Receiver, sender: object, weak: bool) -> None:
        obj.receivers.append(receiver)

    def send_loop(self, obj: Any) -> Loop:
        send = obj.send
        return lambda n: _loop_send(n, send, SENDER)

    def churn(self, obj: Any, receiver: Receiver) -> Churn:
        connect, disconnect, send = obj.receivers.append, obj.receivers.remove, obj.send
        return Churn(
            loop=lambda n: _loop_churn_plain(n, connect, disconnect, receiver),
            loop_with_sends=lambda n: _loop_churn_send_plain(
                n, connect, disconnect, send, receiver, SENDER
            ),
            add=lambda: connect(receiver),
            remove=lambda: disconnect(receiver),
        )


class _HonestFloorSignal:
    """
    The honest floor of a Django-API send with weak receivers: build the
    receivers' keyword arguments once, then for each receiver dereference its
    weak reference, call it and append ``(receiver, response)`` to the list
    returned. No sender filter, no dead-receiver check, no locking.
    """

    def __init__(self) -> None:
        self.refs: tuple[Callable[[], Any], ...] = ()
        self.send = self._compile()

    def connect(self, receiver: Receiver) -> None:
        self.refs = (*self.refs, weakref.ref(receiver))
        self.send = self._compile()

    def _compile(self) -> Callable[..., list[tuple[Receiver, Any]]]:
        refs, sig = self.refs, self

        def honest_floor(sender: object, **named: Any) -> list[tuple[Receiver, Any]]:
            kwargs = {"signal": sig, "sender": sender, **named}
            responses = []
            for ref in refs:
                receiver = ref()
                responses.append((receiver, receiver(**kwargs)))
            return responses

        return honest_floor


class HonestFloor(Contender):
    key, label = "honest_floor", "honest floor"
    filters_senders = False
    has_weak = False
    sends_only = True  # no connect+disconnect rows

    def new(self) -> Any:
        return _HonestFloorSignal()

    def connect(self, obj: Any, receiver: Receiver, sender: object, weak: bool) -> None:
        obj.connect(receiver)

    def send_loop(self, obj: Any) -> Loop:
        send = obj.send
        return lambda n: _loop_send(n, send, SENDER)


def _django_signal_class() -> Any:
    """``django.dispatch.Signal``, imported once settings exist with DEBUG off."""
    from django.conf import settings  # type: ignore[import-untyped]

    if not settings.configured:
        settings.configure(DEBUG=False)
    from django.dispatch import Signal  # type: ignore[import-untyped]

    return Signal


def make_contenders() -> list[Contender]:
    django_signal = _django_signal_class()
    return [
        DjangoStyle("relay", "relay send", relay.Signal, "send", sends_only=False),
        DjangoStyle("relay_robust", "relay robust", relay.Signal, "send_robust", sends_only=True),
        DjangoStyle(
            "relay_cached",
            "relay cached",
            lambda: relay.Signal(use_caching=True),
            "send",
            sends_only=False,
        ),
        DjangoStyle("django", "django send", django_signal, "send", sends_only=False),
        DjangoStyle(
            "django_cached",
            "django cached",
            lambda: django_signal(use_caching=True),
            "send",
            sends_only=False,
        ),
        DjangoStyle(
            "django_robust", "django robust", django_signal, "send_robust", sends_only=True
        ),
        Blinker(),
        Psygnal(),
        Pyee(),
        Floor(),
        HonestFloor(),
    ]


# -- cases -------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    key: str
    label: str
    receivers: int = 0
    weak: bool = False
    filtered: bool = False
    churn: bool = False
    churn_sends: bool = False  # a send after each change (extra row, no target)

    def applies(self, contender: Contender) -> bool:
        if self.churn:
            return not contender.sends_only
        if self.filtered:
            return contender.filters_senders
        return True

    def expected_calls(self) -> set[int]:
        """Indexes of the receivers one send must call (exactly once each)."""
        if self.filtered:
            return {len(OTHER_SENDERS)}
        return set(range(self.receivers))


CASES = (
    Case("zero", "0 receivers"),
    Case("one_weak", "1 receiver, weak (default)", receivers=1, weak=True),
    Case("one_strong", "1 receiver, strong", receivers=1),
    Case("ten_weak", "10 receivers, weak (default)", receivers=10, weak=True),
    Case("ten_strong", "10 receivers, strong", receivers=10),
    Case("filtered", "sender-filtered (1 of 11)", filtered=True),
    Case("churn", "connect+disconnect", churn=True),
    Case("churn_sends", "connect+send+disconnect+send", churn=True, churn_sends=True),
)
CASE_BY_KEY = {case.key: case for case in CASES}


def build(contender: Contender, case: Case, receivers: Sequence[Receiver]) -> tuple[Any, Loop]:
    """Set up ``case`` for ``contender``; return the signal object and the timed loop."""
    obj = contender.new()
    if case.churn:
        contender.connect(obj, receivers[0], None, False)
        churn = contender.churn(obj, receivers[1])
        return obj, churn.loop_with_sends if case.churn_sends else churn.loop
    if case.filtered:
        for r, other in zip(receivers, OTHER_SENDERS, strict=False):
            contender.connect(obj, r, other, case.weak)
        contender.connect(obj, receivers[len(OTHER_SENDERS)], SENDER, case.weak)
    else:
        for r in receivers[: case.receivers]:
            contender.connect(obj, r, None, case.weak)
    return obj, contender.send_loop(obj)


# -- sanity check ------------------------------------------------------------


class SanityError(Exception):
    pass


Calls = list[list[tuple[object, dict[str, Any]]]]


def _counting_receivers(count: int) -> tuple[list[Receiver], Calls]:
    calls: Calls = [[] for _ in range(count)]

    def make(index: int) -> Receiver:
        def counting(sender: object = None, **kw: Any) -> None:
            calls[index].append((sender, kw))

        counting.__qualname__ = f"counting{index}"
        return counting

    return [make(i) for i in range(count)], calls


def _check_calls(
    where: str,
    contender: Contender,
    calls: Calls,
    expected: dict[int, int],
) -> None:
    got = {i: len(c) for i, c in enumerate(calls) if c}
    want = {i: n for i, n in expected.items() if n}
    if got != want:
        raise SanityError(f"{where}: receivers called {got} (index: times), expected {want}")
    for made in calls:
        for sender, kw in made:
            if contender.payload_as_arg:
                ok = sender == {"sender": SENDER, **PAYLOAD} and not kw
            else:
                ok = sender is SENDER and all(k in kw and kw[k] == v for k, v in PAYLOAD.items())
            if not ok:
                raise SanityError(f"{where}: receiver got sender={sender!r}, kwargs={kw!r}")


def sanity_check(contender: Contender, case: Case) -> None:
    where = f"{contender.label} / {case.label}"
    receivers, calls = _counting_receivers(len(OTHER_SENDERS) + 1)
    obj, loop = build(contender, case, receivers)
    if not case.churn:
        loop(1)
        _check_calls(where, contender, calls, dict.fromkeys(case.expected_calls(), 1))
        return
    emit = contender.send_loop(obj)
    churn = contender.churn(obj, receivers[1])
    loop(1)
    base, extra = (2, 1) if case.churn_sends else (0, 0)
    _check_calls(f"{where} (the timed loop)", contender, calls, {0: base, 1: extra})
    emit(1)
    _check_calls(f"{where} (after the timed loop)", contender, calls, {0: base + 1, 1: extra})
    churn.add()
    emit(1)
    _check_calls(f"{where} (after connect)", contender, calls, {0: base + 2, 1: extra + 1})
    churn.remove()
    emit(1)
    _check_calls(f"{where} (after disconnect)", contender, calls, {0: base + 3, 1: extra + 1})


# -- timing ------------------------------------------------------------------


def time_loop(loop: Loop, n: int) -> int:
    """Nanoseconds taken by ``loop(n)``, with the garbage collector off."""
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        start = perf_counter_ns()
        loop(n)
        return perf_counter_ns() - start
    finally:
        if gc_was_enabled:
            gc.enable()


def calibrate(loop: Loop, target_ns: int) -> int:
    """Iterations for one measurement of ``loop`` to take about ``target_ns``."""
    n = 1
    while True:
        elapsed = time_loop(loop, n)
        if elapsed >= target_ns // 4:
            break
        n *= 10 if elapsed < target_ns // 100 else 2
    # Refine on three full-length runs (warm by now), taking their median.
    n = max(1, round(n * target_ns / max(elapsed, 1)))
    elapsed = int(statistics.median(time_loop(loop, n) for _ in range(3)))
    return max(1, round(n * target_ns / max(elapsed, 1)))


@dataclass
class Results:
    samples: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    iterations: dict[str, dict[str, int]] = field(default_factory=dict)

    def median(self, case: str, contender: str) -> float | None:
        values = self.samples.get(case, {}).get(contender)
        return statistics.median(values) if values else None


def _rotated(items: Sequence[Any], by: int) -> list[Any]:
    by %= len(items)
    return [*items[by:], *items[:by]]


@dataclass
class Extra:
    """Cells outside the (case, contender) grid, timed in the same rounds (``--relayed``)."""

    cells: dict[tuple[str, str], Loop] = field(default_factory=dict)
    after_round: Callable[[], object] | None = None  # untimed, e.g. flush a publish queue
    notes: list[str] = field(default_factory=list)  # printed after the report


def run(
    contenders: Sequence[Contender], rounds: int, target_ns: int, extra: Extra | None = None
) -> Results:
    cells: dict[tuple[str, str], Loop] = {}
    signals: list[Any] = []  # keep every signal object alive while its loop is timed
    results = Results()
    extra = extra or Extra()
    for case in CASES:
        for contender in contenders:
            if case.applies(contender):
                sanity_check(contender, case)
    print(f"sanity check passed; calibrating {len(CASES)} cases", file=sys.stderr)
    for case in CASES:
        for contender in contenders:
            if case.applies(contender):
                obj, loop = build(contender, case, RECEIVERS)
                signals.append(obj)
                cells[case.key, contender.key] = loop
                n = calibrate(loop, target_ns)
                results.iterations.setdefault(case.key, {})[contender.key] = n
                results.samples.setdefault(case.key, {})[contender.key] = []
    for (case_key, contender_key), loop in extra.cells.items():
        n = calibrate(loop, target_ns)
        if extra.after_round is not None:
            extra.after_round()
        results.iterations.setdefault(case_key, {})[contender_key] = n
        results.samples.setdefault(case_key, {})[contender_key] = []
    extra_keys = list(extra.cells)
    for index in range(rounds):
        print(f"round {index + 1}/{rounds}", file=sys.stderr)
        for key in _rotated(extra_keys, index) if extra_keys else ():
            n = results.iterations[key[0]][key[1]]
            elapsed = time_loop(extra.cells[key], n)
            results.samples[key[0]][key[1]].append(elapsed / n / 1000)
        if extra.after_round is not None:
            extra.after_round()
        for case in _rotated(CASES, index):
            for contender in _rotated(contenders, index):
                timed = cells.get((case.key, contender.key))
                if timed is None:
                    continue
                n = results.iterations[case.key][contender.key]
                elapsed = time_loop(timed, n)
                results.samples[case.key][contender.key].append(elapsed / n / 1000)
    return results


# -- ratios and targets ------------------------------------------------------


@dataclass(frozen=True)
class RatioDef:
    """A column of the ratios table: ``num / den``, or ``(num - minus) / (den - minus)``."""

    key: str
    label: str
    num: str
    den: str
    minus: str | None = None  # only for send cases (the floor of a churn row is list ops)


RATIOS = (
    RatioDef("relay_vs_django", "relay / django send", "relay", "django"),
    RatioDef("relay_vs_floor", "relay / floor", "relay", "floor"),
    RatioDef("relay_vs_honest_floor", "relay / honest floor", "relay", "honest_floor"),
    RatioDef("robust_vs_send", "relay robust / relay send", "relay_robust", "relay"),
    RatioDef("relay_vs_psygnal", "relay / psygnal", "relay", "psygnal"),
    RatioDef(
        "cached_vs_django_cached", "relay cached / django cached", "relay_cached", "django_cached"
    ),
    RatioDef("floor_vs_django", "floor / django send", "floor", "django"),
    RatioDef(
        "overhead_vs_django", "relay / django, overhead over floor", "relay", "django", "floor"
    ),
)


def ratio_of_medians(
    results: Results, case: str, num: str, den: str, minus: str | None = None
) -> float | None:
    """The medians of the µs table, divided (in the JSON, for reference)."""
    top, bottom = results.median(case, num), results.median(case, den)
    base = results.median(case, minus) if minus else 0.0
    if top is None or bottom is None or base is None or bottom == base:
        return None
    return (top - base) / (bottom - base)


def paired_ratios(
    results: Results, case: str, num: str, den: str, minus: str | None = None
) -> list[float]:
    """One ratio per round, from the measurements of that round."""
    cells = results.samples.get(case, {})
    tops, bottoms = cells.get(num, []), cells.get(den, [])
    if minus is None:
        return [t / b for t, b in zip(tops, bottoms, strict=False) if b]
    bases = cells.get(minus, [])
    return [(t - m) / (b - m) for t, b, m in zip(tops, bottoms, bases, strict=False) if b != m]


def ratio_column(results: Results, case: Case, column: RatioDef) -> float | None:
    if column.minus is not None and case.churn:
        return None
    return ratio(results, case.key, column.num, column.den, column.minus)


def ratio(
    results: Results, case: str, num: str, den: str, minus: str | None = None
) -> float | None:
    """
    Median over rounds of the per-round ratio (what the tables and targets use).

    Both measurements of a pair come from the same round, a fraction of a second
    apart, so a machine that drifts between fast and slow phases (virtual machines
    do) moves both; dividing two medians taken over all rounds would not cancel it.
    """
    values = paired_ratios(results, case, num, den, minus)
    return statistics.median(values) if values else None


def spread(values: Sequence[float]) -> tuple[float, float, float] | None:
    """(first quartile, median, third quartile), or None with fewer than two values."""
    if len(values) < 2:
        return None
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


@dataclass(frozen=True)
class Target:
    case: str
    num: str
    den: str
    limit: float
    primary: bool

    @property
    def label(self) -> str:
        what = {"django": "Django send", "floor": "floor", "relay": "relay send"}[self.den]
        subject = "relay send_robust" if self.num == "relay_robust" else "relay send"
        return f"{CASE_BY_KEY[self.case].label}: {subject} <= {self.limit:g}x {what}"


def make_targets() -> list[Target]:
    targets: list[Target] = []
    for weak in (True, False):
        suffix = "weak" if weak else "strong"
        targets += [
            Target(f"one_{suffix}", "relay", "django", 0.35, weak),
            Target(f"one_{suffix}", "relay", "floor", 2.0, weak),
            Target(f"ten_{suffix}", "relay", "django", 0.35, weak),
            Target(f"ten_{suffix}", "relay", "floor", 1.6, weak),
        ]
    targets += [
        Target("zero", "relay", "django", 0.5, True),
        Target("filtered", "relay", "django", 0.35, True),
        Target("churn", "relay", "django", 1.0, True),
    ]
    for case in ("zero", "one_weak", "ten_weak", "filtered", "one_strong", "ten_strong"):
        targets.append(Target(case, "relay_robust", "relay", 1.1, not case.endswith("strong")))
    return targets


@dataclass(frozen=True)
class FloorTarget:
    """
    A target of issue 14 against the honest floor: ``num`` / ``den``, each a
    (case, contender) cell, paired round by round (the cells may be of
    different cases: both are measured in every round).
    """

    label: str
    num: tuple[str, str]
    den: tuple[str, str]
    limit: float


FLOOR_TARGETS = (
    FloorTarget(
        "0 receivers: send / honest floor", ("zero", "relay"), ("zero", "honest_floor"), 1.25
    ),
    FloorTarget(
        "1 receiver: send / honest floor", ("one_weak", "relay"), ("one_weak", "honest_floor"), 1.25
    ),
    FloorTarget(
        "10 receivers: send / honest floor",
        ("ten_weak", "relay"),
        ("ten_weak", "honest_floor"),
        1.0,
    ),
    FloorTarget(
        "sender-filtered (1 of 11): send / honest floor with 1 receiver",
        ("filtered", "relay"),
        ("one_weak", "honest_floor"),
        1.3,
    ),
    *(
        FloorTarget(f"{label}: send_robust / send", (case, "relay_robust"), (case, "relay"), 1.1)
        for case, label in (
            ("zero", "0 receivers"),
            ("one_weak", "1 receiver"),
            ("ten_weak", "10 receivers"),
            ("filtered", "sender-filtered"),
        )
    ),
    FloorTarget(
        "relayed, 1 receiver: send with async publishing / the same send without a bridge",
        ("relayed", "relay_bridged"),
        ("relayed", "relay"),
        1.6,
    ),
)


def cross_ratios(results: Results, num: tuple[str, str], den: tuple[str, str]) -> list[float]:
    """One ratio per round, of two cells that may belong to different cases."""
    tops = results.samples.get(num[0], {}).get(num[1], [])
    bottoms = results.samples.get(den[0], {}).get(den[1], [])
    return [t / b for t, b in zip(tops, bottoms, strict=False) if b]


def floor_rows(results: Results) -> list[dict[str, Any]]:
    rows = []
    for target in FLOOR_TARGETS:
        values = cross_ratios(results, target.num, target.den)
        if not values:
            continue  # e.g. the relayed case without --relayed
        median = statistics.median(values)
        quartiles = spread(values)
        rows.append(
            {
                "label": target.label,
                "limit": target.limit,
                "median": median,
                "min": min(values),
                "max": max(values),
                "iqr": None if quartiles is None else [quartiles[0], quartiles[2]],
                "rounds": len(values),
                "passed": median <= target.limit,
            }
        )
    return rows


def verdict(results: Results, target: Target) -> tuple[bool | None, float | None]:
    value = ratio(results, target.case, target.num, target.den)
    return (None if value is None else value <= target.limit), value


# -- report ------------------------------------------------------------------


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "?"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _relay_source() -> str:
    """Digest of the relay package's sources: which code was measured (it may be a
    working tree that no commit matches)."""
    package = Path(relay.__file__).parent
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0")
        digest.update(path.read_bytes())
    return f"{package} (sources sha256 {digest.hexdigest()[:12]})"


def environment() -> dict[str, str]:
    compiled = getattr(psygnal, "_compiled", None)
    return {
        "python": f"{platform.python_version()} ({platform.python_implementation()})",
        "relay": getattr(relay, "__version__", "?"),
        "relay_source": _relay_source(),
        "django": _version("django"),
        "blinker": _version("blinker"),
        "psygnal": _version("psygnal") + (" (mypyc-compiled)" if compiled else " (pure Python)"),
        "pyee": _version("pyee"),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": _cpu_model(),
        "cpu_count": str(os.cpu_count()),
    }


def _fmt_us(value: float | None) -> str:
    if value is None:
        return "n/a"
    if value < 1:
        return f"{value:.3f}"
    return f"{value:.2f}" if value < 100 else f"{value:.1f}"


def _fmt_ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> Iterator[str]:
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        padded = [
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "| " + " | ".join(padded) + " |"

    yield line(header)
    yield "|" + "|".join("-" * (w + 1) + (":" if i else "-") for i, w in enumerate(widths)) + "|"
    for row in rows:
        yield line(row)


def report(
    results: Results,
    contenders: Sequence[Contender],
    env: dict[str, str],
    rounds: int,
    target_ns: int,
    markdown: bool,
) -> list[str]:
    out: list[str] = []
    heading = "## " if markdown else ""
    bullet = "- " if markdown else "  "
    out.append(("# " if markdown else "") + "relay signal dispatch micro-benchmark")
    out.append("")
    out.append(
        f"{bullet}Python {env['python']} | relay {env['relay']} | Django {env['django']} | "
        f"blinker {env['blinker']} | psygnal {env['psygnal']} | pyee {env['pyee']}"
    )
    out.append(f"{bullet}relay measured from {env['relay_source']}")
    out.append(
        f"{bullet}Machine: {env['platform']} | {env['machine']} | {env['cpu']} | "
        f"{env['cpu_count']} CPUs"
    )
    out.append(
        f"{bullet}{rounds} interleaved round(s), median reported; ~{target_ns / 1e6:g} ms per "
        "measurement; µs per operation, loop overhead included; GC off while timing"
    )
    noise = [
        (q[2] - q[0]) / q[1]
        for cells in results.samples.values()
        for values in cells.values()
        if (q := spread(values)) is not None and q[1] > 0
    ]
    if noise:
        out.append(
            f"{bullet}Noise: a cell's samples spread by {statistics.median(noise):.0%} "
            f"(median over cells of interquartile range / median; worst {max(noise):.0%})"
        )
    out.append("")

    out.append(f"{heading}Median µs per operation (lower is better)")
    out.append("")
    header = ["case", *(c.label for c in contenders)]
    rows = [
        [case.label, *(_fmt_us(results.median(case.key, c.key)) for c in contenders)]
        for case in CASES
    ]
    out.extend(_table(header, rows))
    out.append("")
    notes = [
        PSYGNAL_NOTE,
        "psygnal, pyee and floor have no weak mode for plain functions: their "
        "'weak (default)' rows re-measure their only (strong) mode; blinker's use weak=True.",
        "sender-filtered: n/a where the library has no sender filtering.",
        "connect+disconnect: one extra function receiver (weak=False) on a signal with 1 "
        "receiver; 'cached' columns use a use_caching=True signal; robust columns n/a. "
        "relay rebuilds its dispatch table lazily, on the first send after a change, so "
        "that cost is not in this row: see connect+send+disconnect+send (no target).",
        "'relay / django, overhead over floor' = (relay - floor) / (django - floor), per "
        "round: dispatch overhead with the receiver calls, which every dispatcher makes, "
        "taken out.",
    ]
    out.extend(f"{bullet}Note: {note}" for note in notes)
    out.append("")

    out.append(f"{heading}Ratios: median of per-round ratios (lower is better for relay)")
    out.append("")
    header = ["case", *(column.label for column in RATIOS)]
    rows = [
        [
            case.label,
            *(_fmt_ratio(ratio_column(results, case, column)) for column in RATIOS),
        ]
        for case in CASES
    ]
    out.extend(_table(header, rows))
    out.append("")

    out.append(f"{heading}Issue 14 targets: relay against the honest floor (weak receivers)")
    out.append("")
    out.append(
        f"{bullet}honest floor: kwargs = {{'signal': sig, 'sender': sender, **named}} once, then "
        "per receiver: ref(), call with kwargs, append (receiver, response); returns the list"
    )
    out.append(f"{bullet}ratio = median over rounds of the per-round ratio; spread = min-max")
    out.append("")
    rows = [
        [
            row["label"],
            f"<= {row['limit']:g}x",
            _fmt_ratio(row["median"]),
            f"{row['min']:.2f}-{row['max']:.2f}x",
            "n/a" if row["iqr"] is None else f"{row['iqr'][0]:.2f}-{row['iqr'][1]:.2f}x",
            str(row["rounds"]),
            "PASS" if row["passed"] else "FAIL",
        ]
        for row in floor_rows(results)
    ]
    header = ["target", "limit", "median", "spread (min-max)", "IQR", "rounds", "verdict"]
    out.extend(_table(header, rows))
    out.append("")

    out.append(f"{heading}Targets (primary = default weak refs; strong-ref rows for reference)")
    out.append("")
    for target in make_targets():
        passed, value = verdict(results, target)
        if passed is None or value is None:
            status, detail = "N/A ", "ratio unavailable"
        else:
            status = "PASS" if passed else "FAIL"
            margin = abs(target.limit - value) / target.limit * 100
            side = "under" if passed else "over"
            detail = f"{value:.3f}x vs {target.limit:g}x limit ({margin:.0f}% {side})"
            gauge = spread(paired_ratios(results, target.case, target.num, target.den))
            if gauge is not None:
                detail += f"; per-round IQR {gauge[0]:.2f}-{gauge[2]:.2f}x"
            case = CASE_BY_KEY[target.case]
            floor = ratio(results, target.case, "floor", "django")
            if target.den == "django" and floor is not None and not case.churn:
                detail += f"; the floor itself is {floor:.2f}x Django"
        kind = "" if target.primary else " [strong refs, secondary]"
        prefix = bullet if markdown else ""
        out.append(f"{prefix}{status}  {target.label}{kind}: {detail}")
    return out


def to_json(
    results: Results,
    contenders: Sequence[Contender],
    env: dict[str, str],
    rounds: int,
    target_ns: int,
) -> dict[str, Any]:
    keys = [c.key for c in contenders]
    medians = {case.key: {k: results.median(case.key, k) for k in keys} for case in CASES}
    ratios = {case.key: {c.key: ratio_column(results, case, c) for c in RATIOS} for case in CASES}
    of_medians = {
        case.key: {
            c.key: None
            if c.minus and case.churn
            else ratio_of_medians(results, case.key, c.num, c.den, c.minus)
            for c in RATIOS
        }
        for case in CASES
    }
    per_round = {
        case.key: {
            c.key: []
            if c.minus and case.churn
            else paired_ratios(results, case.key, c.num, c.den, c.minus)
            for c in RATIOS
        }
        for case in CASES
    }
    targets = []
    for target in make_targets():
        passed, value = verdict(results, target)
        gauge = spread(paired_ratios(results, target.case, target.num, target.den))
        targets.append(
            {
                "label": target.label,
                "case": target.case,
                "numerator": target.num,
                "denominator": target.den,
                "limit": target.limit,
                "ratio": value,
                "ratio_of_medians": ratio_of_medians(results, target.case, target.num, target.den),
                "per_round_ratio_quartiles": gauge,
                "passed": passed,
                "primary": target.primary,
            }
        )
    return {
        "environment": env,
        "config": {"rounds": rounds, "target_ms_per_measurement": target_ns / 1e6},
        "unit": "microseconds per operation (median over rounds)",
        "ratio_definition": "median over rounds of the per-round ratio",
        "payload": PAYLOAD,
        "notes": {"psygnal": PSYGNAL_NOTE},
        "cases": {case.key: case.label for case in CASES},
        "contenders": {c.key: c.label for c in contenders},
        "median_us": medians,
        "ratios": ratios,
        "ratios_of_medians": of_medians,
        "ratios_per_round": per_round,
        "targets": targets,
        "honest_floor_targets": floor_rows(results),
        "iterations": results.iterations,
        "samples_us": results.samples,
    }


def _relayed_cpu_split(
    bridge: relay.Relay, bridged: relay.Signal, plain: relay.Signal, n: int = 100_000, runs: int = 5
) -> str:
    """
    Where a relayed send's CPU goes: the sending thread's (``time.thread_time``)
    and the rest of the process's, its publisher thread's (``getrusage`` of the
    process, publish queue flushed, less the sending thread's), per send.
    """

    def process_cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    rows = []
    for _ in range(runs):
        started = time.thread_time()
        _loop_send(n, plain.send, SENDER)
        unrelayed = time.thread_time() - started
        process, started = process_cpu(), time.thread_time()
        _loop_send(n, bridged.send, SENDER)
        sending = time.thread_time() - started
        if not bridge.flush(120):
            raise SanityError("relayed case: the CPU split's sends were not all published")
        rest = process_cpu() - process - sending
        rows.append((unrelayed * 1e6 / n, sending * 1e6 / n, rest * 1e6 / n))
    alone, sending_us, rest_us = (statistics.median(column) for column in zip(*rows, strict=True))
    return (
        f"Relayed case, CPU per send (median of {runs} runs of {n:,} sends, interleaved): "
        f"the send without a bridge {alone:.2f} µs; the relayed send {sending_us:.2f} µs in the "
        f"sending thread ({sending_us / alone:.2f}x) and {rest_us:.2f} µs in the rest of the "
        f"process, its publisher thread, which shares the interpreter lock: "
        f"{(sending_us + rest_us) / alone:.2f}x in all."
    )


@contextlib.contextmanager
def relayed_cells() -> Iterator[Extra]:
    """
    The relayed case: one weak receiver on a signal registered with a started
    ``relay.Relay(publish="async")`` (its publisher thread publishes to a
    private redis-server while the loop runs), against one weak receiver on
    an identical signal that no bridge knows. The publish queue is flushed
    after every round, outside the timing.
    """
    from relay.testing import RedisServer

    receiver = RECEIVERS[0]
    with RedisServer() as server:
        if server.port == 6379:
            raise RuntimeError("refusing to benchmark against port 6379")
        bridge = relay.Relay(
            server.url, namespace=f"bench-{os.getpid()}", publish="async", max_queue=10_000_000
        )
        bridged = relay.Signal(name="bench.relayed")
        bridged.connect(receiver)
        plain = relay.Signal(name="bench.unbridged")
        plain.connect(receiver)
        bridge.register(bridged)
        with bridge:
            for sig in (bridged, plain):
                responses = sig.send(SENDER, **PAYLOAD)
                if responses != [(receiver, None)]:
                    raise SanityError(f"relayed case: {sig!r} returned {responses!r}")
            if not bridge.flush(30):
                raise SanityError("relayed case: the first relayed send was not published")
            extra = Extra(
                cells={
                    ("relayed", "relay_bridged"): lambda n: _loop_send(n, bridged.send, SENDER),
                    ("relayed", "relay"): lambda n: _loop_send(n, plain.send, SENDER),
                },
                after_round=lambda: bridge.flush(60),
            )
            yield extra
            extra.notes.append(_relayed_cpu_split(bridge, bridged, plain))
            stats = bridge.stats()
            if stats.get("dropped") or stats.get("publish_errors"):
                print(f"relayed case: bridge stats {stats}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--rounds", type=int, default=None, help="rounds (default 15; 5 quick)")
    parser.add_argument("--quick", action="store_true", help="5 short rounds, for CI smoke")
    parser.add_argument("--json", metavar="PATH", help="write medians, ratios, samples here")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown document")
    parser.add_argument(
        "--relayed",
        action="store_true",
        help="also time a registered signal's send with publish='async' against a private "
        "redis-server (relay.testing.RedisServer, never port 6379)",
    )
    args = parser.parse_args(argv)
    rounds = args.rounds if args.rounds is not None else (5 if args.quick else 15)
    if rounds < 1:
        parser.error("--rounds must be at least 1")
    target_ns = 5_000_000 if args.quick else 30_000_000

    contenders = make_contenders()
    env = environment()
    try:
        with contextlib.ExitStack() as stack:
            extra = stack.enter_context(relayed_cells()) if args.relayed else None
            results = run(contenders, rounds, target_ns, extra)
    except SanityError as err:
        print(f"SANITY CHECK FAILED: {err}", file=sys.stderr)
        return 2
    print("\n".join(report(results, contenders, env, rounds, target_ns, args.markdown)))
    for note in extra.notes if extra is not None else ():
        print(f"\n{note}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(to_json(results, contenders, env, rounds, target_ns), handle, indent=2)
            handle.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
