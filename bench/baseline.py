"""The baseline: plain Celery spawn tasks, joined by a chord callback or by the submitter.

The spawn task returns a failure as data, because a chord whose header raises never runs
its callback. The worker is started as its own process (`python -m bench.baseline URL N`)
with the same threads pool, concurrency, late acks and prefetch as an agentfleet worker.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from functools import cache
from typing import Any

import redis
from celery import Celery

from bench.agents import KEY_TTL_S, aggregate_doc, outcome_record, write_aggregate

QUEUE = "bench.baseline"
SPAWN_TASK = "bench.spawn"
COLLECT_TASK = "bench.collect"
AGENT_TIMEOUT_S = 900.0


def create_app(url: str) -> Celery:
    """The baseline app: Redis broker and Redis result backend, JSON only."""
    app = Celery("bench", set_as_current=False)
    app.conf.update(
        broker_url=url,
        result_backend=url,
        broker_connection_retry_on_startup=True,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_acks_late=True,
        worker_prefetch_multiplier=1,
        task_default_queue=QUEUE,
        result_expires=KEY_TTL_S,
    )
    app.task(name=SPAWN_TASK)(spawn)
    app.task(name=COLLECT_TASK)(collect)
    return app


def spawn(name: str, argv: list[str]) -> dict[str, Any]:
    """Run one agent process; its failure is returned, never raised."""
    try:
        done = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=AGENT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        return {"name": name, "status": "failed", "error": str(err), "exit_code": None}
    return outcome_record(name, done.returncode, done.stdout.decode("utf-8", "replace"))


def collect(outcomes: list[dict[str, Any]], run_id: str, url: str) -> None:
    """The chord callback: write the aggregate and signal the waiting submitter."""
    write_aggregate(_client(url), run_id, aggregate_doc(run_id, outcomes), signal=True)


@cache
def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url)


def run_worker(url: str, concurrency: int) -> None:
    """Serve the baseline queue with a threads pool of `concurrency`."""
    app = create_app(url)
    app.worker_main(
        [
            "worker",
            "-Q",
            QUEUE,
            "-P",
            "threads",
            "-c",
            str(concurrency),
            "-n",
            f"bench-{concurrency}@{socket.gethostname()}",
            "--without-gossip",
            "--without-mingle",
            "-l",
            "INFO",
        ]
    )


if __name__ == "__main__":
    run_worker(sys.argv[1], int(sys.argv[2]))
