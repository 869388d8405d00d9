"""Memory and time readings shared by the measurement scripts: resident memory in MiB (2**20 bytes) throughout.

    from tools.measure import peak_rss_mib, reset_peak_rss, timed

Standard library only: tools.bench's driver and the fresh processes whose memory it reads import this module,
and what they import counts in what they measure. The readings come from /proc (Linux); peak_rss_mib falls
back to getrusage elsewhere.
"""
import os
import resource
import time
from pathlib import Path

MIB = 1024 * 1024


def rss_mib(pid="self") -> float:
    """Resident memory of a process now (/proc/<pid>/statm)."""
    resident_pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE") / MIB


def children_rss_mib() -> float:
    """Resident memory now of this process's running children (DataLoader workers), summed; 0 when there are none."""
    total = 0.0
    for task in Path("/proc/self/task").iterdir():
        try:
            child_ids = (task / "children").read_text().split()
        except OSError:
            continue
        for child_id in child_ids:
            try:
                total += rss_mib(child_id)
            except OSError:  # the child exited meanwhile
                pass
    return total


def peak_rss_mib() -> float:
    """Peak resident memory of this process since it started or since reset_peak_rss (VmHWM). Without /proc:
    ru_maxrss, which also counts what the parent held when it started this process."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / MIB
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / MIB  # KiB on Linux


def reset_peak_rss() -> bool:
    """Start this process's peak (VmHWM) afresh from its current size; False where the kernel does not allow it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def children_peak_rss_mib() -> float:
    """Largest peak resident memory of this process's finished children. It counts the pages a forked child
    shares with this process in full, and what this process held when the child was started."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024 / MIB


def timed(function, *args, **kwargs) -> tuple:
    """(seconds, result) of one call."""
    started = time.perf_counter()
    result = function(*args, **kwargs)
    return time.perf_counter() - started, result
