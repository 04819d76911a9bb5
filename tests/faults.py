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
from dataclasses import dataclass
from pathlib import Path

import redis

from orchestrator import keys
from orchestrator.embedded import READY_TIMEOUT_S, find_redis_server, free_port, stop_process
from orchestrator.models import RunAggregate
from workers.runner import MARKER_VAR

# Other tests (and other programs) on this machine run agents too: each test tags the
# agents it starts with this variable, and looks only for processes carrying its tag.
TRACE_VAR = "FAULT_TRACES"
# Short leases and a busy reaper make a dead worker noticed within about two seconds.
FAST = {"lease_ttl_s": "2", "reaper_interval_s": "0.2", "kill_grace_s": "0.5"}


@dataclass(frozen=True)
class TlsFiles:
    """A throwaway certificate authority and a server certificate for 127.0.0.1."""

    ca: Path
    cert: Path
    key: Path


def make_tls_files(folder: Path) -> TlsFiles:
    """Create a CA and a server certificate it signed, valid for IP 127.0.0.1, with openssl."""
    files = TlsFiles(folder / "ca.pem", folder / "server.pem", folder / "server.key")
    key = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    steps = [
        f"req -x509 {key} -keyout ca.key -out ca.pem -days 1 -subj /CN=agentfleet-test-ca",
        f"req {key} -keyout server.key -out server.csr -subj /CN=127.0.0.1",
        "x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem"
        " -days 1 -extfile san.ext",
    ]
    for step in steps:
        subprocess.run(["openssl", *step.split()], cwd=folder, check=True, capture_output=True)
    return files


class RedisServer:
    """A private redis-server a test may freeze, stop and start again on the same port."""

    def __init__(
        self, folder: Path, args: tuple[str, ...] = (), auth: str = "", tls: TlsFiles | None = None
    ) -> None:
        self.folder = folder
        self.port = free_port()
        self.args = args
        self.tls = tls
        scheme = "rediss" if tls else "redis"
        self.url = f"{scheme}://{auth}127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None
        self._clients: list[redis.Redis] = []

    def argv(self) -> list[str]:
        """The command line: loopback only, data in the test's own folder."""
        options = {
            "port": str(self.port),
            "bind": "127.0.0.1",
            "save": "",
            "appendonly": "no",
            "dir": str(self.folder),
        }
        if self.tls:
            options |= {
                "port": "0",
                "tls-port": str(self.port),
                "tls-auth-clients": "no",
                "tls-cert-file": str(self.tls.cert),
                "tls-key-file": str(self.tls.key),
                "tls-ca-cert-file": str(self.tls.ca),
            }
        flags = [part for name, value in options.items() for part in (f"--{name}", value)]
        return [find_redis_server(), *flags, *self.args]

    def start(self) -> None:
        """Start the server and wait until it answers."""
        with (self.folder / "redis.log").open("ab") as log:
            self.process = subprocess.Popen(
                self.argv(), stdout=log, stderr=log, stdin=subprocess.DEVNULL
            )
        self.wait_ready()

    def client_options(self) -> dict[str, object]:
        """Options a client of this server needs: the CA when it speaks TLS."""
        return {"ssl_ca_certs": str(self.tls.ca)} if self.tls else {}

    def wait_ready(self) -> None:
        """Block until the server answers PING, with the test's credentials."""
        assert self.process is not None
        probe = redis.Redis.from_url(
            self.url, socket_connect_timeout=0.5, socket_timeout=0.5, **self.client_options()
        )
        try:
            wait_until(lambda: self._answers(probe), READY_TIMEOUT_S, 0.02)
        finally:
            probe.close()

    def _answers(self, probe: redis.Redis) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"redis-server exited with code {self.process.returncode}")
        try:
            return bool(probe.ping())
        except (redis.ConnectionError, redis.TimeoutError):
            return False

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
        """A plain client of this server, closed when the server is."""
        client = redis.Redis.from_url(
            self.url, decode_responses=True, socket_timeout=5, **self.client_options()
        )
        self._clients.append(client)
        return client

    def close_clients(self) -> None:
        """Close every client handed out by `client`."""
        for client in self._clients:
            client.close()


@contextlib.contextmanager
def redis_server(
    folder: Path, *args: str, auth: str = "", tls: TlsFiles | None = None
) -> Iterator[RedisServer]:
    """A started RedisServer, stopped (thawed first) when the block ends."""
    server = RedisServer(folder, args, auth, tls)
    server.start()
    try:
        yield server
    finally:
        server.close_clients()
        if server.process is not None:
            server.thaw()
        server.stop()


def traced(traces: Path, name: str, script: str) -> str:
    """Wrap an agent script so each start leaves its pid and flags two live copies.

    The lock on fd 9 is inherited by every process of the copy, so a second copy that
    starts while any process of the first still lives cannot take it.
    """
    lock, pids, overlap = (traces / f"{name}.{part}" for part in ("lock", "pids", "overlap"))
    return f"exec 9>>{lock}; flock -n 9 || echo overlap >> {overlap}; echo $$ >> {pids}; {script}"


def traced_agent(
    traces: Path, name: str, script: str, env: dict[str, str] | None = None, **fields: object
) -> dict[str, object]:
    """A `command` agent whose starts are recorded under `traces`, its processes tagged."""
    argv = ["sh", "-c", traced(traces, name, script)]
    tagged = {TRACE_VAR: str(traces), **(env or {})}
    return {"name": name, "platform": "command", "argv": argv, "env": tagged, **fields}


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


def agent_processes(traces: Path) -> list[int]:
    """Pids of every live agent process started with the trace folder `traces`."""
    needle = f"{MARKER_VAR}=".encode()
    tag = f"{TRACE_VAR}={traces}".encode()
    found = []
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{name}/environ", "rb") as environ:
                entries = environ.read().split(b"\0")
        except OSError:
            continue
        marked = any(entry.startswith(needle) for entry in entries)
        if marked and tag in entries and pid_alive(int(name)):
            found.append(int(name))
    return found


def wait_until(
    predicate: Callable[[], object], timeout_s: float = 20.0, interval_s: float = 0.05
) -> float:
    """Poll until `predicate` holds; return the seconds it took, fail after `timeout_s`."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout_s:
            raise AssertionError(f"condition not met within {timeout_s} s")
        time.sleep(interval_s)
    return time.monotonic() - started


def assert_one_outcome_each(
    client: redis.Redis, aggregate: RunAggregate, names: list[str]
) -> None:
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


def assert_no_agent_process_left(traces: Path, timeout_s: float = 5.0) -> None:
    """I3: no agent process is alive (given a moment for a kill already under way)."""
    with contextlib.suppress(AssertionError):
        wait_until(lambda: not agent_processes(traces), timeout_s)
    assert agent_processes(traces) == []


def assert_no_secret(secrets: list[str], *texts: str) -> None:
    """I4: none of `secrets` occurs in any of `texts`."""
    for secret in secrets:
        for text in texts:
            assert secret not in text


def assert_promises(
    client: redis.Redis, aggregate: RunAggregate, names: list[str], traces: Path
) -> None:
    """I1, I2 and I3 for one finished run whose agents were traced under `traces`."""
    assert_one_outcome_each(client, aggregate, names)
    assert_one_aggregate(client, aggregate, names)
    assert_no_agent_process_left(traces)


def rss_peak_kib(pid: int) -> int:
    """The peak resident memory of a process so far (VmHWM), in KiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmHWM for pid {pid}")
