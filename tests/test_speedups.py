"""
relay's optional C accelerator, ``relay._speedups``: it gives exactly what
the pure-Python code gives, for good frames and hostile ones, and relay works
without it.
"""

from __future__ import annotations

import contextvars
import math
import os
import struct
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay import presence, signals, wire
from relay.presence import LATENCY_BUCKETS
from relay.signals import Signal

ROOT = Path(__file__).resolve().parent.parent
ORIGIN = "origin:1:abcd"
ID = bytes(range(16))


class _Str(str):
    pass


class _Dict(dict[str, Any]):
    pass


needs_speedups = pytest.mark.skipif(not wire.ACCELERATED, reason="relay._speedups is not built")


def test_the_accelerator_is_built_where_required() -> None:
    # .ci/run sets RELAY_REQUIRE_SPEEDUPS=1: there, a C compiler is present, so
    # a build that silently fell back to pure Python is a failure.
    if os.environ.get("RELAY_REQUIRE_SPEEDUPS") != "1":
        pytest.skip("RELAY_REQUIRE_SPEEDUPS is not set: pure Python is allowed")
    assert wire.ACCELERATED, "relay._speedups failed to build: see pip's output"


def test_relay_pure_python_turns_the_accelerator_off() -> None:
    code = (
        "import relay.wire as w, relay.signals as s, relay.bridge as b; "
        "print(w.ACCELERATED, w._c_plain_messages, w._c_encode_body, "
        "w.number_message is w._py_number_message, s._c_send_to, b._c_fire_messages)"
    )
    env = {**os.environ, "RELAY_PURE_PYTHON": "1"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == ["False", "None", "None", "True", "None", "None"]


def _encode(named: Any, accelerated: bool, sender: str | None = "app.Thing") -> Any:
    """MessagePacker.encode() with or without the accelerator: its bytes, or its error."""
    with pytest.MonkeyPatch.context() as patch:
        if not accelerated:
            patch.setattr(wire, "_c_encode_body", None)
        try:
            return wire.MessagePacker("app.saved").encode(sender, 1.5, named)
        except Exception as exc:
            return (type(exc), str(exc))


def _read(data: bytes, accelerated: bool) -> Any:
    """read_frame() with or without the accelerator: its Frame, or its error."""
    with pytest.MonkeyPatch.context() as patch:
        if not accelerated:
            patch.setattr(wire, "_c_plain_messages", None)
        try:
            return wire.read_frame(data, max_items=60)
        except Exception as exc:
            return (type(exc), str(exc))


_ints = st.integers(min_value=-(2**63), max_value=2**64 - 1)  # what msgpack can carry
# Each field: mostly a good value, sometimes one of the bad ones a hostile
# publisher could send.
_ids = st.one_of(
    st.binary(min_size=16, max_size=16), st.binary(max_size=20), st.text(max_size=3), st.none()
)
_seqs = st.one_of(
    st.integers(min_value=0, max_value=2**64 - 1),
    st.integers(min_value=-(2**63), max_value=-1),
    st.booleans(),
    st.floats(allow_nan=False),
    st.text(max_size=2),
)
_signals = st.one_of(st.sampled_from(["app.saved", "app.deleted"]), st.just(""), _ints)
_senders = st.one_of(st.none(), st.sampled_from(["app.Thing", "é"]), _ints, st.binary())
_sent_ats = st.one_of(
    st.floats(min_value=0, max_value=2e9),
    st.floats(),  # inf and nan among them
    st.just(1.7e308),  # finite, yet a sum of two overflows
    _ints,
    st.none(),
)
_values = st.one_of(
    st.none(),
    st.booleans(),
    _ints,
    st.floats(allow_nan=False),
    st.text(max_size=5),
    st.binary(max_size=5),
    st.lists(_ints, max_size=2),
    st.dictionaries(st.text(max_size=2), _ints, max_size=2),
)
_kwargs = st.one_of(
    st.dictionaries(st.text(max_size=4), _values, max_size=6),
    st.dictionaries(_ints, _ints, min_size=1, max_size=2),
    st.lists(_ints, max_size=2),
    st.none(),
)
_messages = st.one_of(
    st.tuples(_ids, _seqs, _signals, _senders, _sent_ats, _kwargs).map(list),
    st.lists(_ints, max_size=7),
    _ints,
)


@needs_speedups
@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages=st.lists(_messages, max_size=12))
def test_both_read_every_frame_alike(messages: list[Any]) -> None:
    data = msgpack.packb([wire.WIRE_VERSION, ORIGIN, messages, None])
    accelerated = _read(data, True)
    pure = _read(data, False)
    assert accelerated == pure
    if isinstance(accelerated, wire.Frame):
        assert [type(m) for m in accelerated.messages] == [wire.Message] * len(messages)
        assert list(accelerated.seqs) == list(pure.seqs)


_edge_ints = st.sampled_from(
    [
        0,
        127,
        128,
        255,
        256,
        65535,
        65536,
        2**32 - 1,
        2**32,
        2**63 - 1,
        2**63,
        2**64 - 1,
        2**64,
        -1,
        -32,
        -33,
        -128,
        -129,
        -32768,
        -32769,
        -(2**31),
        -(2**31) - 1,
        -(2**63),
        -(2**63) - 1,
    ]
)
_texts = st.one_of(
    st.text(max_size=40),
    st.text(min_size=1, max_size=3).map(lambda t: t * 100),  # past str 8's 255 bytes
    st.sampled_from(["\ud800", "é" * 20, "a" * 31, "a" * 32, "a" * 255, "a" * 256, "a" * 65536]),
)
_encodable = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        _edge_ints,
        st.floats(),
        _texts,
        st.binary(max_size=6),
        st.binary(min_size=1, max_size=3).map(lambda b: b * 100),
        st.sampled_from([b"x" * 65536, _Str("sub"), (1, 2), {1, 2}, object()]),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=18),
        st.dictionaries(st.one_of(st.text(max_size=3), st.integers()), inner, max_size=17),
        st.tuples(inner),
    ),
    max_leaves=40,
)


@needs_speedups
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(named=st.dictionaries(st.text(max_size=5), _encodable, max_size=18))
def test_both_encode_every_send_alike(named: dict[str, Any]) -> None:
    accelerated = _encode(named, True)
    assert accelerated == _encode(named, False)
    if isinstance(accelerated, bytes):
        unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
        unpacker.feed(accelerated)
        fields = list(unpacker)
        assert fields[:3] == ["app.saved", "app.Thing", 1.5]
        assert len(fields) == 4 and type(fields[3]) is dict


@needs_speedups
def test_encode_body_packs_plain_sends_as_msgpack_does() -> None:
    from relay import _speedups

    named = {
        "pk": 2**40,
        "n": -200,
        "name": "é" * 40,
        "raw": b"\x00" * 300,
        "ok": False,
        "rows": [1, [2.5, None], {"k": "v", 3: True}],
        "none": None,
    }
    body = _speedups.encode_body(b"\xa1s", b"\xc0", 2.0, named)
    assert body == b"\xa1s\xc0" + msgpack.packb(2.0) + msgpack.packb(named, use_bin_type=True)
    assert _encode(named, True) == _encode(named, False)


@needs_speedups
def test_encode_body_leaves_deep_values_to_msgpack() -> None:
    from relay import _speedups

    deep: Any = 1
    for _ in range(40):
        deep = [deep]
    assert _speedups.encode_body(b"\xa1a", b"\xc0", 1.5, {"deep": deep}) is None
    assert _encode({"deep": deep}, True) == _encode({"deep": deep}, False)
    looped: list[Any] = []
    looped.append(looped)
    assert _encode({"loop": looped}, True) == _encode({"loop": looped}, False)


@needs_speedups
def test_encode_body_refuses_bad_arguments() -> None:
    from relay import _speedups

    with pytest.raises(TypeError, match="takes 4 arguments"):
        _speedups.encode_body(b"", b"", 1.5)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="must be bytes"):
        _speedups.encode_body("", b"", 1.5, {})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must be a float"):
        _speedups.encode_body(b"", b"", 1, {})  # type: ignore[arg-type]
    assert _speedups.encode_body(b"", b"", 1.5, []) is None  # type: ignore[arg-type]
    assert (
        _speedups.encode_body(b"\x01", b"\x02", 1.5, {})
        == b"\x01\x02\xcb" + struct.pack(">d", 1.5) + b"\x80"
    )


@needs_speedups
@given(
    seq=st.one_of(st.integers(min_value=0, max_value=2**64 - 1), _edge_ints, st.integers()),
    body=st.binary(max_size=600),
)
def test_both_number_messages_alike(seq: int, body: bytes) -> None:
    def number(implementation: Any) -> Any:
        try:
            return implementation(ID, seq, body)
        except ValueError as exc:
            return str(exc)

    assert wire.number_message is not wire._py_number_message  # the C one is in use
    assert number(wire.number_message) == number(wire._py_number_message)
    if 0 <= seq < 2**64:
        unpacker = msgpack.Unpacker()
        unpacker.feed(number(wire.number_message)[1:])  # past the array header
        assert (next(unpacker), next(unpacker)) == (ID, seq)


@needs_speedups
def test_number_message_refuses_bad_arguments() -> None:
    from relay import _speedups

    with pytest.raises(TypeError, match="takes 3 arguments"):
        _speedups.number_message(ID, 1)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="must be bytes"):
        _speedups.number_message(bytearray(ID), 1, b"")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="must be an int"):
        _speedups.number_message(ID, 1.0, b"")  # type: ignore[arg-type]


@needs_speedups
@given(
    delays=st.lists(
        st.one_of(st.floats(min_value=-5, max_value=50), st.sampled_from(LATENCY_BUCKETS)),
        max_size=40,
    ),
    earlier=st.integers(min_value=0, max_value=3),
)
def test_both_meters_count_alike(delays: list[float], earlier: int) -> None:
    now = 1_700_000_000.0
    messages = [
        wire.Message(ID.hex(), ORIGIN, i, "app.saved", None, now - d, {})
        for i, d in enumerate(delays)
    ]
    meters = []
    for accelerated in (True, False):
        with pytest.MonkeyPatch.context() as patch:
            if not accelerated:
                patch.setattr(presence, "_c_latency_counts", None)
            meter = presence.SignalMeter()
            for _ in range(earlier):  # counts already there are added to
                meter.observe(now, messages[:1])
            meter.observe(now, messages)
            meters.append((meter.received, meter.latency, meter.latency_sum))
    assert meters[0] == meters[1]
    assert meters[0][0] == len(delays) + earlier * min(1, len(delays))


@needs_speedups
def test_latency_counts_leaves_other_shapes_to_python() -> None:
    from relay import _speedups

    counts = [0] * (len(LATENCY_BUCKETS) + 1)
    message = wire.Message(ID.hex(), ORIGIN, 1, "app.saved", None, 1.0, {})
    assert _speedups.latency_counts(counts, LATENCY_BUCKETS, 2.0, [message]) == (1, 1.0)
    assert counts[LATENCY_BUCKETS.index(1.0)] == 1
    for bad in (
        (counts[:-1], LATENCY_BUCKETS, 2.0, [message]),
        (counts, list(LATENCY_BUCKETS), 2.0, [message]),
        (counts, LATENCY_BUCKETS, 2, [message]),
        (counts, LATENCY_BUCKETS, 2.0, (message,)),
        (counts, LATENCY_BUCKETS, 2.0, [message[:5]]),
        (counts, LATENCY_BUCKETS, 2.0, [message._replace(sent_at=1)]),
        ([*counts[:-1], 0.0], LATENCY_BUCKETS, 2.0, [message]),
    ):
        assert _speedups.latency_counts(*bad) is None  # type: ignore[arg-type]
    assert sum(counts) == 1  # untouched by the refused calls


def _fields(**changes: Any) -> list[Any]:
    fields: dict[str, Any] = {
        "id": ID,
        "seq": 7,
        "signal": "app.saved",
        "sender": "app.Thing",
        "sent_at": 1.5,
        "kwargs": {"pk": 1, "name": "x", "ok": True, "none": None, "raw": b"\x00", "f": 2.5},
    }
    fields.update(changes)
    return list(fields.values())


@needs_speedups
def test_plain_messages_makes_the_messages() -> None:
    from relay import _speedups

    result = _speedups.plain_messages(
        [_fields(), _fields(seq=2**64 - 1, sender=None)], ORIGIN, 100, wire.Message
    )
    assert result is not None
    messages, one_signal, seqs = result
    assert one_signal == "app.saved"
    assert seqs == [7, 2**64 - 1]
    assert messages[0] == wire.Message(
        ID.hex(), ORIGIN, 7, "app.saved", "app.Thing", 1.5, _fields()[5], None
    )
    assert type(messages[0]) is wire.Message
    assert messages[0].id == "000102030405060708090a0b0c0d0e0f"
    assert messages[1].sender is None
    assert messages[1].trace is None


@needs_speedups
@pytest.mark.parametrize(
    "fields",
    [
        _fields(id=ID[:15]),
        _fields(id=bytearray(ID)),
        _fields(seq=-1),
        _fields(seq=-(2**70)),
        _fields(seq=True),
        _fields(seq=7.0),
        _fields(signal=""),
        _fields(signal=_Str("app.saved")),
        _fields(sender=b"app.Thing"),
        _fields(sender=_Str("app.Thing")),
        _fields(sent_at=math.inf),
        _fields(sent_at=math.nan),
        _fields(sent_at=1),
        _fields(kwargs=_Dict(pk=1)),
        _fields(kwargs={"pk": [1]}),
        _fields(kwargs={"pk": _Str("x")}),
        _fields(kwargs={1: 1}),
        _fields(kwargs={_Str("pk"): 1}),
        _fields()[:5],
        (*_fields(),),
    ],
)
def test_plain_messages_leaves_any_other_frame_to_the_checked_path(fields: Any) -> None:
    from relay import _speedups

    assert _speedups.plain_messages([_fields(), fields], ORIGIN, 100, wire.Message) is None


@needs_speedups
def test_plain_messages_counts_items_against_the_limit() -> None:
    from relay import _speedups

    messages = [_fields(), _fields()]  # 2 messages of 6 keyword arguments: 14 items
    assert _speedups.plain_messages(messages, ORIGIN, 14, wire.Message) is not None
    assert _speedups.plain_messages(messages, ORIGIN, 13, wire.Message) is None
    assert _speedups.plain_messages([], ORIGIN, 13, wire.Message) is None


@needs_speedups
def test_plain_messages_refuses_bad_arguments() -> None:
    from relay import _speedups

    with pytest.raises(TypeError, match="takes 4 arguments"):
        _speedups.plain_messages([], ORIGIN, 1)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="subclass of tuple"):
        _speedups.plain_messages([], ORIGIN, 1, list)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        _speedups.plain_messages([], ORIGIN, "1", wire.Message)  # type: ignore[arg-type]


class _Receiver:
    """A receiver that records its calls and returns its index, or raises."""

    def __init__(self, index: int, fails: bool, calls: list[tuple[int, dict[str, Any]]]) -> None:
        self.index, self.fails, self.calls = index, fails, calls

    def __call__(self, signal: Signal, sender: object, **kwargs: Any) -> int:
        self.calls.append((self.index, kwargs))
        if self.fails:
            raise ValueError(self.index)
        return self.index


def _send(
    kinds: list[str], named: dict[str, Any], robust: bool, accelerated: bool
) -> tuple[Any, list[tuple[int, dict[str, Any]]]]:
    """A send (robust or not) with or without the accelerator: what it returned, and the calls."""
    calls: list[tuple[int, dict[str, Any]]] = []
    receivers = [_Receiver(i, kind == "error", calls) for i, kind in enumerate(kinds)]
    sig = Signal()
    for receiver, kind in zip(receivers, kinds, strict=True):
        sig.connect(receiver, weak=kind != "strong")
    # "gone" receivers die before the send; "release" ones let go of the next receiver
    # during it, which still runs (every weak reference is resolved first, as Django does).
    kept = [r for r, kind in zip(receivers, kinds, strict=True) if kind != "gone"]
    del receivers
    with pytest.MonkeyPatch.context() as patch:
        if not accelerated:
            patch.setattr(signals, "_c_send_to", None)
        try:
            responses = (sig.send_robust if robust else sig.send)("app", **named)
        except Exception as err:
            return (type(err), str(err)), calls
    del kept
    return [(r.index, type(v), getattr(v, "args", v)) for r, v in responses], calls


@needs_speedups
@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    kinds=st.lists(st.sampled_from(["value", "error", "gone", "strong"]), max_size=40),
    named=st.dictionaries(
        st.one_of(st.text(max_size=4), st.just("signal")), st.integers(), max_size=30
    ),
    robust=st.booleans(),
)
def test_both_send_alike(kinds: list[str], named: dict[str, Any], robust: bool) -> None:
    assert _send(kinds, named, robust, True) == _send(kinds, named, robust, False)


@needs_speedups
def test_send_to_and_fire_messages_leave_other_shapes_to_python() -> None:
    from relay import _speedups

    current: contextvars.ContextVar[Any] = contextvars.ContextVar("current")
    getters = ((lambda: print),)
    with pytest.raises(TypeError, match="takes 5 arguments"):
        _speedups.send_to((), None, None, {})  # type: ignore[call-arg]
    assert _speedups.send_to([], None, None, {}, None) is None  # type: ignore[arg-type]
    assert _speedups.send_to((), None, None, [], None) is None  # type: ignore[arg-type]
    assert _speedups.send_to((), None, None, {}, None) == []
    assert _speedups.send_to(getters, None, None, {1: 2}, None) is None  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="multiple values for keyword argument 'signal'"):
        _speedups.send_to(getters, None, None, {"signal": 1}, None)
    calls = ((print, False, None),)
    log = print
    with pytest.raises(TypeError, match="takes 7 arguments"):
        _speedups.fire_messages([], 0, None, calls, None, current)  # type: ignore[call-arg]
    assert _speedups.fire_messages((), 0, None, calls, None, current, log) is None  # type: ignore[arg-type]
    assert _speedups.fire_messages([], 0, None, [], None, current, log) is None  # type: ignore[arg-type]
    assert _speedups.fire_messages([], 0, None, ((print, 1, None),), None, current, log) is None  # type: ignore[arg-type]
    assert _speedups.fire_messages([], 0, None, ((print,),), None, current, log) is None  # type: ignore[arg-type]
    assert _speedups.fire_messages([], -1, None, calls, None, current, log) is None
    assert _speedups.fire_messages([], 0, None, calls, None, "current", log) is None  # type: ignore[arg-type]
    # A message that is not plain stops the run before it, for Python to fire.
    assert _speedups.fire_messages(
        [("not", "a", "message")], 0, None, calls, None, current, log
    ) == (0, 0, 0, -1)
    assert _speedups.fire_messages([], 0, None, calls, None, current, log) == (0, 0, 0, -1)


def test_the_sdist_builds_the_accelerator(tmp_path: Path) -> None:
    """What ``pip install`` does with the sdist on a fresh machine: compile relay._speedups."""
    sdist_dir, wheel_dir = tmp_path / "sdist", tmp_path / "wheel"
    build = "import sys; from setuptools import build_meta as b; print(b.build_sdist(sys.argv[1]))"
    name = subprocess.run(
        [sys.executable, "-c", build, str(sdist_dir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()[-1]
    sdist = sdist_dir / name
    with tarfile.open(sdist) as archive:
        names = archive.getnames()
    assert any(n.endswith("relay/_speedups.c") for n in names)
    assert any(n.endswith("relay/_speedups.pyi") for n in names)
    assert not any(n.endswith(".so") for n in names)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(wheel_dir),
            str(sdist),
        ],
        capture_output=True,
        check=True,
    )
    (wheel,) = wheel_dir.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        built = archive.namelist()
    assert any(n.startswith("relay/_speedups") and n.endswith(".so") for n in built), built
    assert "relay/py.typed" in built
    assert "relay/_speedups.pyi" in built  # for type checkers of code that uses it
