"""The anti-replay and loss-detecting windows, on their own."""

from __future__ import annotations

import threading

from hypothesis import given
from hypothesis import strategies as st

from relay.accounting import WINDOW, Verdict, Windows


def test_in_order_numbers_are_all_fresh_and_nothing_is_lost() -> None:
    windows = Windows()
    assert windows.observe("k", [1, 2, 3]) == Verdict([0, 1, 2], 0, 0, [])
    assert windows.observe("k", [4]) == Verdict([0], 0, 0, [])
    assert windows.highest("k") == 4


def test_a_jump_is_a_loss_reported_once_and_its_numbers_never_fire_later() -> None:
    windows = Windows()
    windows.observe("k", [1])
    assert windows.observe("k", [2, 5, 6, 9]) == Verdict([0, 1, 2, 3], 0, 0, [(3, 2), (7, 2)])
    # The numbers reported lost count as seen: a late copy never fires.
    assert windows.observe("k", [3, 4, 7]) == Verdict([], 3, 0, [])


def test_duplicates_inside_the_window_and_stale_numbers_below_it() -> None:
    windows = Windows()
    windows.observe("k", list(range(1, 11)))
    assert windows.observe("k", [10, 3, 10]) == Verdict([], 3, 0, [])
    windows.observe("k", list(range(11, WINDOW + 200)))
    verdict = windows.observe("k", [150, 199, 200, 201])
    # 150 and 199 are older than the window: refused whatever they might be.
    assert verdict.stale == 2 and verdict.duplicates == 2 and verdict.fresh == []


def test_a_replay_after_any_number_of_messages_is_refused() -> None:
    windows = Windows()
    windows.observe("k", [1])
    for start in range(2, 220_002, 1000):
        windows.observe("k", list(range(start, start + 1000)))
    assert windows.observe("k", [1]) == Verdict([], 0, 1, [])


def test_a_duplicate_inside_one_frame_fires_once() -> None:
    windows = Windows()
    assert windows.observe("k", [1, 1, 2]) == Verdict([0, 2], 1, 0, [])


def test_first_contact_is_no_loss_unless_the_earlier_numbers_were_ours() -> None:
    windows = Windows()
    assert windows.observe("late", [40, 41]).lost == []
    # What came before the first number heard is settled: never accepted later.
    assert windows.observe("late", [39]) == Verdict([], 1, 0, [])
    assert windows.observe("ours", [40], earlier_missing=True).lost == [(1, 39)]
    assert windows.observe("from-one", [1], earlier_missing=True).lost == []


def test_defer_losses_records_nothing_until_asked_again() -> None:
    windows = Windows()
    windows.observe("k", [1, 2])
    assert windows.observe("k", [5], defer_losses=True).deferred
    assert windows.highest("k") == 2
    assert windows.observe("k", [3], defer_losses=True) == Verdict([0], 0, 0, [])
    assert windows.observe("new", [7], earlier_missing=True, defer_losses=True).deferred
    assert windows.highest("new") is None
    assert not windows.observe("new2", [7], defer_losses=True).deferred
    # A duplicate is not a loss: nothing to defer.
    assert windows.observe("k", [2, 4], defer_losses=True) == Verdict([1], 1, 0, [])


def test_the_least_recently_heard_window_is_forgotten_beyond_capacity() -> None:
    windows = Windows(capacity=2)
    windows.observe("a", [1])
    windows.observe("b", [1])
    windows.observe("a", [2])
    windows.observe("c", [1])  # over capacity: "b" goes, not "a"
    assert len(windows) == 2
    assert windows.highest("b") is None and windows.highest("a") == 2


def test_concurrent_observers_fire_each_number_once() -> None:
    windows = Windows()
    fired: list[int] = []
    lock = threading.Lock()

    def observe() -> None:
        for seq in range(1, 5001):
            verdict = windows.observe("k", [seq])
            with lock:
                fired.extend(seq for _ in verdict.fresh)

    threads = [threading.Thread(target=observe) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(fired) == list(range(1, 5001))


@given(st.lists(st.lists(st.integers(1, 3 * WINDOW), min_size=1, max_size=8), max_size=60))
def test_every_number_is_fired_or_reported_at_most_once(frames: list[list[int]]) -> None:
    windows = Windows()
    fired: list[int] = []
    lost: set[int] = set()
    for frame in frames:
        verdict = windows.observe("k", frame)
        assert verdict.duplicates + verdict.stale + len(verdict.fresh) == len(frame)
        fired.extend(frame[i] for i in verdict.fresh)
        for first, count in verdict.lost:
            numbers = set(range(first, first + count))
            assert not numbers & lost and not numbers & set(fired)
            lost |= numbers
    assert len(fired) == len(set(fired))
    assert not lost & set(fired)
    high = windows.highest("k")
    if frames:
        # Every number from the first heard up to the highest is accounted for.
        start = frames[0][0]
        assert high is not None
        assert set(fired) | lost >= set(range(start, high + 1))


def test_a_first_contact_from_a_log_leaves_room_for_earlier_numbers_still_on_their_way() -> None:
    windows = Windows()
    assert windows.observe("k", [3], settled=False).fresh == [0]
    # Live copies of 1 and 2, sent before 3, arrive after it was read from the log.
    assert windows.observe("k", [1, 2]) == Verdict([0, 1], 0, 0, [])
    assert windows.observe("k", [1, 2, 3]) == Verdict([], 3, 0, [])
