"""``relay monitor``: a live, decoded tail of every signal on a namespace."""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from relay import wire
from relay.bridge import Relay, channel_for
from relay.transport.base import TransportError

logger = logging.getLogger("relay.monitor")


def to_json(value: Any) -> Any:
    """``value`` as JSON data: tuples and sets as lists, other wire types as text."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, dict):
        return {k if isinstance(k, str) else repr(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((to_json(v) for v in value), key=repr)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    return str(value)


def _timestamp(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds).isoformat(timespec="milliseconds")


def format_message(message: wire.Message, as_json: bool) -> str:
    """One output line for a decoded message."""
    if as_json:
        return json.dumps(
            {
                "time": _timestamp(message.sent_at),
                "id": message.id,
                "origin": message.origin,
                "seq": message.seq,
                "signal": message.signal,
                "sender": message.sender,
                "kwargs": to_json(message.kwargs),
            }
        )
    kwargs = ", ".join(f"{k}={v!r}" for k, v in message.kwargs.items())
    return (
        f"{_timestamp(message.sent_at)}  {message.origin}  {message.signal}  "
        f"sender={message.sender!r}  {kwargs}"
    )


def format_undecodable(channel: str, data: bytes, reason: str, as_json: bool) -> str:
    """One output line for a frame that does not decode."""
    now = _timestamp(dt.datetime.now().timestamp())
    if as_json:
        return json.dumps(
            {"time": now, "channel": channel, "undecodable": reason, "bytes": len(data)}
        )
    return f"{now}  <undecodable on {channel}: {reason} ({len(data)} bytes)>"


def monitor(
    bridge: Relay,
    signals: Sequence[str] | None = None,
    as_json: bool = False,
    limit: int | None = None,
    out: TextIO = sys.stdout,
) -> int:
    """
    Print every message on the bridge's namespace until interrupted.

    Arguments:

        bridge
            A bridge whose transport and namespace to watch; it is not started.

        signals
            Signal names to watch; None watches all of them.

        as_json
            Print one JSON object a line instead of text.

        limit
            Stop after this many lines (None: never).

    Returns 0.
    """
    sharded = bridge.transport.sharded
    if sharded and not signals:
        raise ValueError(
            f"{bridge.transport.description} has sharded pub/sub, which takes no channel "
            "patterns: name the signals to watch"
        )
    subscription = bridge.transport.subscription()
    printed = failures = 0
    try:
        # Inside the try: an interrupt while subscribing is a clean stop too.
        if signals:
            channels = [channel_for(bridge.namespace, name, sharded) for name in signals]
            subscription.subscribe(channels)
        else:
            subscription.psubscribe([channel_for(bridge.namespace, "*")])
        logger.info("watching namespace %r on %s", bridge.namespace, bridge.transport.description)
        while limit is None or printed < limit:
            try:
                received = subscription.get(1.0)
            except TransportError as exc:
                logger.warning("lost Redis (%s); reconnecting", exc)
                while True:
                    bridge._stop_event.wait(bridge.backoff.compute(failures))
                    failures += 1
                    try:
                        subscription.reconnect()
                        break
                    except TransportError:
                        continue
                logger.info("reconnected to %s", bridge.transport.description)
                failures = 0
                continue
            if received is None:
                continue
            channel, data = received
            try:
                messages = wire.decode_frame(data, keys=bridge._keys or None)
                lines = [format_message(m, as_json) for m in messages]
            except wire.WireError as exc:
                lines = [format_undecodable(channel, data, str(exc), as_json)]
            for line in lines:
                out.write(line + "\n")
                printed += 1
            out.flush()
    except KeyboardInterrupt:
        pass
    finally:
        subscription.close()
    return 0
