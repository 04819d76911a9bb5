"""The broker variants: a Celery chord, a Celery group join, and agentfleet itself."""

from __future__ import annotations

import gc
import json
from typing import Any

import redis
from celery import chord, group
from celery.result import AsyncResult, GroupResult

from bench import baseline
from bench.agents import (
    AGGREGATE_PREFIX,
    DONE_PREFIX,
    KEY_TTL_S,
    Agent,
    Canonical,
    aggregate_doc,
    canonical_doc,
    failure_reason,
    write_aggregate,
)
from bench.variant import Variant
from orchestrator import Fleet, RunAggregate
from orchestrator.keys import run_key


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

    def release(self, results: list[AsyncResult]) -> None:
        """Unsubscribe from results already collected.

        Celery registers every header result of a chord (and every joined result) with
        its backend and holds it until that object's __del__, which never comes for the
        registry's own copy; at exit it then retries a dead Redis for 20 s per result.
        """
        backend = self.app.backend
        for mapping in backend._pending_results:
            for result in results:
                for waiter in list(mapping.get(result.id, {}).values()):
                    backend.remove_pending_result(waiter)

    def close(self) -> None:
        gc.collect()  # results in reference cycles unsubscribe in __del__: while Redis is up
        self.client.close()
        self.app.close()


class Chord(CeleryVariant):
    """A chord: the header's spawn tasks, then a callback that writes the aggregate."""

    name = "chord"

    def __init__(self, url: str, worker_pid: int) -> None:
        super().__init__(url, worker_pid)
        self.pending: dict[str, AsyncResult] = {}

    def submit(self, run_id: str, agents: list[Agent]) -> None:
        self.pending[run_id] = chord(self.signatures(agents))(self.collect.s(run_id, self.url))

    def wait(self, run_id: str, timeout_s: float) -> Canonical:
        if self.client.blpop([DONE_PREFIX + run_id], timeout_s) is None:
            raise TimeoutError(f"chord {run_id} wrote no aggregate in {timeout_s} s")
        header = self.pending.pop(run_id).parent
        self.release(header.results if header is not None else [])
        return canonical_doc(json.loads(self.client.get(AGGREGATE_PREFIX + run_id) or b"{}"))


# GroupResult.get's default interval of 0.5 s makes every join of fast tasks last ~0.55 s
# here (Celery 5.7, redis-py 8.1): the native join drains the result pub/sub in slices
# of `interval`. 10 ms brings it to ~60 ms, so the baseline is measured at its best.
JOIN_INTERVAL_S = 0.01


class Group(CeleryVariant):
    """A group joined by the submitter (propagate=False), which then writes the aggregate."""

    name = "group"

    def __init__(self, url: str, worker_pid: int) -> None:
        super().__init__(url, worker_pid)
        self.pending: dict[str, GroupResult] = {}

    def submit(self, run_id: str, agents: list[Agent]) -> None:
        self.pending[run_id] = group(self.signatures(agents)).apply_async()

    def wait(self, run_id: str, timeout_s: float) -> Canonical:
        joined = self.pending.pop(run_id)
        outcomes = joined.get(timeout=timeout_s, propagate=False, interval=JOIN_INTERVAL_S)
        self.release(joined.results)
        doc = aggregate_doc(run_id, list(outcomes))
        write_aggregate(self.client, run_id, doc, signal=False)
        return canonical_doc(doc)


class Agentfleet(Variant):
    """agentfleet through its public API, served by real `agentfleet worker` processes."""

    name = "agentfleet"

    def __init__(self, url: str, worker_pids: tuple[int, ...]) -> None:
        self.fleet = Fleet.from_url(url)
        self.worker_pids = worker_pids

    def submit(self, run_id: str, agents: list[Agent]) -> None:
        self.fleet.submit(
            {"run_id": run_id, "agents": [a.spec() for a in agents], "ttl_s": KEY_TTL_S}
        )

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
