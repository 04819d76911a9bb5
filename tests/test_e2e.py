"""End to end through real `agentfleet worker` processes on a private Redis."""

from __future__ import annotations

import os
import threading
import time
from datetime import UTC, datetime
from typing import Any
from unittest import mock

import pytest
import redis

from orchestrator import (
    FailureKind,
    Fleet,
    MultiAgentError,
    RunStatus,
)
from tests.conftest import WorkerFactory, command_agent

pytestmark = pytest.mark.e2e


def test_a_run_whose_agents_all_succeed_returns_every_output(
    fleet: Fleet, start_worker: WorkerFactory, run_id: str
) -> None:
    """wait() returns the aggregate with each agent's stdout when all succeed."""
    start_worker("command")
    agents = [command_agent(f"r{i}", f"echo out-{i}") for i in range(5)]

    aggregate = fleet.submit({"run_id": run_id, "agents": agents}).wait(timeout_s=30)

    assert aggregate.status is RunStatus.SUCCEEDED
    assert aggregate.message == "all 5 agents succeeded"
    assert [o.output for o in aggregate.successful] == [f"out-{i}\n" for i in range(5)]
    assert all(o.attempts == 1 and o.worker for o in aggregate.successful)


def test_a_partial_run_raises_with_the_successes_still_usable(
    fleet: Fleet, start_worker: WorkerFactory, run_id: str
) -> None:
    """One failure raises MultiAgentError carrying both the outputs and the reason."""
    start_worker("command")
    agents = [command_agent("good", "echo fine"), command_agent("bad", "echo boom >&2; exit 3")]

    with pytest.raises(MultiAgentError) as caught:
        fleet.submit({"run_id": run_id, "agents": agents}).wait(timeout_s=30)

    error = caught.value
    assert error.aggregate.status is RunStatus.PARTIAL
    assert [o.output for o in error.successful] == ["fine\n"]
    failure = error.failed[0].error
    assert failure is not None
    assert (failure.kind, failure.exit_code) == (FailureKind.EXIT_NONZERO, 3)
    assert "boom" in failure.stderr_tail


def test_a_run_whose_agents_all_fail_reports_each_reason(
    fleet: Fleet, start_worker: WorkerFactory, run_id: str
) -> None:
    """A missing binary and a non-zero exit both come back as failed outcomes."""
    start_worker("command")
    agents = [
        {"name": "missing", "platform": "command", "argv": ["no-such-binary-here"]},
        command_agent("exits", "exit 9"),
    ]

    aggregate = fleet.submit({"run_id": run_id, "agents": agents}).fleet.wait_settled(
        run_id, timeout_s=30
    )

    assert aggregate.status is RunStatus.FAILED
    kinds = {o.name: o.error.kind for o in aggregate.failed if o.error}
    assert kinds == {"missing": FailureKind.SPAWN_ERROR, "exits": FailureKind.EXIT_NONZERO}


def test_a_timeout_kills_the_agent_and_its_children(
    fleet: Fleet, start_worker: WorkerFactory, run_id: str, tmp_path: object
) -> None:
    """An agent past timeout_s settles `timeout` and its child process is gone."""
    start_worker("command")
    script = "sleep 300 & echo $! ; wait"
    agents = [command_agent("slow", script, timeout_s=1)]

    aggregate = fleet.submit({"run_id": run_id, "agents": agents}).fleet.wait_settled(
        run_id, timeout_s=30
    )

    outcome = aggregate.outcome("slow")
    assert outcome.error is not None
    assert outcome.error.kind is FailureKind.TIMEOUT
    child_pid = int(outcome.output.split()[0])
    assert not pid_alive(child_pid)


def pid_alive(pid: int) -> bool:
    """Whether `pid` is a live (non-zombie) process."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


def test_submitting_the_same_run_id_twice_returns_the_existing_run(
    fleet: Fleet, start_worker: WorkerFactory, run_id: str, redis_client: redis.Redis
) -> None:
    """The second submit is accepted as the same run and enqueues nothing."""
    start_worker("command")
    spec = {"run_id": run_id, "agents": [command_agent("a", "echo once")]}
    first = fleet.submit(spec)
    first.wait(timeout_s=30)

    second = fleet.submit({**spec, "agents": [command_agent("a", "echo twice")]})

    assert (first.created, second.created) == (True, False)
    assert second.wait(timeout_s=5).outcome("a").output == "once\n"
    assert redis_client.llen("agentfleet.command") == 0


def test_a_platform_without_workers_is_settled_by_the_deadline_finalizer(
    fleet: Fleet, start_worker: WorkerFactory, run_id: str
) -> None:
    """With no worker for its platform, the run ends at its deadline, all agents failed."""
    start_worker("command")
    agents = [
        command_agent("served", "echo hi"),
        {"name": "orphan", "platform": "opencode", "prompt": "hello"},
    ]

    aggregate = fleet.submit(
        {"run_id": run_id, "deadline_s": 2, "agents": agents}
    ).fleet.wait_settled(run_id, timeout_s=30)

    assert aggregate.status is RunStatus.PARTIAL
    assert aggregate.outcome("served").output == "hi\n"
    orphan = aggregate.outcome("orphan").error
    assert orphan is not None
    assert orphan.kind is FailureKind.DEADLINE_EXCEEDED


def test_a_run_with_no_worker_at_all_ends_when_its_waiter_sees_the_deadline(
    fleet: Fleet, run_id: str
) -> None:
    """A waiter finalizes a run past its deadline itself when no reaper is running."""
    spec = {"run_id": run_id, "deadline_s": 1, "agents": [command_agent("a", "true")]}

    aggregate = fleet.submit(spec).fleet.wait_settled(run_id, timeout_s=30)

    assert aggregate.status is RunStatus.FAILED
    assert aggregate.failed[0].error is not None
    assert aggregate.failed[0].error.kind is FailureKind.DEADLINE_EXCEEDED


def test_waiting_blocks_on_redis_instead_of_polling(
    fleet: Fleet, start_worker: WorkerFactory, run_id: str
) -> None:
    """A 3 s wait sends a handful of Redis commands and wakes right after the aggregate."""
    start_worker("command")
    handle = fleet.submit({"run_id": run_id, "agents": [command_agent("a", "sleep 3")]})
    client = fleet.collector.redis
    sent: list[str] = []
    send, make_pipeline = client.execute_command, client.pipeline

    def spied_pipeline(*args: Any, **kwargs: Any) -> Any:
        pipe = make_pipeline(*args, **kwargs)
        queue = pipe.execute_command
        pipe.execute_command = lambda *a, **k: sent.append(a[0]) or queue(*a, **k)
        return pipe

    with (
        mock.patch.object(
            client, "execute_command", lambda *a, **k: sent.append(a[0]) or send(*a, **k)
        ),
        mock.patch.object(client, "pipeline", spied_pipeline),
    ):
        aggregate = handle.fleet.wait_settled(run_id, timeout_s=30)
    woke_at = datetime.now(UTC)

    assert sent.count("BLMOVE") >= 1
    assert len(sent) <= 12
    assert (woke_at - aggregate.finished_at).total_seconds() < 0.5


def test_cancel_stops_running_agents_and_settles_them_cancelled(
    fleet: Fleet, start_worker: WorkerFactory, run_id: str
) -> None:
    """A cancelled run ends at once; its running agent process is stopped."""
    start_worker("command", settings={"lease_ttl_s": "3"})
    handle = fleet.submit(
        {
            "run_id": run_id,
            "agents": [
                command_agent("quick", "echo done"),
                command_agent("long", "echo $$; sleep 301"),
            ],
        }
    )
    wait_until(lambda: handle.status().settled == 1)

    aggregate = handle.cancel()

    assert aggregate is not None
    assert aggregate.status is RunStatus.CANCELLED
    assert aggregate.outcome("quick").output == "done\n"
    long_error = aggregate.outcome("long").error
    assert long_error is not None
    assert long_error.kind is FailureKind.CANCELLED
    wait_until(lambda: not any_process_matching("sleep 301"), timeout_s=10)


def any_process_matching(text: str) -> bool:
    """Whether any live process has `text` in its command line."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                if text.encode() in cmdline.read().replace(b"\0", b" ") and pid_alive(int(pid)):
                    return True
        except OSError:
            continue
    return False


def wait_until(condition: object, timeout_s: float = 15.0) -> None:
    """Block until `condition()` is true, or fail the test."""
    assert callable(condition)
    give_up_at = time.monotonic() + timeout_s
    event = threading.Event()
    while not condition():
        assert time.monotonic() < give_up_at, "condition not met in time"
        event.wait(0.05)
