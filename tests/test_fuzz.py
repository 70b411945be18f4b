"""
Bad input thrown at a live listener: malformed, truncated, oversized, wrongly
typed and forged frames, mixed with good ones. The listener stays alive,
every bad frame is rejected and counted, and the good ones around them fire.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fakeredis
import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay import Relay, Signal, current_message, wire
from relay.bridge import channel_for, signing_key

NAME = "fuzz.signal"


def wait_until(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.005)


GOOD_ORIGIN = "good:1:abcd"

# msgpack packs ints in [-2**63, 2**64): anything else is an OverflowError.
MSGPACK_INTS = st.integers(min_value=-(2**63), max_value=2**64 - 1)

# The sequence numbers of the good frames, per origin: strictly increasing over
# the whole session. A listener drops a message whose (origin, signal, seq) it
# has accepted already, and what it accepted lasts across the examples of a
# test (and may outlive a test), so no two good frames may share a number.
_SEQUENCES: defaultdict[str, itertools.count[int]] = defaultdict(lambda: itertools.count(1))


def next_seq(origin: str) -> int:
    """The next unused sequence number of ``origin``."""
    return next(_SEQUENCES[origin])


def good_frame(n: int, key: bytes | None = None, origin: str = GOOD_ORIGIN) -> bytes:
    return wire.encode_frame(
        [
            (
                os.urandom(16),
                origin,
                next_seq(origin),
                NAME,
                None,
                time.time(),
                wire.encode_kwargs({"n": n, "payload": ({"a": [1, 2]}, {3})}),
            )
        ],
        key=key,
    )


def mutations(template: bytes) -> st.SearchStrategy[bytes]:
    """Frames that are wrong in every way we can think of."""
    position = st.integers(min_value=0, max_value=len(template) - 1)
    return st.one_of(
        st.binary(min_size=0, max_size=300),
        position.map(lambda cut: template[:cut]),  # truncated
        st.tuples(position, st.integers(1, 255)).map(
            lambda edit: (
                template[: edit[0]] + bytes([template[edit[0]] ^ edit[1]]) + template[edit[0] + 1 :]
            )
        ),  # one byte changed
        st.recursive(
            st.none() | st.booleans() | MSGPACK_INTS | st.text(max_size=5) | st.binary(max_size=5),
            lambda children: (
                st.lists(children, max_size=4)
                | st.dictionaries(st.text(max_size=3), children, max_size=3)
            ),
            max_leaves=12,
        ).map(
            lambda value: msgpack.packb(
                [1, "x:1:y", [[b"0" * 16, 1, NAME, None, 1.0, value]], None]
            )
        ),
        st.just(b"\x91" * 3000 + b"\xc0"),  # too deeply nested
        st.just(template + b"\x00" * 5000),  # trailing bytes
    )


# Mutated copies of this may decode: its origin is several edits away from the
# good frames', so none can pass for one.
TEMPLATE = good_frame(0, origin="mutant:77:ffff")


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(bad=st.lists(mutations(TEMPLATE), min_size=1, max_size=12))
def test_a_live_listener_rejects_bad_frames_and_fires_the_good_ones(bad: list[bytes]) -> None:
    client = fakeredis.FakeRedis()
    bridge = Relay(client=client, namespace="fz")
    sig = Signal(name=NAME)
    fired: list[Any] = []

    def receiver(sender: Any, **kwargs: Any) -> None:
        message = current_message()
        if message is not None and message.origin == GOOD_ORIGIN:
            fired.append(kwargs["n"])

    sig.connect(receiver)
    bridge.register(sig)
    channel = channel_for("fz", NAME)
    # Mutations can produce a valid frame by chance: count rejections by the
    # bridge's rules (does not decode, or names another signal here).
    really_bad = 0
    for data in bad:
        try:
            decoded = wire.decode_frame(data)
        except wire.WireError:
            really_bad += 1
        else:
            really_bad += sum(message.signal != NAME for message in decoded)
    try:
        with bridge:
            for n, data in enumerate(bad):
                client.publish(channel, data)
                client.publish(channel, good_frame(1000 + n))
            wait_until(lambda: bridge.stats()["rejected"] >= really_bad and len(fired) == len(bad))
            assert bridge._listener is not None and bridge._listener.is_alive()
        stats = bridge.stats()
        assert stats["rejected"] == really_bad
        assert stats["listener_errors"] == 0
        assert fired == [1000 + n for n in range(len(bad))]
    finally:
        bridge.close()


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    forged=st.lists(
        st.sampled_from(["unsigned", "wrong key", "old", "flipped"]), min_size=1, max_size=8
    )
)
def test_forged_frames_never_fire_with_signing_on(forged: list[str]) -> None:
    client = fakeredis.FakeRedis()
    bridge = Relay(client=client, namespace="fz", secret="right", replay_window=30)
    sig = Signal(name=NAME)
    fired: list[Any] = []
    sig.connect(lambda sender, n, **kwargs: fired.append(n), weak=False)
    bridge.register(sig)
    key = signing_key("fz", "right")
    channel = channel_for("fz", NAME)

    def forge(kind: str) -> bytes:
        if kind == "unsigned":
            return good_frame(-1)
        if kind == "wrong key":
            return good_frame(-1, key=signing_key("fz", "wrong"))
        if kind == "old":
            return wire.encode_frame(
                [
                    (
                        os.urandom(16),
                        "e:1:a",
                        next_seq("e:1:a"),
                        NAME,
                        None,
                        time.time() - 3600,
                        wire.encode_kwargs({"n": -1}),
                    )
                ],
                key=key,
            )
        data = bytearray(good_frame(-1, key=key))
        data[len(data) // 2] ^= 0x40
        return bytes(data)

    try:
        with bridge:
            for n, kind in enumerate(forged):
                client.publish(channel, forge(kind))
                client.publish(channel, good_frame(n, key=key))
            wait_until(
                lambda: len(fired) == len(forged) and bridge.stats()["rejected"] == len(forged)
            )
        assert sorted(fired) == list(range(len(forged)))
    finally:
        bridge.close()


@pytest.mark.skipif(importlib.util.find_spec("atheris") is None, reason="atheris is not installed")
def test_atheris_finds_no_crash_in_a_bounded_run(tmp_path: Path) -> None:
    harness = Path(__file__).parent / "fuzz" / "atheris_listener.py"
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "good").write_bytes(TEMPLATE)
    (corpus / "signed").write_bytes(good_frame(1, key=signing_key("fuzzsigned", "fuzz-secret")))
    result = subprocess.run(
        [sys.executable, str(harness), "-runs=10000", f"-artifact_prefix={tmp_path}/", str(corpus)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Done 10000 runs" in result.stderr
