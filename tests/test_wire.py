"""Tests for ``relay.wire``, the msgpack wire format."""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import datetime as dt
import enum
import hashlib
import hmac
import math
import re
import struct
import threading
import types
import uuid
import zoneinfo
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay import wire
from relay.wire import (
    DEFAULT_MAX_MESSAGE_SIZE,
    WIRE_VERSION,
    Message,
    WireError,
    build_frame,
    decode_frame,
    derive_key,
    encode_frame,
    encode_kwargs,
    frame_prefix,
    pack_message,
    read_frame,
    register_type,
)

pytestmark = pytest.mark.usefixtures("implementation")

ID = bytes(range(16))
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@dataclasses.dataclass(frozen=True)
class Point:
    x: int
    y: int


def _decode_point(data: Any) -> Point:
    x, y = data
    if type(x) is not int or type(y) is not int:
        raise TypeError("Point takes ints")
    return Point(x, y)


register_type(Point, "tests.Point", lambda p: [p.x, p.y], _decode_point)


@dataclasses.dataclass(frozen=True)
class Box:
    content: Any


register_type(Box, "tests.Box", lambda box: box.content, Box)


class Order:
    pass


class Colour(enum.IntEnum):
    RED = 1


class Name(str):
    pass


class Money(float):
    pass


class Moment(dt.datetime):
    pass


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Undo the test's register_type() calls afterwards."""
    for name in ("_REGISTRY", "_NAMES", "_ENCODERS"):
        monkeypatch.setattr(wire, name, dict(getattr(wire, name)))
    yield


# -- helpers -------------------------------------------------------------------


def message(
    kwargs: dict[str, Any],
    *,
    id_: bytes = ID,
    origin: str = "host:1:abcd",
    seq: int = 1,
    signal: str = "shop.order_placed",
    sender: str | None = "shop.models.Order",
    sent_at: float = 1700000000.25,
) -> tuple[bytes, str, int, str, str | None, float, bytes]:
    return (id_, origin, seq, signal, sender, sent_at, encode_kwargs(kwargs))


def frame_of(value: Any) -> bytes:
    return encode_frame([message({"value": value})])


def roundtrip(value: Any) -> Any:
    (decoded,) = decode_frame(frame_of(value))
    return decoded.kwargs["value"]


def raw_frame(
    *messages: list[Any], version: Any = WIRE_VERSION, origin: Any = "o", mac: Any = None
) -> bytes:
    """A frame packed by msgpack itself, to say things our encoder never would."""
    return msgpack.packb([version, origin, list(messages), mac], use_bin_type=True)


def raw_message(kwargs: Any = None, **fields: Any) -> list[Any]:
    values = {
        "id": ID,
        "seq": 1,
        "signal": "s",
        "sender": None,
        "sent_at": 1.0,
        "kwargs": {} if kwargs is None else kwargs,
    }
    values.update(fields)
    return list(values.values())


def ext(code: int, payload: Any) -> msgpack.ExtType:
    data = payload if isinstance(payload, bytes) else msgpack.packb(payload, use_bin_type=True)
    return msgpack.ExtType(code, data)


def assert_same(expected: Any, actual: Any, path: str = "value") -> None:
    """Assert that ``actual`` equals ``expected`` in value and in type, all the way down."""
    assert type(actual) is type(expected), f"{path}: {type(actual)} is not {type(expected)}"
    if isinstance(expected, float):
        if math.isnan(expected):
            assert math.isnan(actual), path
        else:
            assert actual == expected, path
            assert math.copysign(1, actual) == math.copysign(1, expected), path
    elif isinstance(expected, Decimal):
        assert str(actual) == str(expected), path
    elif isinstance(expected, dt.datetime | dt.time):
        assert actual == expected, path
        assert actual.fold == expected.fold, path
        assert actual.utcoffset() == expected.utcoffset(), path
        assert actual.tzname() == expected.tzname(), path
        assert actual.replace(tzinfo=None) == expected.replace(tzinfo=None), path
    elif isinstance(expected, list | tuple):
        assert len(actual) == len(expected), path
        for index, (a, b) in enumerate(zip(expected, actual, strict=True)):
            assert_same(a, b, f"{path}[{index}]")
    elif isinstance(expected, dict):
        assert len(actual) == len(expected), path
        for (key_a, value_a), (key_b, value_b) in zip(
            expected.items(), actual.items(), strict=True
        ):
            assert_same(key_a, key_b, f"{path} key {key_a!r}")
            assert_same(value_a, value_b, f"{path}[{key_a!r}]")
    elif isinstance(expected, set | frozenset):
        assert actual == expected, path
        members = {member: member for member in actual}
        for member in expected:
            assert_same(member, members[member], f"{path} member {member!r}")
    else:
        assert actual == expected, path


# -- round trips -----------------------------------------------------------------

UTC = dt.UTC
EST = dt.timezone(dt.timedelta(hours=-5), "EST")
ODD = dt.timezone(dt.timedelta(hours=5, minutes=30, seconds=7, microseconds=11))

VALUES = [
    None,
    True,
    False,
    0,
    -1,
    2**63 - 1,
    -(2**63),
    2**64 - 1,
    2**64,
    -(2**63) - 1,
    10**100,
    -(10**100),
    2**4000 + 1,
    1.5,
    -0.0,
    math.inf,
    -math.inf,
    math.nan,
    "",
    "héllo \x00 ☃",
    b"",
    b"\x00\xff",
    [],
    [1, [2, [3]]],
    (),
    (1,),
    (1, (2, (3, ())), [4, (5,)]),
    {},
    {"a": 1},
    {1: "int key"},
    {True: "bool key"},
    {(1, 2): "tuple key", b"k": "bytes key", None: "none key", 1.5: "float key"},
    {frozenset({1, 2}): "frozenset key", (1, (2, frozenset({3}))): "nested key"},
    set(),
    {1, "a", b"b", (1, 2), None},
    frozenset(),
    frozenset({1, frozenset({2})}),
    dt.datetime(2024, 2, 29, 13, 14, 15, 123456),
    dt.datetime(2024, 2, 29, 13, 14, 15, tzinfo=UTC),
    dt.datetime(2024, 2, 29, 13, 14, 15, 1, tzinfo=EST),
    dt.datetime(2024, 2, 29, 13, 14, 15, 1, tzinfo=ODD),
    dt.datetime(2024, 10, 27, 2, 30, fold=1),
    dt.datetime.min,
    dt.datetime.max,
    dt.datetime.min.replace(tzinfo=dt.timezone(dt.timedelta(hours=23, minutes=59))),
    dt.date(2024, 2, 29),
    dt.date.min,
    dt.date.max,
    dt.time(),
    dt.time(23, 59, 59, 999999),
    dt.time(1, 2, 3, 4, tzinfo=EST),
    dt.time(1, 2, fold=1),
    dt.timedelta(),
    dt.timedelta(days=-3, microseconds=7),
    dt.timedelta.max,
    dt.timedelta.min,
    Decimal("1.10"),
    Decimal("-0"),
    Decimal("0E-1000"),
    Decimal("3.14159265358979323846264338327950288419716939937510582097494459"),
    Decimal("1E+999999"),
    Decimal("NaN"),
    Decimal("-NaN123"),
    Decimal("sNaN"),
    Decimal("Infinity"),
    Decimal("-Infinity"),
    uuid.UUID("12345678-1234-5678-1234-567812345678"),
    uuid.UUID(int=0),
    Point(1, -2),
]


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_value_round_trips_exactly(value: Any) -> None:
    assert_same(value, roundtrip(value))


def test_nested_combinations_round_trip() -> None:
    value = {
        "orders": [
            {
                "id": uuid.UUID(int=7),
                "lines": ((1, Decimal("9.99")), (2, Decimal("0.01"))),
                "tags": {"new", "gift"},
                "at": dt.datetime(2024, 1, 1, tzinfo=UTC),
                "points": frozenset({Point(1, 2), Point(3, 4)}),
            }
        ],
        (dt.date(2024, 1, 1), Point(0, 0)): {dt.time(12): [dt.timedelta(hours=1), None]},
        Point(5, 6): (2**70, [b"raw", {frozenset(): set()}]),
    }
    assert_same(value, roundtrip(value))


def test_tuples_stay_tuples_and_lists_stay_lists() -> None:
    result = roundtrip(([1, (2,)], (3, [4])))
    assert type(result) is tuple
    assert type(result[0]) is list
    assert type(result[0][1]) is tuple
    assert type(result[1]) is tuple
    assert type(result[1][1]) is list


def test_bool_and_int_keys_keep_their_type() -> None:
    (key,) = roundtrip({True: "x"})
    assert key is True
    (key,) = roundtrip({1: "x"})
    assert type(key) is int
    (member,) = roundtrip({False})
    assert member is False


def test_aware_datetime_in_a_zoneinfo_zone_keeps_its_zone_and_its_rules() -> None:
    try:
        paris = zoneinfo.ZoneInfo("Europe/Paris")
    except zoneinfo.ZoneInfoNotFoundError:
        pytest.skip("no time zone data")
    value = dt.datetime(2024, 1, 10, 12, 30, tzinfo=paris)
    result = roundtrip(value)
    assert result == value
    assert result.tzinfo is paris  # ZoneInfo instances are cached per key
    assert result.utcoffset() == dt.timedelta(hours=1) and result.tzname() == "CET"
    # Arithmetic follows the zone's rules: summer time half a year later.
    assert (result + dt.timedelta(days=180)).utcoffset() == dt.timedelta(hours=2)
    # An ambiguous wall time keeps its fold.
    late = dt.datetime(2024, 10, 27, 2, 30, tzinfo=paris, fold=1)
    assert roundtrip(late).fold == 1 and roundtrip(late).utcoffset() == dt.timedelta(hours=1)


def test_a_zone_unknown_to_the_receiver_is_a_clear_decode_error() -> None:
    for key in ("Europe/Nowhere", "../../../etc/passwd", "/etc/localtime", ""):
        fields = [2024, 1, 10, 0, 0, 0, 0, 0, 3_600_000_000, "CET", key]
        value = msgpack.ExtType(5, msgpack.packb(fields))
        data = encode_frame([message({"when": value})])
        with pytest.raises(WireError, match=r"unknown time zone|bad payload"):
            decode_frame(data)
    fields = [2024, 1, 10, 0, 0, 0, 0, 0, 3_600_000_000, "CET", "Europe/Nowhere"]
    with pytest.raises(WireError, match="unknown time zone 'Europe/Nowhere' on this machine"):
        decode_frame(encode_frame([message({"when": msgpack.ExtType(5, msgpack.packb(fields))})]))


def test_a_fixed_offset_zone_still_arrives_as_a_fixed_offset() -> None:
    zone = dt.timezone(dt.timedelta(hours=-5), "EST")
    result = roundtrip(dt.datetime(2024, 1, 10, tzinfo=zone))
    assert result.tzinfo == zone and result.tzname() == "EST"


def test_utc_arrives_as_the_utc_singleton() -> None:
    assert roundtrip(dt.datetime(2024, 1, 1, tzinfo=UTC)).tzinfo is UTC


def test_tzinfo_without_an_offset_arrives_naive() -> None:
    class Nowhere(dt.tzinfo):
        def utcoffset(self, value: dt.datetime | None) -> None:
            return None

    value = dt.datetime(2024, 1, 1, tzinfo=Nowhere())
    result = roundtrip(value)
    assert result == value
    assert result.tzinfo is None


def test_several_kwargs_round_trip_in_order() -> None:
    kwargs = {"a": 1, "b": "x", "c": 2.5, "d": None, "e": True, "f": (1, 2)}
    (decoded,) = decode_frame(encode_frame([message(kwargs)]))
    assert_same(kwargs, decoded.kwargs)
    assert list(decoded.kwargs) == list(kwargs)


def test_kwargs_may_be_any_mapping() -> None:
    kwargs = types.MappingProxyType({"a": 1})
    assert encode_kwargs(kwargs) == encode_kwargs({"a": 1})


# Hashable values (set members, dict keys) that also compare equal to
# themselves after a round trip: no NaN.
_zones = (
    st.none()
    | st.sampled_from([UTC, EST, ODD])
    | st.builds(
        dt.timezone,
        st.timedeltas(
            min_value=dt.timedelta(hours=-23, minutes=-59),
            max_value=dt.timedelta(hours=23, minutes=59),
        ),
    )
)


def _scalars(nan: bool) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.integers(min_value=-(2**130), max_value=2**130),
        st.floats(allow_nan=nan),
        st.text(max_size=10),
        st.binary(max_size=10),
        st.datetimes(timezones=_zones),
        st.dates(),
        st.times(timezones=_zones),
        st.timedeltas(),
        st.decimals(allow_nan=nan, places=None),
        st.uuids(),
        st.builds(Point, st.integers(), st.integers()),
    )


_hashables = st.recursive(
    _scalars(nan=False),
    lambda inner: st.lists(inner, max_size=3).map(tuple) | st.frozensets(inner, max_size=3),
    max_leaves=6,
)

VALUE_TREES = st.recursive(
    _scalars(nan=True),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.lists(inner, max_size=4).map(tuple),
        st.dictionaries(_hashables, inner, max_size=4),
        st.sets(_hashables, max_size=4),
        st.frozensets(_hashables, max_size=4),
    ),
    max_leaves=12,
)


@FAST
@given(VALUE_TREES)
def test_any_supported_value_round_trips_exactly(value: Any) -> None:
    assert_same(value, roundtrip(value))


# -- frames ----------------------------------------------------------------------


def test_frame_layout() -> None:
    frame = encode_frame([message({"a": (1,)})])
    assert msgpack.unpackb(frame) == [
        1,
        "host:1:abcd",
        [
            [
                ID,
                1,
                "shop.order_placed",
                "shop.models.Order",
                1700000000.25,
                {"a": msgpack.ExtType(1, msgpack.packb([1]))},
            ]
        ],
        None,
    ]
    # A process recognises its own frames by their first bytes.
    assert frame.startswith(frame_prefix("host:1:abcd"))
    assert not encode_frame([message({}, origin="host:1:abcde")]).startswith(
        frame_prefix("host:1:abcd")
    )


def test_a_frame_carries_one_origin() -> None:
    with pytest.raises(ValueError, match="one origin"):
        encode_frame([message({}, origin="a"), message({}, origin="b")])
    with pytest.raises(TypeError, match="origin"):
        encode_frame([])


def test_build_frame_matches_encode_frame() -> None:
    kwargs = encode_kwargs({"n": 1})
    packed = [pack_message(ID, seq, "s.x", None, 1.5, kwargs) for seq in (1, 2)]
    assert build_frame(frame_prefix("o:1:x"), packed) == encode_frame(
        [(ID, "o:1:x", seq, "s.x", None, 1.5, kwargs) for seq in (1, 2)]
    )


def test_several_messages_come_back_in_order_with_their_fields() -> None:
    sent = [
        message(
            {"n": n, "t": (n,)},
            id_=bytes([n]) * 16,
            origin="o:1",
            seq=n,
            signal=f"s{n}",
            sender=None if n % 2 else f"x{n}",
            sent_at=n + 0.5,
        )
        for n in range(20)
    ]
    decoded = decode_frame(encode_frame(sent))
    assert decoded == [
        Message(
            id=(bytes([n]) * 16).hex(),
            origin="o:1",
            seq=n,
            signal=f"s{n}",
            sender=None if n % 2 else f"x{n}",
            sent_at=n + 0.5,
            kwargs={"n": n, "t": (n,)},
        )
        for n in range(20)
    ]


def test_message_id_is_32_lowercase_hex_digits() -> None:
    (decoded,) = decode_frame(encode_frame([message({}, id_=b"\xab" * 16)]))
    assert decoded.id == "ab" * 16


def test_frame_with_no_messages() -> None:
    assert decode_frame(encode_frame([], origin="o")) == []


def test_message_is_immutable() -> None:
    (decoded,) = decode_frame(encode_frame([message({})]))
    with pytest.raises(AttributeError):
        decoded.seq = 2  # type: ignore[misc]
    assert decoded.trace is None
    assert decoded._replace(seq=2).seq == 2 and decoded.seq != 2


@pytest.mark.parametrize("length", [0, 1, 15, 16, 65535, 65536])
def test_array_header(length: int) -> None:
    assert msgpack.unpackb(wire._array_header(length) + b"\xc0" * length) == [None] * length


def test_biggest_seq_round_trips() -> None:
    (decoded,) = decode_frame(encode_frame([message({}, seq=2**64 - 1)]))
    assert decoded.seq == 2**64 - 1


@pytest.mark.parametrize(
    ("field", "value", "error"),
    [
        ("id", b"short", ValueError),
        ("id", "0" * 16, TypeError),
        ("origin", "", ValueError),
        ("origin", 1, TypeError),
        ("seq", -1, ValueError),
        ("seq", 2**64, ValueError),
        ("seq", True, TypeError),
        ("signal", "", ValueError),
        ("signal", None, TypeError),
        ("sender", b"x", TypeError),
        ("sent_at", 1, TypeError),
        ("sent_at", math.nan, ValueError),
        ("kwargs", b"\x90", ValueError),
        ("kwargs", b"", ValueError),
        ("kwargs", {}, TypeError),
    ],
)
def test_encode_frame_refuses_bad_messages(field: str, value: Any, error: type[Exception]) -> None:
    fields = dict(
        zip(
            ["id", "origin", "seq", "signal", "sender", "sent_at", "kwargs"],
            message({}),
            strict=True,
        )
    )
    fields[field] = value
    with pytest.raises(error, match=f"'{field}'"):
        encode_frame([tuple(fields.values())])  # type: ignore[list-item]


# -- encoding errors ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "type_name"),
    [
        (Order(), "Order"),
        ([1, {"x": (Order(),)}], "Order"),
        ({Order(): 1}, "Order"),
        (Colour.RED, "Colour"),
        (collections.OrderedDict(a=1), "OrderedDict"),
        (collections.defaultdict(list), "defaultdict"),
        (Name("x"), "Name"),
        (Money(1.0), "Money"),
        (Moment(2024, 1, 1), "Moment"),
        (object(), "object"),
        (complex(1, 2), "complex"),
        (Order, "type"),
    ],
)
def test_unsupported_value_names_the_kwarg_and_the_type(value: Any, type_name: str) -> None:
    with pytest.raises(TypeError) as info:
        encode_kwargs({"fine": 1, "order": value})
    assert str(info.value) == (
        f"cannot relay keyword argument 'order': values of type {type_name} are not supported "
        "by the wire format; pass plain data or register the type with relay.register_type()"
    )


@pytest.mark.parametrize("key", [1, None, ("a",), b"a", Name("a")])
def test_non_str_kwarg_name_is_refused(key: Any) -> None:
    with pytest.raises(TypeError, match="keyword argument names must be str"):
        encode_kwargs({key: 1})


def test_self_referential_value_is_refused() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(ValueError, match="keyword argument 'loop'"):
        encode_kwargs({"loop": loop})


def test_encoding_works_from_many_threads_at_once() -> None:
    values = [{"n": n, "t": (n, (n,)), "d": {frozenset({n}): [Decimal(n)]}} for n in range(50)]
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(10):
                for value in values:
                    assert_same(value, roundtrip(value))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


# -- decoding errors ----------------------------------------------------------------


def good_frame() -> bytes:
    return encode_frame([message({"a": (1, 2), "b": "x"})])


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "truncated"),
        (b"\xc1", "not msgpack"),
        (b"\x94\x01", "truncated"),
        (good_frame()[:-3], "truncated"),
        (good_frame() + b"\x00", "trailing bytes"),
        (msgpack.packb({"a": 1}), "not a frame"),
        (msgpack.packb([]), "not a frame"),
        (msgpack.packb(["1", "o", [], None]), "not a frame"),
        (msgpack.packb(7), "not a frame"),
        (raw_frame(version=7), "unknown wire version 7"),
        (raw_frame(version=2**64 - 1), f"unknown wire version {2**64 - 1}"),
        (msgpack.packb([1, []]), "bad frame: 2 elements instead of 4 or 5"),
        (msgpack.packb([1, "o", [], None, None, None]), "bad frame: 6 elements instead of 4 or 5"),
        (msgpack.packb([1, "o", [], None, None]), "bad frame: the header is not a map"),
        (msgpack.packb([1, "o", [], {"n": "x"}, None]), "bad header field 'n'"),
        (msgpack.packb([1, "o", [], {"n": float("nan")}, None]), "bad header field 'n'"),
        (msgpack.packb([1, "o", {}, None]), "messages are not an array"),
        (raw_frame(origin=""), "bad field 'origin'"),
        (raw_frame(origin=b"o"), "bad field 'origin'"),
        (raw_frame(origin=None), "bad field 'origin'"),
        (raw_frame(mac=b"\x00" * 32), "signed frame but no secret configured"),
        (raw_frame(raw_message()[:5]), "not an array of 6 fields"),
        (raw_frame([*raw_message(), None]), "not an array of 6 fields"),
        (raw_frame({"a": 1}), "not an array of 6 fields"),
        (b"\x94\x01\xa1o\x91\x96\xa2\xff\xfe", "invalid UTF-8"),
        (b"\x94\x01\xa2\xff\xfe", "invalid UTF-8"),
        (raw_frame(raw_message({1: 2})), "keyword argument name is not a string"),
        (raw_frame(raw_message({b"a": 2})), "keyword argument name is not a string"),
    ],
)
def test_malformed_frame_is_refused(data: bytes, reason: str) -> None:
    with pytest.raises(WireError, match=reason):
        decode_frame(data)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("id", b"\x00" * 15),
        ("id", "0" * 32),
        ("seq", -1),
        ("seq", 1.0),
        ("seq", True),
        ("seq", ext(4, b"\x01" * 9)),
        ("signal", ""),
        ("signal", None),
        ("sender", 1),
        ("sent_at", 1),
        ("sent_at", math.inf),
        ("sent_at", math.nan),
        ("kwargs", []),
        ("kwargs", "x"),
    ],
)
def test_bad_field_is_refused(field: str, value: Any) -> None:
    with pytest.raises(WireError, match=f"bad field '{field}'"):
        decode_frame(raw_frame(raw_message(**{field: value})))


def test_oversized_frame_is_refused_before_decoding() -> None:
    data = frame_of("x" * 100)
    assert decode_frame(data, max_size=len(data))
    with pytest.raises(WireError, match="too large"):
        decode_frame(data, max_size=len(data) - 1)
    with pytest.raises(WireError, match="too large"):
        decode_frame(b"\xc1" * (DEFAULT_MAX_MESSAGE_SIZE + 1))


def nest(kind: str, depth: int) -> Any:
    mixed = ["list", "tuple", "dict", "box"]
    value: Any = 0
    for level in range(depth):
        step = mixed[level % len(mixed)] if kind == "mixed" else kind
        if step == "list":
            value = [value]
        elif step == "dict":
            value = {"k": value}
        elif step == "tuple":
            value = (value,)
        elif step == "frozenset":
            value = frozenset({value})
        elif step == "set":
            value = {value} if level == depth - 1 else frozenset({value})
        elif step == "key":
            value = {value: None} if level == depth - 1 else (value,)
        else:
            value = Box(value)
    return value


@pytest.mark.parametrize(
    "kind", ["list", "dict", "tuple", "frozenset", "set", "key", "box", "mixed"]
)
def test_nesting_is_limited(kind: str) -> None:
    assert_same(nest(kind, 32), roundtrip(nest(kind, 32)))
    with pytest.raises(WireError, match="too deeply nested"):
        decode_frame(frame_of(nest(kind, 33)))
    with pytest.raises(WireError, match="too deeply nested"):
        decode_frame(frame_of(nest(kind, 5)), max_depth=4)
    assert decode_frame(frame_of(nest(kind, 4)), max_depth=4)


def test_registered_types_count_as_a_level_and_so_does_their_data() -> None:
    data = frame_of([Point(1, 2)])
    assert decode_frame(data, max_depth=3)
    with pytest.raises(WireError, match="too deeply nested"):
        decode_frame(data, max_depth=2)


def test_deep_nesting_beyond_msgpack_stack_is_refused() -> None:
    with pytest.raises(WireError, match="too deeply nested"):
        decode_frame(b"\x94\x01\xa1o\x91\x96" + b"\x91" * 5000 + b"\xc0", max_depth=10**6)


def test_item_count_is_limited() -> None:
    data = encode_frame([message({"a": list(range(10)), "b": [{"c": (1, 2)}]})] * 3)
    # Per message: 2 kwargs + 10 + 1 + 1 + 2 items, and 3 messages in all.
    assert decode_frame(data, max_items=3 + 3 * 16)
    with pytest.raises(WireError, match="too many items"):
        decode_frame(data, max_items=3 + 3 * 16 - 1)


def test_one_huge_container_is_refused_while_decoding() -> None:
    with pytest.raises(WireError, match="too many items"):
        decode_frame(frame_of([None] * 101), max_items=100)
    with pytest.raises(WireError, match="too many items"):
        decode_frame(raw_frame(raw_message({f"k{n}": n for n in range(101)})), max_items=100)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (ext(99, b""), "unknown extension type 99"),
        (ext(0, b""), "unknown extension type 0"),
        (msgpack.Timestamp(1, 0), "unknown extension type -1"),
        (b"\xd6\xfe\x00\x00\x00\x00", "unknown extension type"),
        (b"\xd4\xff\x00", "unknown extension type"),
        (ext(2, [[1]]), "unhashable set member"),
        (ext(3, [{"a": 1}]), "unhashable set member"),
        (ext(3, [ext(11, ["tests.Point", [1, 2]]), [1]]), "unhashable set member"),
        ({(1,): 2}, "unhashable map key"),
        ({ext(1, [[1]]): 2}, "unhashable map key"),
        (ext(11, ["tests.Nobody", 1]), "unregistered type 'tests.Nobody'"),
        (ext(11, ["tests.Point", "not a point"]), "registered type 'tests.Point' failed"),
        (ext(11, ["tests.Point"]), "bad payload of extension type 11"),
        (ext(11, [1, 2]), "bad payload of extension type 11"),
        (ext(1, {"a": 1}), "bad payload of extension type 1"),
        (ext(1, b"\xc1"), "not msgpack"),
        (ext(1, b"\x92\x01"), "truncated"),
        (ext(5, [2024, 13, 1, 0, 0, 0, 0, 0]), "bad payload of extension type 5"),
        (ext(5, [2024, 1, 1, 0, 0, 0, 0]), "bad payload of extension type 5"),
        (ext(5, [2024, 1, 1, 0, 0, 0, 0, 2]), "bad payload of extension type 5"),
        (ext(5, [2024, 1, 1, 0, 0, 0, 0, 0, 86400 * 10**6, None]), "extension type 5"),
        (ext(5, [2024, 1, 1, 0, 0, 0, 0, 0, 0, 1]), "bad payload of extension type 5"),
        (ext(5, [2024, 1, 1, 0, 0, 0, 0.5, 0]), "bad payload of extension type 5"),
        (ext(5, [True, 1, 1, 0, 0, 0, 0, 0]), "bad payload of extension type 5"),
        (ext(5, "2024-01-01"), "bad payload of extension type 5"),
        (ext(6, [2024, 2, 30]), "bad payload of extension type 6"),
        (ext(7, [24, 0, 0, 0, 0]), "bad payload of extension type 7"),
        (ext(7, [1, 0, 0, 0, 0, 2**63, "x"]), "bad payload of extension type 7"),
        (ext(8, [10**9, 0, 0]), "bad payload of extension type 8"),
        (ext(8, [2**63, 0, 0]), "bad payload of extension type 8"),
        (ext(9, b"one"), "bad payload of extension type 9"),
        (ext(9, b"\xff"), "bad payload of extension type 9"),
        (ext(9, b"1e999999999999999999999"), "bad payload of extension type 9"),
        (ext(10, b"\x00" * 15), "bad payload of extension type 10"),
    ],
    ids=repr,
)
def test_bad_value_is_refused(value: Any, reason: str) -> None:
    if isinstance(value, bytes):
        data = raw_frame(raw_message({"x": 0})).replace(b"\xa1x\x00", b"\xa1x" + value)
    else:
        data = raw_frame(raw_message({"x": [value]}))
    with pytest.raises(WireError, match=reason):
        decode_frame(data)


def test_bigint_payload_of_any_size_decodes() -> None:
    (decoded,) = decode_frame(raw_frame(raw_message({"x": ext(4, b"\x00\x01")})))
    assert decoded.kwargs == {"x": 1}


def _fuzz_values() -> st.SearchStrategy[Any]:
    """msgpack data shaped like our extension payloads, right or wrong."""
    leaves = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**63), max_value=2**64 - 1),
        st.floats(),
        st.text(max_size=5),
        st.binary(max_size=20),
    )

    def extend(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        packed = (st.lists(inner, max_size=12) | inner).map(
            lambda v: msgpack.packb(v, use_bin_type=True)
        )
        return st.one_of(
            st.lists(inner, max_size=4),
            st.dictionaries(leaves, inner, max_size=3),
            st.builds(msgpack.ExtType, st.integers(0, 14), packed | st.binary(max_size=20)),
            st.builds(lambda v: msgpack.ExtType(11, msgpack.packb(["tests.Point", v])), inner),
        )

    return st.recursive(leaves, extend, max_leaves=10)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_fuzz_values())
def test_structured_garbage_only_raises_wire_error(value: Any) -> None:
    data = raw_frame(raw_message({"x": value}))
    with contextlib.suppress(WireError):
        decode_frame(data, max_depth=6, max_items=200)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_only_raise_wire_error(data: bytes) -> None:
    with contextlib.suppress(WireError):
        decode_frame(data, max_size=200, max_depth=4, max_items=50)


@FAST
@given(VALUE_TREES, st.data())
def test_mutated_frames_only_raise_wire_error(value: Any, data: st.DataObject) -> None:
    with contextlib.suppress(WireError):
        decode_frame(mutate(frame_of(value), data), max_depth=8, max_items=1000)


def mutate(original: bytes, data: st.DataObject) -> bytes:
    """``original`` with one to four bytes set, inserted or deleted, or cut short."""
    frame = bytearray(original)
    edits = data.draw(
        st.lists(
            st.tuples(
                st.sampled_from(["set", "insert", "delete", "truncate"]),
                st.integers(min_value=0, max_value=len(frame) - 1),
                st.integers(min_value=0, max_value=255),
            ),
            min_size=1,
            max_size=4,
        )
    )
    for edit, position, byte in edits:
        position %= max(len(frame), 1)
        if edit == "set" and frame:
            frame[position] = byte
        elif edit == "insert":
            frame.insert(position, byte)
        elif edit == "delete" and frame:
            del frame[position]
        else:
            del frame[position:]
    return bytes(frame)


# -- registered types ----------------------------------------------------------------


def test_registered_type_round_trips_as_value_key_and_member() -> None:
    value = {Point(1, 2): [Point(3, 4)], "s": {Point(5, 6)}, "t": (Point(-(2**70), 0),)}
    assert_same(value, roundtrip(value))


def test_registered_type_may_be_nested_in_another(registry: None) -> None:
    @dataclasses.dataclass
    class Segment:
        start: Point
        end: Point

    register_type(Segment, "tests.Segment", lambda s: (s.start, s.end), lambda d: Segment(*d))
    value = [Segment(Point(0, 0), Point(1, 1))]
    assert roundtrip(value) == value


def test_register_type_refuses_a_name_taken_by_another_class(registry: None) -> None:
    class Other:
        pass

    with pytest.raises(ValueError, match=r"'tests\.Point' is already registered for .*Point"):
        register_type(Other, "tests.Point", lambda o: None, lambda d: Other())


def test_register_type_refuses_a_second_name_for_a_class(registry: None) -> None:
    with pytest.raises(ValueError, match=re.escape("already registered as 'tests.Point'")):
        register_type(Point, "tests.Point2", lambda p: [p.x, p.y], _decode_point)


def test_registering_the_same_pair_again_replaces_the_functions(registry: None) -> None:
    register_type(Point, "tests.Point", lambda p: [p.y, p.x], _decode_point)
    assert roundtrip(Point(1, 2)) == Point(2, 1)


@pytest.mark.parametrize("cls", [int, tuple, dict, dt.datetime, Decimal, bytearray, type(None)])
def test_register_type_refuses_types_the_wire_supports(registry: None, cls: type) -> None:
    with pytest.raises(ValueError, match="already supports"):
        register_type(cls, "tests.builtin", lambda o: None, lambda d: d)


def test_register_type_checks_its_arguments(registry: None) -> None:
    with pytest.raises(TypeError):
        register_type(Point(1, 2), "x", lambda o: None, lambda d: d)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        register_type(Order, "", lambda o: None, lambda d: d)
    with pytest.raises(TypeError):
        register_type(Order, "x", None, lambda d: d)  # type: ignore[arg-type]


def test_registered_type_lets_a_subclass_of_builtin_through(registry: None) -> None:
    register_type(Colour, "tests.Colour", lambda c: c.value, Colour)
    assert roundtrip([Colour.RED]) == [Colour.RED]


def test_subclass_of_registered_type_is_refused() -> None:
    class Point3(Point):
        pass

    with pytest.raises(TypeError, match=r"type \S*Point3 are not supported"):
        encode_kwargs({"p": Point3(1, 2)})


def test_registered_encode_returning_unsupported_data_names_the_kwarg(registry: None) -> None:
    register_type(Order, "tests.Order", lambda o: [object()], lambda d: Order())
    with pytest.raises(TypeError, match="keyword argument 'order': values of type object"):
        encode_kwargs({"order": Order()})


def test_registered_encode_may_encode_kwargs_itself(registry: None) -> None:
    register_type(Order, "tests.Order", lambda o: encode_kwargs({"t": (1, 2)}), lambda d: d)
    assert roundtrip(Order()) == encode_kwargs({"t": (1, 2)})


def test_name_unknown_to_the_receiving_process_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = frame_of([Point(1, 2)])
    monkeypatch.delitem(wire._REGISTRY, "tests.Point")
    with pytest.raises(WireError, match=re.escape("unregistered type 'tests.Point'")):
        decode_frame(data)


# -- signing -------------------------------------------------------------------------

KEY = derive_key("test secret")
OLD_KEY = derive_key("old test secret")
TRAILER = 34  # b"\xc4\x20" and the 32-byte HMAC-SHA256


def signed_frame(*kwargs: dict[str, Any], key: bytes = KEY) -> bytes:
    return encode_frame([message(k, seq=n) for n, k in enumerate(kwargs or [{}])], key=key)


def hmac_sha256(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


def test_signed_frame_layout() -> None:
    unsigned = encode_frame([message({"a": (1,)})])
    signed = encode_frame([message({"a": (1,)})], key=KEY)
    # The same bytes up to the mac, then bin 8 of the HMAC of all of them.
    assert signed[:-TRAILER] == unsigned[:-1]
    assert signed[-TRAILER:-32] == b"\xc4\x20"
    assert signed[-32:] == hmac_sha256(KEY, signed[:-TRAILER])
    assert msgpack.unpackb(signed) == [*msgpack.unpackb(unsigned)[:3], signed[-32:]]
    assert signed.startswith(frame_prefix("host:1:abcd"))


def test_build_frame_signed_matches_encode_frame() -> None:
    kwargs = encode_kwargs({"n": 1})
    packed = [pack_message(ID, seq, "s.x", None, 1.5, kwargs) for seq in (1, 2)]
    assert build_frame(frame_prefix("o:1:x"), packed, key=KEY) == encode_frame(
        [(ID, "o:1:x", seq, "s.x", None, 1.5, kwargs) for seq in (1, 2)], key=KEY
    )
    assert build_frame(frame_prefix("o"), [], key=KEY) == encode_frame([], origin="o", key=KEY)


@pytest.mark.parametrize("length", [1, 16, 32, 63, 64, 65, 200])
def test_signing_is_hmac_sha256_for_keys_of_any_length(length: int) -> None:
    key = bytes(range(256))[:length]
    for body in (b"", b"x" * 90, bytes(range(256)) * 20):
        assert wire._sign(key, body) == hmac_sha256(key, body)
    frame = build_frame(frame_prefix("o"), [], key=key)
    assert frame[-32:] == hmac_sha256(key, frame[:-TRAILER])
    assert decode_frame(frame, keys=[key]) == []


def test_signed_frame_round_trips() -> None:
    kwargs = [{"n": n, "t": (n, Decimal(n)), "p": Point(n, -n)} for n in range(5)]
    sent = [message(k, seq=n) for n, k in enumerate(kwargs)]
    decoded = decode_frame(encode_frame(sent, key=KEY), keys=[KEY])
    assert decoded == decode_frame(encode_frame(sent))
    assert [m.kwargs for m in decoded] == kwargs
    assert decode_frame(encode_frame([], origin="o", key=KEY), keys=(KEY,)) == []


def test_rotation_accepts_frames_signed_with_any_of_the_keys() -> None:
    new = signed_frame({"v": "new"}, key=KEY)
    old = signed_frame({"v": "old"}, key=OLD_KEY)
    for keys in ([KEY, OLD_KEY], (OLD_KEY, KEY)):
        assert decode_frame(new, keys=keys)[0].kwargs == {"v": "new"}
        assert decode_frame(old, keys=keys)[0].kwargs == {"v": "old"}
    with pytest.raises(WireError, match=r"^bad signature$"):
        decode_frame(old, keys=[KEY])


@pytest.mark.parametrize(
    "data",
    [
        encode_frame([message({"a": 1})]),
        encode_frame([], origin="o"),
        raw_frame(raw_message()),
        frame_of(b"\xc4\x20" + bytes(32)),  # looks signed in the middle, not at the end
    ],
)
def test_unsigned_frame_is_refused_when_keys_are_given(data: bytes) -> None:
    assert decode_frame(data) is not None
    with pytest.raises(WireError, match=r"^unsigned frame$"):
        decode_frame(data, keys=[KEY])


def test_frame_signed_with_another_key_is_refused() -> None:
    with pytest.raises(WireError, match=r"^bad signature$"):
        decode_frame(signed_frame({"a": 1}, key=derive_key("someone else")), keys=[KEY])
    with pytest.raises(WireError, match=r"^bad signature$"):
        decode_frame(signed_frame({"a": 1}), keys=[OLD_KEY, derive_key("x")])


def test_any_flipped_bit_is_refused() -> None:
    frame = signed_frame({"a": (1, 2), "b": "x"})
    assert decode_frame(frame, keys=[KEY])
    marker = range(len(frame) - TRAILER, len(frame) - 32)
    for bit in range(len(frame) * 8):
        forged = bytearray(frame)
        forged[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(WireError) as info:
            decode_frame(bytes(forged), keys=[KEY, OLD_KEY])
        if bit // 8 in marker:
            # No signed trailer left: "unsigned frame" if the digest ends in 0xc0.
            assert str(info.value) in ("bad signature", "unsigned frame")
        else:
            assert str(info.value) == "bad signature"


def test_truncated_or_extended_signed_frame_is_refused() -> None:
    frame = signed_frame({"a": 1})
    for length in range(len(frame)):
        with pytest.raises(WireError):
            decode_frame(frame[:length], keys=[KEY])
    for extra in (b"\x00", frame[-TRAILER:]):
        with pytest.raises(WireError, match=r"^bad signature$"):
            decode_frame(frame + extra, keys=[KEY])
    # It ends with a nil, not a signed trailer, any more.
    with pytest.raises(WireError, match=r"^unsigned frame$"):
        decode_frame(frame + b"\xc0", keys=[KEY])


def test_signed_frame_is_refused_without_keys() -> None:
    with pytest.raises(WireError, match=r"^signed frame but no secret configured$"):
        decode_frame(signed_frame({"a": 1}))
    with pytest.raises(WireError, match=r"^signed frame but no secret configured$"):
        decode_frame(signed_frame({"a": 1}), keys=None)


def test_signature_is_checked_before_anything_is_parsed(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[bytes] = []
    unpack = wire._unpack

    def spy(data: bytes, max_size: int, max_items: int) -> Any:
        calls.append(data)
        return unpack(data, max_size, max_items)

    def refuse(data: bytes, max_size: int, max_items: int) -> Any:
        raise AssertionError("parsed a frame that failed verification")

    frame = signed_frame({"a": 1})
    forged = bytearray(frame)
    forged[10] ^= 0x40
    junk = bytes(range(256)) * 4
    monkeypatch.setattr(wire, "_unpack", refuse)
    for data, reason in [
        (bytes(forged), "bad signature"),
        (junk + b"\xc4\x20" + bytes(32), "bad signature"),
        (junk, "bad signature"),
        (b"", "bad signature"),
        (frame[:-1], "bad signature"),
        (frame[:-TRAILER] + b"\xc0", "unsigned frame"),
        (signed_frame({"a": 1}, key=OLD_KEY), "bad signature"),
    ]:
        with pytest.raises(WireError, match=f"^{reason}$"):
            decode_frame(data, keys=[KEY])
    # The spy proves decode_frame() looks _unpack up where monkeypatch replaces it.
    monkeypatch.setattr(wire, "_unpack", spy)
    assert decode_frame(frame, keys=[KEY])
    assert calls


def test_size_limit_is_checked_before_the_signature(monkeypatch: pytest.MonkeyPatch) -> None:
    frame = signed_frame({"a": "x" * 100})
    assert decode_frame(frame, keys=[KEY], max_size=len(frame))

    def refuse(key: bytes, body: bytes) -> bytes:
        raise AssertionError("hashed an oversized frame")

    monkeypatch.setattr(wire, "_sign", refuse)
    with pytest.raises(WireError, match="too large"):
        decode_frame(frame, keys=[KEY], max_size=len(frame) - 1)


def signed_by_a_key_holder(body: bytes) -> bytes:
    return body + b"\xc4\x20" + hmac_sha256(KEY, body)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        # The mac field is bin 8 of 34 bytes that swallows the trailer.
        (b"\x94\x01\xa1o\x90\xc4\x22", "the mac is not the last field"),
        (b"\x94\x01\xa1o\x90\xc0", "trailing bytes"),
        (b"\x93\x01\xa1o", "bad frame: 3 elements instead of 4"),
        (b"\x93\x01\xa1o\x90", "trailing bytes"),
        (b"\x94\x02\xa1o\x90", "unknown wire version 2"),
        (b"", "not a frame"),
    ],
)
def test_signed_but_malformed_frame_is_refused(body: bytes, reason: str) -> None:
    with pytest.raises(WireError, match=reason):
        decode_frame(signed_by_a_key_holder(body), keys=[KEY])


def test_keys_are_checked() -> None:
    frame = signed_frame({"a": 1})
    with pytest.raises(ValueError, match="keys must not be empty") as info:
        decode_frame(frame, keys=[])
    assert not isinstance(info.value, WireError)
    with pytest.raises(TypeError, match="keys must be a sequence of keys, not bytes"):
        decode_frame(frame, keys=KEY)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="a key must be bytes, not str"):
        decode_frame(frame, keys=["test secret"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="a key must not be empty"):
        decode_frame(frame, keys=[b""])
    with pytest.raises(ValueError, match="a key must not be empty"):
        encode_frame([message({})], key=b"")
    with pytest.raises(TypeError, match="a key must be bytes, not str"):
        build_frame(frame_prefix("o"), [], key="test secret")  # type: ignore[arg-type]


def test_the_key_cache_stays_small() -> None:
    keys = [derive_key(str(n)) for n in range(3 * wire._MAC_CACHE_SIZE)]
    for key in keys:
        frame = build_frame(frame_prefix("o"), [], key=key)
        assert frame[-32:] == hmac_sha256(key, frame[:-TRAILER])
        assert len(wire._pads) <= wire._MAC_CACHE_SIZE
    assert decode_frame(build_frame(frame_prefix("o"), [], key=keys[0]), keys=keys[:1]) == []


def test_signing_from_many_threads_at_once() -> None:
    keys = [KEY, OLD_KEY, derive_key("third")]
    frames = [signed_frame({"n": n}, key=keys[n % 3]) for n in range(30)]
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(20):
                for n, frame in enumerate(frames):
                    assert signed_frame({"n": n}, key=keys[n % 3]) == frame
                    assert decode_frame(frame, keys=keys)[0].kwargs == {"n": n}
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.booleans())
def test_arbitrary_bytes_only_raise_wire_error_with_keys(data: bytes, trailer: bool) -> None:
    if trailer:  # junk that looks signed
        data += b"\xc4\x20" + data[:32].ljust(32, b"\x00")
    with pytest.raises(WireError):
        decode_frame(data, max_size=400, max_depth=4, max_items=50, keys=[KEY, OLD_KEY])


@FAST
@given(VALUE_TREES, st.data())
def test_mutated_signed_frames_only_raise_wire_error(value: Any, data: st.DataObject) -> None:
    frame = encode_frame([message({"value": value})], key=KEY)
    forged = mutate(frame, data)
    if forged == frame:
        assert decode_frame(forged, keys=[KEY])
    else:
        with pytest.raises(WireError):
            decode_frame(forged, max_depth=8, max_items=1000, keys=[KEY, OLD_KEY])


@FAST
@given(VALUE_TREES, st.data())
def test_mutated_frames_signed_by_a_key_holder_only_raise_wire_error(
    value: Any, data: st.DataObject
) -> None:
    # Past the signature, the parser still treats the frame as hostile.
    body = mutate(encode_frame([message({"value": value})], key=KEY)[:-TRAILER], data)
    with contextlib.suppress(WireError):
        decode_frame(signed_by_a_key_holder(body), max_depth=8, max_items=1000, keys=[KEY])


# -- derive_key ------------------------------------------------------------------------


def test_derive_key_takes_str_and_bytes() -> None:
    key = derive_key("s3cret")
    assert type(key) is bytes
    assert len(key) == 32
    assert key == derive_key(b"s3cret") == derive_key("s3cret")
    assert derive_key("héllo ☃") == derive_key("héllo ☃".encode())
    # Pinned: every process, of every version, must derive the same key.
    assert key.hex() == "fb69bac39697a54a793fd5947c5a6d2e9e9ad70ed0d671172fbf51aa4416d8a1"
    assert key == hmac_sha256(b"relay.wire frame signing key v1", b"s3cret")


def test_derive_key_gives_different_secrets_different_keys() -> None:
    secrets = ["a", "b", "A", "a ", " a", "ab", "é", "e\u0301", "\x00", "a\x00", "s3cret"]
    keys = {derive_key(secret) for secret in secrets}
    keys.add(derive_key(b"\xe9"))  # not the UTF-8 of "é"
    keys.add(derive_key(b"\xff" * 100))
    assert len(keys) == len(secrets) + 2
    assert derive_key("s3cret") != hashlib.sha256(b"s3cret").digest()


@pytest.mark.parametrize("secret", ["", b""])
def test_derive_key_refuses_an_empty_secret(secret: str | bytes) -> None:
    with pytest.raises(ValueError, match=r"^secret must not be empty$"):
        derive_key(secret)


@pytest.mark.parametrize("secret", [None, 1, bytearray(b"x"), ["x"]])
def test_derive_key_refuses_other_types(secret: Any) -> None:
    with pytest.raises(TypeError, match="secret must be str or bytes"):
        derive_key(secret)


@settings(max_examples=200, deadline=None)
@given(
    seq=st.integers(min_value=0, max_value=2**64 - 1),
    sender=st.none() | st.text(max_size=40),
    sent_at=st.floats(allow_nan=False, allow_infinity=False),
    name=st.text(min_size=1, max_size=40),
)
def test_message_packer_packs_exactly_as_pack_message(
    seq: int, sender: str | None, sent_at: float, name: str
) -> None:
    kwargs = encode_kwargs({"n": 1, "t": (1, 2)})
    packer = wire.MessagePacker(name)
    for _ in range(2):  # the second time from its sender cache
        assert packer.pack(ID, seq, sender, sent_at, kwargs) == pack_message(
            ID, seq, name, sender, sent_at, kwargs
        )


def test_a_frame_header_says_when_the_numbering_started_and_old_readers_fields_are_kept() -> None:
    started = 1_700_000_000.25
    data = encode_frame([message({"a": 1})], started_at=started)
    frame = read_frame(data)
    assert frame.started_at == started and frame.origin == "host:1:abcd"
    assert [m.kwargs for m in frame.messages] == [{"a": 1}]
    assert read_frame(encode_frame([message({})])).started_at is None
    # Header fields this reader does not know are ignored.
    fields = msgpack.unpackb(data)
    fields[3]["future"] = [1, 2, 3]
    assert read_frame(msgpack.packb(fields)).started_at == started
    # The origin mark a bridge recognises its own frames by is the same with a header.
    assert data.startswith(frame_prefix("host:1:abcd")[1:], 1)


def test_a_signed_frame_with_a_header_verifies_and_a_changed_header_does_not() -> None:
    key = derive_key(b"secret")
    data = encode_frame([message({"a": 1})], key=key, started_at=5.0)
    assert read_frame(data, keys=[key]).started_at == 5.0
    forged = data.replace(struct.pack(">d", 5.0), struct.pack(">d", 6.0))
    assert forged != data
    with pytest.raises(WireError, match="bad signature"):
        read_frame(forged, keys=[key])


def test_message_packer_encode_is_body_of_encode_kwargs() -> None:
    packer = wire.MessagePacker("a.b")
    named = {"n": 1, "when": dt.datetime(2026, 1, 2, 3, 4, 5), "t": (1, "x")}
    assert packer.encode("s", 1.5, named) == packer.body("s", 1.5, wire.encode_kwargs(named))
    with pytest.raises(TypeError, match="cannot relay keyword argument 'bad'"):
        packer.encode(None, 1.5, {"ok": 1, "bad": object()})
    # The pool's packers are left clean by the failure.
    again = packer.body(None, 1.5, wire.encode_kwargs({"n": 2}))
    assert packer.encode(None, 1.5, {"n": 2}) == again
