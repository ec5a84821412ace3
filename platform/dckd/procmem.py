"""This process's resident memory from Linux ``/proc``: what ``dckd bench`` and ``dckd efficiency``
report as peak memory on the CPU."""

from __future__ import annotations

from pathlib import Path


def status_kb(field: str) -> int:
    """A ``/proc/self/status`` field in KiB (``VmRSS``, ``VmHWM``); 0 where there is no /proc."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def reset_peak_rss() -> bool:
    """Reset the resident high-water mark (``/proc/self/clear_refs``), so ``VmHWM`` counts from now."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False
