"""Helpers of the fault tests: a Redis to break, agents that leave traces, the four promises.

The promises every fault test checks once its fault has fired:
I1 every agent of an accepted run ends with exactly one outcome;
I2 every accepted run ends with exactly one aggregate whose counts add up to its agents;
I3 no process of an agent outlives its outcome;
I4 no secret reaches an agent's environment, an outcome, a log line or Flower.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import redis

from orchestrator import keys
from orchestrator.embedded import find_redis_server, free_port, stop_process, wait_for_redis
from orchestrator.models import RunAggregate
from workers.runner import MARKER_VAR

# Short leases and a busy reaper make a dead worker noticed within about two seconds.
FAST = {"lease_ttl_s": "2", "reaper_interval_s": "0.2", "kill_grace_s": "0.5"}


class RedisServer:
    """A private redis-server a test may freeze, stop and start again on the same port."""

    def __init__(self, folder: Path, args: tuple[str, ...] = (), url: str = "") -> None:
        self.folder = folder
        self.port = free_port()
        self.args = args
        self.url = url or f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def argv(self) -> list[str]:
        """The command line: loopback only, data in the test's own folder."""
        return [find_redis_server(), "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", str(self.folder), *self.args]

    def start(self) -> None:
        """Start the server and wait until it answers."""
        log = (self.folder / "redis.log").open("ab")
        self.process = subprocess.Popen(self.argv(), stdout=log, stderr=log,
                                        stdin=subprocess.DEVNULL)
        log.close()
        wait_for_redis(self.ping_url(), self.process)

    def ping_url(self) -> str:
        """A URL good enough for the readiness probe (only PING, which needs no auth)."""
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        """Stop the server the polite way: SIGTERM, which flushes an append-only file."""
        if self.process is not None:
            stop_process(self.process)
            self.process = None

    def freeze(self) -> None:
        """SIGSTOP: the server keeps its sockets open and answers nothing."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT: the frozen server answers again."""
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def client(self) -> redis.Redis:
        """A plain client of this server."""
        return redis.Redis.from_url(self.url, decode_responses=True, socket_timeout=5)


@contextlib.contextmanager
def redis_server(folder: Path, *args: str) -> Iterator[RedisServer]:
    """A started RedisServer, stopped (thawed first) when the block ends."""
    server = RedisServer(folder, args)
    server.start()
    try:
        yield server
    finally:
        if server.process is not None:
            server.thaw()
        server.stop()


def traced(traces: Path, name: str, script: str) -> str:
    """Wrap an agent script so each start leaves its pid and flags two live copies.

    The lock on fd 9 is inherited by every process of the copy, so a second copy that
    starts while any process of the first still lives cannot take it.
    """
    lock, pids, overlap = (traces / f"{name}.{part}" for part in ("lock", "pids", "overlap"))
    return (f"exec 9>>{lock}; flock -n 9 || echo overlap >> {overlap}; "
            f"echo $$ >> {pids}; {script}")


def traced_agent(traces: Path, name: str, script: str, **fields: object) -> dict[str, object]:
    """A `command` agent whose starts are recorded under `traces`."""
    argv = ["sh", "-c", traced(traces, name, script)]
    return {"name": name, "platform": "command", "argv": argv, **fields}


def started_pids(traces: Path, name: str) -> list[int]:
    """Pids of every copy of agent `name` that started, in order."""
    path = traces / f"{name}.pids"
    return [int(line) for line in path.read_text().split()] if path.exists() else []


def copies_overlapped(traces: Path, name: str) -> bool:
    """Whether a copy of agent `name` started while another copy still ran."""
    return (traces / f"{name}.overlap").exists()


def pid_alive(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie counts as dead)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def agent_processes() -> list[int]:
    """Pids of every live process that carries an agent marker."""
    needle = f"{MARKER_VAR}=".encode()
    found = []
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{name}/environ", "rb") as environ:
                entries = environ.read().split(b"\0")
        except OSError:
            continue
        if any(entry.startswith(needle) for entry in entries) and pid_alive(int(name)):
            found.append(int(name))
    return found


def wait_until(predicate: Callable[[], object], timeout_s: float = 20.0,
               interval_s: float = 0.05) -> float:
    """Poll until `predicate` holds; return the seconds it took, fail after `timeout_s`."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout_s:
            raise AssertionError(f"condition not met within {timeout_s} s")
        time.sleep(interval_s)
    return time.monotonic() - started


def assert_one_outcome_each(client: redis.Redis, aggregate: RunAggregate,
                            names: list[str]) -> None:
    """I1: each agent of the run has exactly one outcome, in Redis and in the aggregate."""
    outcome_names = [o.name for o in [*aggregate.successful, *aggregate.failed]]
    assert sorted(outcome_names) == sorted(names)
    stored = client.hkeys(keys.run_key(aggregate.run_id, "outcomes"))
    assert sorted(stored) == sorted(names)


def assert_one_aggregate(client: redis.Redis, aggregate: RunAggregate, names: list[str]) -> None:
    """I2: the aggregate was written once and its counts add up to the run's agents."""
    assert client.llen(keys.run_key(aggregate.run_id, "done")) == 1
    assert aggregate.total == len(names)
    assert aggregate.succeeded_count + aggregate.failed_count == aggregate.total
    assert aggregate.succeeded_count == len(aggregate.successful)


def assert_no_agent_process_left(timeout_s: float = 5.0) -> None:
    """I3: no agent process is alive (given a moment for a kill already under way)."""
    with contextlib.suppress(AssertionError):
        wait_until(lambda: not agent_processes(), timeout_s)
    assert agent_processes() == []


def assert_no_secret(secrets: list[str], *texts: str) -> None:
    """I4: none of `secrets` occurs in any of `texts`."""
    for secret in secrets:
        for text in texts:
            assert secret not in text


def assert_promises(client: redis.Redis, aggregate: RunAggregate, names: list[str]) -> None:
    """I1, I2 and I3 for one finished run."""
    assert_one_outcome_each(client, aggregate, names)
    assert_one_aggregate(client, aggregate, names)
    assert_no_agent_process_left()


def rss_peak_kib(pid: int) -> int:
    """The peak resident memory of a process so far (VmHWM), in KiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmHWM for pid {pid}")
