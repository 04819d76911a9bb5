"""Faults of Redis: frozen for ten seconds, restarted with its append-only file, or wiped."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest
import redis

from orchestrator import Fleet, RunAggregate
from orchestrator.errors import RunLostError
from orchestrator.models import RunStatus
from tests.conftest import WorkerFactory
from tests.faults import (
    FAST,
    RedisServer,
    agent_processes,
    assert_no_agent_process_left,
    assert_promises,
    copies_overlapped,
    redis_server,
    started_pids,
    traced_agent,
    wait_until,
)

pytestmark = pytest.mark.fault

FREEZE_S = 10.0
AGENTS = [f"a{i}" for i in range(4)]


@pytest.fixture
def waiters() -> Iterator[ThreadPoolExecutor]:
    """Threads in which clients wait for runs while the test breaks Redis."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        yield pool


def submit_and_wait(
    server: RedisServer, traces: Path, pool: ThreadPoolExecutor, script: str
) -> tuple[str, Future[RunAggregate]]:
    """Submit a run of four traced agents and start a client waiting for it in a thread."""
    fleet = Fleet.from_url(server.url)
    handle = fleet.submit({"agents": [traced_agent(traces, n, script) for n in AGENTS]})
    return handle.run_id, pool.submit(wait_then_close, fleet, handle.run_id)


def wait_then_close(fleet: Fleet, run_id: str) -> RunAggregate:
    """Wait for the run's aggregate, then release the client's connections."""
    try:
        return fleet.wait_settled(run_id, 90)
    finally:
        fleet.close()


def redis_answers(server: RedisServer) -> bool:
    """Whether the server answers a PING within half a second."""
    probe = redis.Redis.from_url(server.url, socket_timeout=0.5, socket_connect_timeout=0.5)
    try:
        return bool(probe.ping())
    except redis.RedisError:
        return False
    finally:
        probe.close()


def test_a_run_survives_redis_frozen_for_ten_seconds(
    tmp_path: Path, start_worker: WorkerFactory, traces: Path, waiters: ThreadPoolExecutor
) -> None:
    """SIGSTOP then SIGCONT: every agent settles once and the waiting client gets the run."""
    with redis_server(tmp_path) as server:
        workers = [start_worker(url=server.url, settings=FAST, concurrency=2) for _ in "ab"]
        run_id, waiting = submit_and_wait(server, traces, waiters, "sleep 13; echo ok")
        wait_until(lambda: all(started_pids(traces, n) for n in AGENTS))

        server.freeze()
        frozen_at = time.monotonic()
        assert not redis_answers(server)
        time.sleep(FREEZE_S - (time.monotonic() - frozen_at))
        server.thaw()
        aggregate = waiting.result(timeout=90)
        recovered_s = time.monotonic() - frozen_at - FREEZE_S

        print(
            f"\nRedis frozen {FREEZE_S:.0f} s: run {aggregate.status.value} "
            f"{recovered_s:.2f} s after the thaw; starts per agent "
            f"{[len(started_pids(traces, n)) for n in AGENTS]}"
        )
        assert aggregate.run_id == run_id
        assert aggregate.status is RunStatus.SUCCEEDED
        assert not any(copies_overlapped(traces, n) for n in AGENTS)
        assert_promises(server.client(), aggregate, AGENTS, traces)
        for worker in workers:
            worker.stop()  # before their Redis, so they shut down warm and quickly


def test_a_run_survives_a_restart_of_redis_with_its_append_only_file(
    tmp_path: Path, start_worker: WorkerFactory, traces: Path, waiters: ThreadPoolExecutor
) -> None:
    """Stop and start with appendonly yes: the run completes with nothing lost."""
    with redis_server(tmp_path, "--appendonly", "yes") as server:
        worker = start_worker(url=server.url, settings=FAST, concurrency=2)
        run_id, waiting = submit_and_wait(server, traces, waiters, "sleep 2; echo ok")
        wait_until(lambda: started_pids(traces, "a0"))

        server.stop()
        assert not redis_answers(server)
        time.sleep(2)
        server.start()
        restarted_at = time.monotonic()
        aggregate = waiting.result(timeout=90)

        print(
            f"\nRedis restarted with AOF: run {aggregate.status.value} "
            f"{time.monotonic() - restarted_at:.2f} s after the restart"
        )
        assert aggregate.run_id == run_id
        assert aggregate.status is RunStatus.SUCCEEDED
        assert all(o.output == "ok\n" for o in aggregate.successful)
        assert_promises(server.client(), aggregate, AGENTS, traces)
        worker.stop()  # before its Redis, so it shuts down warm and quickly


def test_a_restart_of_redis_without_persistence_ends_waits_with_run_lost(
    tmp_path: Path, start_worker: WorkerFactory, traces: Path, waiters: ThreadPoolExecutor
) -> None:
    """State wiped by a restart: waiting clients get RunLostError, agent processes stop."""
    with redis_server(tmp_path) as server:
        worker = start_worker(url=server.url, settings=FAST, concurrency=2)
        run_id, waiting = submit_and_wait(server, traces, waiters, "sleep 60")
        wait_until(lambda: len(agent_processes(traces)) >= 2)

        server.stop()
        server.start()
        restarted_at = time.monotonic()
        ended_at: list[float] = []
        waiting.add_done_callback(lambda _: ended_at.append(time.monotonic()))
        stopped_s = wait_until(lambda: not agent_processes(traces), 15)
        lost = waiting.exception(timeout=30)
        lost_s = ended_at[0] - restarted_at
        late = Fleet.from_url(server.url)
        with pytest.raises(RunLostError):
            late.wait_settled(run_id, 30)
        late.close()

        print(
            f"\nRedis restarted empty: waiter got RunLostError after {lost_s:.2f} s, "
            f"agents stopped after {stopped_s:.2f} s"
        )
        assert isinstance(lost, RunLostError)
        assert_no_agent_process_left(traces)
        worker.stop()
