"""Faults of agents: deaf to SIGTERM, escaping into a new session, flooding, garbling, absent."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from orchestrator import Fleet, keys
from orchestrator.models import AgentOutcome, FailureKind, RunAggregate
from tests.conftest import WorkerFactory, WorkerProcess
from tests.faults import (
    FAST,
    RedisServer,
    assert_promises,
    pid_alive,
    rss_peak_kib,
    traced_agent,
)

pytestmark = pytest.mark.fault

FLOOD_BYTES = 100 * 1024 * 1024
OUTPUT_CAP_BYTES = 1024 * 1024
RSS_GROWTH_LIMIT_KIB = 40 * 1024


@pytest.fixture
def worker(server: RedisServer, start_worker: WorkerFactory) -> WorkerProcess:
    """One worker with short leases on the test's Redis."""
    return start_worker(url=server.url, settings=FAST, concurrency=2)


def run_alone(
    server: RedisServer, traces: Path, agent: dict[str, object]
) -> tuple[RunAggregate, AgentOutcome]:
    """Run one agent to its end; check I1-I3 and return the aggregate and its outcome."""
    fleet = Fleet.from_url(server.url)
    try:
        handle = fleet.submit({"agents": [agent]})
        aggregate = fleet.wait_settled(handle.run_id, timeout_s=60)
    finally:
        fleet.close()
    assert_promises(server.client(), aggregate, [str(agent["name"])], traces)
    return aggregate, aggregate.outcome(str(agent["name"]))


def test_an_agent_that_ignores_sigterm_is_killed_at_its_timeout(
    server: RedisServer, worker: WorkerProcess, traces: Path
) -> None:
    """TERM is ignored, so the grace passes and KILL ends it: a timeout failure."""
    agent = traced_agent(traces, "deaf", "trap '' TERM; sleep 30", timeout_s=1)

    _, outcome = run_alone(server, traces, agent)

    assert outcome.error is not None
    assert outcome.error.kind is FailureKind.TIMEOUT
    assert outcome.error.signal == signal.SIGKILL  # TERM did not end it: the fault fired
    assert outcome.duration_s is not None
    print(f"\nSIGTERM ignored: killed after {outcome.duration_s:.2f} s (timeout 1 s, grace 0.5 s)")
    assert 1.5 <= outcome.duration_s < 4.0


def test_a_grandchild_in_a_new_session_does_not_outlive_its_agent(
    server: RedisServer, worker: WorkerProcess, traces: Path
) -> None:
    """A grandchild that left the agent's session is still found and killed."""
    evidence = traces / "grandchild"
    script = (
        f"setsid sh -c 'echo $$ $(ps -o sid= -p $$) > {evidence}; exec sleep 300' & "
        f"sleep 0.5; echo $(ps -o sid= -p $$) > {evidence}.parent; echo left"
    )

    _, outcome = run_alone(server, traces, traced_agent(traces, "escaper", script))

    pid, session = evidence.read_text().split()
    assert session != (traces / "grandchild.parent").read_text().strip()
    assert outcome.output == "left\n"
    assert not pid_alive(int(pid))


def test_a_flood_of_output_is_capped_and_the_worker_memory_stays_bounded(
    server: RedisServer, worker: WorkerProcess, traces: Path
) -> None:
    """100 MB of stdout: the outcome keeps the cap, says truncated, the worker stays small."""
    script = f"dd if=/dev/zero bs=1M count=100 2>{traces}/dd.log | tr '\\0' x"
    agent = traced_agent(traces, "flood", script, max_output_bytes=OUTPUT_CAP_BYTES)
    before_kib = rss_peak_kib(worker.pid)

    _, outcome = run_alone(server, traces, agent)
    growth_kib = rss_peak_kib(worker.pid) - before_kib

    assert f"{FLOOD_BYTES} bytes" in (traces / "dd.log").read_text()
    assert outcome.output_truncated
    assert len(outcome.output) == OUTPUT_CAP_BYTES
    print(
        f"\n100 MB flood: worker peak RSS grew {growth_kib / 1024:.1f} MiB "
        f"(from {before_kib / 1024:.1f} MiB)"
    )
    assert growth_kib < RSS_GROWTH_LIMIT_KIB


def test_invalid_utf8_output_is_decoded_with_replacement_into_valid_json(
    server: RedisServer, worker: WorkerProcess, traces: Path
) -> None:
    """Bytes that are not UTF-8 become U+FFFD; the stored aggregate stays valid JSON."""
    script = "printf 'ok \\377\\376 end'"

    aggregate, outcome = run_alone(server, traces, traced_agent(traces, "garbled", script))

    assert outcome.output == "ok \ufffd\ufffd end"
    raw = server.client().get(keys.run_key(aggregate.run_id, "aggregate"))
    assert raw is not None
    assert json.loads(raw)["successful"][0]["output"] == "ok \ufffd\ufffd end"


def test_an_agent_whose_binary_is_missing_fails_with_a_spawn_error(
    server: RedisServer, worker: WorkerProcess, traces: Path
) -> None:
    """A binary that does not exist is a spawn_error outcome, not a crash."""
    missing = traces / "no-such-agent"
    agent: dict[str, object] = {"name": "ghost", "platform": "command", "argv": [str(missing)]}

    _, outcome = run_alone(server, traces, agent)

    assert not missing.exists()
    assert outcome.error is not None
    assert outcome.error.kind is FailureKind.SPAWN_ERROR
    assert "no-such-agent" in outcome.error.message
