"""The processes a bench needs: one private Redis, agentfleet workers, baseline workers."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.embedded import private_redis, stop_process

REPO = Path(__file__).resolve().parent.parent
READY_TIMEOUT_S = 60.0


@dataclass
class Worker:
    """A worker child process and its log."""

    role: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_ready(self) -> None:
        """Block until the Celery worker inside says it is ready."""
        give_up_at = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < give_up_at:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.role} worker exited early:\n{self.tail()}")
            if " ready." in self.log_path.read_text(errors="replace"):
                return
            time.sleep(0.05)
        raise RuntimeError(f"{self.role} worker not ready:\n{self.tail()}")

    def tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        stop_process(self.process, grace_s=15.0)


@dataclass
class Deployment:
    """The private Redis and every worker started against it."""

    url: str
    folder: Path
    workers: list[Worker] = field(default_factory=list)

    def start_agentfleet(self, concurrency: int) -> Worker:
        """A real `agentfleet worker` for the command platform."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTFLEET_")}
        env.update({"AGENTFLEET_REDIS_URL": self.url, "AGENTFLEET_LOG_FORMAT": "json"})
        name = f"af{len(self.workers)}-{concurrency}@bench"
        argv = [
            sys.executable,
            "-m",
            "orchestrator.cli",
            "worker",
            "--platform",
            "command",
            "--concurrency",
            str(concurrency),
            "--name",
            name,
        ]
        return self._start("agentfleet", argv, env)

    def start_baseline(self, concurrency: int) -> Worker:
        """The baseline Celery worker (bench/baseline.py)."""
        argv = [sys.executable, "-m", "bench.baseline", self.url, str(concurrency)]
        return self._start("baseline", argv, dict(os.environ))

    def _start(self, role: str, argv: list[str], env: dict[str, str]) -> Worker:
        log_path = self.folder / f"{role}-{len(self.workers)}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                argv,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=REPO,
            )
        worker = Worker(role, process, log_path)
        self.workers.append(worker)
        return worker

    def stop(self, worker: Worker) -> None:
        """Stop one worker and forget it."""
        worker.stop()
        self.workers.remove(worker)


@contextlib.contextmanager
def deployment(folder: Path) -> Iterator[Deployment]:
    """A private Redis on a free loopback port; every worker is stopped on the way out."""
    with private_redis() as url:
        deploy = Deployment(url, folder)
        try:
            yield deploy
        finally:
            for worker in list(deploy.workers):
                deploy.stop(worker)
