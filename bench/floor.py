"""The floor: no broker, no worker. Agents are asyncio subprocesses of the submitter,
gathered with return_exceptions=True; each run costs one Redis write, its aggregate.

`python -m bench.floor URL AGENTS SLEEP_S` runs one run in a fresh interpreter and prints
its peak RSS: the floor's figure for worker memory, with nothing else loaded.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import redis

from bench.agents import (
    Agent,
    Canonical,
    aggregate_doc,
    canonical_doc,
    expected,
    make_agents,
    outcome_record,
    write_aggregate,
)
from bench.variant import Run, Variant

REPO = Path(__file__).resolve().parent.parent


class Floor(Variant):
    """In-process asyncio subprocesses, at most `concurrency` at once, like a worker pool."""

    name = "floor"

    def __init__(self, url: str, concurrency: int) -> None:
        self.client = redis.Redis.from_url(url)
        self.concurrency = concurrency
        self.loop = asyncio.new_event_loop()

    def run_batch(self, runs: list[Run], timeout_s: float) -> list[Canonical]:
        batch = asyncio.wait_for(self._batch(runs), timeout_s)
        return self.loop.run_until_complete(batch)

    async def _batch(self, runs: list[Run]) -> list[Canonical]:
        gate = asyncio.Semaphore(self.concurrency)
        return list(await asyncio.gather(*(self._run(rid, agents, gate) for rid, agents in runs)))

    async def _run(self, run_id: str, agents: list[Agent], gate: asyncio.Semaphore) -> Canonical:
        results = await asyncio.gather(*(_spawn(a, gate) for a in agents), return_exceptions=True)
        outcomes = [
            r if isinstance(r, dict) else {"name": a.name, "status": "failed", "error": str(r)}
            for a, r in zip(agents, results, strict=True)
        ]
        doc = aggregate_doc(run_id, outcomes)
        write_aggregate(self.client, run_id, doc, signal=False)
        return canonical_doc(doc)

    def close(self) -> None:
        self.loop.close()
        self.client.close()


async def _spawn(agent: Agent, gate: asyncio.Semaphore) -> dict[str, Any]:
    async with gate:
        process = await asyncio.create_subprocess_exec(
            *agent.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        stdout, _ = await process.communicate()
    return outcome_record(agent.name, process.returncode, stdout.decode("utf-8", "replace"))


def probe(url: str, count: int, sleep_s: float) -> dict[str, Any]:
    """One run of `count` agents all at once; this process's peak RSS and the check."""
    agents = make_agents(count, sleep_s)
    floor = Floor(url, concurrency=count)
    idle_mib = _status_mib("VmRSS")
    started = time.perf_counter()
    result = floor.run_batch([(f"floor-probe-{uuid.uuid4().hex[:8]}", agents)], 600.0)
    wall_s = time.perf_counter() - started
    floor.close()
    return {
        "peak_rss_mib": _status_mib("VmHWM"),
        "idle_rss_mib": idle_mib,
        "wall_s": wall_s,
        "check": result[0] == expected(agents),
    }


def _status_mib(field: str) -> float:
    with open(f"/proc/{os.getpid()}/status", encoding="ascii") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field)) / 1024


def run_probe(url: str, count: int, sleep_s: float) -> dict[str, Any]:
    """Run `probe` in a fresh interpreter, so the floor's memory is the floor's alone."""
    argv = [sys.executable, "-m", "bench.floor", url, str(count), f"{sleep_s:g}"]
    done = subprocess.run(argv, capture_output=True, check=True, timeout=600, cwd=REPO)
    return dict(json.loads(done.stdout.decode().strip().splitlines()[-1]))


if __name__ == "__main__":
    print(json.dumps(probe(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]))))
