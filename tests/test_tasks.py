"""The spawn task's pure helpers (Redis outages, forged spawns) and the worker's log levels."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import pytest
import redis

from orchestrator.settings import Settings
from workers.tasks import ride_out_outage, spawn_args_valid
from workers.worker import quiet_task_lines


def context(retry_s: float) -> Any:
    """A stand-in worker context carrying only the settings the helper reads."""
    return SimpleNamespace(settings=Settings(settle_retry_s=retry_s))


def test_a_transient_redis_error_is_retried_until_the_call_succeeds() -> None:
    """Two connection errors, then an answer: the answer is returned."""
    failures = [redis.ConnectionError("down"), redis.TimeoutError("slow")]

    def call() -> str:
        if failures:
            raise failures.pop(0)
        return "ok"

    assert ride_out_outage(context(5.0), "lease", call) == "ok"
    assert failures == []


def test_an_outage_longer_than_the_budget_raises() -> None:
    """Past settle_retry_s the last transient error is raised to the caller."""
    calls: list[int] = []

    def call() -> str:
        calls.append(1)
        raise redis.ConnectionError("still down")

    with pytest.raises(redis.ConnectionError):
        ride_out_outage(context(0.3), "settle", call)
    assert len(calls) >= 2


@pytest.mark.parametrize(
    ("args", "valid"),
    [
        (("run-1", "agent.a", 1), True),
        (("run:1", "a", 1), False),
        (("run-1", "a", 0), False),
        (("run-1", "a", "1"), False),
        (("run-1", "a", True), False),
    ],
)
def test_spawn_arguments_must_look_like_a_submitted_run(
    args: tuple[Any, ...], valid: bool
) -> None:
    """Ids outside the run id alphabet and non-positive or non-int attempts are refused."""
    assert spawn_args_valid(*args) is valid


def test_celery_per_task_lines_are_dropped_below_debug_level() -> None:
    """At info level Celery's received/succeeded lines are off; at debug level they stay on."""
    loggers = [logging.getLogger(n) for n in ("celery.app.trace", "celery.worker.strategy")]
    for logger in loggers:
        logger.setLevel(logging.NOTSET)

    quiet_task_lines(Settings(log_level="debug"))
    at_debug = [logger.level for logger in loggers]
    quiet_task_lines(Settings(log_level="INFO"))

    assert at_debug == [logging.NOTSET, logging.NOTSET]
    assert [logger.level for logger in loggers] == [logging.WARNING, logging.WARNING]
    for logger in loggers:
        logger.setLevel(logging.NOTSET)
