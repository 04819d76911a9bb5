"""Fixtures: private redis-server processes and real `agentfleet worker` processes."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

from orchestrator import Fleet, embedded
from orchestrator.embedded import private_redis, stop_process
from tests.faults import RedisServer, redis_server
from tests.stubmodel import StubModel

WORKER_READY_TIMEOUT_S = 30.0
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """A private redis-server on a free loopback port, shared by the session."""
    with private_redis() as url:
        yield url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    """A plain client of the session's private Redis."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def run_id() -> str:
    """A run id no other test uses."""
    return f"t-{uuid.uuid4().hex[:12]}"


@dataclass
class WorkerProcess:
    """A real `agentfleet worker` child process and its log file."""

    process: subprocess.Popen[bytes]
    log_path: Path
    platforms: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self) -> None:
        give_up_at = time.monotonic() + WORKER_READY_TIMEOUT_S
        while time.monotonic() < give_up_at:
            if self.process.poll() is not None:
                raise RuntimeError(f"worker exited early:\n{self.log()[-3000:]}")
            if " ready." in self.log():
                return
            time.sleep(0.05)
        raise RuntimeError(f"worker not ready:\n{self.log()[-3000:]}")

    def stop(self) -> None:
        stop_process(self.process, grace_s=15.0)


WorkerFactory = Callable[..., WorkerProcess]


def worker_env(url: str, settings: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a worker: this one, the Redis URL and AGENTFLEET_ overrides."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTFLEET_")}
    env.update({"AGENTFLEET_REDIS_URL": url, "AGENTFLEET_LOG_FORMAT": "json"})
    env.update({f"AGENTFLEET_{k.upper()}": v for k, v in (settings or {}).items()})
    return env


@pytest.fixture
def start_worker(redis_url: str, tmp_path: Path) -> Iterator[WorkerFactory]:
    """Start real worker processes; every one still running is stopped after the test."""
    started: list[WorkerProcess] = []

    def start(
        *platforms: str,
        url: str | None = None,
        concurrency: int = 4,
        settings: dict[str, str] | None = None,
        extra_env: dict[str, str] | None = None,
        wait: bool = True,
    ) -> WorkerProcess:
        names = list(platforms) or ["command"]
        log_path = tmp_path / f"worker-{len(started)}.log"
        process = embedded.start_worker(
            url or redis_url,
            names,
            concurrency,
            log_path,
            env={**worker_env(url or redis_url, settings), **(extra_env or {})},
            name=f"w{len(started)}-{uuid.uuid4().hex[:6]}@test",
        )
        worker = WorkerProcess(process, log_path, names)
        started.append(worker)
        if wait:
            worker.wait_ready()
        return worker

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture
def stub() -> Iterator[StubModel]:
    """A stub model server for one test."""
    model = StubModel().start()
    yield model
    model.stop()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    """A private Redis for this test alone, which fault tests may freeze or restart."""
    with redis_server(tmp_path) as started:
        yield started


@pytest.fixture
def traces(tmp_path: Path) -> Path:
    """A folder where fault-test agents record their starts and leave evidence."""
    folder = tmp_path / "traces"
    folder.mkdir()
    return folder


@pytest.fixture
def fleet(redis_url: str) -> Iterator[Fleet]:
    """A Fleet client of the session's private Redis."""
    client = Fleet.from_url(redis_url)
    yield client
    client.close()


def command_agent(name: str, script: str, **fields: object) -> dict[str, object]:
    """A `command` agent running `sh -c script`."""
    return {"name": name, "platform": "command", "argv": ["sh", "-c", script], **fields}
