"""The collector on a real Redis: each outcome settles once, the aggregate is written once."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from orchestrator import keys
from orchestrator.collector import Collector, Lease
from orchestrator.connection import connect
from orchestrator.errors import RunNotFoundError
from orchestrator.models import (
    AgentError,
    AgentOutcome,
    FailureKind,
    OutcomeStatus,
    RunAggregate,
    RunSpec,
    RunStatus,
    Usage,
)
from orchestrator.settings import Settings
from tests.conftest import command_agent


@pytest.fixture(params=[False, True], ids=["pooled", "per-thread"])
def collector(redis_url: str, request: pytest.FixtureRequest) -> Iterator[Collector]:
    """A Collector of the session's private Redis, as clients and as workers build it."""
    client = connect(Settings(), redis_url)
    yield Collector(client, per_thread=request.param)
    client.close()


def make_run(collector: Collector, run_id: str, names: list[str]) -> RunSpec:
    """Create a run of `command` agents named `names`."""
    spec = RunSpec.model_validate(
        {
            "run_id": run_id,
            "labels": {"team": "qa"},
            "agents": [command_agent(n, "true") for n in names],
        }
    )
    assert collector.create(spec, [])
    return spec


def lease_then_lose(
    collector: Collector, client: redis.Redis, run_id: str, attempt: int, token: str
) -> Lease:
    """Lease agent `a` for `attempt`, then drop the lease key as if its holder had died."""
    lease = collector.acquire(run_id, "a", attempt, token, ttl_s=10)
    assert isinstance(lease, Lease)
    client.delete(keys.lease_key(run_id, "a"))
    return lease


def outcome(name: str, ok: bool = True, **fields: object) -> AgentOutcome:
    """An outcome of a `command` agent."""
    if ok:
        return AgentOutcome(
            name=name,
            platform="command",
            status=OutcomeStatus.SUCCEEDED,
            output=f"out {name}",
            **fields,
        )  # type: ignore[arg-type]
    error = AgentError(kind=FailureKind.EXIT_NONZERO, message="exit 1", exit_code=1)
    return AgentOutcome(
        name=name, platform="command", status=OutcomeStatus.FAILED, error=error, **fields
    )  # type: ignore[arg-type]


def test_the_settle_that_completes_the_set_writes_the_aggregate(
    collector: Collector, run_id: str
) -> None:
    """Only the last settle returns complete, and the aggregate holds every outcome."""
    make_run(collector, run_id, ["a", "b", "c"])

    results = [
        collector.settle(run_id, outcome("a")),
        collector.settle(run_id, outcome("b")),
        collector.settle(run_id, outcome("c", ok=False)),
    ]
    aggregate = collector.aggregate(run_id)

    assert results == ["settled", "settled", "complete"]
    assert aggregate is not None
    assert aggregate.status is RunStatus.PARTIAL
    assert aggregate.message == "1/3 agents failed"
    assert [o.name for o in aggregate.successful] == ["a", "b"]
    assert [o.name for o in aggregate.failed] == ["c"]
    assert aggregate.labels == {"team": "qa"}


def test_a_waiter_reads_the_deadline_until_the_aggregate_is_written(
    collector: Collector, run_id: str
) -> None:
    """One read gives the deadline while the run goes, the aggregate after, or not found."""
    spec = make_run(collector, run_id, ["a"])
    deadline_ms = int(collector.progress(run_id).deadline_at.timestamp() * 1000)

    running = collector.aggregate_or_deadline(run_id)
    collector.settle(run_id, outcome("a"))
    settled = collector.aggregate_or_deadline(run_id)

    assert running == deadline_ms
    assert isinstance(settled, RunAggregate)
    assert settled.run_id == spec.run_id
    with pytest.raises(RunNotFoundError):
        collector.aggregate_or_deadline(f"{run_id}-unknown")


def test_a_repeated_settle_is_a_no_op(collector: Collector, run_id: str) -> None:
    """A redelivered settle neither changes the outcome nor counts twice."""
    make_run(collector, run_id, ["a", "b"])
    collector.settle(run_id, outcome("a"))

    second = collector.settle(run_id, outcome("a", ok=False))

    assert second == "duplicate"
    assert collector.progress(run_id).settled == 1
    assert collector.progress(run_id).failed_count == 0


def test_the_aggregate_is_written_exactly_once(
    collector: Collector, redis_client: redis.Redis, run_id: str
) -> None:
    """Settles and finalizes after completion leave the first aggregate untouched."""
    make_run(collector, run_id, ["a"])
    collector.settle(run_id, outcome("a"))
    first = redis_client.get(keys.run_key(run_id, "aggregate"))

    collector.settle(run_id, outcome("a", ok=False))
    finalized = collector.finalize(run_id, FailureKind.CANCELLED, "late", cancel=True)

    assert finalized == "done"
    assert redis_client.get(keys.run_key(run_id, "aggregate")) == first
    assert redis_client.llen(keys.run_key(run_id, "done")) == 1


@pytest.mark.parametrize(
    ("oks", "status"),
    [
        ([True, True], RunStatus.SUCCEEDED),
        ([True, False], RunStatus.PARTIAL),
        ([False, False], RunStatus.FAILED),
    ],
)
def test_run_status_follows_the_outcomes(
    collector: Collector, run_id: str, oks: list[bool], status: RunStatus
) -> None:
    """All succeeded, some failed and all failed give succeeded, partial and failed."""
    make_run(collector, run_id, ["a", "b"])

    for name, ok in zip(["a", "b"], oks, strict=True):
        collector.settle(run_id, outcome(name, ok=ok))

    aggregate = collector.aggregate(run_id)
    assert aggregate is not None
    assert aggregate.status is status
    assert aggregate.succeeded_count + aggregate.failed_count == 2


def test_cancel_settles_open_agents_and_keeps_finished_ones(
    collector: Collector, run_id: str
) -> None:
    """Finalizing as cancelled fills only the open agents and marks the run cancelled."""
    make_run(collector, run_id, ["a", "b", "c"])
    collector.settle(run_id, outcome("a"))

    collector.finalize(run_id, FailureKind.CANCELLED, "run cancelled", cancel=True)
    aggregate = collector.aggregate(run_id)

    assert aggregate is not None
    assert aggregate.status is RunStatus.CANCELLED
    assert aggregate.outcome("a").output == "out a"
    assert aggregate.outcome("b").error is not None
    assert aggregate.outcome("b").error.kind is FailureKind.CANCELLED
    assert aggregate.failed_count == 2


def test_usage_and_cost_are_totalled_for_the_run(collector: Collector, run_id: str) -> None:
    """Token counts and costs of outcomes add up in the aggregate."""
    make_run(collector, run_id, ["a", "b"])

    for name in ("a", "b"):
        collector.settle(
            run_id, outcome(name, usage=Usage(input_tokens=10, output_tokens=3), cost_usd=0.25)
        )

    aggregate = collector.aggregate(run_id)
    assert aggregate is not None
    assert aggregate.usage.input_tokens == 20
    assert aggregate.usage.output_tokens == 6
    assert aggregate.cost_usd == pytest.approx(0.5)


def test_a_lease_is_exclusive_and_refused_after_settling(
    collector: Collector, run_id: str
) -> None:
    """A second holder is refused while the first holds; nobody leases a settled agent."""
    make_run(collector, run_id, ["a"])

    first = collector.acquire(run_id, "a", 1, "host/one", ttl_s=10)
    second = collector.acquire(run_id, "a", 1, "host/two", ttl_s=10)
    again = collector.acquire(run_id, "a", 1, "host/one", ttl_s=10)
    collector.settle(run_id, outcome("a"), "host/one")
    late = collector.acquire(run_id, "a", 1, "host/three", ttl_s=10)

    assert isinstance(first, Lease)
    assert first.agent.name == "a"
    assert second == "busy"
    assert isinstance(again, Lease)
    assert late == "settled"


def test_an_expired_lease_is_requeued_then_settled_worker_lost_at_the_cap(
    collector: Collector, redis_client: redis.Redis, run_id: str
) -> None:
    """Expired attempts move to the next attempt until max_attempts, then worker_lost."""
    make_run(collector, run_id, ["a"])
    lease = lease_then_lose(collector, redis_client, run_id, 1, "host/one")

    first = collector.requeue(lease.member, max_attempts=2)
    stale = collector.acquire(run_id, "a", 1, "host/late", ttl_s=10)
    retry = lease_then_lose(collector, redis_client, run_id, 2, "host/two")
    last = collector.requeue(retry.member, max_attempts=2)

    aggregate = collector.aggregate(run_id)
    assert (first.action, first.attempt) == ("requeue", 2)
    assert stale == "stale"
    assert last.action == "lost"
    assert aggregate is not None
    assert aggregate.outcome("a").error is not None
    assert aggregate.outcome("a").error.kind is FailureKind.WORKER_LOST
    assert aggregate.outcome("a").attempts == 2


def test_a_thousand_agent_aggregate_keeps_spec_order(collector: Collector, run_id: str) -> None:
    """Large runs assemble in chunks and list outcomes in the order of the spec."""
    names = [f"agent-{i:04d}" for i in range(1000)]
    make_run(collector, run_id, names)

    for name in reversed(names):
        collector.settle(run_id, outcome(name))

    aggregate = collector.aggregate(run_id)
    assert aggregate is not None
    assert [o.name for o in aggregate.successful] == names


def test_a_scheduled_attempt_that_never_started_is_published_again(
    collector: Collector, redis_client: redis.Redis, run_id: str
) -> None:
    """An expired attempt-1 lease seen after attempt 2 was scheduled re-publishes attempt 2."""
    make_run(collector, run_id, ["a"])
    lease = lease_then_lose(collector, redis_client, run_id, 1, "host/one")
    first = collector.requeue(lease.member, max_attempts=3)

    again = collector.requeue(lease.member, max_attempts=3)

    assert (first.action, first.attempt) == ("requeue", 2)
    assert (again.action, again.platform, again.attempt) == ("requeue", "command", 2)


def test_waiting_returns_the_aggregate_once_written_and_none_before(
    collector: Collector, run_id: str
) -> None:
    """A wait that times out gives None; after the last settle it gives the aggregate."""
    make_run(collector, run_id, ["a"])

    before = collector.wait_aggregate(run_id, 0.05)
    collector.settle(run_id, outcome("a"))
    after = collector.wait_aggregate(run_id, 0.05)
    again = collector.wait_aggregate(run_id, 0.05)

    assert before is None
    assert after is not None and after.succeeded_count == 1
    assert again == after  # the done signal stays for every later waiter
