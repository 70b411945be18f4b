from collections.abc import Callable, Sequence
from contextvars import ContextVar
from typing import Any

def plain_messages(
    messages: list[Any], origin: str, max_items: int, message_type: type[tuple[Any, ...]], /
) -> tuple[list[Any], str | None, list[int]] | None: ...
def encode_body(
    head: bytes, sender: bytes, sent_at: float, named: dict[str, Any], /
) -> bytes | None: ...
def number_message(message_id: bytes, seq: int, body: bytes, /) -> bytes: ...
def latency_counts(
    counts: list[int], buckets: tuple[float, ...], now: float, messages: list[Any], /
) -> tuple[int, float] | None: ...
def send_to(
    getters: tuple[Callable[[], Any], ...],
    signal: object,
    sender: object,
    named: dict[str, Any],
    on_error: Callable[[Any, Exception], object] | None,
    /,
) -> list[tuple[Callable[..., Any], Any]] | None: ...
def fire_messages(
    messages: list[Any],
    start: int,
    name: str | None,
    calls: Sequence[tuple[Any, bool, object]],
    signal: object,
    current: ContextVar[Any],
    on_error: Callable[[Any, Any, Exception], object],
    /,
) -> tuple[int, int, int, int] | None: ...
