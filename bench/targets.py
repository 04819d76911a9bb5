"""The issue's targets for agentfleet, each judged against the measured medians."""

from __future__ import annotations

import itertools
from typing import Any


def _median(values: dict[str, Any], figure: str, variant: str) -> float:
    return float(values[figure][variant]["median"])


def _verdict(
    target: str, measured: float, limit: float, at_most: bool, unit: str = "x"
) -> dict[str, Any]:
    met = measured <= limit if at_most else measured >= limit
    miss = (measured / limit - 1) * 100 if at_most else (1 - measured / limit) * 100
    note = f"{measured:.2f}{unit}" + ("" if met else f", missed by {miss:.0f}%")
    return {"target": target, "measured": note, "value": measured, "limit": limit, "met": met}


def _ratio(values: dict[str, Any], figure: str, other: str) -> float:
    return _median(values, figure, "agentfleet") / _median(values, figure, other)


def evaluate(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Every target, met or missed, with the measured ratio."""
    v = results["values"]
    payloads = results["details"]["payloads"]["agentfleet"]
    big_commands = _median(v, "big_commands", "agentfleet") / _median(v, "commands", "agentfleet")
    big_time = _median(v, "big_time_s", "agentfleet") / _median(v, "spread_s", "agentfleet")
    return [
        _verdict("fast latency <= 0.5x chord", _ratio(v, "latency_fast_ms", "chord"), 0.5, True),
        _verdict("fast latency <= 2.5x floor", _ratio(v, "latency_fast_ms", "floor"), 2.5, True),
        _verdict("throughput >= 2x chord", _ratio(v, "agents_per_s", "chord"), 2.0, False),
        _verdict("slow latency <= 1.15x floor", _ratio(v, "latency_slow_ms", "floor"), 1.15, True),
        _verdict(
            "Redis commands per agent, big run / runs of 7 <= 1.25", big_commands, 1.25, True
        ),
        _verdict("1 big run <= 2x the same agents in runs of 7", big_time, 2.0, True),
        linear_memory(
            payloads, "run_keys_kib", "Redis memory the run holds linear in output size"
        ),
        linear_memory(payloads, "redis_peak_delta_mib", "Redis peak memory linear in output size"),
    ]


UNIT_BYTES = {"run_keys_kib": 1024, "redis_peak_delta_mib": 2**20}


def linear_memory(series: list[dict[str, float]], field: str, title: str) -> dict[str, Any]:
    """Memory per aggregate byte stays the same as the outputs grow (slopes within 1.25x)."""
    slopes = []
    for low, high in itertools.pairwise(series):
        grown = high["aggregate_bytes"] - low["aggregate_bytes"]
        slopes.append((high[field] - low[field]) * UNIT_BYTES[field] / grown)
    spread = max(slopes) / min(slopes) if slopes and min(slopes) > 0 else float("inf")
    verdict = _verdict(f"{title} (slopes within 1.25x)", spread, 1.25, True)
    verdict["measured"] += (
        " (bytes of Redis memory per aggregate byte: "
        + ", ".join(f"{s:.2f}" for s in slopes)
        + ")"
    )
    return verdict
