"""Faults of workers: killed, sent a message twice, shut down warm, or cancelled under."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from orchestrator import Fleet, keys
from orchestrator.collector import Collector, Lease
from orchestrator.models import (
    AgentError,
    AgentOutcome,
    FailureKind,
    OutcomeStatus,
    RunSpec,
    RunStatus,
)
from orchestrator.submission import publish
from tests.conftest import WorkerFactory
from tests.faults import (
    FAST,
    RedisServer,
    assert_promises,
    copies_overlapped,
    pid_alive,
    started_pids,
    traced_agent,
    wait_until,
)

pytestmark = pytest.mark.fault

# The first copy of an agent sleeps long; a copy that finds an earlier start finishes at once.
FIRST_COPY_SLEEPS = "[ $(wc -l < {pids}) -gt 1 ] || sleep 60; echo ran"


@pytest.fixture
def fleet_of(server: RedisServer) -> Iterator[Fleet]:
    """A Fleet client of the test's private Redis."""
    client = Fleet.from_url(server.url)
    yield client
    client.close()


def rerun_agent(traces: Path, name: str) -> dict[str, object]:
    """An agent whose first copy hangs and whose later copies finish at once."""
    script = FIRST_COPY_SLEEPS.format(pids=traces / f"{name}.pids")
    return traced_agent(traces, name, script)


@pytest.mark.parametrize(
    ("max_attempts", "starts", "kind"),
    [(2, 2, None), (1, 1, FailureKind.WORKER_LOST)],
    ids=["re-run", "attempt-cap"],
)
def test_a_killed_workers_agents_die_with_it_and_run_again_or_settle_worker_lost(
    server: RedisServer,
    fleet_of: Fleet,
    start_worker: WorkerFactory,
    traces: Path,
    max_attempts: int,
    starts: int,
    kind: FailureKind | None,
) -> None:
    """SIGKILL of a worker: its agents die at once, then re-run elsewhere or settle lost."""
    settings = {**FAST, "max_attempts": str(max_attempts)}
    doomed = start_worker(url=server.url, settings=settings, concurrency=2)
    names = ["a", "b"]
    handle = fleet_of.submit({"agents": [rerun_agent(traces, n) for n in names]})
    wait_until(lambda: all(started_pids(traces, n) for n in names))
    first_copies = [started_pids(traces, n)[0] for n in names]
    survivor = start_worker(url=server.url, settings=settings, concurrency=2)

    doomed.process.send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    assert doomed.process.wait(5) == -signal.SIGKILL
    died_s = wait_until(lambda: not any(pid_alive(pid) for pid in first_copies), 5)
    aggregate = fleet_of.wait_settled(handle.run_id, timeout_s=30)
    settled_s = time.monotonic() - killed_at

    print(
        f"\nworker SIGKILL: agents dead after {died_s:.2f} s, run settled after "
        f"{settled_s:.2f} s (max_attempts={max_attempts})"
    )
    assert died_s < 1.0  # sooner than any lease could expire: the worker's keeper did it
    assert settled_s < 10.0
    wait_until(lambda: survivor.log().count('"event": "lease_expired"') >= len(names), 5)
    for name in names:
        outcome = aggregate.outcome(name)
        assert len(started_pids(traces, name)) == starts
        assert not copies_overlapped(traces, name)
        assert outcome.attempts == max_attempts
        assert (outcome.error.kind if outcome.error else None) == kind
    assert_promises(server.client(), aggregate, names, traces)


def test_a_message_delivered_twice_does_not_start_its_agent_again(
    server: RedisServer,
    fleet_of: Fleet,
    start_worker: WorkerFactory,
    traces: Path,
) -> None:
    """A redelivered spawn finds the agent leased (while it runs) or settled (after)."""
    # At debug level Celery logs every message it receives, which this test counts.
    debug = {**FAST, "log_level": "debug"}
    worker = start_worker(url=server.url, settings=debug, concurrency=2)
    client = server.client()
    handle = fleet_of.submit({"agents": [traced_agent(traces, "a", "sleep 2; echo ran")]})
    wait_until(lambda: started_pids(traces, "a"))

    replay_unacked(client)
    wait_until(lambda: "busy" in worker.log())
    aggregate = fleet_of.wait_settled(handle.run_id, timeout_s=30)
    replay_message(fleet_of, aggregate.run_id, "a")
    wait_until(lambda: '"why": "settled"' in worker.log())

    received = re.findall(r"agentfleet\.spawn\[([0-9a-f-]+)\] received", worker.log())
    assert len(received) == 3
    assert received.count(received[0]) == 2  # the very same message, delivered twice
    assert len(started_pids(traces, "a")) == 1
    assert aggregate.outcome("a").output == "ran\n"
    assert_promises(client, aggregate, ["a"], traces)


def replay_unacked(client: redis.Redis) -> None:
    """Put an unacknowledged message back on its queue, as kombu does at its visibility timeout."""
    wait_until(lambda: client.hlen("unacked"))
    payload, _exchange, routing_key = json.loads(client.hvals("unacked")[0])
    client.lpush(routing_key, json.dumps(payload))


def replay_message(fleet: Fleet, run_id: str, name: str) -> None:
    """Publish the first spawn of agent `name` once more, the way a replay would."""
    publish(fleet.app, fleet.collector, run_id, [(name, "command", 1)])


def test_a_warm_shutdown_finishes_running_agents_and_hands_back_the_rest(
    server: RedisServer,
    fleet_of: Fleet,
    start_worker: WorkerFactory,
    traces: Path,
) -> None:
    """SIGTERM: running agents finish and settle, waiting ones run on the next worker, once."""
    leaving = start_worker(url=server.url, settings=FAST, concurrency=2)
    names = [f"a{i}" for i in range(4)]
    agents = [traced_agent(traces, n, "sleep 2; echo ran") for n in names]
    handle = fleet_of.submit({"agents": agents})
    wait_until(lambda: sum(bool(started_pids(traces, n)) for n in names) == 2)

    leaving.process.send_signal(signal.SIGTERM)
    terminated_at = time.monotonic()
    assert leaving.process.wait(20) == 0
    print(f"\nwarm shutdown: worker exited {time.monotonic() - terminated_at:.2f} s after SIGTERM")
    finished_early = [n for n in names if started_pids(traces, n)]
    start_worker(url=server.url, settings=FAST, concurrency=2)
    aggregate = fleet_of.wait_settled(handle.run_id, timeout_s=30)

    assert "Warm shutdown" in leaving.log()
    assert len(finished_early) == 2
    assert leaving.log().count('"event": "agent_settled"') == 2
    assert aggregate.status is RunStatus.SUCCEEDED
    for name in names:
        assert len(started_pids(traces, name)) == 1
        assert aggregate.outcome(name).attempts == 1
    assert_promises(server.client(), aggregate, names, traces)


def test_the_aggregate_is_written_even_if_the_settling_process_dies_at_once(
    server: RedisServer,
    traces: Path,
) -> None:
    """A process killed right after sending the completing settle still leaves one aggregate."""
    client = server.client()
    collector = Collector(client)
    spec = stored_run(collector, ["a", "b"])
    collector.settle(spec.run_id, outcome_of("a"))

    died = settle_then_die(server, collector, spec.run_id, outcome_of("b"))

    assert died.returncode == -signal.SIGKILL
    assert died.stdout == b"sent\n"
    aggregate = collector.aggregate(spec.run_id)
    assert aggregate is not None
    assert aggregate.status is RunStatus.SUCCEEDED
    assert collector.settle(spec.run_id, outcome_of("b")) == "duplicate"
    assert collector.finalize(spec.run_id, FailureKind.CANCELLED, "late", cancel=True) == "done"
    assert_promises(client, aggregate, ["a", "b"], traces)


def stored_run(collector: Collector, names: list[str]) -> RunSpec:
    """A run of `command` agents written to Redis without messages: no worker starts them."""
    spec = RunSpec.model_validate(
        {"agents": [{"name": n, "platform": "command", "argv": ["true"]} for n in names]}
    )
    collector.create(spec, [])
    return spec


def outcome_of(name: str) -> AgentOutcome:
    """A succeeded outcome of agent `name`."""
    return AgentOutcome(
        name=name,
        platform="command",
        status=OutcomeStatus.SUCCEEDED,
        output=f"out-{name}",
        attempts=1,
    )


SETTLE_AND_DIE = """
import os, signal, sys, redis
connection = redis.Connection(host="127.0.0.1", port=int(sys.argv[1]))
connection.connect()
connection.send_command(*sys.argv[2:])
print("sent", flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def settle_then_die(
    server: RedisServer, collector: Collector, run_id: str, outcome: AgentOutcome
) -> subprocess.CompletedProcess[bytes]:
    """Send the settle of `outcome` from a process that is SIGKILLed before any reply."""
    script_keys = keys.run_script_keys(run_id, outcome.name)
    args = ["settle", outcome.name, outcome.model_dump_json(), "0", "", "2026-01-01T00:00:00Z", ""]
    command = ["EVALSHA", collector._run.sha, str(len(script_keys)), *script_keys, *args]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    return subprocess.run(
        [sys.executable, "-c", SETTLE_AND_DIE, str(server.port), *command],
        capture_output=True,
        env=env,
        timeout=30,
        check=False,
    )


def test_a_copy_that_lost_its_lease_cannot_settle_the_agent(
    server: RedisServer,
    traces: Path,
) -> None:
    """A worker cut off past its lease reports late: its outcome is refused, the next counts."""
    client = server.client()
    collector = Collector(client)
    spec = stored_run(collector, ["a"])
    cut_off = collector.acquire(spec.run_id, "a", 1, "host/cut-off", ttl_s=0.05)
    assert isinstance(cut_off, Lease)
    wait_until(lambda: not client.exists(keys.lease_key(spec.run_id, "a")))

    decision = collector.requeue(cut_off.member, max_attempts=3)
    late = collector.settle(spec.run_id, failed_outcome("a"), cut_off.token, cut_off.member)
    retry = collector.acquire(spec.run_id, "a", 2, "host/retry", ttl_s=10)
    assert isinstance(retry, Lease)
    final = collector.settle(spec.run_id, outcome_of("a"), retry.token, retry.member)

    assert (decision.action, decision.attempt) == ("requeue", 2)
    assert late == "stale"
    assert final == "complete"
    aggregate = collector.aggregate(spec.run_id)
    assert aggregate is not None
    assert aggregate.status is RunStatus.SUCCEEDED
    assert_promises(client, aggregate, ["a"], traces)


def failed_outcome(name: str) -> AgentOutcome:
    """The outcome a copy killed by SIGKILL reports."""
    error = AgentError(kind=FailureKind.EXIT_NONZERO, message="killed by signal 9", signal=9)
    return AgentOutcome(name=name, platform="command", status=OutcomeStatus.FAILED, error=error)


def test_cancel_mid_flight_stops_every_agent_and_writes_one_aggregate(
    server: RedisServer,
    fleet_of: Fleet,
    start_worker: WorkerFactory,
    traces: Path,
) -> None:
    """Cancel: running agent processes stop, open agents settle cancelled, one aggregate."""
    worker = start_worker(url=server.url, settings=FAST, concurrency=2)
    names = ["a", "b", "c"]
    handle = fleet_of.submit({"agents": [traced_agent(traces, n, "sleep 60") for n in names]})
    wait_until(lambda: sum(len(started_pids(traces, n)) for n in names) == 2)
    running = [pid for n in names for pid in started_pids(traces, n)]

    aggregate = handle.cancel()
    stopped_s = wait_until(lambda: not any(pid_alive(pid) for pid in running), 10)

    print(f"\ncancel: aggregate at once, running agents stopped after {stopped_s:.2f} s")
    assert aggregate is not None
    assert aggregate.status is RunStatus.CANCELLED
    assert {o.error.kind for o in aggregate.failed if o.error} == {FailureKind.CANCELLED}
    assert len(running) == 2
    wait_until(
        lambda: worker.log().count("agent_settled") + worker.log().count("spawn_skipped") >= 3
    )
    assert sum(len(started_pids(traces, n)) for n in names) == 2
    assert_promises(server.client(), aggregate, names, traces)
