"""
A worker with one ``scope="once"`` receiver, for the once-lease tests.

    python tests/procs/once_worker.py URL NAMESPACE JOURNAL HANG_MARKER LEASE

The receiver appends ``start <n> <pid>`` and ``done <n> <pid>`` to JOURNAL (one
``os.write`` each, so the lines survive a SIGKILL). For ``n == 5`` it hangs
forever instead of finishing, unless HANG_MARKER exists already: the first
process to run message 5 creates it and hangs, so a test can kill it mid-run.
Prints ``READY`` once subscribed; on SIGTERM it stops and prints its
``stats()`` as one JSON line.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from typing import Any

from relay import Relay, Signal

url, namespace, journal, marker, lease = sys.argv[1:6]
journal_fd = os.open(journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)


def note(event: str, n: int) -> None:
    os.write(journal_fd, f"{event} {n} {os.getpid()}\n".encode())


def once(sender: Any, n: int, **kwargs: Any) -> None:
    note("start", n)
    if n == 5:
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            pass
        else:
            threading.Event().wait()  # until SIGKILL
    note("done", n)


stopping = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stopping.set())
sig = Signal(name="once.job")
sig.connect(once, scope="once", dispatch_uid="tests.once-job", weak=False)
bridge = Relay(url, namespace=namespace, once_lease=float(lease))
bridge.register(sig)
bridge.start()
print("READY", flush=True)
stopping.wait()
stats = bridge.stats()
bridge.stop()
print(json.dumps(stats), flush=True)
