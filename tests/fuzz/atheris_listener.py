"""
Coverage-guided fuzzing of what a listener does with bytes from the broker.

    python tests/fuzz/atheris_listener.py -runs=200000 [CORPUS_DIR]

Every input goes through ``wire.decode_frame`` (with and without keys) and a
bridge's frame handling; anything but a clean rejection (an exception other
than WireError, a receiver fired for a forged frame) is a crash.
"""

from __future__ import annotations

import contextlib
import sys

import atheris

with atheris.instrument_imports():
    import fakeredis

    from relay import Relay, Signal, wire
    from relay.bridge import channel_for, signing_key

SECRET = "fuzz-secret"
GOOD_KEY = signing_key("fuzzsigned", SECRET)
fired: list[object] = []
signal = Signal(name="fuzz.signal")
signal.connect(lambda sender, **kwargs: fired.append(kwargs), weak=False)
plain = Relay(client=fakeredis.FakeRedis(), namespace="fuzz")
plain.register(signal)
signed = Relay(client=fakeredis.FakeRedis(), namespace="fuzzsigned", secret=SECRET)
signed.register(Signal(name="fuzz.signal"))


def test_one_input(data: bytes) -> None:
    for keys in (None, [GOOD_KEY]):
        with contextlib.suppress(wire.WireError):
            wire.decode_frame(data, keys=keys)
    before = signed.stats()
    signed._handle(channel_for("fuzzsigned", "fuzz.signal"), data)
    after = signed.stats()
    if after["fired"] != before["fired"]:
        raise AssertionError("a frame without a valid signature fired a receiver")
    plain._handle(channel_for("fuzz", "fuzz.signal"), data)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
