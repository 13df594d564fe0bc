"""This process's peak resident set size, resettable on Linux: what a case allocated, C
libraries included (the memory bounds of the fuzz and hostile-input tests)."""

from __future__ import annotations

import resource


def _rss_kib(field: str) -> int | None:
    """``VmRSS`` or ``VmHWM`` (peak) of this process in KiB, from /proc; None elsewhere."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak_rss() -> int:
    """Reset the peak RSS to the current RSS where Linux allows it (``clear_refs`` 5); return
    the baseline, bytes, that the peak after the case is compared with."""
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")
        current = _rss_kib("VmRSS")
        if current is not None:
            return current * 1024
    except OSError:
        pass
    return peak_rss()


def peak_rss() -> int:
    """Peak RSS since the last reset (``VmHWM``), else since start (``ru_maxrss``), bytes."""
    peak = _rss_kib("VmHWM")
    if peak is None:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak * 1024
