"""Receivers append one JSON line per call to the file named by $RELAYTEST_RECORD."""

from __future__ import annotations

import json
import os
import threading
from typing import Any

from relay import current_message


def record(kind: str, **data: Any) -> None:
    path = os.environ.get("RELAYTEST_RECORD")
    if not path:
        return
    message = current_message()
    line = {
        "kind": kind,
        "pid": os.getpid(),
        "role": os.environ.get("RELAYTEST_ROLE", "?"),
        "thread": threading.current_thread().name,
        "remote": message is not None,
        "origin": message.origin if message is not None else None,
        **data,
    }
    encoded = (json.dumps(line, default=repr, sort_keys=True) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, encoded)  # one write of an O_APPEND file: lines never interleave
    finally:
        os.close(fd)
