"""The interface every variant offers the bench: run a batch of runs, get their aggregates."""

from __future__ import annotations

from bench.agents import AGGREGATE_PREFIX, Agent, Canonical

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
