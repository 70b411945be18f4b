"""
A producer for the docker-compose demo: sends ``demo.order_placed`` forever.

    python -m relay.demo.producer --redis-url redis://redis:6379/0 --namespace demo

It cycles through the demo's senders (``Order``, its name, ``Invoice``,
``None``), one send every ``--interval`` seconds, until SIGINT or SIGTERM or
``--count`` sends.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from relay.cli import _connect, _namespace, _redis_url, _setup_logging
from relay.demo import app
from relay.demo.run import SENDERS

logger = logging.getLogger("relay.demo")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m relay.demo.producer", description=__doc__)
    parser.add_argument("--redis-url", metavar="URL")
    parser.add_argument("--namespace", metavar="NS")
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between sends")
    parser.add_argument("--count", type=int, help="stop after this many sends")
    args = parser.parse_args(argv)
    _setup_logging()
    stop = threading.Event()

    def handle(signum: int, frame: FrameType | None) -> None:
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, handle)
    try:
        bridge = _connect(_redis_url(args.redis_url), _namespace(args.namespace))
    except Exception as exc:  # UsageError: one line, exit 2
        print(f"relay: {exc}", file=sys.stderr)
        return 2
    with bridge:
        bridge.register(app.order_placed)
        number = 0
        while not stop.is_set() and (args.count is None or number < args.count):
            sender = SENDERS[number % len(SENDERS)]
            app.order_placed.send(sender, number=number)
            logger.info("sent order #%d (sender %r)", number, sender)
            number += 1
            stop.wait(args.interval)
        bridge.flush(10)
    bridge.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
