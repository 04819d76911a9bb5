"""Spawn messages as the broker stores them: Celery task messages in kombu's Redis envelope.

They are built here instead of by `send_task` for two reasons. A run's state and its first
messages are then written by one Lua call (orchestrator/lua/run.lua, `submit`), so a run
is never accepted without its messages. And publishing through Celery cost about 0.6 ms
of client CPU per message (bench/), more than the rest of a submit together.

Celery still builds the task message (`app.amqp.as_task_v2`, protocol 2); this module only
wraps it the way kombu's Redis transport does for a queue bound to the default exchange
at priority 0: a JSON envelope with a base64 body, delivery info and a delivery tag. The
queue's Redis list is the queue's name. Skipping `send_task` also skips its publish
signals and "task-sent" events.
"""

from __future__ import annotations

import base64
import json
import uuid

from celery import Celery

from orchestrator.keys import SPAWN_TASK, queue_for

# (agent name, platform, attempt)
Spawn = tuple[str, str, int]


def spawn_message(app: Celery, run_id: str, spawn: Spawn) -> tuple[str, str]:
    """The queue and the stored message of one spawn; the arguments are ids only."""
    name, platform, attempt = spawn
    queue = queue_for(platform)
    task_id = str(uuid.uuid4())
    args = [run_id, name, attempt]
    headers, properties, body, _ = app.amqp.as_task_v2(
        task_id, SPAWN_TASK, args=args, kwargs={}, argsrepr=repr(args), kwargsrepr="{}"
    )
    envelope = {
        "body": base64.b64encode(json.dumps(body).encode()).decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": headers,
        "properties": {
            **properties,
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": str(uuid.uuid4()),
        },
    }
    return queue, json.dumps(envelope)


def spawn_messages(app: Celery, run_id: str, spawns: list[Spawn]) -> list[tuple[str, str]]:
    """The queue and stored message of every spawn, in order."""
    return [spawn_message(app, run_id, spawn) for spawn in spawns]
