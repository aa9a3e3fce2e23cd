"""How many CPU threads the engine's torch ops use: the cores other processes leave free.

torch runs each op on an OpenMP team of `torch.get_num_threads()` threads that meet at a barrier
at the end of every parallel region. When another process holds one of the cores, the thread
that shares it is descheduled for whole time slices and the others spin at the barrier: on this
2-core machine one competing CPU-bound process made a training step 2.4x slower with 2 threads
than with 1 (85 vs 201 tok/s, SmolLM2 8x256), and a bf16 matrix-vector product 75x slower. A
server shares its machine, so the engine measures how busy the other processes keep the CPUs and
runs on the cores they leave: `/proc/stat` (all CPU time) minus `/proc/self/stat` (ours), over
the last half second or more, re-read before each batch of work. A window only says what was busy
while it lasted, so the count is also capped by what is running now (`/proc/loadavg`'s runnable
tasks minus this process's): a job that just finished, or another process that alternates with
this one, does not leave the engine on one thread while the CPUs are free.

This module only chooses and sets the count for the calling thread (OpenMP's setting is per
thread: the engine thread calls it). Without `/proc` (not Linux) it leaves torch's setting.
"""

from __future__ import annotations

import logging
import os
import time

import torch

logger = logging.getLogger(__name__)

MIN_INTERVAL_S = 0.5  # shorter windows are mostly noise (jiffies are 10 ms)
SETTLE_READS, SETTLE_PAUSE_S = 4, 0.001  # re-reads of the runnable tasks (see _settled_running)


def _cpu_jiffies() -> tuple[int, int] | None:
    """(busy jiffies of the whole machine, of this process), or None without /proc."""
    try:
        with open("/proc/stat") as handle:
            fields = [int(x) for x in handle.readline().split()[1:]]
        with open("/proc/self/stat") as handle:
            own = handle.read().rsplit(")", 1)[1].split()
    except (OSError, ValueError, IndexError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    busy = sum(fields[:8]) - idle  # user nice system idle iowait irq softirq steal
    return busy, int(own[11]) + int(own[12])  # utime + stime, fields 14 and 15 of the file


def _others_running() -> int | None:
    """Tasks of other processes running or runnable right now, or None without /proc."""
    try:
        with open("/proc/loadavg") as handle:
            running = int(handle.read().split()[3].split("/")[0])  # "runnable/total"
        if running <= 1:  # the thread reading this is one of them
            return 0
        own = 0
        for task in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{task}/stat") as handle:
                own += handle.read().rsplit(")", 1)[1].split()[0] == "R"
    except (OSError, ValueError, IndexError):
        return None
    return max(0, running - own)


class ThreadGovernor:
    """Sets torch's thread count to the CPUs not kept busy by other processes.

    Args:
        max_threads: the most threads to use (default: torch's count when created).
        interval_s: the shortest window the other processes' load is measured over.
    """

    def __init__(self, max_threads: int | None = None, interval_s: float = MIN_INTERVAL_S):
        self.max_threads = max_threads or torch.get_num_threads()
        self.interval_s = interval_s
        self.threads = self.max_threads
        self.cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
        self.others_busy = 0.0  # CPUs' worth of work other processes did in the last window
        self.others_running: int | None = None  # their tasks runnable at the last adjust
        self._ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        self._last = (time.monotonic(), _cpu_jiffies())

    def _settled_running(self, busy: float) -> int:
        """The other processes' runnable tasks, read again a few times over ~4 ms while the
        window says they were busy: a process that just finished its work (its OpenMP threads
        spin a little at their last barrier; a client that just sent this request) is runnable
        for a moment, and one read would leave a whole step on one thread. Measured: a server
        step right after a competing 2-thread loop ran 1.6x slower before this. Only before
        giving threads up: under lasting contention the engine pays the reads once."""
        running = self.others_running or 0
        if self.threads < self.max_threads:  # already shared: one read to take them back
            return running
        for _ in range(SETTLE_READS):
            if running == 0 or busy < 0.5:
                break
            time.sleep(SETTLE_PAUSE_S)
            running = min(running, _others_running() or 0)
        self.others_running = running
        return running

    def adjust(self) -> int:
        """Re-measure (the window if long enough, the running tasks always) and set torch's
        threads; returns the count."""
        now, sample = time.monotonic(), _cpu_jiffies()
        then, previous = self._last
        if sample is not None and previous is not None and now - then >= self.interval_s:
            self._last = (now, sample)
            others = (sample[0] - previous[0]) - (sample[1] - previous[1])
            self.others_busy = max(0.0, others / self._ticks / (now - then))
        self.others_running = _others_running()
        busy = self.others_busy
        if self.others_running is not None:
            busy = min(busy, self._settled_running(busy))
        # A core counts as taken once others keep it more than half busy.
        free = int(self.cpus - busy + 0.5)
        wanted = max(1, min(self.max_threads, free))
        if wanted != self.threads:
            logger.debug("engine threads %d -> %d (others busy %.2f)", self.threads, wanted, busy)
            self.threads = wanted
        if torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)
        return self.threads


def governor_for(device: torch.device) -> ThreadGovernor | None:
    """A governor for a CPU engine with more than one thread; None on accelerators (their
    host threads matter little) or where `FRONTIER_SIGNAL_ADAPTIVE_THREADS=0`."""
    if device.type != "cpu" or os.environ.get("FRONTIER_SIGNAL_ADAPTIVE_THREADS", "1") == "0":
        return None
    governor = ThreadGovernor()
    return governor if governor.max_threads > 1 else None
