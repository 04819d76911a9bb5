"""The four ways to run a batch of runs and get one aggregate per run.

Each variant takes runs (a run id and its agents), and returns each run's aggregate in
canonical form, once the aggregate is written and the submitter holds it.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from typing import Any

import redis
from celery import chord, group
from celery.result import GroupResult

from bench import baseline
from bench.agents import (
    AGGREGATE_PREFIX,
    DONE_PREFIX,
    Agent,
    Canonical,
    aggregate_doc,
    canonical_doc,
    failure_reason,
    outcome_record,
)
from orchestrator import Fleet, RunAggregate
from orchestrator.keys import run_key

Run = tuple[str, list[Agent]]


class Variant:
    """Submit every run of a batch at once, then wait for each run's aggregate."""

    name = ""
    worker_pids: tuple[int, ...] = ()

    def run_batch(self, runs: list[Run], timeout_s: float) -> list[Canonical]:
        """Run every run of `runs` at once; their aggregates in the same order."""
        for run_id, agents in runs:
            self.submit(run_id, agents)
        return [self.wait(run_id, timeout_s) for run_id, _ in runs]

    def submit(self, run_id: str, agents: list[Agent]) -> None:
        """Accept one run."""
        raise NotImplementedError

    def wait(self, run_id: str, timeout_s: float) -> Canonical:
        """Block until the run's aggregate is written; return it in canonical form."""
        raise NotImplementedError

    def aggregate_key(self, run_id: str) -> str:
        """The Redis key holding the run's aggregate."""
        return AGGREGATE_PREFIX + run_id

    def close(self) -> None:
        """Release connections."""


class Floor(Variant):
    """No broker: asyncio subprocesses gathered in-process, then one Redis write per run."""

    name = "floor"

    def __init__(self, url: str, concurrency: int) -> None:
        self.client = redis.Redis.from_url(url)
        self.concurrency = concurrency
        self.loop = asyncio.new_event_loop()

    def run_batch(self, runs: list[Run], timeout_s: float) -> list[Canonical]:
        batch = self._batch(runs)
        return self.loop.run_until_complete(asyncio.wait_for(batch, timeout_s))

    async def _batch(self, runs: list[Run]) -> list[Canonical]:
        # The same cap on agents running at once as the workers' pool of threads.
        gate = asyncio.Semaphore(self.concurrency)
        return list(await asyncio.gather(*(self._run(rid, agents, gate) for rid, agents in runs)))

    async def _run(self, run_id: str, agents: list[Agent], gate: asyncio.Semaphore) -> Canonical:
        results = await asyncio.gather(*(_spawn(a, gate) for a in agents), return_exceptions=True)
        outcomes = [
            r if isinstance(r, dict) else {"name": a.name, "status": "failed", "error": str(r)}
            for a, r in zip(agents, results, strict=True)
        ]
        doc = aggregate_doc(run_id, outcomes)
        baseline.write_aggregate(self.client, run_id, doc, signal=False)
        return canonical_doc(doc)

    def close(self) -> None:
        self.loop.close()
        self.client.close()


async def _spawn(agent: Agent, gate: asyncio.Semaphore) -> dict[str, Any]:
    async with gate:
        process = await asyncio.create_subprocess_exec(
            *agent.argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE)
        stdout, _ = await process.communicate()
    return outcome_record(agent.name, process.returncode, stdout.decode("utf-8", "replace"))


class CeleryVariant(Variant):
    """The baseline Celery app, served by the bench worker."""

    def __init__(self, url: str, worker_pid: int) -> None:
        self.url = url
        self.app = baseline.create_app(url)
        self.client = redis.Redis.from_url(url)
        self.worker_pids = (worker_pid,)
        self.spawn = self.app.tasks[baseline.SPAWN_TASK]
        self.collect = self.app.tasks[baseline.COLLECT_TASK]

    def signatures(self, agents: list[Agent]) -> list[Any]:
        """One spawn task signature per agent."""
        return [self.spawn.s(a.name, list(a.argv)) for a in agents]

    def close(self) -> None:
        self.client.close()
        self.app.close()


class Chord(CeleryVariant):
    """A chord: the header's spawn tasks, then a callback that writes the aggregate."""

    name = "chord"

    def submit(self, run_id: str, agents: list[Agent]) -> None:
        chord(self.signatures(agents))(self.collect.s(run_id, self.url))

    def wait(self, run_id: str, timeout_s: float) -> Canonical:
        if self.client.blpop([DONE_PREFIX + run_id], timeout_s) is None:
            raise TimeoutError(f"chord {run_id} wrote no aggregate in {timeout_s} s")
        return canonical_doc(json.loads(self.client.get(AGGREGATE_PREFIX + run_id) or b"{}"))


class Group(CeleryVariant):
    """A group joined by the submitter (propagate=False), which then writes the aggregate."""

    name = "group"

    def __init__(self, url: str, worker_pid: int) -> None:
        super().__init__(url, worker_pid)
        self.pending: dict[str, GroupResult] = {}

    def submit(self, run_id: str, agents: list[Agent]) -> None:
        self.pending[run_id] = group(self.signatures(agents)).apply_async()

    def wait(self, run_id: str, timeout_s: float) -> Canonical:
        outcomes = self.pending.pop(run_id).get(timeout=timeout_s, propagate=False)
        doc = aggregate_doc(run_id, list(outcomes))
        baseline.write_aggregate(self.client, run_id, doc, signal=False)
        return canonical_doc(doc)


class Agentfleet(Variant):
    """agentfleet through its public API, served by real `agentfleet worker` processes."""

    name = "agentfleet"

    def __init__(self, url: str, worker_pids: tuple[int, ...]) -> None:
        self.fleet = Fleet.from_url(url)
        self.worker_pids = worker_pids

    def submit(self, run_id: str, agents: list[Agent]) -> None:
        self.fleet.submit({"run_id": run_id, "agents": [a.spec() for a in agents],
                           "ttl_s": baseline.KEY_TTL_S})

    def wait(self, run_id: str, timeout_s: float) -> Canonical:
        return canonical_aggregate(self.fleet.wait_settled(run_id, timeout_s))

    def aggregate_key(self, run_id: str) -> str:
        return run_key(run_id, "aggregate")

    def close(self) -> None:
        self.fleet.close()


def canonical_aggregate(aggregate: RunAggregate) -> Canonical:
    """Reduce an agentfleet aggregate to its canonical form."""
    canonical = Canonical()
    for outcome in aggregate.successful:
        canonical.succeeded[outcome.name] = outcome.output
    for outcome in aggregate.failed:
        code = outcome.error.exit_code if outcome.error else None
        canonical.failed[outcome.name] = failure_reason(code)
    return canonical
