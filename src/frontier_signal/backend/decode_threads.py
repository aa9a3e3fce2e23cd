"""How many torch threads a decode step uses, chosen by timing the steps themselves.

A batch-1 decode step is a few hundred small kernels, each split over torch's OpenMP threads
and joined at a barrier. On cores of its own, two threads are about twice as fast as one. When
another process takes a core, a thread that waits at each barrier for a descheduled partner
makes every kernel pay a scheduler time slice: measured on this 2-core machine with one
CPU-bound process beside it, oneDNN's bf16 matvec of q|k|v went from ~60 us to 1-3 ms with 2
threads and stayed ~110 us with 1 (the 4-bit kernel: 258-785 us vs 197 us). Neither setting is
right everywhere, and the load changes while a server runs, so `DecodeThreadGovernor` measures:
it runs steps with the count that has been fastest (a moving average of its step times) and,
now and then, one step with another count (its latest time). A probe costs what the slower
count costs, up to a hundred times a step under contention, so the next probe comes after
about `PROBE_BUDGET` times the measured ratio of the two steps (at least `PROBE_EVERY` steps,
at most `PROBE_MAX`): probing stays within ~5 % of the decode time, and a count that becomes
the faster one again is found within a few hundred steps.

It only sets the thread count around a decode step and puts the previous count back after; it
does not touch training, the prompt pass, or the process's configured thread count.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import torch

T = TypeVar("T")

PROBE_EVERY = 16  # fewest steps between probes of another thread count
PROBE_MAX = 512  # most steps between probes
PROBE_BUDGET = 20  # steps between probes per unit of the slower/faster step-time ratio
SMOOTHING = 0.3  # weight of the newest step in the chosen count's moving average


class DecodeThreadGovernor:
    """Per decode setting (mode, batch size), the thread count its steps run with."""

    def __init__(self) -> None:
        self.enabled = True
        self._cost: dict[tuple, dict[int, float]] = {}  # key -> threads -> seconds a step
        self._steps: dict[tuple, int] = {}
        self._next_probe: dict[tuple, int] = {}
        self._choice: dict[tuple, int] = {}  # key -> the count of the latest non-probe step

    def options(self) -> list[int]:
        """The counts tried: the configured count and 1 (nothing to choose from at 1)."""
        most = torch.get_num_threads()
        return [most, 1] if most > 1 else [most]

    def choose(self, key: tuple) -> int:
        """The count for the next step of `key`: an unmeasured one first, then the fastest
        so far, and another one in turn when a probe is due."""
        options = self.options()
        if not self.enabled or len(options) == 1:
            return options[0]
        costs = self._cost.setdefault(key, {})
        step = self._steps[key] = self._steps.get(key, 0) + 1
        unmeasured = [n for n in options if n not in costs]
        if unmeasured:
            return unmeasured[0]
        ranked = sorted(options, key=lambda n: costs[n])
        if step >= self._next_probe.get(key, 0):
            probes = step // PROBE_EVERY
            return ranked[1 + probes % (len(ranked) - 1)]
        self._choice[key] = ranked[0]
        return ranked[0]

    def record(self, key: tuple, threads: int, seconds: float) -> None:
        """Count a step: the chosen count's average moves, a probe's time replaces the last."""
        costs = self._cost.setdefault(key, {})
        old = costs.get(threads)
        chosen = self._choice.get(key) == threads
        costs[threads] = (1 - SMOOTHING) * old + SMOOTHING * seconds if old and chosen else seconds
        if not chosen and len(costs) > 1:  # a probe (or a first measurement): schedule the next
            fastest = min(costs.values())
            ratio = max(costs.values()) / fastest if fastest > 0 else 1.0
            wait = min(max(int(PROBE_BUDGET * ratio), PROBE_EVERY), PROBE_MAX)
            self._next_probe[key] = self._steps.get(key, 0) + wait

    def run(self, key: tuple, step: Callable[[], T]) -> T:
        """`step()` with the chosen thread count, timed; the previous count is restored."""
        configured = torch.get_num_threads()
        threads = self.choose(key)
        if threads == configured:
            start = time.perf_counter()
            result = step()
            self.record(key, threads, time.perf_counter() - start)
            return result
        torch.set_num_threads(threads)
        try:
            start = time.perf_counter()
            result = step()
            self.record(key, threads, time.perf_counter() - start)
        finally:
            torch.set_num_threads(configured)
        return result

    def describe(self) -> dict[str, dict[int, float]]:
        """Each setting's measured ms per step by thread count (for logs and benchmarks)."""
        return {
            str(key): {n: round(s * 1e3, 3) for n, s in costs.items()}
            for key, costs in self._cost.items()
        }
