"""
A receiving process for the trace-context tests.

    python tests/procs/otel_receiver.py URL NAMESPACE COUNT [threaded|asyncio]

Records spans with the OpenTelemetry SDK's in-memory exporter, hears COUNT
messages of ``otel.ping`` (prints ``READY`` once subscribed), then prints one
JSON line: the finished spans, and what each receiver saw of the trace
context (``current_message().trace`` and the span it ran in).
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from relay import AsyncRelay, Relay, Signal, current_message

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)

url, namespace, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
mode = sys.argv[4] if len(sys.argv) > 4 else "threaded"
ping = Signal(name="otel.ping")
seen: list[dict[str, Any]] = []
done = threading.Event()


def observe(n: int) -> None:
    message = current_message()
    assert message is not None
    span = trace.get_current_span().get_span_context()
    seen.append(
        {
            "n": n,
            "trace": message.trace,
            "span_trace_id": format(span.trace_id, "032x") if span.is_valid else None,
            "span_id": format(span.span_id, "016x") if span.is_valid else None,
        }
    )
    if len(seen) == count:
        done.set()


def on_ping(sender: Any, n: int, **kwargs: Any) -> None:
    observe(n)


async def on_ping_async(sender: Any, n: int, **kwargs: Any) -> None:
    observe(n)


def report() -> None:
    spans = [
        {
            "name": span.name,
            "kind": span.kind.name,
            "trace_id": format(span.context.trace_id, "032x"),
            "span_id": format(span.context.span_id, "016x"),
            "parent_id": format(span.parent.span_id, "016x") if span.parent else None,
            "parent_remote": span.parent.is_remote if span.parent else None,
            "attributes": dict(span.attributes or {}),
        }
        for span in exporter.get_finished_spans()
    ]
    print(json.dumps({"spans": spans, "seen": sorted(seen, key=lambda s: s["n"])}), flush=True)


if mode == "threaded":
    ping.connect(on_ping)
    with Relay(url, namespace=namespace, heartbeat=0) as bridge:
        bridge.register(ping)
        print("READY", flush=True)
        done.wait(60)
else:
    ping.connect(on_ping_async)

    async def main() -> None:
        async with AsyncRelay(url, namespace=namespace, heartbeat=0) as bridge:
            bridge.register(ping)
            await bridge.subscribed()
            print("READY", flush=True)
            while not done.is_set():
                await asyncio.sleep(0.01)

    asyncio.run(main())
report()
