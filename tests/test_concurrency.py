"""engine.concurrency.AdaptiveLimit on its own: the limit rises while latency holds, falls when
samples show queueing, halves on overload, stays within [1, cap], and blocks callers beyond it."""
import threading

from engine.concurrency import AdaptiveLimit, LimitSettings


def _answer(limit, seconds, units=0):
    with limit.slot() as s:
        s.answered(seconds, units)


def _hold(limit, n, seconds=1.0):
    """Take n permits in threads that wait on an event, then report `seconds`; returns
    (release event, threads)."""
    go, started, threads = threading.Event(), threading.Semaphore(0), []

    def run():
        with limit.slot() as s:
            started.release()
            go.wait()
            s.answered(seconds, 0)

    for _ in range(n):
        t = threading.Thread(target=run)
        t.start()
        threads.append(t)
    for _ in range(n):
        started.acquire()
    return go, threads


def test_starts_low_and_rises_to_the_cap_while_latency_holds():
    limit = AdaptiveLimit(LimitSettings(cap=5, start=2))
    assert limit.limit == 2
    for _ in range(40):
        # keep the limit in use: hold limit-1 permits while one request is answered
        go, threads = _hold(limit, limit.limit - 1)
        _answer(limit, 1.0)
        go.set()
        for t in threads:
            t.join()
    assert limit.limit == 5 and limit.peak == 5
    assert all(reason == "latency holds" for reason, _ in limit.changes)


def test_an_unused_limit_does_not_rise():
    limit = AdaptiveLimit(LimitSettings(cap=8, start=2))
    for _ in range(20):
        _answer(limit, 1.0)  # one at a time: the limit of 2 is never in use
    assert limit.limit == 2 and limit.changes == []


def test_queueing_lowers_the_limit_once_per_change_and_never_below_one():
    limit = AdaptiveLimit(LimitSettings(cap=8, start=4, tolerance=1.5))
    _answer(limit, 1.0)
    _answer(limit, 2.0)  # twice the baseline: it waited
    assert limit.limit == 3 and limit.changes == [("queued", 3)]
    # Samples from requests that started under an older limit do not lower it again.
    go, threads = _hold(limit, 2, seconds=4.0)
    _answer(limit, 3.0)
    assert limit.limit == 2
    go.set()
    for t in threads:
        t.join()  # they waited too (4 s), but started before the change: no second decrease
    assert limit.limit == 2
    for _ in range(5):
        _answer(limit, 5.0)
    assert limit.limit == 1


def test_overload_halves_and_a_report_less_slot_changes_nothing():
    limit = AdaptiveLimit(LimitSettings(cap=16, start=8))
    with limit.slot() as s:
        s.overloaded()
    assert limit.limit == 4
    with limit.slot():
        pass  # an error that is not about load: no report, no change
    assert limit.limit == 4 and limit.in_flight == 0


def test_callers_beyond_the_limit_wait():
    limit = AdaptiveLimit(LimitSettings(cap=4, start=2))
    go, threads = _hold(limit, 2)
    entered = threading.Event()

    def third():
        with limit.slot() as s:
            entered.set()
            s.answered(1.0)

    t = threading.Thread(target=third)
    t.start()
    assert not entered.wait(0.3)  # blocked while two are in flight
    go.set()
    assert entered.wait(5)
    t.join()
    for th in threads:
        th.join()
    assert limit.peak == 2
