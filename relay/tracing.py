"""
Trace context across processes, with OpenTelemetry (``signal-relay[otel]``).

When ``opentelemetry-api`` is installed and a span is current at ``send`` or
``asend`` of a registered signal, the span's W3C trace context
(``traceparent`` and ``tracestate``) travels in the message's frame header
(field ``"t"``, see ``relay.wire``). Remote receivers of that message then
run inside a span of kind CONSUMER, named ``"<signal> receive"``, that is a
child of the sender's span, and ``current_message().trace`` holds the context
as it arrived.

Without ``opentelemetry-api`` nothing is sent, and the context of messages
from other processes is still exposed by ``current_message().trace``, but no
span is made. Which ``TracerProvider`` records the spans is the
application's choice (``opentelemetry.trace.set_tracer_provider``), as with
any instrumented library: relay asks the global one for the tracer
``"relay"``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Final

from relay._version import __version__
from relay.wire import TRACEPARENT_LIMIT, TRACESTATE_LIMIT

if TYPE_CHECKING:
    from relay.wire import Message

__all__ = ["ENABLED", "context_to_send", "receiving"]

try:
    from opentelemetry import trace as _trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError:  # pragma: no cover - the extra is not installed
    _trace = None  # type: ignore[assignment]

#: Whether ``opentelemetry-api`` is installed.
ENABLED: Final = _trace is not None

if _trace is not None:
    _propagator = TraceContextTextMapPropagator()
    _get_current_span = _trace.get_current_span
    _CONSUMER = _trace.SpanKind.CONSUMER


def _public_span_check() -> bool:
    return True


def _span_check() -> Callable[[], bool]:
    """
    A cheap test that no span can be current, for the send path: False only
    if the current OpenTelemetry context holds no span. It reads the context
    variable of the API's default runtime context; with any other runtime
    context it always answers True, and ``context_to_send`` asks the public API.
    """
    try:
        from opentelemetry import context as otel_context
        from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext
        from opentelemetry.trace.propagation import _SPAN_KEY

        runtime = otel_context._RUNTIME_CONTEXT
        if type(runtime) is not ContextVarsRuntimeContext:
            return _public_span_check
        variable = runtime._current_context
    except (ImportError, AttributeError):
        return _public_span_check
    if not isinstance(variable, ContextVar):
        return _public_span_check
    current = variable.get

    def may_have_span() -> bool:
        return current().get(_SPAN_KEY) is not None

    return may_have_span


_may_have_span = _span_check() if _trace is not None else _public_span_check

_tracer: Any = None


def context_to_send() -> dict[str, str] | None:
    """
    The W3C trace context of the current span, or None if no span is current.
    A ``tracestate`` longer than the wire takes is left out.
    """
    if not ENABLED or not _may_have_span() or not _get_current_span().get_span_context().is_valid:
        return None
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    if len(carrier.get("traceparent", "")) not in range(1, TRACEPARENT_LIMIT + 1):
        return None
    if len(carrier.get("tracestate", "")) > TRACESTATE_LIMIT:
        del carrier["tracestate"]
    return carrier


def receiving(message: Message) -> AbstractContextManager[None]:
    """Where the receivers of a remote ``message`` run: a child of its sender's span."""
    if not ENABLED or message.trace is None:
        return nullcontext()
    return _span(message.trace, message)


@contextmanager
def _span(carrier: Mapping[str, str], message: Message) -> Iterator[None]:
    global _tracer
    if _tracer is None:
        _tracer = _trace.get_tracer("relay", __version__)
    parent = _propagator.extract(carrier)
    attributes = {
        "messaging.system": "relay",
        "messaging.operation.type": "process",
        "messaging.destination.name": message.signal,
        "messaging.message.id": message.id,
        "relay.origin": message.origin,
    }
    with _tracer.start_as_current_span(
        f"{message.signal} receive", context=parent, kind=_CONSUMER, attributes=attributes
    ):
        yield
