"""Wall time and peak memory of named phases (CPU RSS above the phase's start; CUDA allocator peak)."""

from __future__ import annotations

import os
import resource
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
MB = 2**20


def rss_bytes() -> int:
    """Current resident set size of this process (Linux /proc; peak RSS elsewhere)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * _PAGE
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class _PeakSampler(threading.Thread):
    """Samples RSS every `interval` seconds until stopped; keeps the maximum."""

    def __init__(self, interval: float = 0.002) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.peak = rss_bytes()
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            self.peak = max(self.peak, rss_bytes())

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        return max(self.peak, rss_bytes())


@dataclass
class CostMeter:
    """Collects `{phase: {"time_s", "peak_mem_mb", ["cuda_peak_mb"]}}` for one method run.

    peak_mem_mb is the CPU RSS high-water mark during the phase minus RSS at its start, so it is
    the extra memory the phase needed (allocator caching can make it read low on repeat runs). A phase opened
    inside another (Fisher's "fisher" inside "unlearn") is listed, but its time is already in the outer one's,
    so the total counts only the outermost phases.
    """

    phases: dict[str, dict[str, float]] = field(default_factory=dict)
    nested: set[str] = field(default_factory=set)  # phases that ran inside another
    _open: list[str] = field(default_factory=list)

    @contextmanager
    def phase(self, name: str):
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            cuda_start = torch.cuda.memory_allocated()
        if self._open:
            self.nested.add(name)
        self._open.append(name)
        sampler = _PeakSampler()
        start_rss = sampler.peak
        sampler.start()
        start = time.perf_counter()
        try:
            yield
        finally:
            self._open.pop()
            if cuda:
                torch.cuda.synchronize()
            elapsed = time.perf_counter() - start
            peak = sampler.stop()
            record = {"time_s": elapsed, "peak_mem_mb": max(peak - start_rss, 0) / MB}
            if cuda:
                record["cuda_peak_mb"] = (torch.cuda.max_memory_allocated() - cuda_start) / MB
            previous = self.phases.get(name)
            if previous:  # a phase entered twice accumulates time and keeps the larger peak
                record = {k: (previous[k] + v if k == "time_s" else max(previous[k], v)) for k, v in record.items()}
            self.phases[name] = record

    def summary(self) -> dict:
        """Total time (of the outermost phases), largest phase peak, and the phases themselves."""
        return {
            "time_s": sum(p["time_s"] for name, p in self.phases.items() if name not in self.nested),
            "peak_mem_mb": max((p["peak_mem_mb"] for p in self.phases.values()), default=0.0),
            "phases": self.phases,
        }
