"""The thread governor against real competing processes (engine/threads.py)."""

import os
import subprocess
import sys
import time

import pytest
import torch

from frontier_signal.backend import native
from frontier_signal.engine.threads import ThreadGovernor, governor_for

CPUS = len(os.sched_getaffinity(0))
pytestmark = pytest.mark.skipif(CPUS < 2 or not os.path.exists("/proc/stat"), reason="needs 2 CPUs")


def _settle(governor: ThreadGovernor, seconds: float) -> int:
    """Measure over one window of `seconds`, while this process sleeps."""
    governor.adjust()  # starts the window
    time.sleep(seconds)
    return governor.adjust()


def test_engine_threads_shrink_while_other_processes_keep_the_cpus_busy():
    # Our C++ ops may be compiling in the background (native.py; an earlier test started it):
    # its compilers are other processes too, rightly counted, so they finish first.
    native.ops()
    before = torch.get_num_threads()
    governor = ThreadGovernor(max_threads=CPUS, interval_s=0.3)
    hogs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import time\nend = time.time() + 20\nwhile time.time() < end: pass",
            ]
        )
        for _ in range(CPUS)
    ]
    try:
        time.sleep(0.3)  # the interpreters start
        assert _settle(governor, 0.8) == 1
        busy = governor.others_busy
        assert busy > CPUS - 0.7  # they kept (nearly) every CPU busy
        assert torch.get_num_threads() == 1
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait(timeout=10)
    try:
        # The window (too short to re-measure) still says the CPUs were busy, but nothing of
        # theirs runs now: the engine gets its threads back at once, not a window later.
        measured = governor.others_busy
        assert governor.adjust() == CPUS and governor.others_busy == measured
        assert governor.others_running == 0 and torch.get_num_threads() == CPUS
    finally:
        torch.set_num_threads(before)


def test_only_multi_threaded_cpu_engines_get_a_governor(monkeypatch):
    assert governor_for(torch.device("cuda")) is None
    monkeypatch.setenv("FRONTIER_SIGNAL_ADAPTIVE_THREADS", "0")
    assert governor_for(torch.device("cpu")) is None
    monkeypatch.delenv("FRONTIER_SIGNAL_ADAPTIVE_THREADS")
    governor = governor_for(torch.device("cpu"))
    assert governor is None or governor.max_threads == torch.get_num_threads() > 1


def test_a_process_runnable_for_a_moment_does_not_leave_a_step_on_one_thread(monkeypatch):
    """Right after a competing job's last step its threads (or this request's client) are
    runnable for a moment: the governor reads again before it gives the step one thread, and
    still gives one where the other process keeps running."""
    from frontier_signal.engine import threads

    before = torch.get_num_threads()
    governor = ThreadGovernor(max_threads=CPUS, interval_s=3600)  # the window stays as set
    governor.others_busy = float(CPUS)  # the last window: the other process kept every CPU
    try:
        reads = iter([1, 1, 0])
        monkeypatch.setattr(threads, "_others_running", lambda: next(reads))
        assert governor.adjust() == CPUS and governor.others_running == 0
        reads = []
        monkeypatch.setattr(threads, "_others_running", lambda: reads.append(1) or 1)
        assert governor.adjust() == CPUS - 1 and governor.others_running == 1
        assert len(reads) == 1 + threads.SETTLE_READS
        reads.clear()  # while it lasts, no more re-reads (and no pauses) per batch
        assert governor.adjust() == CPUS - 1 and len(reads) == 1
    finally:
        torch.set_num_threads(before)
