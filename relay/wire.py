"""
The wire format: how relayed sends travel between processes.

A frame is one pub/sub payload, a msgpack array::

    [version, origin (str), messages, mac]
    [version, origin (str), messages, header (map), mac]

``version`` is ``WIRE_VERSION``; ``origin`` is the id of the sending process;
``header``, optional, is a map of named fields that readers which do not know
a field ignore (so fields can be added without a new version):

- ``"n"``, a float, is ``time.time()`` in the origin when it numbered its
  first message of this frame's signal (see ``relay.origin.Numbering``);
- ``"t"`` is the W3C trace context of messages sent while a trace span was
  current (see ``relay.tracing``), versioned: ``[1, entries]``, each entry
  ``[index (int), traceparent (str), tracestate (str | nil)]`` for the message
  at ``index`` in ``messages``. Readers skip a ``"t"`` of another version.

``messages`` is an array of messages, each::

    [id (bin 16), seq (int), signal (str), sender (str | nil), sent_at (float),
     kwargs (map)]

and ``mac`` is nil in an unsigned frame. In a signed frame it is the 32-byte
HMAC-SHA256 of every byte before it, packed as bin 8, so a signed frame ends
with a fixed 34-byte trailer (``c4 20`` and the digest) that the receiver checks
before decoding anything (see ``derive_key()``, ``build_frame()`` and
``decode_frame()``). Keyword-argument values keep
their exact Python type across the wire: msgpack carries ``None``, ``bool``,
``int``, ``float``, ``str``, ``bytes``, ``list`` and ``dict`` natively, and
extension types carry the rest (see the ``_EXT_*`` codes). Nothing is ever
pickled or evaluated.

Decoding treats every frame as hostile: anything that is not a well-formed
frame within the given limits raises ``WireError``, never another exception.
"""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import hmac
import math
import struct
import threading
import uuid
import zoneinfo
from collections.abc import Callable, Mapping, Sequence
from itertools import chain, repeat
from typing import Any, Final, NamedTuple, TypeVar

import msgpack  # type: ignore[import-untyped]

from relay._accelerator import speedups as _speedups

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "WIRE_VERSION",
    "Frame",
    "Message",
    "MessagePacker",
    "WireError",
    "build_frame",
    "decode_frame",
    "derive_key",
    "encode_frame",
    "encode_kwargs",
    "frame_prefix",
    "pack_message",
    "read_frame",
    "register_type",
]

T = TypeVar("T")

WIRE_VERSION: Final = 1
DEFAULT_MAX_MESSAGE_SIZE: Final = 1 << 20

# Extension type codes of wire version 1. Never renumber: peers rely on them.
_EXT_TUPLE: Final = 1  # msgpack array of the items
_EXT_SET: Final = 2  # msgpack array of the members
_EXT_FROZENSET: Final = 3  # msgpack array of the members
_EXT_BIGINT: Final = 4  # two's-complement big-endian bytes
_EXT_DATETIME: Final = 5  # [y, mo, d, h, mi, s, us, fold] + _zone() if aware
_EXT_DATE: Final = 6  # [y, mo, d]
_EXT_TIME: Final = 7  # [h, mi, s, us, fold] + _zone() if aware
_EXT_TIMEDELTA: Final = 8  # [days, seconds, microseconds]
_EXT_DECIMAL: Final = 9  # ASCII text of str(value)
_EXT_UUID: Final = 10  # the 16 bytes
_EXT_REGISTERED: Final = 11  # [name, encoded value], see register_type()
_CONTAINER_CODES: Final = frozenset({_EXT_TUPLE, _EXT_SET, _EXT_FROZENSET})

# A frame: [version, origin, [message, ...], mac]; a message:
# [id, seq, signal, sender, sent_at, kwargs]. The origin leads, so a process can
# recognise its own frames by their first bytes (see frame_prefix()).
_FRAME_HEAD: Final = bytes([0x94, WIRE_VERSION])
_HEADED_FRAME_HEAD: Final = bytes([0x95, WIRE_VERSION])
_STARTED_KEY: Final = b"\xa1n"  # the header field "n", packed
_TRACE_VERSION: Final = 1  # of the header field "t"
#: The longest ``traceparent`` and ``tracestate`` a frame header may carry.
TRACEPARENT_LIMIT: Final = 256
TRACESTATE_LIMIT: Final = 1024
_MESSAGE_HEAD: Final = 0x96  # fixarray of 6
_ID_HEAD: Final = b"\x96\xc4\x10"  # a message's header, then its id as bin 8 of 16 bytes
_FLOAT_HEAD: Final = b"\xcb"  # float 64
_pack_double: Final = struct.Struct(">d").pack
# msgpack's uint 8, 16 and 32: the type byte, then the number, big-endian.
_pack_uint8: Final = struct.Struct(">BB").pack
_pack_uint16: Final = struct.Struct(">BH").pack
_pack_uint32: Final = struct.Struct(">BI").pack
_pack_uint64: Final = struct.Struct(">BQ").pack
_SENDER_CACHE: Final = 1024
_NIL: Final = 0xC0
_UNSIGNED_TRAILER: Final = b"\xc0"  # the nil mac
_MAC_HEAD: Final = b"\xc4\x20"  # bin 8 of 32 bytes: the mac of a signed frame
_MAC_SIZE: Final = 32  # HMAC-SHA256
_TRAILER_SIZE: Final = len(_MAC_HEAD) + _MAC_SIZE
# derive_key() keys its HMAC with this label; never change it (peers' keys would differ).
_KEY_LABEL: Final = b"relay.wire frame signing key v1"
_MAC_CACHE_SIZE: Final = 64
_MAP_HEADS: Final = frozenset([*range(0x80, 0x90), 0xDE, 0xDF])
_ID_SIZE: Final = 16
_SEQ_LIMIT: Final = 1 << 64

# Types msgpack decodes natively and the decoder passes through untouched.
_PLAIN: Final = frozenset({type(None), bool, int, float, str, bytes})
_NAME_TYPES: Final = frozenset({str})  # the one type of a keyword argument's name
# What _plain_messages checks the fields of a frame's messages against, column by column,
# for frames of at least _COLUMNS_FROM messages.
_COLUMNS_FROM: Final = 32
_LIST_TYPES: Final = frozenset({list})
_SIX: Final = frozenset({6})
_BYTES_TYPES: Final = frozenset({bytes})
_ID_SIZES: Final = frozenset({16})
_INT_TYPES: Final = frozenset({int})
_SENDER_TYPES: Final = frozenset({str, type(None)})
_FLOAT_TYPES: Final = frozenset({float})
_DICT_TYPES: Final = frozenset({dict})
_STR_TYPES: Final = frozenset({str})

_MICROSECOND: Final = dt.timedelta(microseconds=1)
_ZERO: Final = dt.timedelta(0)
_DECIMAL_CONTEXT: Final = decimal.Context(traps=[decimal.InvalidOperation])

_POOL_SIZE: Final = 16
_POOL_MAX_OUTPUT: Final = 1 << 16


class WireError(ValueError):
    """A frame from the broker that cannot be accepted; ``str()`` says why."""


class Message(NamedTuple):
    """
    One relayed send, as decoded from a frame (immutable: a named tuple).

    Fields:

        id
            The message's unique id, 32 lowercase hex digits.

        origin
            The id of the process that sent it.

        seq
            Its sequence number among the sends of ``signal`` by ``origin``.

        signal
            The name of the signal that was sent.

        sender
            The sender's name (see ``relay.naming.sender_name``), or ``None``.

        sent_at
            ``time.time()`` in the sending process at the time of the send.

        kwargs
            The keyword arguments of the send.

        trace
            The W3C trace context the sender's span sent along
            (``{"traceparent": ..., "tracestate": ...}``, see
            ``relay.tracing``), or None.
    """

    id: str
    origin: str
    seq: int
    signal: str
    sender: str | None
    sent_at: float
    kwargs: dict[str, Any]
    trace: dict[str, str] | None = None


# -- encoding ----------------------------------------------------------------


class _Unsupported(TypeError):
    """Raised by the msgpack ``default`` hook for a value of an unsupported type."""

    def __init__(self, cls: type[Any]) -> None:
        super().__init__(f"values of type {cls.__qualname__} are not supported by the wire format")
        self.cls = cls


_packers: list[Any] = []


def _new_packer() -> Any:
    return msgpack.Packer(default=_default, strict_types=True, use_bin_type=True, buf_size=1 << 13)


def _pack(obj: object) -> bytes:
    # Packers are not thread-safe and _default re-enters _pack, so each call
    # takes a packer of its own from the pool (list.pop and append are atomic).
    try:
        packer = _packers.pop()
    except IndexError:
        packer = _new_packer()
    data: bytes = packer.pack(obj)
    # A packer keeps its grown buffer; let big ones go.
    if len(data) <= _POOL_MAX_OUTPUT and len(_packers) < _POOL_SIZE:
        _packers.append(packer)
    return data


def _default(obj: object) -> Any:
    """The msgpack ``default`` hook: encode a value msgpack has no native type for."""
    encode = _ENCODERS.get(type(obj))
    if encode is None:
        raise _Unsupported(type(obj))
    return encode(obj)


def _encode_tuple(obj: tuple[Any, ...]) -> Any:
    return msgpack.ExtType(_EXT_TUPLE, _pack(list(obj)))


def _encode_set(obj: set[Any]) -> Any:
    return msgpack.ExtType(_EXT_SET, _pack(list(obj)))


def _encode_frozenset(obj: frozenset[Any]) -> Any:
    return msgpack.ExtType(_EXT_FROZENSET, _pack(list(obj)))


def _encode_bigint(obj: int) -> Any:
    # Called only for ints outside msgpack's 64-bit range.
    size = (obj.bit_length() + 8) // 8
    return msgpack.ExtType(_EXT_BIGINT, obj.to_bytes(size, "big", signed=True))


def _zone(value: dt.datetime | dt.time) -> list[Any]:
    """
    ``[offset in microseconds, tzname]`` of an aware value, plus the zone's
    key for a ``zoneinfo.ZoneInfo`` (so that arithmetic keeps following the
    zone's rules), ``[]`` of a naive one.
    """
    offset = value.utcoffset()
    if offset is None:
        return []
    name = value.tzname()
    zone = [offset // _MICROSECOND, None if name is None else str.__str__(name)]
    tzinfo = value.tzinfo
    if type(tzinfo) is zoneinfo.ZoneInfo and tzinfo.key is not None:
        zone.append(str.__str__(tzinfo.key))
    return zone


def _encode_datetime(obj: dt.datetime) -> Any:
    fields = [obj.year, obj.month, obj.day, obj.hour, obj.minute, obj.second, obj.microsecond]
    return msgpack.ExtType(_EXT_DATETIME, _pack([*fields, obj.fold, *_zone(obj)]))


def _encode_date(obj: dt.date) -> Any:
    return msgpack.ExtType(_EXT_DATE, _pack([obj.year, obj.month, obj.day]))


def _encode_time(obj: dt.time) -> Any:
    fields = [obj.hour, obj.minute, obj.second, obj.microsecond, obj.fold, *_zone(obj)]
    return msgpack.ExtType(_EXT_TIME, _pack(fields))


def _encode_timedelta(obj: dt.timedelta) -> Any:
    return msgpack.ExtType(_EXT_TIMEDELTA, _pack([obj.days, obj.seconds, obj.microseconds]))


def _encode_decimal(obj: decimal.Decimal) -> Any:
    return msgpack.ExtType(_EXT_DECIMAL, str(obj).encode("ascii"))


def _encode_uuid(obj: uuid.UUID) -> Any:
    return msgpack.ExtType(_EXT_UUID, obj.bytes)


# Exact type -> function returning its msgpack.ExtType. register_type() adds to it.
_ENCODERS: dict[type[Any], Callable[[Any], Any]] = {
    tuple: _encode_tuple,
    set: _encode_set,
    frozenset: _encode_frozenset,
    int: _encode_bigint,
    dt.datetime: _encode_datetime,
    dt.date: _encode_date,
    dt.time: _encode_time,
    dt.timedelta: _encode_timedelta,
    decimal.Decimal: _encode_decimal,
    uuid.UUID: _encode_uuid,
}

# Types register_type() refuses: the wire format has its own encoding for
# them, or msgpack packs them itself without asking the default hook.
_BUILTIN_TYPES: Final = frozenset(
    {*_PLAIN, *_ENCODERS, list, dict, bytearray, msgpack.ExtType, msgpack.Timestamp}
)


def encode_kwargs(kwargs: Mapping[str, Any]) -> bytes:
    """
    Encode the keyword arguments of a send for ``encode_frame()``.

    Arguments:

        kwargs
            The keyword arguments, by name. Names must be ``str``. Values may
            be ``None``, ``bool``, ``int``, ``float``, ``str``, ``bytes``,
            ``list``, ``tuple``, ``dict``, ``set``, ``frozenset``,
            ``datetime``, ``date``, ``time``, ``timedelta``, ``Decimal``,
            ``UUID`` and types given to ``register_type()``, nested in any
            way. Types must match exactly: subclasses (an ``IntEnum``, an
            ``OrderedDict``) are refused unless registered themselves.

    Raises ``TypeError`` naming the keyword argument and the type of the
    offending value when a value cannot be encoded, and ``ValueError`` when a
    value nests too deeply for msgpack (or contains itself).
    """
    if type(kwargs) is not dict:
        kwargs = dict(kwargs)
    if not _NAME_TYPES.issuperset(map(type, kwargs)):
        for key in kwargs:
            if type(key) is not str:
                raise TypeError(
                    f"keyword argument names must be str, not {type(key).__qualname__}"
                )
    try:
        return _pack(kwargs)
    except (_Unsupported, ValueError, RecursionError):
        _explain_failure(kwargs)
        raise


def _explain_failure(kwargs: Mapping[str, Any]) -> None:
    """Find the keyword argument that failed to encode and raise an error naming it."""
    for key, value in kwargs.items():
        try:
            _pack(value)
        except _Unsupported as exc:
            raise TypeError(
                f"cannot relay keyword argument {key!r}: values of type {exc.cls.__qualname__} "
                "are not supported by the wire format; pass plain data or register the type "
                "with relay.register_type()"
            ) from None
        except RecursionError:
            raise ValueError(
                f"cannot relay keyword argument {key!r}: it nests too deeply or contains itself"
            ) from None
        except ValueError as exc:
            if "recursion limit" in str(exc):
                raise ValueError(
                    f"cannot relay keyword argument {key!r}: it nests too deeply or contains itself"
                ) from None
            raise ValueError(f"cannot relay keyword argument {key!r}: {exc}") from exc


def _array_header(length: int) -> bytes:
    if length < 16:
        return bytes([0x90 | length])
    if length < (1 << 16):
        return b"\xdc" + length.to_bytes(2, "big")
    return b"\xdd" + length.to_bytes(4, "big")


def _bad_field(field: str, requirement: str, value: object, expected: type[Any]) -> Exception:
    error = ValueError if type(value) is expected else TypeError
    # The keyword arguments are payload: name their type, never their content.
    shown = "" if field == "kwargs" else f" {value!r:.80}"
    return error(
        f"cannot encode message: {field!r} must be {requirement}, "
        f"got {type(value).__qualname__}{shown}"
    )


def pack_message(
    message_id: bytes, seq: int, signal: str, sender: str | None, sent_at: float, kwargs: bytes
) -> bytes:
    """
    One message of a frame, packed, for ``build_frame()``.

    The fields are trusted (the bridge makes them): use ``encode_frame()`` to
    encode messages with checks.
    """
    head = _pack([message_id, seq, signal, sender, sent_at])
    # The five fields packed as an array; widen its header to six and append
    # the keyword arguments, already encoded, as the sixth.
    return b"%c%s%s" % (_MESSAGE_HEAD, head[1:], kwargs)


class MessagePacker:
    """
    ``pack_message`` for one signal name, with the name packed once: the
    bridge keeps one per registered signal.

    Arguments:

        signal
            The signal name every message it packs carries.
    """

    __slots__ = ("_name", "_senders")

    def __init__(self, signal: str) -> None:
        self._name = _pack(signal)
        self._senders: dict[str | None, bytes] = {None: b"\xc0"}

    def pack(
        self, message_id: bytes, seq: int, sender: str | None, sent_at: float, kwargs: bytes
    ) -> bytes:
        """The same bytes as ``pack_message(message_id, seq, signal, sender, sent_at, kwargs)``."""
        return number_message(message_id, seq, self.body(sender, sent_at, kwargs))

    def body(self, sender: str | None, sent_at: float, kwargs: bytes) -> bytes:
        """
        A message without its id and sequence number, which ``number_message``
        adds: a sender numbers a message only when it queues it.
        """
        packed_sender = self._senders.get(sender)
        if packed_sender is None:
            packed_sender = _pack(sender)
            if len(self._senders) < _SENDER_CACHE:
                self._senders[sender] = packed_sender
        return b"".join(
            (self._name, packed_sender, _FLOAT_HEAD, _pack_double(sent_at), kwargs)
        )

    def encode(self, sender: str | None, sent_at: float, named: dict[str, Any]) -> bytes:
        """
        ``body(sender, sent_at, encode_kwargs(named))`` for the keyword
        arguments of a call, ``named``: a ``dict`` whose keys Python made
        ``str``. Raises what ``encode_kwargs`` raises.
        """
        packed_sender = self._senders.get(sender)
        if packed_sender is None:
            packed_sender = _pack(sender)
            if len(self._senders) < _SENDER_CACHE:
                self._senders[sender] = packed_sender
        if _c_encode_body is not None and type(sent_at) is float:
            body: bytes | None = _c_encode_body(self._name, packed_sender, sent_at, named)
            if body is not None:
                return body
        # _pack(named), inline: a packer of the pool, or a new one.
        try:
            packer = _packers.pop()
        except IndexError:
            packer = _new_packer()
        try:
            kwargs: bytes = packer.pack(named)
        except (_Unsupported, ValueError, RecursionError):
            _explain_failure(named)
            raise
        if len(kwargs) <= _POOL_MAX_OUTPUT and len(_packers) < _POOL_SIZE:
            _packers.append(packer)
        return b"".join((self._name, packed_sender, _FLOAT_HEAD, _pack_double(sent_at), kwargs))


def number_message(message_id: bytes, seq: int, body: bytes) -> bytes:
    """
    The message of ``MessagePacker.body()`` with its 16-byte id and sequence
    number (``0 <= seq < 2**64``; ``ValueError`` otherwise).
    """
    if not 0 <= seq < _SEQ_LIMIT:
        raise ValueError(f"seq must be in [0, 2**64), got {seq!r}")
    if seq < 128:
        return b"%s%s%c%s" % (_ID_HEAD, message_id, seq, body)
    if seq < 65536:
        packed = _pack_uint8(0xCC, seq) if seq < 256 else _pack_uint16(0xCD, seq)
    else:
        packed = _pack_uint32(0xCE, seq) if seq < 1 << 32 else _pack_uint64(0xCF, seq)
    return b"".join((_ID_HEAD, message_id, packed, body))


_py_number_message: Final = number_message


def frame_prefix(origin: str) -> bytes:
    """The bytes every frame from ``origin`` begins with."""
    return _FRAME_HEAD + _pack(origin)


def build_frame(
    prefix: bytes,
    messages: Sequence[bytes],
    *,
    key: bytes | None = None,
    started_at: float | None = None,
    traces: Sequence[tuple[int, str, str | None]] | None = None,
) -> bytes:
    """
    A frame of messages packed by ``pack_message()``, from the origin whose
    ``frame_prefix()`` is ``prefix``.

    With a ``key`` (see ``derive_key()``) the frame is signed: its mac is the
    HMAC-SHA256 of every byte before it, under ``key``. Without one its mac is
    nil. With ``started_at`` the frame has a header saying when the origin
    numbered its first message of the frame's signal. ``traces`` are
    ``(index, traceparent, tracestate)`` of the messages that carry a trace
    context, for the header's field ``"t"``.
    """
    if started_at is None and not traces:
        parts: tuple[bytes, ...] = (prefix, _array_header(len(messages)), *messages)
    else:
        if traces:
            fields: dict[str, Any] = {"t": [_TRACE_VERSION, [list(t) for t in traces]]}
            if started_at is not None:
                fields["n"] = started_at
            header = _pack(fields)
        else:
            header = b"\x81%s%s%s" % (_STARTED_KEY, _FLOAT_HEAD, _pack_double(started_at))
        parts = (
            _HEADED_FRAME_HEAD,
            prefix[len(_FRAME_HEAD) :],
            _array_header(len(messages)),
            *messages,
            header,
        )
    if key is None:
        return b"".join((*parts, _UNSIGNED_TRAILER))
    body = b"".join(parts)
    return b"".join((body, _MAC_HEAD, _sign(key, body)))


def encode_frame(
    messages: Sequence[tuple[bytes, str, int, str, str | None, float, bytes]],
    *,
    origin: str | None = None,
    key: bytes | None = None,
    started_at: float | None = None,
) -> bytes:
    """
    Encode messages into one frame, in order, checking every field.

    Arguments:

        messages
            ``(id, origin, seq, signal, sender, sent_at, kwargs)`` tuples: the
            16-byte message id, the origin process id, the sequence number
            (``0 <= seq < 2**64``), the signal name, the sender name or
            ``None``, ``time.time()`` at the send, and the keyword arguments as
            returned by ``encode_kwargs()``, which go in as they are. A frame
            carries one origin: all messages must share it.

        origin
            The origin of a frame without messages.

        key
            The key to sign the frame with (see ``build_frame()``), or ``None``
            for an unsigned frame.

        started_at
            When the origin numbered its first message of this signal
            (``time.time()``), for the frame's header; ``None`` for no header.

    Raises ``TypeError`` or ``ValueError`` for a malformed message, so that no
    frame is published that other processes would reject.
    """
    packed = []
    for message in messages:
        id_, message_origin, seq, signal, sender, sent_at, kwargs = message
        if origin is None:
            origin = message_origin
        elif message_origin != origin:
            raise ValueError("a frame carries one origin: split messages of several origins")
        if type(id_) is not bytes or len(id_) != _ID_SIZE:
            raise _bad_field("id", "16 bytes", id_, bytes)
        if type(seq) is not int or not 0 <= seq < _SEQ_LIMIT:
            raise _bad_field("seq", "an int in [0, 2**64)", seq, int)
        if type(signal) is not str or not signal:
            raise _bad_field("signal", "a non-empty str", signal, str)
        if sender is not None and type(sender) is not str:
            raise _bad_field("sender", "a str or None", sender, str)
        if type(sent_at) is not float or not math.isfinite(sent_at):
            raise _bad_field("sent_at", "a finite float", sent_at, float)
        if type(kwargs) is not bytes or not kwargs or kwargs[0] not in _MAP_HEADS:
            raise _bad_field("kwargs", "bytes from encode_kwargs()", kwargs, bytes)
        packed.append(pack_message(id_, seq, signal, sender, sent_at, kwargs))
    if type(origin) is not str or not origin:
        raise _bad_field("origin", "a non-empty str", origin, str)
    if started_at is not None and (type(started_at) is not float or not math.isfinite(started_at)):
        raise _bad_field("started_at", "a finite float", started_at, float)
    return build_frame(frame_prefix(origin), packed, key=key, started_at=started_at)


# -- signing -------------------------------------------------------------------


def derive_key(secret: str | bytes) -> bytes:
    """
    The 32-byte signing key for a shared secret, for ``build_frame()`` and
    ``decode_frame()``.

    A ``str`` secret is taken as its UTF-8 bytes, so ``"s3cret"`` and
    ``b"s3cret"`` give the same key. The key is HMAC-SHA256 of the secret
    under a label of this wire format: a fast derivation, not a password hash.
    Anyone who records one signed frame can test guesses of the secret offline
    at the speed of SHA-256, so use a long random secret, such as
    ``secrets.token_urlsafe(32)``, not a memorable password.

    Raises ``ValueError`` for an empty secret and ``TypeError`` for anything
    but ``str`` or ``bytes``.
    """
    if isinstance(secret, str):
        secret = secret.encode("utf-8")
    elif not isinstance(secret, bytes):
        raise TypeError(f"secret must be str or bytes, not {type(secret).__qualname__}")
    if not secret:
        raise ValueError("secret must not be empty")
    return hmac.digest(_KEY_LABEL, secret, "sha256")


# HMAC (RFC 2104) over hashlib: per key, the SHA-256 states after absorbing the
# inner and the outer padded key, copied for each frame. That computes exactly
# hmac.new(key, body, "sha256").digest() (test_wire checks it against hmac)
# without its per-call overhead: for a small frame hmac.digest() takes about
# 2 us, copying a keyed hmac.HMAC about 1.5 us, this about 0.8 us. Bounded
# cache; the states are never updated, only copied, so threads may share them.
_BLOCK_SIZE: Final = 64  # of SHA-256
_INNER_PAD: Final = bytes(byte ^ 0x36 for byte in range(256))
_OUTER_PAD: Final = bytes(byte ^ 0x5C for byte in range(256))
_pads: dict[bytes, tuple[hashlib._Hash, hashlib._Hash]] = {}


def _keyed(key: bytes) -> tuple[hashlib._Hash, hashlib._Hash]:
    pads = _pads.get(key)
    if pads is None:
        if not isinstance(key, bytes):
            raise TypeError(f"a key must be bytes, not {type(key).__qualname__}")
        if not key:
            raise ValueError("a key must not be empty")
        block = hashlib.sha256(key).digest() if len(key) > _BLOCK_SIZE else key
        block = block.ljust(_BLOCK_SIZE, b"\0")
        pads = (
            hashlib.sha256(block.translate(_INNER_PAD)),
            hashlib.sha256(block.translate(_OUTER_PAD)),
        )
        if len(_pads) >= _MAC_CACHE_SIZE:
            _pads.clear()
        _pads[key] = pads
    return pads


def _sign(key: bytes, body: bytes) -> bytes:
    """HMAC-SHA256 of ``body`` under ``key``."""
    inner_pad, outer_pad = _keyed(key)
    inner = inner_pad.copy()
    inner.update(body)
    outer = outer_pad.copy()
    outer.update(inner.digest())
    return outer.digest()


# Passed as ``keys``, these would be taken for a sequence of keys one byte long.
_NOT_KEY_SEQUENCES: Final = frozenset({bytes, bytearray, memoryview, str})


def _verify(data: bytes, keys: Sequence[bytes]) -> None:
    """
    Check the signature of a frame from its bytes alone, decoding nothing:
    raise ``WireError`` unless ``data`` ends with a mac that one of ``keys``
    made of everything before it.
    """
    if type(keys) in _NOT_KEY_SEQUENCES:
        raise TypeError(f"keys must be a sequence of keys, not {type(keys).__qualname__}")
    if not keys:
        raise ValueError("keys must not be empty; pass None to accept only unsigned frames")
    if data[-_TRAILER_SIZE:-_MAC_SIZE] != _MAC_HEAD:
        # No signed trailer: a frame with a nil mac, or no frame at all.
        raise WireError("unsigned frame" if data[-1:] == _UNSIGNED_TRAILER else "bad signature")
    mac = data[-_MAC_SIZE:]
    body = data[:-_TRAILER_SIZE]  # a copy, yet cheaper than a memoryview for small frames
    for key in keys:
        if hmac.compare_digest(_sign(key, body), mac):
            return
    raise WireError("bad signature")


# -- decoding ----------------------------------------------------------------


class Frame(NamedTuple):
    """
    A decoded frame: its ``origin``, its ``messages`` in order,
    ``started_at`` from its header (None if it has none): when the origin
    numbered its first message of the frame's signal, by its clock; and
    ``signal``, the signal name every message has, or None if they differ
    (or there are none); ``seqs``, the messages' sequence numbers in order.
    """

    origin: str
    messages: list[Message]
    started_at: float | None
    signal: str | None = None
    seqs: Sequence[int] = ()


def decode_frame(
    data: bytes,
    *,
    max_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    max_depth: int = 32,
    max_items: int = 100_000,
    keys: Sequence[bytes] | None = None,
) -> list[Message]:
    """
    Decode a frame into its messages, in order: ``read_frame(...).messages``.
    """
    return read_frame(
        data, max_size=max_size, max_depth=max_depth, max_items=max_items, keys=keys
    ).messages


def read_frame(
    data: bytes,
    *,
    max_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    max_depth: int = 32,
    max_items: int = 100_000,
    keys: Sequence[bytes] | None = None,
) -> Frame:
    """
    Decode a frame: its origin, its messages in order, and its header.

    Arguments:

        data
            The frame, as received from the broker.

        max_size
            The most bytes a frame may take. Checked before decoding anything.

        max_depth
            How many containers (lists, tuples, dicts, sets, frozensets and
            registered types) may nest one inside another in a keyword
            argument's value. A value that is a list of lists nests two deep.

        max_items
            How many items the frame may hold in all: its messages, their
            keyword arguments, and every item of every container in them
            (a dict's key and value count as one).

        keys
            The keys (see ``derive_key()``) to accept signed frames from, or
            ``None`` to accept only unsigned frames. With keys, a frame must be
            signed with one of them: an unsigned frame is refused ("unsigned
            frame"), and so is one whose mac none of them made ("bad
            signature"). To rotate a secret, sign with the new key and accept
            ``[new, old]`` until every process signs with the new one. The
            signature is checked on the raw bytes, after the size limit and
            before any decoding, so a forged frame costs one HMAC per key and
            is never parsed. Without keys, a signed frame is refused ("signed
            frame but no secret configured").

    Raises ``WireError`` for anything that is not a well-formed frame of this
    wire version within these limits, ``ValueError`` for an empty ``keys``,
    and ``TypeError`` or ``ValueError`` for a key that is not non-empty
    ``bytes``.

    A valid signature proves only that a holder of one of the keys made the
    frame, byte for byte. It does not prevent replay: anyone who can publish
    to the broker can publish a recorded signed frame again, later, or on
    another channel, and it still verifies. Rejecting replays is up to the
    caller, with the signed fields: drop message ids already seen, messages
    whose ``sent_at`` is too old, and messages whose ``signal`` does not match
    the channel they came on. The channel name, and so any namespace in it, is
    not signed: processes of different namespaces must not share a secret if
    frames of one must not be accepted by the other.
    """
    if len(data) > max_size:
        raise WireError(f"too large: {len(data)} bytes, over the limit of {max_size}")
    if keys is not None:
        _verify(data, keys)
    frame = _unpack(data, max_size, max_items)
    if type(frame) is not list or not frame or type(frame[0]) is not int:
        raise WireError("not a frame")
    if frame[0] != WIRE_VERSION:
        raise WireError(f"unknown wire version {frame[0]}")
    traces = None
    if len(frame) == 4:
        origin, messages, mac = frame[1], frame[2], frame[3]
        started_at = None
    elif len(frame) == 5:
        origin, messages, header, mac = frame[1], frame[2], frame[3], frame[4]
        started_at = _started_at(header)
        traces = header.get("t")
    else:
        raise WireError(f"bad frame: {len(frame)} elements instead of 4 or 5")
    if keys is None:
        if mac is not None:
            raise WireError("signed frame but no secret configured")
    elif mac != data[-_MAC_SIZE:]:
        # The signed trailer must be the mac field itself, not the end of another.
        raise WireError("bad frame: the mac is not the last field")
    if type(origin) is not str or not origin:
        raise WireError("bad field 'origin'")
    if type(messages) is not list:
        raise WireError("bad frame: messages are not an array")
    if _c_plain_messages is not None:
        fast = _c_plain_messages(messages, origin, max_items, Message)
    elif len(messages) >= _COLUMNS_FROM:
        # Checking column by column costs more up front and less per message.
        fast = _plain_messages(messages, origin, max_items)
    else:
        fast = None
    if fast is not None:
        decoded, one_signal, seqs = fast
    else:
        decoded, one_signal = _checked_messages(messages, origin, max_size, max_depth, max_items)
        seqs = [message.seq for message in decoded]
    if traces is not None:
        _add_traces(decoded, traces)
    return Frame(origin, decoded, started_at, one_signal, seqs)


def _checked_messages(
    messages: list[Any], origin: str, max_size: int, max_depth: int, max_items: int
) -> tuple[list[Message], str | None]:
    """Check and decode a frame's messages one by one, naming the first bad field."""
    items = len(messages)
    reader: _Reader | None = None
    decoded: list[Message] = []
    make = _message
    all_plain = _PLAIN.issuperset
    all_names = _NAME_TYPES.issuperset
    isfinite = math.isfinite
    one_signal: str | None = None  # the signal of every message so far
    mixed = False
    for fields in messages:
        if type(fields) is not list or len(fields) != 6:
            raise WireError("bad message: not an array of 6 fields")
        id_, seq, signal, sender, sent_at, kwargs = fields
        if type(id_) is not bytes or len(id_) != _ID_SIZE:
            raise WireError("bad field 'id'")
        if type(seq) is not int or seq < 0:
            raise WireError("bad field 'seq'")
        if type(signal) is not str or not signal:
            raise WireError("bad field 'signal'")
        if signal != one_signal:
            if one_signal is None and not mixed:
                one_signal = signal
            else:
                one_signal, mixed = None, True
        if sender is not None and type(sender) is not str:
            raise WireError("bad field 'sender'")
        if type(sent_at) is not float or not isfinite(sent_at):
            raise WireError("bad field 'sent_at'")
        if type(kwargs) is not dict:
            raise WireError("bad field 'kwargs'")
        items += len(kwargs)
        if items > max_items:
            raise WireError(f"too many items: over the limit of {max_items}")
        if not all_names(map(type, kwargs)):
            raise WireError("bad field 'kwargs': a keyword argument name is not a string")
        if not all_plain(map(type, kwargs.values())):
            for key, value in kwargs.items():
                if type(value) not in _PLAIN:
                    if reader is None:
                        reader = _Reader(max_size, max_depth, max_items)
                    reader.items = items
                    try:
                        kwargs[key] = reader.value(value, 0)
                    except RecursionError:
                        raise WireError("too deeply nested") from None
                    items = reader.items
        decoded.append(make(id_.hex(), origin, seq, signal, sender, sent_at, kwargs))
    return decoded, one_signal


def _plain_messages(
    messages: list[Any], origin: str, max_items: int
) -> tuple[list[Message], str | None, Sequence[int]] | None:
    """
    Check and decode a frame's messages field by field across all of them,
    for the common frame: every field well-formed and every keyword argument a
    plain value. None for any other, which ``_checked_messages`` then checks
    one message at a time (and names what is wrong).
    """
    if not messages or not _LIST_TYPES.issuperset(map(type, messages)):
        return None
    if not _SIX.issuperset(map(len, messages)):
        return None
    ids, seqs, signals, senders, sent_ats, kwargs = zip(*messages, strict=True)
    if not (
        _BYTES_TYPES.issuperset(map(type, ids))
        and _ID_SIZES.issuperset(map(len, ids))
        and _INT_TYPES.issuperset(map(type, seqs))
        and min(seqs) >= 0
        and _SENDER_TYPES.issuperset(map(type, senders))
        and _FLOAT_TYPES.issuperset(map(type, sent_ats))
        and math.isfinite(sum(sent_ats))  # inf or nan if any is, or if they overflow
        and _DICT_TYPES.issuperset(map(type, kwargs))
    ):
        return None
    distinct = set(signals)
    one_signal = signals[0] if len(distinct) == 1 else None
    if not _STR_TYPES.issuperset(map(type, distinct)) or "" in distinct:
        return None
    if len(messages) + sum(map(len, kwargs)) > max_items:
        return None
    if not (
        _NAME_TYPES.issuperset(map(type, chain.from_iterable(kwargs)))
        and _PLAIN.issuperset(map(type, chain.from_iterable(map(dict.values, kwargs))))
    ):
        return None
    # tuple.__new__ makes each Message in C, without a Python call per message.
    fields = zip(
        map(bytes.hex, ids),
        repeat(origin),
        seqs,
        signals,
        senders,
        sent_ats,
        kwargs,
        repeat(None),
        strict=False,
    )
    return list(map(_new_message, repeat(Message), fields)), one_signal, seqs


def _add_traces(messages: list[Message], traces: Any) -> None:
    """Attach the trace contexts of a header's field ``"t"`` to their messages."""
    if type(traces) is not list or not traces or type(traces[0]) is not int:
        raise WireError("bad header field 't'")
    if traces[0] != _TRACE_VERSION:
        return  # a newer writer's format: the messages go on without their context
    if len(traces) != 2 or type(traces[1]) is not list:
        raise WireError("bad header field 't'")
    for entry in traces[1]:
        if type(entry) is not list or len(entry) != 3:
            raise WireError("bad header field 't': not [index, traceparent, tracestate]")
        index, parent, state = entry
        if type(index) is not int or not 0 <= index < len(messages):
            raise WireError("bad header field 't': no message at that index")
        if type(parent) is not str or not 0 < len(parent) <= TRACEPARENT_LIMIT:
            raise WireError("bad header field 't': bad traceparent")
        context = {"traceparent": parent}
        if state is not None:
            if type(state) is not str or len(state) > TRACESTATE_LIMIT:
                raise WireError("bad header field 't': bad tracestate")
            context["tracestate"] = state
        messages[index] = messages[index]._replace(trace=context)


def _started_at(header: Any) -> float | None:
    """The known fields of a frame header; others are for newer readers."""
    if type(header) is not dict:
        raise WireError("bad frame: the header is not a map")
    started_at = header.get("n")
    if started_at is not None and (type(started_at) is not float or not math.isfinite(started_at)):
        raise WireError("bad header field 'n'")
    return started_at


def _message(
    id_: str,
    origin: str,
    seq: int,
    signal: str,
    sender: str | None,
    sent_at: float,
    kwargs: dict[str, Any],
) -> Message:
    return _new_message(Message, (id_, origin, seq, signal, sender, sent_at, kwargs, None))


_new_message: Final = tuple.__new__

#: True when relay's optional C accelerator (``relay._speedups``) is in use;
#: the environment variable ``RELAY_PURE_PYTHON`` turns it off.
ACCELERATED: Final = _speedups is not None
_c_plain_messages = None if _speedups is None else _speedups.plain_messages
_c_encode_body = None if _speedups is None else _speedups.encode_body
#: For relay.presence.SignalMeter.observe.
_c_latency_counts = None if _speedups is None else _speedups.latency_counts
if _speedups is not None:
    number_message = _speedups.number_message  # type: ignore[assignment]  # the same bytes, in C


def _unpack(data: bytes, max_size: int, max_items: int) -> Any:
    # Extension types come back as msgpack.ExtType and are decoded later, by
    # _Reader.value(): no code of ours runs inside unpackb, and nesting
    # through extension types never stacks up unpackb calls.
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            use_list=True,
            strict_map_key=False,
            max_str_len=max_size,
            max_bin_len=max_size,
            max_ext_len=max_size,
            max_array_len=max_items,
            max_map_len=max_items,
        )
    except (ValueError, TypeError, OverflowError) as exc:
        raise _decode_error(exc) from None


def _decode_error(exc: Exception) -> WireError:
    """The ``WireError`` for an exception ``msgpack.unpackb()`` raised."""
    if isinstance(exc, msgpack.ExtraData):
        return WireError("trailing bytes after the data")
    if isinstance(exc, msgpack.StackError):
        return WireError("too deeply nested")
    if isinstance(exc, UnicodeDecodeError):
        return WireError("invalid UTF-8 in a string")
    text = str(exc)
    if isinstance(exc, TypeError):
        return WireError("unhashable map key" if "unhashable" in text else "not msgpack")
    if "incomplete input" in text:
        return WireError("truncated")
    if "max_array_len" in text or "max_map_len" in text:
        return WireError("too many items")
    if "max_" in text:
        return WireError("too large")
    if "code must be" in text or "timestamp" in text:
        return WireError("unknown extension type")
    return WireError("not msgpack")


class _Reader:
    """
    Finishes decoding keyword-argument values that are not plain scalars:
    checks nesting and item counts and decodes extension types.
    """

    __slots__ = ("items", "max_depth", "max_items", "max_size")

    def __init__(self, max_size: int, max_depth: int, max_items: int) -> None:
        self.max_size = max_size
        self.max_depth = max_depth
        self.max_items = max_items
        self.items = 0

    def count(self, items: int) -> None:
        self.items += items
        if self.items > self.max_items:
            raise WireError(f"too many items: over the limit of {self.max_items}")

    def enter(self, depth: int) -> None:
        if depth >= self.max_depth:
            raise WireError(f"too deeply nested: over the limit of {self.max_depth}")

    def unpack(self, data: bytes) -> Any:
        return _unpack(data, self.max_size, self.max_items)

    def value(self, obj: Any, depth: int) -> Any:
        """Check and finish decoding ``obj``, found inside ``depth`` containers."""
        cls = type(obj)
        if cls is list:
            self.enter(depth)
            return self.array(obj, depth)
        if cls is dict:
            self.enter(depth)
            return self.mapping(obj, depth)
        if cls is msgpack.ExtType:
            return self.ext(obj.code, obj.data, depth)
        if cls in _PLAIN:
            return obj
        # The one type left: msgpack.Timestamp, which unpackb makes of extension type -1.
        raise WireError("unknown extension type -1")

    def array(self, items: list[Any], depth: int) -> list[Any]:
        self.count(len(items))
        for index, item in enumerate(items):
            if type(item) not in _PLAIN:
                items[index] = self.value(item, depth + 1)
        return items

    def mapping(self, obj: dict[Any, Any], depth: int) -> dict[Any, Any]:
        self.count(len(obj))
        for key in obj:
            if type(key) not in _PLAIN:
                break
        else:
            for key, value in obj.items():
                if type(value) not in _PLAIN:
                    obj[key] = self.value(value, depth + 1)
            return obj
        # Some keys are still msgpack.ExtType: build the dict anew.
        result: dict[Any, Any] = {}
        for raw_key, raw_value in obj.items():
            key = raw_key if type(raw_key) in _PLAIN else self.value(raw_key, depth + 1)
            value = raw_value if type(raw_value) in _PLAIN else self.value(raw_value, depth + 1)
            try:
                result[key] = value
            except Exception:
                raise WireError("unhashable map key") from None
        return result

    def ext(self, code: int, data: bytes, depth: int) -> Any:
        if code in _CONTAINER_CODES:
            self.enter(depth)
            items = self.unpack(data)
            if type(items) is not list:
                raise WireError(f"bad payload of extension type {code}")
            self.array(items, depth)
            if code == _EXT_TUPLE:
                return tuple(items)
            try:
                return set(items) if code == _EXT_SET else frozenset(items)
            except Exception:
                raise WireError("unhashable set member") from None
        if code == _EXT_REGISTERED:
            return self.registered(data, depth)
        decode = _DECODERS.get(code)
        if decode is None:
            raise WireError(f"unknown extension type {code}")
        try:
            return decode(self, data)
        except WireError:
            raise
        except (ValueError, TypeError, ArithmeticError):
            raise WireError(f"bad payload of extension type {code}") from None

    def registered(self, data: bytes, depth: int) -> Any:
        self.enter(depth)
        payload = self.unpack(data)
        if type(payload) is not list or len(payload) != 2 or type(payload[0]) is not str:
            raise WireError(f"bad payload of extension type {_EXT_REGISTERED}")
        name, value = payload
        entry = _REGISTRY.get(name)
        if entry is None:
            raise WireError(f"unregistered type {name[:100]!r}")
        value = self.value(value, depth + 1)
        try:
            return entry.decode(value)
        except Exception as exc:
            raise WireError(
                f"registered type {name!r} failed to decode: {type(exc).__name__}"
            ) from exc

    def fields(self, data: bytes, counts: tuple[int, ...]) -> list[Any]:
        """The int fields of a date, time or timedelta payload, plus its zone if any."""
        fields = self.unpack(data)
        if type(fields) is not list or len(fields) not in counts:
            raise ValueError("wrong number of fields")
        for field in fields[: counts[0]]:
            if type(field) is not int:
                raise TypeError("not an int")
        return fields


def _timezone(offset: Any, name: Any, key: Any = None) -> dt.tzinfo:
    if type(offset) is not int or (name is not None and type(name) is not str):
        raise TypeError("bad zone")
    if key is not None:
        return _zone_info(key)
    delta = dt.timedelta(microseconds=offset)
    if name is None:
        return dt.timezone(delta)
    if delta == _ZERO and name == "UTC":
        return dt.UTC
    return dt.timezone(delta, name)


def _zone_info(key: Any) -> zoneinfo.ZoneInfo:
    if type(key) is not str or not key or len(key) > 255:
        raise TypeError("bad zone key")
    try:
        return zoneinfo.ZoneInfo(key)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError, UnicodeError):
        raise WireError(
            f"unknown time zone {key[:100]!r} on this machine; install its zone data "
            "(the tzdata package) to receive it"
        ) from None


def _decode_datetime(reader: _Reader, data: bytes) -> dt.datetime:
    fields = reader.fields(data, (8, 10, 11))
    year, month, day, hour, minute, second, microsecond, fold = fields[:8]
    zone = _timezone(*fields[8:]) if len(fields) > 8 else None
    return dt.datetime(year, month, day, hour, minute, second, microsecond, zone, fold=fold)


def _decode_date(reader: _Reader, data: bytes) -> dt.date:
    return dt.date(*reader.fields(data, (3,)))


def _decode_time(reader: _Reader, data: bytes) -> dt.time:
    fields = reader.fields(data, (5, 7, 8))
    hour, minute, second, microsecond, fold = fields[:5]
    zone = _timezone(*fields[5:]) if len(fields) > 5 else None
    return dt.time(hour, minute, second, microsecond, zone, fold=fold)


def _decode_timedelta(reader: _Reader, data: bytes) -> dt.timedelta:
    return dt.timedelta(*reader.fields(data, (3,)))


def _decode_bigint(reader: _Reader, data: bytes) -> int:
    return int.from_bytes(data, "big", signed=True)


def _decode_decimal(reader: _Reader, data: bytes) -> decimal.Decimal:
    # The context makes a malformed string raise rather than become NaN; the
    # constructor never rounds, so every digit arrives.
    return decimal.Decimal(data.decode("ascii"), _DECIMAL_CONTEXT)


def _decode_uuid(reader: _Reader, data: bytes) -> uuid.UUID:
    if len(data) != 16:
        raise ValueError("a UUID takes 16 bytes")
    return uuid.UUID(bytes=data)


_DECODERS: Final[dict[int, Callable[[_Reader, bytes], Any]]] = {
    _EXT_BIGINT: _decode_bigint,
    _EXT_DATETIME: _decode_datetime,
    _EXT_DATE: _decode_date,
    _EXT_TIME: _decode_time,
    _EXT_TIMEDELTA: _decode_timedelta,
    _EXT_DECIMAL: _decode_decimal,
    _EXT_UUID: _decode_uuid,
}


# -- registered types ----------------------------------------------------------


class _Registered(NamedTuple):
    cls: type[Any]
    decode: Callable[[Any], Any]


_REGISTRY: dict[str, _Registered] = {}
_NAMES: dict[type[Any], str] = {}
_registry_lock = threading.Lock()


def register_type(
    cls: type[T], name: str, encode: Callable[[T], Any], decode: Callable[[Any], T]
) -> None:
    """
    Let values of a type of your own travel in keyword arguments.

    Arguments:

        cls
            The type. Only values of exactly this type are encoded with
            ``encode``; its subclasses need registering on their own.

        name
            The type's name on the wire, such as ``"shop.Money"``. Every
            process that receives the type must register it under the same
            name; a frame with a name the receiving process does not know is
            rejected.

        encode
            A function taking a value of ``cls`` and returning data the wire
            format can carry (plain data, or other supported and registered
            types).

        decode
            A function taking that data, as decoded, and returning the value.
            Frames come from other processes, so it should validate the data;
            any exception it raises rejects the frame.

    Registering a name again for the same class replaces the functions.
    Raises ``ValueError`` if the name or the class is already registered with
    another class or name, or if the wire format supports the class already.
    """
    if not isinstance(cls, type):
        raise TypeError(f"cls must be a type, not {type(cls).__qualname__}")
    if type(name) is not str or not name:
        raise TypeError("name must be a non-empty str")
    if not callable(encode) or not callable(decode):
        raise TypeError("encode and decode must be callable")
    if cls in _BUILTIN_TYPES:
        raise ValueError(f"the wire format already supports {cls.__qualname__}")
    with _registry_lock:
        entry = _REGISTRY.get(name)
        if entry is not None and entry.cls is not cls:
            raise ValueError(
                f"type name {name!r} is already registered for "
                f"{entry.cls.__module__}.{entry.cls.__qualname__}"
            )
        known = _NAMES.get(cls)
        if known is not None and known != name:
            raise ValueError(
                f"{cls.__module__}.{cls.__qualname__} is already registered as {known!r}"
            )

        def encode_registered(obj: T) -> Any:
            return msgpack.ExtType(_EXT_REGISTERED, _pack([name, encode(obj)]))

        _NAMES[cls] = name
        _REGISTRY[name] = _Registered(cls, decode)
        _ENCODERS[cls] = encode_registered
