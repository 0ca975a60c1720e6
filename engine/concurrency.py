"""How many requests to keep in flight to a server whose capacity is unknown: an adaptive limit.

A served LLM (vLLM, llama.cpp server, Ollama) answers as many requests at once as it has slots;
requests beyond that wait in its queue, and a queued request can time out before it even starts.
`AdaptiveLimit` finds the number of slots from the outside, the way TCP finds a link's capacity
(additive increase, decrease on congestion), with latency as the congestion signal:

- It starts low (`start`, default 2) and never exceeds `cap` (a setting: the most the caller
  wants in flight, and the size of the caller's thread pool).
- Each answered request gives one latency sample: seconds per answer unit (completion tokens plus
  `overhead_units` for the fixed cost of a request, so short and long answers compare). The
  baseline is the lowest sample among the last `window`.
- A sample above `tolerance` x baseline means the request waited in a queue: the limit goes down
  by one (only once per change: requests that started under an older limit do not count again).
- A request the server refused as overloaded (HTTP 429/503) or that timed out halves the limit.
- After `limit` good samples in a row taken while the limit was in use, it goes up by one.

On a one-slot server this holds the limit at 1-2 (a second request waits a whole answer: twice
the baseline); on a server with many slots and flat latency it climbs to `cap`.
"""
from __future__ import annotations

import threading
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class LimitSettings:
    """Knobs of :class:`AdaptiveLimit` (module docstring)."""

    cap: int = 8
    start: int = 2
    tolerance: float = 1.5
    window: int = 50
    overhead_units: int = 16


class Slot:
    """One permit. The holder reports how the request went: `answered(seconds, units)` or
    `overloaded()`; a slot released without a report changes nothing."""

    def __init__(self, epoch: int, saturated: bool):
        self.epoch = epoch
        self.saturated = saturated
        self.seconds: float | None = None
        self.units = 0
        self.was_overloaded = False

    def answered(self, seconds: float, units: int = 0) -> None:
        self.seconds, self.units = seconds, max(0, int(units))

    def overloaded(self) -> None:
        self.was_overloaded = True


class AdaptiveLimit:
    """A semaphore whose size adapts to the latency of what it guards (module docstring).
    Thread-safe. `limit` (now), `peak` (most in flight at once) and `changes` ([(reason, limit)])
    are there to read."""

    def __init__(self, settings: LimitSettings | None = None):
        self.settings = s = settings or LimitSettings()
        self.cap = max(1, int(s.cap))
        self.limit = max(1, min(int(s.start), self.cap))
        self.in_flight = 0
        self.peak = 0
        self.changes: list[tuple[str, int]] = []
        self._samples: deque[float] = deque(maxlen=max(1, int(s.window)))
        self._good = 0
        self._epoch = 0
        self._cond = threading.Condition()

    @contextmanager
    def slot(self):
        """Wait for a permit; hold it for the duration of one request."""
        with self._cond:
            while self.in_flight >= self.limit:
                self._cond.wait()
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
            held = Slot(self._epoch, saturated=self.in_flight >= self.limit)
        try:
            yield held
        finally:
            with self._cond:
                self.in_flight -= 1
                self._update(held)
                self._cond.notify_all()

    def baseline(self) -> float | None:
        with self._cond:
            return min(self._samples) if self._samples else None

    def _update(self, held: Slot) -> None:
        if held.was_overloaded:
            self._set(max(1, self.limit // 2), "overloaded")
            return
        if held.seconds is None:
            return
        sample = held.seconds / (held.units + self.settings.overhead_units)
        base = min(self._samples) if self._samples else sample
        self._samples.append(sample)
        if sample > self.settings.tolerance * base:
            if held.epoch == self._epoch and self.limit > 1:
                self._set(self.limit - 1, "queued")
            self._good = 0
            return
        if held.saturated and self.limit < self.cap:
            self._good += 1
            if self._good >= self.limit:
                self._set(self.limit + 1, "latency holds")

    def _set(self, limit: int, reason: str) -> None:
        self._good = 0
        if limit != self.limit:
            self._epoch += 1
            self.limit = limit
            self.changes.append((reason, limit))
