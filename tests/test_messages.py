"""Spawn messages: Celery protocol-2 tasks in kombu's Redis envelope, written with the run."""

from __future__ import annotations

import base64
import json

import redis

from orchestrator import keys
from orchestrator.collector import Collector
from orchestrator.messages import spawn_message
from orchestrator.models import RunSpec
from orchestrator.settings import Settings
from tests.conftest import command_agent
from workers.app import create_app


def test_a_spawn_message_is_a_celery_task_carrying_ids_only() -> None:
    """Headers name the spawn task; the body holds run id, agent name and attempt, no spec."""
    app = create_app(Settings(), "redis://127.0.0.1:1/0", with_tasks=False)

    queue, stored = spawn_message(app, "r1", ("scout", "claude-code", 2))

    envelope = json.loads(stored)
    args, kwargs, _embed = json.loads(base64.b64decode(envelope["body"]))
    assert queue == "agentfleet.claude-code"
    assert (args, kwargs) == (["r1", "scout", 2], {})
    assert envelope["headers"]["task"] == keys.SPAWN_TASK
    assert envelope["headers"]["id"] == envelope["properties"]["correlation_id"]
    assert envelope["properties"]["delivery_info"] == {"exchange": "", "routing_key": queue}
    assert envelope["properties"]["body_encoding"] == "base64"


def test_a_spawn_message_is_what_celery_builds_for_the_same_id_and_arguments() -> None:
    """Filling Celery's template gives the headers and body Celery's own call gives."""
    app = create_app(Settings(), "redis://127.0.0.1:1/0", with_tasks=False)
    _, stored = spawn_message(app, "r1", ("scout", "command", 3))
    envelope = json.loads(stored)
    task_id = envelope["headers"]["id"]
    args = ["r1", "scout", 3]

    headers, properties, body, _ = app.amqp.as_task_v2(
        task_id, keys.SPAWN_TASK, args=args, kwargs={}, argsrepr=repr(args), kwargsrepr="{}"
    )

    assert envelope["headers"] == headers
    assert json.loads(base64.b64decode(envelope["body"])) == list(body)
    assert properties.items() <= envelope["properties"].items()


def test_a_run_and_its_messages_are_written_together(
    redis_url: str, redis_client: redis.Redis, run_id: str
) -> None:
    """Creating a run queues its messages; creating it again queues nothing more."""
    collector = Collector(redis.Redis.from_url(redis_url))
    spec = RunSpec.model_validate(
        {"run_id": run_id, "agents": [command_agent(n, "true") for n in ("a", "b")]}
    )
    app = create_app(Settings(), redis_url, with_tasks=False)
    queue = f"test-queue-{run_id}"
    messages = [(queue, spawn_message(app, run_id, (n, "command", 1))[1]) for n in ("a", "b")]

    first = collector.create(spec, messages)
    again = collector.create(spec, messages)

    assert (first, again) == (True, False)
    assert redis_client.lrange(queue, 0, -1) == [m for _, m in reversed(messages)]
    assert redis_client.hlen(keys.run_key(run_id, "agents")) == 2
