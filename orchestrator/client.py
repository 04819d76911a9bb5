"""The Python API pipelines use: submit a run, wait for its aggregate, inspect, cancel."""

from __future__ import annotations

import time
from functools import cached_property
from typing import Any

import redis
from celery import Celery

from orchestrator.collector import Collector, now_ms
from orchestrator.connection import TRANSIENT_ERRORS, check_reachable, connect
from orchestrator.errors import (
    MultiAgentError,
    RedisUnavailableError,
    RunLostError,
    RunNotFoundError,
    WaitTimeoutError,
)
from orchestrator.models import FailureKind, RunAggregate, RunProgress, RunStatus
from orchestrator.settings import Settings
from orchestrator.submission import SpecSource, submit, validate_run

# A wait blocks on Redis in slices this long, checking between them that the run still
# exists: a Redis restarted without persistence ends the wait instead of hanging it.
WAIT_SLICE_S = 2.0


class RunHandle:
    """A submitted run: wait for it, read it, cancel it."""

    def __init__(self, fleet: Fleet, run_id: str, created: bool) -> None:
        self.fleet = fleet
        self.run_id = run_id
        self.created = created

    def wait(self, timeout_s: float | None = None) -> RunAggregate:
        """The aggregate when every agent succeeded; MultiAgentError when any failed."""
        return self.fleet.wait(self.run_id, timeout_s)

    def result(self) -> RunAggregate | None:
        """The aggregate, or None while the run is still going; never raises for failures."""
        return self.fleet.result(self.run_id)

    def status(self) -> RunProgress:
        """Live progress: settled of total."""
        return self.fleet.status(self.run_id)

    def cancel(self) -> RunAggregate | None:
        """Stop the run; its open agents settle `cancelled`."""
        return self.fleet.cancel(self.run_id)


class Fleet:
    """A connection to one agentfleet deployment (a Redis server and its workers)."""

    def __init__(self, client: redis.Redis, settings: Settings, url: str) -> None:
        self.settings = settings
        self.url = url
        self.collector = Collector(client)

    @classmethod
    def from_url(cls, url: str, **overrides: Any) -> Fleet:
        """Connect to the deployment at `url`; other settings from the environment."""
        settings = Settings(**overrides)
        client = connect(settings, url)
        check_reachable(client, url)
        return cls(client, settings, url)

    @cached_property
    def app(self) -> Celery:
        from workers.app import create_app

        # Publishing needs no task registered; a second registration in one process would
        # warn (DuplicateTaskNameWarning) when a worker runs in it too.
        return create_app(self.settings, self.url, with_tasks=False)

    def submit(self, spec: SpecSource) -> RunHandle:
        """Validate the whole run, then accept it; the same run_id returns the existing run."""
        run = validate_run(spec, self.settings)
        created = self._redis_call(submit, self.collector, self.app, run)
        return RunHandle(self, run.run_id, created)

    def handle(self, run_id: str) -> RunHandle:
        """A handle on a run submitted earlier, perhaps by another process."""
        return RunHandle(self, run_id, created=False)

    def result(self, run_id: str) -> RunAggregate | None:
        """The run's aggregate, or None while it runs; RunNotFoundError for an unknown run."""
        aggregate: RunAggregate | None = self._redis_call(self.collector.aggregate, run_id)
        if aggregate is None and not self._redis_call(self.collector.exists, run_id):
            raise RunNotFoundError(f"no run {run_id!r} in Redis")
        return aggregate

    def status(self, run_id: str) -> RunProgress:
        """Live progress of a run."""
        return self._redis_call(self.collector.progress, run_id)  # type: ignore[no-any-return]

    def cancel(self, run_id: str) -> RunAggregate | None:
        """Stop a run: open agents settle `cancelled`; running ones are killed by workers."""
        outcome = self._redis_call(
            self.collector.finalize, run_id, FailureKind.CANCELLED, "run cancelled", True
        )
        if outcome == "gone":
            raise RunNotFoundError(f"no run {run_id!r} in Redis")
        return self.result(run_id)

    def wait(self, run_id: str, timeout_s: float | None = None) -> RunAggregate:
        """Block until the aggregate is written; raise MultiAgentError if any agent failed."""
        aggregate = self.wait_settled(run_id, timeout_s)
        if aggregate.status is not RunStatus.SUCCEEDED:
            raise MultiAgentError(aggregate)
        return aggregate

    def wait_settled(self, run_id: str, timeout_s: float | None = None) -> RunAggregate:
        """Block until the aggregate is written and return it, whatever its status."""
        give_up_at = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            aggregate = self._settled_or_lost(run_id)
            if aggregate is not None:
                return aggregate
            remaining = WAIT_SLICE_S if give_up_at is None else give_up_at - time.monotonic()
            if remaining <= 0:
                raise WaitTimeoutError(f"run {run_id!r} not finished after {timeout_s} s")
            aggregate = self._block(run_id, min(remaining, WAIT_SLICE_S))
            if aggregate is not None:
                return aggregate

    def _settled_or_lost(self, run_id: str) -> RunAggregate | None:
        try:
            found = self.collector.aggregate_or_deadline(run_id)
        except RunNotFoundError as err:
            raise RunLostError(
                f"run {run_id!r} is not in Redis (never submitted, expired, "
                "or lost in a restart without persistence)"
            ) from err
        except TRANSIENT_ERRORS:
            return None  # Redis is paused or restarting: keep waiting until the timeout.

        if isinstance(found, RunAggregate):
            return found

        if found < now_ms() - 1000:
            # No reaper finalized the run (no worker is up): the waiter does it itself.
            self.collector.finalize(
                run_id, FailureKind.DEADLINE_EXCEEDED, "the run's deadline passed", cancel=False
            )
        return None

    def _block(self, run_id: str, block_s: float) -> RunAggregate | None:
        try:
            return self.collector.wait_aggregate(run_id, block_s)
        except TRANSIENT_ERRORS:
            time.sleep(min(block_s, 0.5))
            return None

    def _redis_call(self, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except redis.AuthenticationError as err:
            raise RedisUnavailableError("Redis refused the credentials") from err
        except redis.RedisError as err:
            raise RedisUnavailableError(f"Redis error: {str(err).splitlines()[0]}") from err

    def close(self) -> None:
        """Release the Redis connections, the broker's included."""
        if "app" in self.__dict__:
            self.app.close()
        self.collector.redis.close()
