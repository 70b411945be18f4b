from typing import Any

def plain_messages(
    messages: list[Any], origin: str, max_items: int, message_type: type[tuple[Any, ...]], /
) -> tuple[list[Any], str | None, list[int]] | None: ...
def encode_body(
    head: bytes, sender: bytes, sent_at: float, named: dict[str, Any], /
) -> bytes | None: ...
