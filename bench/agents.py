"""The agents every variant runs, and the one aggregate shape every variant must produce.

An agent is a real subprocess. One agent in every seven fails with exit code 3, so each
aggregate holds successes with their outputs and failures with their reasons.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import redis

FAIL_EVERY = 7
FAIL_CODE = 3
AGGREGATE_PREFIX = "bench:aggregate:"
DONE_PREFIX = "bench:done:"
KEY_TTL_S = 3600


@dataclass(frozen=True)
class Agent:
    """One agent: its argv and what it must end as."""

    name: str
    argv: tuple[str, ...]
    output: str
    exit_code: int

    def spec(self) -> dict[str, Any]:
        """The agent as an agentfleet `command` agent."""
        return {"name": self.name, "platform": "command", "argv": list(self.argv)}


@dataclass
class Canonical:
    """An aggregate reduced to what every variant must agree on."""

    succeeded: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)

    def add(self, name: str, exit_code: int | None, output: str) -> None:
        """Record one agent by its exit code: 0 is a success, anything else a failure."""
        if exit_code == 0:
            self.succeeded[name] = output
        else:
            self.failed[name] = failure_reason(exit_code)


def failure_reason(exit_code: int | None) -> str:
    """The reason every variant gives for an agent that exited non-zero."""
    return f"exit {exit_code}"


def make_agents(count: int, sleep_s: float = 0.0, payload_bytes: int = 0) -> list[Agent]:
    """`count` agents; every seventh fails. Fast ones are one exec, slow ones sleep first."""
    agents = []
    for i in range(count):
        name = f"a{i}"
        text = name + ("-" + "x" * payload_bytes if payload_bytes else "")
        fails = i % FAIL_EVERY == FAIL_EVERY - 1
        agents.append(_agent(name, text, fails, sleep_s))
    return agents


def _agent(name: str, text: str, fails: bool, sleep_s: float) -> Agent:
    if sleep_s > 0:
        tail = f"exit {FAIL_CODE}" if fails else f"echo {text}"
        return Agent(
            name,
            ("/bin/sh", "-c", f"sleep {sleep_s:g}; {tail}"),
            "" if fails else text + "\n",
            FAIL_CODE if fails else 0,
        )
    if fails:
        return Agent(name, ("/bin/sh", "-c", f"exit {FAIL_CODE}"), "", FAIL_CODE)
    return Agent(name, ("/bin/echo", text), text + "\n", 0)


def expected(agents: list[Agent]) -> Canonical:
    """The aggregate a correct variant produces for `agents`."""
    canonical = Canonical()
    for agent in agents:
        canonical.add(agent.name, agent.exit_code, agent.output)
    return canonical


def outcome_record(name: str, exit_code: int | None, output: str) -> dict[str, Any]:
    """One outcome as the baseline variants store it: failures are data, never raised."""
    if exit_code == 0:
        return {"name": name, "status": "succeeded", "output": output}
    return {
        "name": name,
        "status": "failed",
        "error": failure_reason(exit_code),
        "exit_code": exit_code,
    }


def aggregate_doc(run_id: str, outcomes: list[dict[str, Any]]) -> dict[str, Any]:
    """The baseline variants' aggregate: successes and failures of one run."""
    return {
        "run_id": run_id,
        "successful": [o for o in outcomes if o["status"] == "succeeded"],
        "failed": [o for o in outcomes if o["status"] == "failed"],
    }


def canonical_doc(doc: dict[str, Any]) -> Canonical:
    """Reduce a baseline aggregate document to its canonical form."""
    canonical = Canonical()
    for outcome in doc["successful"]:
        canonical.succeeded[outcome["name"]] = outcome["output"]
    for outcome in doc["failed"]:
        canonical.failed[outcome["name"]] = outcome["error"]
    return canonical


def write_aggregate(client: redis.Redis, run_id: str, doc: dict[str, Any], signal: bool) -> None:
    """One SET of the aggregate, plus the done signal when another process waits for it."""
    body = json.dumps(doc, separators=(",", ":"))
    if not signal:
        client.set(AGGREGATE_PREFIX + run_id, body, ex=KEY_TTL_S)
        return
    pipe = client.pipeline(transaction=False)
    pipe.set(AGGREGATE_PREFIX + run_id, body, ex=KEY_TTL_S)
    pipe.lpush(DONE_PREFIX + run_id, "1")
    pipe.expire(DONE_PREFIX + run_id, KEY_TTL_S)
    pipe.execute()
