"""
Trace context across processes: a span current at ``send`` travels with the
message, and the receivers in another process run in a child span of it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from relay import Relay, Signal, tracing
from relay.wire import (
    TRACESTATE_LIMIT,
    WireError,
    build_frame,
    frame_prefix,
    pack_message,
    read_frame,
)

RECEIVER = Path(__file__).resolve().parent / "procs" / "otel_receiver.py"
ID = bytes(range(16))
PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture
def tracer() -> Iterator[Any]:
    """A tracer of a provider of our own (the global one is the application's)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("tests")
    tracer.exporter = exporter
    yield tracer
    provider.shutdown()


def message(n: int) -> bytes:
    return pack_message(ID, n, "a.b", None, 1.0, msgpack.packb({"n": n}))


# -- the wire --------------------------------------------------------------------


def test_trace_contexts_travel_in_the_frame_header_by_message_index() -> None:
    data = build_frame(
        frame_prefix("o"),
        [message(1), message(2), message(3)],
        started_at=5.0,
        traces=[(0, PARENT, None), (2, PARENT, "k=v")],
    )
    frame = read_frame(data)
    assert [m.trace for m in frame.messages] == [
        {"traceparent": PARENT},
        None,
        {"traceparent": PARENT, "tracestate": "k=v"},
    ]
    assert frame.started_at == 5.0
    # What a reader of before the field sees: the 5-element frame with a header
    # map, whose unknown fields it ignores, and six-field messages.
    raw = msgpack.unpackb(data)
    assert len(raw) == 5 and isinstance(raw[3], dict)
    assert set(raw[3]) == {"n", "t"} and all(len(m) == 6 for m in raw[2])


def test_a_trace_field_of_a_newer_version_is_skipped() -> None:
    data = build_frame(frame_prefix("o"), [message(1)])
    raw = msgpack.unpackb(data)
    newer = msgpack.packb([1, "o", raw[2], {"t": [2, "whatever"]}, None])
    assert [m.trace for m in read_frame(newer).messages] == [None]


@pytest.mark.parametrize(
    "field",
    [
        "x",
        [],
        [1],
        [1, "x"],
        [1, [[0, PARENT]]],
        [1, [[1, PARENT, None]]],  # no message at index 1
        [1, [[-1, PARENT, None]]],
        [1, [[0, "", None]]],
        [1, [[0, "x" * 300, None]]],
        [1, [[0, PARENT, 7]]],
        [1, [[0, PARENT, "s" * (TRACESTATE_LIMIT + 1)]]],
    ],
)
def test_a_malformed_trace_field_is_refused(field: Any) -> None:
    raw = msgpack.unpackb(build_frame(frame_prefix("o"), [message(1)]))
    bad = msgpack.packb([1, "o", raw[2], {"t": field}, None])
    with pytest.raises(WireError, match="header field 't'"):
        read_frame(bad)


def test_the_context_to_send_is_the_current_spans(tracer: Any) -> None:
    assert tracing.ENABLED
    assert tracing.context_to_send() is None
    with tracer.start_as_current_span("outer") as span:
        context = tracing.context_to_send()
        ids = span.get_span_context()
    expected = f"00-{ids.trace_id:032x}-{ids.span_id:016x}-{ids.trace_flags:02x}"
    assert context == {"traceparent": expected}


# -- two real processes ------------------------------------------------------------


@pytest.mark.parametrize("mode", ["threaded", "asyncio"])
def test_remote_receivers_run_in_a_child_span_of_the_senders_span(
    redis_url: str, namespace: str, tracer: Any, mode: str
) -> None:
    receiver = subprocess.Popen(
        [sys.executable, str(RECEIVER), redis_url, namespace, "3", mode],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert receiver.stdout is not None
        assert receiver.stdout.readline().strip() == "READY"
        ping = Signal(name="otel.ping")
        with Relay(redis_url, namespace=namespace, heartbeat=0) as bridge:
            bridge.register(ping)
            with tracer.start_as_current_span("checkout") as first:
                ping.send(None, n=1)
            ping.send(None, n=2)  # no span current: no context
            with tracer.start_as_current_span("refund") as third:
                ping.send(None, n=3)
            assert bridge.flush(10)
        out, _ = receiver.communicate(timeout=60)
    finally:
        if receiver.poll() is None:
            receiver.kill()
            receiver.wait()
    report = json.loads(out)
    senders = [first.get_span_context(), third.get_span_context()]
    spans = report["spans"]
    assert [s["name"] for s in spans] == ["otel.ping receive", "otel.ping receive"]
    for span, sender in zip(spans, senders, strict=True):
        assert span["kind"] == "CONSUMER"
        assert span["trace_id"] == f"{sender.trace_id:032x}"
        assert span["parent_id"] == f"{sender.span_id:016x}"
        assert span["parent_remote"] is True
        assert span["attributes"]["messaging.destination.name"] == "otel.ping"
    seen = report["seen"]
    assert [s["n"] for s in seen] == [1, 2, 3]
    # current_message().trace holds the context as it arrived; the receiver ran
    # inside the receive span.
    assert seen[0]["trace"] == {
        "traceparent": f"00-{senders[0].trace_id:032x}-{senders[0].span_id:016x}-"
        f"{senders[0].trace_flags:02x}"
    }
    assert seen[1]["trace"] is None and seen[1]["span_id"] is None
    assert [seen[0]["span_id"], seen[2]["span_id"]] == [s["span_id"] for s in spans]
    assert seen[2]["span_trace_id"] == f"{senders[1].trace_id:032x}"


def test_the_quick_no_span_check_agrees_with_the_api(
    tracer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert tracing._may_have_span is not tracing._public_span_check  # the quick one is in use
    assert tracing._may_have_span() is False
    with tracer.start_as_current_span("outer"):
        assert tracing._may_have_span() is True
    assert tracing._may_have_span() is False
    # With the public API alone, the same contexts come out.
    monkeypatch.setattr(tracing, "_may_have_span", tracing._public_span_check)
    assert tracing.context_to_send() is None
    with tracer.start_as_current_span("outer") as span:
        ids = span.get_span_context()
        assert tracing.context_to_send() == {
            "traceparent": f"00-{ids.trace_id:032x}-{ids.span_id:016x}-{ids.trace_flags:02x}"
        }


def test_an_oversized_tracestate_is_left_out(tracer: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    def inject(carrier: dict[str, str]) -> None:
        carrier["traceparent"] = PARENT
        carrier["tracestate"] = "k=" + "v" * TRACESTATE_LIMIT

    monkeypatch.setattr(tracing._propagator, "inject", inject)
    with tracer.start_as_current_span("outer"):
        assert tracing.context_to_send() == {"traceparent": PARENT}
