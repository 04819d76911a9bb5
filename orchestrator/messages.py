"""Spawn messages as the broker stores them: Celery task messages in kombu's Redis envelope.

They are built here instead of by `send_task` for two reasons. A run's state and its first
messages are then written by one Lua call (orchestrator/lua/run.lua, `submit`), so a run
is never accepted without its messages. And publishing through Celery cost about 0.6 ms
of client CPU per message (bench/), more than the rest of a submit together.

Celery still builds the task message (`app.amqp.as_task_v2`, protocol 2), once per process
as a template whose ids and arguments each message fills in; this module wraps it the way
kombu's Redis transport does for a queue bound to the default exchange at priority 0: a
JSON envelope with a base64 body, delivery info and a delivery tag. The queue's Redis
list is the queue's name. Skipping `send_task` also skips its publish signals and
"task-sent" events.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import uuid
from typing import Any

from celery import Celery

from orchestrator.keys import SPAWN_TASK, queue_for

# (agent name, platform, attempt)
Spawn = tuple[str, str, int]

TEMPLATE_ID = "00000000-0000-0000-0000-000000000000"


def spawn_message(app: Celery, run_id: str, spawn: Spawn) -> tuple[str, str]:
    """The queue and the stored message of one spawn; the arguments are ids only."""
    name, platform, attempt = spawn
    queue = queue_for(platform)
    task_id = str(uuid.uuid4())
    args = [run_id, name, attempt]
    headers, properties, embed = _task_template(app, os.getpid())
    body = f"[{json.dumps(args)}, {{}}, {embed}]"
    envelope = {
        "body": base64.b64encode(body.encode()).decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {**headers, "id": task_id, "root_id": task_id, "argsrepr": repr(args)},
        "properties": {
            **properties,
            "correlation_id": task_id,
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": 0,
            "body_encoding": "base64",
            # Unique per message, as kombu's tags are: the task id serves.
            "delivery_tag": task_id,
        },
    }
    return queue, json.dumps(envelope)


@functools.lru_cache(maxsize=8)
def _task_template(app: Celery, pid: int) -> tuple[dict[str, Any], dict[str, Any], str]:
    """Celery's headers, properties and callback part of a spawn message, built once per
    app and process (the origin header names the process); a message then sets its own
    ids and arguments. Building each message with Celery took about a third of a
    7-agent submit's CPU."""
    headers, properties, body, _ = app.amqp.as_task_v2(
        TEMPLATE_ID, SPAWN_TASK, args=[], kwargs={}, argsrepr="[]", kwargsrepr="{}"
    )
    return headers, properties, json.dumps(body[2])


def spawn_messages(app: Celery, run_id: str, spawns: list[Spawn]) -> list[tuple[str, str]]:
    """The queue and stored message of every spawn, in order."""
    return [spawn_message(app, run_id, spawn) for spawn in spawns]
