"""The measured phases. Trials are interleaved: each round runs every variant once, in an
order rotated per round, so machine noise hits every variant alike.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis

from bench import probes
from bench.agents import Agent, Canonical, expected, make_agents
from bench.variant import Run, Variant

BATCH_TIMEOUT_S = 600.0
RUN_SIZE = 7


@dataclass(frozen=True)
class Plan:
    """How much to measure: the full bench, or a smoke run with `--quick`."""

    latency_trials: int = 30
    throughput_runs: int = 100
    throughput_trials: int = 5
    concurrency: int = 16
    memory_agents: int = 64
    memory_sleep_s: float = 1.0
    memory_trials: int = 3
    scale_agents: int = 1000
    scale_trials: int = 2
    # Equal steps, so both slopes span the same growth: a few hundred KiB of noise in one
    # peak reading is then small against the 15-16 MiB each step adds to Redis's peak.
    payloads_bytes: tuple[int, ...] = (0, 4096, 8192)
    payload_trials: int = 3
    slow_sleep_s: float = 0.2


QUICK = Plan(
    latency_trials=3,
    throughput_runs=10,
    throughput_trials=2,
    memory_agents=16,
    memory_sleep_s=0.3,
    memory_trials=1,
    scale_agents=70,
    scale_trials=1,
    payloads_bytes=(0, 256, 512),
    payload_trials=1,
)


@dataclass
class Checks:
    """Every aggregate compared with the expected one, counted per variant."""

    passed: dict[str, int] = field(default_factory=dict)
    failed: dict[str, int] = field(default_factory=dict)

    def record(self, variant: str, agents: list[Agent], results: list[Canonical]) -> None:
        want = expected(agents)
        good = sum(result == want for result in results)
        self.passed[variant] = self.passed.get(variant, 0) + good
        self.failed[variant] = self.failed.get(variant, 0) + len(results) - good


@dataclass
class Bench:
    """What every phase shares: the variants, the Redis, the checks, the idle rates."""

    plan: Plan
    variants: list[Variant]
    client: redis.Redis
    checks: Checks = field(default_factory=Checks)
    idle: dict[str, float] = field(default_factory=dict)

    def rounds(self, trials: int) -> list[list[Variant]]:
        """`trials` rounds of every variant, the order rotated each round."""
        count = len(self.variants)
        return [[self.variants[(t + i) % count] for i in range(count)] for t in range(trials)]

    def timed_batch(self, variant: Variant, runs: list[Run]) -> float:
        """Run one batch, check every aggregate; seconds from first submit to last aggregate."""
        started = time.perf_counter()
        results = variant.run_batch(runs, BATCH_TIMEOUT_S)
        elapsed = time.perf_counter() - started
        for (_, agents), result in zip(runs, results, strict=True):
            self.checks.record(variant.name, agents, [result])
        return elapsed


def run_ids(variant: Variant, tag: str, count: int) -> list[str]:
    """Fresh run ids for one batch."""
    batch = uuid.uuid4().hex[:8]
    return [f"{variant.name}-{tag}-{batch}-{i}" for i in range(count)]


def stats(values: list[float], rate: bool = False) -> dict[str, float]:
    """Median and p95 of a figure's trials; p95 is the bad tail, so the low end of a rate."""
    tail = -probes.p95([-v for v in values]) if rate else probes.p95(values)
    return {"median": probes.median(values), "p95": tail, "n": len(values)}


def per_variant(
    bench: Bench, trials: int, measure: Callable[[Variant], float]
) -> dict[str, dict[str, float]]:
    """Interleaved trials of `measure`; median and p95 per variant."""
    samples: dict[str, list[float]] = {v.name: [] for v in bench.variants}
    for order in bench.rounds(trials):
        for variant in order:
            samples[variant.name].append(measure(variant))
    return {name: stats(values) for name, values in samples.items()}


def warm_up(bench: Bench) -> None:
    """Two untimed runs per variant: connections, imports and worker threads get made."""
    agents = make_agents(RUN_SIZE)
    for variant in bench.variants:
        for run_id in run_ids(variant, "warm", 2):
            bench.timed_batch(variant, [(run_id, agents)])


def measure_idle(bench: Bench, pids: dict[str, int], span_s: float = 2.0) -> None:
    """Background rates while nothing runs: Redis commands and CPU per second, per process."""
    meter = probes.CpuMeter(pids)
    before_cmds, before_cpu = probes.command_counts(bench.client), meter.read()
    time.sleep(span_s)
    after_cmds, after_cpu = probes.command_counts(bench.client), meter.read()
    bench.idle["commands"] = sum(probes.count_delta(after_cmds, before_cmds).values()) / span_s
    for role in pids:
        bench.idle[role] = (after_cpu[role] - before_cpu[role]) / span_s


def latency(bench: Bench, sleep_s: float) -> dict[str, dict[str, float]]:
    """Milliseconds from submit to aggregate of one run of seven agents."""
    agents = make_agents(RUN_SIZE, sleep_s)

    def measure(variant: Variant) -> float:
        run_id = run_ids(variant, "lat", 1)[0]
        return bench.timed_batch(variant, [(run_id, agents)]) * 1000

    return per_variant(bench, bench.plan.latency_trials, measure)


@dataclass
class Cost:
    """What one batch cost: time, Redis commands and CPU per role."""

    elapsed_s: float
    agents: int
    commands: dict[str, int]
    cpu_ms: dict[str, float]


def costed_batch(bench: Bench, variant: Variant, runs: list[Run]) -> Cost:
    """Run one batch, reading INFO commandstats and /proc CPU around it."""
    meter = probes.CpuMeter(cpu_roles(bench, variant))
    before_cmds, before_cpu = probes.command_counts(bench.client), meter.read()
    elapsed = bench.timed_batch(variant, runs)
    after_cmds, after_cpu = probes.command_counts(bench.client), meter.read()
    cpu = {role: after_cpu[role] - before_cpu[role] for role in after_cpu}
    agents = sum(len(agents) for _, agents in runs)
    return Cost(elapsed, agents, probes.count_delta(after_cmds, before_cmds), cpu)


def cpu_roles(bench: Bench, variant: Variant) -> dict[str, int]:
    """The processes whose CPU a variant costs: its workers, Redis and the submitter."""
    roles = {f"worker:{pid}": pid for pid in variant.worker_pids}
    return {**roles, "redis": probes.redis_pid(bench.client), "client": os.getpid()}


def per_agent(bench: Bench, cost: Cost) -> dict[str, float]:
    """Commands and CPU per agent, the idle background subtracted."""
    idle_cmds = bench.idle.get("commands", 0.0) * cost.elapsed_s
    workers = sum(v for k, v in cost.cpu_ms.items() if k.startswith("worker:"))
    idle_workers = sum(bench.idle.get(k, 0.0) for k in cost.cpu_ms if k.startswith("worker:"))
    return {
        "commands": max(0.0, sum(cost.commands.values()) - idle_cmds) / cost.agents,
        "cpu_worker_ms": (workers - idle_workers * cost.elapsed_s) / cost.agents,
        "cpu_redis_ms": (cost.cpu_ms["redis"] - bench.idle.get("redis", 0.0) * cost.elapsed_s)
        / cost.agents,
        "cpu_client_ms": cost.cpu_ms["client"] / cost.agents,
    }


def batch_of_sevens(variant: Variant, tag: str, runs: int, sleep_s: float = 0.0) -> list[Run]:
    """`runs` runs of seven agents each."""
    agents = make_agents(RUN_SIZE, sleep_s)
    return [(run_id, agents) for run_id in run_ids(variant, tag, runs)]


def throughput(bench: Bench) -> dict[str, Any]:
    """Runs of seven submitted at once: agents settled per second, and what each cost."""
    samples: dict[str, list[dict[str, float]]] = {v.name: [] for v in bench.variants}
    breakdown: dict[str, dict[str, int]] = {}
    for order in bench.rounds(bench.plan.throughput_trials):
        for variant in order:
            runs = batch_of_sevens(variant, "tput", bench.plan.throughput_runs)
            cost = costed_batch(bench, variant, runs)
            sample = {"agents_per_s": cost.agents / cost.elapsed_s, "batch_s": cost.elapsed_s}
            samples[variant.name].append({**sample, **per_agent(bench, cost)})
            breakdown[variant.name] = cost.commands
    return {"samples": _figures(samples), "commands_by_name": breakdown}


def _figures(samples: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, Any]]:
    """Per figure, per variant: median and p95 of the trials."""
    names = next(iter(samples.values()))[0].keys()
    return {
        figure: {
            variant: stats([s[figure] for s in rows], figure.endswith("per_s"))
            for variant, rows in samples.items()
        }
        for figure in names
    }


def two_workers(bench: Bench, variant: Variant) -> dict[str, float]:
    """Throughput of `variant` while it has every worker it was given."""
    values = []
    for _ in range(bench.plan.throughput_trials):
        runs = batch_of_sevens(variant, "tput2", bench.plan.throughput_runs)
        values.append(len(runs) * RUN_SIZE / bench.timed_batch(variant, runs))
    return stats(values, rate=True)


def worker_memory(bench: Bench, variants: list[Variant], url: str) -> dict[str, Any]:
    """Peak RSS of the process running the agents, with every agent of one run at once."""
    agents = make_agents(bench.plan.memory_agents, bench.plan.memory_sleep_s)
    samples: dict[str, list[dict[str, float]]] = {v.name: [] for v in variants}
    for trial in range(bench.plan.memory_trials):
        for i in range(len(variants)):
            variant = variants[(trial + i) % len(variants)]
            if variant.worker_pids:
                sample = _worker_peak(bench, variant, agents)
            else:
                sample = _floor_peak(bench, url, agents)
            samples[variant.name].append(sample)
    return _figures(samples)


def _worker_peak(bench: Bench, variant: Variant, agents: list[Agent]) -> dict[str, float]:
    pid = variant.worker_pids[0]
    idle_mib = probes.rss_mib(pid)
    probes.reset_peak_rss(pid)
    run_id = run_ids(variant, "mem", 1)[0]
    wall_s = bench.timed_batch(variant, [(run_id, agents)])
    return {"peak_rss_mib": probes.peak_rss_mib(pid), "idle_rss_mib": idle_mib, "wall_s": wall_s}


def _floor_peak(bench: Bench, url: str, agents: list[Agent]) -> dict[str, float]:
    from bench.floor import run_probe

    report = run_probe(url, len(agents), bench.plan.memory_sleep_s)
    bench.checks.passed["floor"] = bench.checks.passed.get("floor", 0) + int(report["check"])
    bench.checks.failed["floor"] = bench.checks.failed.get("floor", 0) + int(not report["check"])
    return {
        "peak_rss_mib": report["peak_rss_mib"],
        "idle_rss_mib": report["idle_rss_mib"],
        "wall_s": report["wall_s"],
    }


def scale(bench: Bench) -> dict[str, Any]:
    """One run of many agents against the same agents in runs of seven; memory vs output."""
    count = bench.plan.scale_agents
    samples: dict[str, list[dict[str, float]]] = {v.name: [] for v in bench.variants}
    for order in bench.rounds(bench.plan.scale_trials):
        for variant in order:
            sample = big_run(bench, variant, make_agents(count))
            spread = batch_of_sevens(variant, "spread", -(-count // RUN_SIZE))
            spread_s = bench.timed_batch(variant, spread) * count / (len(spread) * RUN_SIZE)
            samples[variant.name].append({**sample, "spread_s": spread_s})
    # Memory against output size is agentfleet's target; the baselines skip the series.
    payloads = {v.name: payload_series(bench, v) for v in bench.variants if v.name == "agentfleet"}
    return {"samples": _figures(samples), "payloads": payloads}


def payload_series(bench: Bench, variant: Variant) -> list[dict[str, float]]:
    """The big run again with larger outputs: does memory grow in step with them?

    Each size is run `payload_trials` times and every figure taken as the median: one peak
    reading moves by a few hundred KiB from run to run, as much as 512-byte outputs add.
    """
    series = []
    for payload in bench.plan.payloads_bytes:
        agents = make_agents(bench.plan.scale_agents, payload_bytes=payload)
        trials = [big_run(bench, variant, agents) for _ in range(bench.plan.payload_trials)]
        medians = {key: probes.median([t[key] for t in trials]) for key in trials[0]}
        series.append({"payload_bytes": payload, **medians})
    return series


def big_run(bench: Bench, variant: Variant, agents: list[Agent]) -> dict[str, float]:
    """One run of every agent: time, aggregate size, Redis memory, commands, client RSS."""
    run_id = run_ids(variant, "big", 1)[0]
    bench.client.config_resetstat()  # the peak memory mark starts from here
    memory_before = bench.client.info("memory")
    client_before = probes.rss_mib(os.getpid())
    probes.reset_peak_rss(os.getpid())

    cost = costed_batch(bench, variant, [(run_id, agents)])

    memory_after = bench.client.info("memory")
    used_before = int(memory_before["used_memory"])
    return {
        "time_s": cost.elapsed_s,
        "aggregate_bytes": float(bench.client.strlen(variant.aggregate_key(run_id))),
        "redis_used_delta_mib": (int(memory_after["used_memory"]) - used_before) / 2**20,
        "redis_peak_delta_mib": (int(memory_after["used_memory_peak"]) - used_before) / 2**20,
        "redis_lua_mib": int(memory_after.get("used_memory_lua", 0)) / 2**20,
        "client_peak_delta_mib": probes.peak_rss_mib(os.getpid()) - client_before,
        "commands_per_agent": per_agent(bench, cost)["commands"],
        "run_keys_kib": run_keys_bytes(bench.client, run_id) / 1024,
    }


def run_keys_bytes(client: redis.Redis, run_id: str) -> int:
    """What the keys naming the run hold in Redis (MEMORY USAGE), whoever wrote them."""
    names = list(client.scan_iter(match=f"*{run_id}*", count=1000))
    return sum(int(client.memory_usage(name, samples=0) or 0) for name in names)
