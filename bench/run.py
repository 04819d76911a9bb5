"""`python -m bench [--quick]`: every variant, every figure, one private Redis, one table."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import redis
import structlog

from bench import phases, probes, report
from bench.deploy import Deployment, Worker, deployment
from bench.floor import Floor
from bench.phases import QUICK, Bench, Plan
from bench.targets import evaluate
from bench.variant import Variant
from bench.variants import Agentfleet, Chord, Group

RESULTS = Path(__file__).resolve().parent / "results"
# A quick run writes apart, so it never overwrites the full run the README quotes.
QUICK_RESULTS = RESULTS / "quick"

FIGURES = [
    report.Figure("latency_fast_ms", "latency, 1 run of 7 fast agents", "ms"),
    report.Figure("latency_slow_ms", "latency, 1 run of 7 slow agents (sleep 0.2)", "ms"),
    report.Figure("agents_per_s", "throughput, {runs} runs of 7 at once", "agents/s", 0),
    report.Figure("batch_s", "time for {runs} runs of 7", "s", 2),
    report.Figure("commands", "Redis commands per agent, runs of 7", "calls", vs_floor=False),
    report.Figure("cpu_worker_ms", "worker CPU per agent", "ms", 2, vs_floor=False),
    report.Figure("cpu_redis_ms", "Redis CPU per agent", "ms", 2, vs_floor=False),
    report.Figure("cpu_client_ms", "client CPU per agent", "ms", 2),
    report.Figure("peak_rss_mib", "worker peak RSS, {mem} agents at once", "MiB"),
    report.Figure("idle_rss_mib", "worker RSS before those agents", "MiB"),
    report.Figure("mem_wall_s", "wall time of those {mem} agents", "s", 2),
    report.Figure("big_time_s", "1 run of {big} agents: time to aggregate", "s", 2),
    report.Figure("spread_s", "{big} agents in runs of 7 at once", "s", 2),
    report.Figure(
        "big_commands", "Redis commands per agent, 1 run of {big}", "calls", vs_floor=False
    ),
    report.Figure("aggregate_kib", "1 run of {big}: aggregate size", "KiB"),
    report.Figure("run_keys_kib", "1 run of {big}: Redis keys of the run", "KiB", 0),
    report.Figure("redis_used_delta_mib", "1 run of {big}: Redis used_memory delta", "MiB", 2),
    report.Figure("redis_peak_delta_mib", "1 run of {big}: Redis peak over start", "MiB", 2),
    report.Figure("client_peak_delta_mib", "1 run of {big}: client peak RSS delta", "MiB", 2),
    report.Figure("agents_per_s_2w", "throughput with 2 worker processes", "agents/s", 0),
]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a few trials and small counts: proves the bench works (< 60 s)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="folder for latest.* (default: bench/results, or bench/results/quick with --quick)",
    )
    parser.add_argument(
        "--render", type=Path, metavar="JSON", help="re-render a results file, measure nothing"
    )
    return parser.parse_args(argv)


def quiet_logging() -> None:
    """The client library logs through structlog; keep its per-run chatter off the table."""
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    logging.basicConfig(level=logging.WARNING)


def main(argv: list[str] | None = None) -> None:
    """Run the bench, print the table, write latest.json and latest.md."""
    args = parse_args(argv)
    if args.render is not None:
        rerender(args.render, args.out or RESULTS)
        return
    quiet_logging()
    plan = QUICK if args.quick else Plan()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="agentfleet-bench-") as folder:
        results = measure(plan, Path(folder))
    results["duration_s"] = round(time.monotonic() - started, 1)
    results["quick"] = args.quick
    text, markdown = render(results, plan)
    out = args.out or (QUICK_RESULTS if args.quick else RESULTS)
    report.write(results, out, text, markdown)
    print(text)
    if any(results["checks"]["failed"].values()):
        sys.exit("bench: some aggregates differ from the expected one (see checks)")


def rerender(source: Path, out: Path) -> None:
    """Rebuild latest.md and the table from a results file, as after a measuring run."""
    results = json.loads(source.read_text(encoding="utf-8"))
    text, markdown = render(results, Plan(**results["plan"]))
    report.write(results, out, text, markdown)
    print(text)


def measure(plan: Plan, folder: Path) -> dict[str, Any]:
    """Every phase, in order, on one private Redis."""
    with deployment(folder) as deploy:
        af, bl = start_pair(deploy, plan.concurrency)
        client = redis.Redis.from_url(deploy.url)
        bench = Bench(plan, make_variants(deploy.url, plan.concurrency, af, bl), client)
        phases.warm_up(bench)
        idle_pids = {
            f"worker:{af.pid}": af.pid,
            f"worker:{bl.pid}": bl.pid,
            "redis": probes.redis_pid(client),
        }
        phases.measure_idle(bench, idle_pids)
        values, details = timed_phases(bench)
        values["agents_per_s_2w"] = {"agentfleet": two_workers(bench, deploy, af)}
        values.update(memory_phase(bench, deploy, af, bl))
        server = client.info("server")["redis_version"]
        for variant in bench.variants:
            variant.close()
    checks = {"passed": bench.checks.passed, "failed": bench.checks.failed}
    return {
        "machine": report.machine(server),
        "plan": plan.__dict__,
        "values": values,
        "details": {**details, "idle_per_s": bench.idle},
        "checks": checks,
    }


def start_pair(deploy: Deployment, concurrency: int) -> tuple[Worker, Worker]:
    """An agentfleet worker and a baseline worker, both ready."""
    af, bl = deploy.start_agentfleet(concurrency), deploy.start_baseline(concurrency)
    af.wait_ready()
    bl.wait_ready()
    return af, bl


def make_variants(url: str, concurrency: int, af: Worker, bl: Worker) -> list[Variant]:
    return [
        Floor(url, concurrency),
        Chord(url, bl.pid),
        Group(url, bl.pid),
        Agentfleet(url, (af.pid,)),
    ]


def timed_phases(bench: Bench) -> tuple[dict[str, Any], dict[str, Any]]:
    """Latency, throughput and cost, then scale: the phases every variant shares."""
    values: dict[str, Any] = {
        "latency_fast_ms": phases.latency(bench, 0.0),
        "latency_slow_ms": phases.latency(bench, bench.plan.slow_sleep_s),
    }
    tput = phases.throughput(bench)
    values.update(tput["samples"])
    big = phases.scale(bench)
    samples = big["samples"]
    values.update(
        {
            "big_time_s": samples["time_s"],
            "spread_s": samples["spread_s"],
            "big_commands": samples["commands_per_agent"],
            "aggregate_kib": _scaled(samples["aggregate_bytes"], 1 / 1024),
        }
    )
    for key in (
        "run_keys_kib",
        "redis_used_delta_mib",
        "redis_peak_delta_mib",
        "client_peak_delta_mib",
    ):
        values[key] = samples[key]
    details = {
        "commands_by_name": tput["commands_by_name"],
        "payloads": big["payloads"],
        "lua_mib": samples["redis_lua_mib"],
    }
    return values, details


def _scaled(row: dict[str, dict[str, float]], factor: float) -> dict[str, dict[str, float]]:
    return {
        v: {**s, "median": s["median"] * factor, "p95": s["p95"] * factor} for v, s in row.items()
    }


def two_workers(bench: Bench, deploy: Deployment, af: Worker) -> dict[str, float]:
    """agentfleet's throughput with a second worker process of the same concurrency."""
    second = deploy.start_agentfleet(bench.plan.concurrency)
    second.wait_ready()
    variant = Agentfleet(deploy.url, (af.pid, second.pid))
    try:
        return phases.two_workers(bench, variant)
    finally:
        variant.close()
        deploy.stop(second)


def memory_phase(bench: Bench, deploy: Deployment, af: Worker, bl: Worker) -> dict[str, Any]:
    """Worker RSS with every agent of one run at once: workers sized to run them all."""
    count = bench.plan.memory_agents
    if count > bench.plan.concurrency:
        deploy.stop(af)
        deploy.stop(bl)
        af, bl = start_pair(deploy, count)
    variants = make_variants(deploy.url, count, af, bl)
    phases.warm_up(Bench(bench.plan, variants, bench.client, bench.checks))
    figures = phases.worker_memory(bench, variants, deploy.url)
    for variant in variants:
        variant.close()
    return {
        "peak_rss_mib": figures["peak_rss_mib"],
        "idle_rss_mib": figures["idle_rss_mib"],
        "mem_wall_s": figures["wall_s"],
    }


def render(results: dict[str, Any], plan: Plan) -> tuple[str, str]:
    """The terminal table and the markdown for the README."""
    names = {"runs": plan.throughput_runs, "mem": plan.memory_agents, "big": plan.scale_agents}
    figures = [replace(f, label=f.label.format(**names)) for f in FIGURES]
    table = report.rows(figures, results["values"])
    verdicts = evaluate(results)
    results["targets"] = verdicts
    target_rows = [[t["target"], t["measured"], "met" if t["met"] else "MISSED"] for t in verdicts]
    header = ["target", "measured", "verdict"]
    text = "\n\n".join(
        [
            report.text_table(table),
            report.text_table(target_rows, header),
            _checks_line(results),
            _machine_line(results),
        ]
    )
    markdown = "\n\n".join(
        [
            report.markdown_table(table),
            report.markdown_table(target_rows, header),
            _checks_line(results),
            _machine_line(results),
        ]
    )
    return text, markdown


def _checks_line(results: dict[str, Any]) -> str:
    checks = results["checks"]
    parts = [
        f"{v}: {checks['passed'].get(v, 0)} passed, {checks['failed'].get(v, 0)} failed"
        for v in report.VARIANTS
    ]
    return "Aggregate checks: " + "; ".join(parts) + "."


def _machine_line(results: dict[str, Any]) -> str:
    m = results["machine"]
    mode = "quick mode" if results.get("quick") else "full bench"
    return (
        f"Measured on {m['nproc']} x {m['cpu']}, Linux {m['kernel']}, Python {m['python']}, "
        f"Celery {m['celery']}, redis-py {m['redis_py']}, Redis {m['redis_server']}; "
        f"git {m['git']}; {mode}, {results.get('duration_s', '?')} s. "
        "Cells are median (p95 over the trials, the bad tail: the low end for rates); "
        "workers use a threads pool of "
        f"{results['plan']['concurrency']}."
    )
