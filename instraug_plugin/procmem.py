"""This process's memory from /proc/self/status (Linux), for peak-memory figures of one phase."""

from __future__ import annotations

import re
import resource
from pathlib import Path

STATUS = Path("/proc/self/status")


def memory_mib(field: str) -> float:
    """A /proc/self/status memory figure (VmRSS, VmHWM) in MiB."""
    match = re.search(rf"^{field}:\s+(\d+) kB", STATUS.read_text(), re.M)
    if match is None:
        raise OSError(f"{STATUS} has no {field}")
    return int(match.group(1)) / 1024


def reset_peak_memory() -> None:
    """Restart VmHWM from the current RSS (Linux: clear_refs 5)."""
    Path("/proc/self/clear_refs").write_text("5")


class PhasePeak:
    """Peak RSS of a phase above the RSS at its start, in MiB: VmHWM reset at the start where Linux allows it,
    else the growth of the lifetime maximum RSS (0 when an earlier phase peaked higher)."""

    def __init__(self) -> None:
        try:
            self.start = memory_mib("VmRSS")
            reset_peak_memory()
            self.exact = True
        except OSError:
            self.start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            self.exact = False

    def mib(self) -> float:
        if self.exact:
            return max(0.0, memory_mib("VmHWM") - self.start)
        return max(0.0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - self.start)
