"""The process's resident memory (now and at its peak), on every platform the runtime runs on.

`resource` exists on POSIX only (and reports ru_maxrss in KiB on Linux, in
bytes on macOS); Windows, TensorRT for RTX's main platform, reports the peak
working set through GetProcessMemoryInfo.
"""

from __future__ import annotations

import os
import sys


def peak_rss_mb() -> float | None:
    """Peak resident set size of this process in MB of 2^20 bytes (as vp's figures have always been
    given), None where it cannot be read."""
    try:
        import resource
    except ImportError:
        return _windows_peak_mb() if sys.platform == "win32" else None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def rss_mb() -> float | None:
    """Resident set size of this process now, in MB of 2^20 bytes; None where it cannot be read."""
    if sys.platform == "win32":
        counters = _windows_counters()
        return None if counters is None else counters.WorkingSetSize / 2**20
    try:
        with open("/proc/self/statm") as statm:  # Linux: size resident ... in pages
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return None


def _windows_peak_mb() -> float | None:
    counters = _windows_counters()
    return None if counters is None else counters.PeakWorkingSetSize / 2**20


def _windows_counters():
    import ctypes
    from ctypes import wintypes

    class Counters(ctypes.Structure):
        _fields_ = [("cb", wintypes.DWORD), ("PageFaultCount", wintypes.DWORD),
                    ("PeakWorkingSetSize", ctypes.c_size_t), ("WorkingSetSize", ctypes.c_size_t),
                    ("QuotaPeakPagedPoolUsage", ctypes.c_size_t), ("QuotaPagedPoolUsage", ctypes.c_size_t),
                    ("QuotaPeakNonPagedPoolUsage", ctypes.c_size_t), ("QuotaNonPagedPoolUsage", ctypes.c_size_t),
                    ("PagefileUsage", ctypes.c_size_t), ("PeakPagefileUsage", ctypes.c_size_t)]

    counters = Counters()
    counters.cb = ctypes.sizeof(Counters)
    process = ctypes.windll.kernel32.GetCurrentProcess()
    if not ctypes.windll.psapi.GetProcessMemoryInfo(process, ctypes.byref(counters), counters.cb):
        return None
    return counters
