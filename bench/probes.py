"""What the bench measures outside the variants: /proc CPU and memory, Redis INFO."""

from __future__ import annotations

import os
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import redis

CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def cpu_ms(pid: int) -> float:
    """User plus system CPU of the process `pid` (all its threads, not its children)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    # After the command name: state is field 3, utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) * 1000.0 / CLOCK_TICKS_PER_S


def _status_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def rss_mib(pid: int) -> float:
    """Resident memory of `pid` now."""
    return _status_kib(pid, "VmRSS") / 1024


def peak_rss_mib(pid: int) -> float:
    """Peak resident memory of `pid` since start or since the last `reset_peak_rss`."""
    return _status_kib(pid, "VmHWM") / 1024


def reset_peak_rss(pid: int) -> None:
    """Reset the kernel's peak-RSS mark of `pid` to its current RSS."""
    with open(f"/proc/{pid}/clear_refs", "w", encoding="ascii") as refs:
        refs.write("5")


def command_counts(client: redis.Redis) -> dict[str, int]:
    """Calls per Redis command since the server started (INFO commandstats)."""
    stats = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(row["calls"]) for name, row in stats.items()}


def count_delta(after: dict[str, int], before: dict[str, int]) -> dict[str, int]:
    """Commands run between two `command_counts` snapshots, busiest first."""
    delta = {name: calls - before.get(name, 0) for name, calls in after.items()}
    return dict(sorted(((k, v) for k, v in delta.items() if v > 0), key=lambda kv: -kv[1]))


def redis_pid(client: redis.Redis) -> int:
    """The process id of the Redis server."""
    return int(client.info("server")["process_id"])


@dataclass
class CpuMeter:
    """CPU milliseconds of several processes, read before and after a measured span."""

    pids: dict[str, int]

    def read(self) -> dict[str, float]:
        """Current CPU milliseconds per role; 0 for a role with no process."""
        return {role: cpu_ms(pid) if pid else 0.0 for role, pid in self.pids.items()}


def median(values: Sequence[float]) -> float:
    """The median of `values`."""
    return float(statistics.median(values))


def p95(values: Sequence[float]) -> float:
    """The 95th percentile of `values` (nearest rank)."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(0.95 * len(ordered) + 0.5) - 1))
    return float(ordered[rank])
