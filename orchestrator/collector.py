"""The collector: settles each agent's outcome exactly once and writes the run's aggregate.

Every state change is one Lua operation in orchestrator/lua/run.lua, so a settle that
completes the set writes the aggregate in the same atomic step: no process can die
between the two. No chord, no polling, no blocking join.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.resources import files
from typing import Any

import redis

from orchestrator import keys
from orchestrator.connection import ThreadScript
from orchestrator.errors import RunNotFoundError
from orchestrator.models import (
    AgentOutcome,
    AgentSpec,
    FailureKind,
    OutcomeStatus,
    RunAggregate,
    RunProgress,
    RunSpec,
    RunStatus,
)

SCHEDULE_HOLD_MS = 30_000


def now_iso() -> str:
    """The current UTC time as ISO 8601 with milliseconds."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def now_ms() -> int:
    """The current wall-clock time in whole milliseconds."""
    return time.time_ns() // 1_000_000


def _script(client: redis.Redis, name: str) -> Any:
    source = files("orchestrator").joinpath("lua", name).read_text(encoding="utf-8")
    return client.register_script(source)


@dataclass(frozen=True)
class Lease:
    """A granted lease: the holder may run this agent until it settles or loses it."""

    run_id: str
    agent: AgentSpec
    run: RunSpec
    attempt: int
    token: str

    @property
    def member(self) -> str:
        return keys.lease_member(self.run_id, self.agent.name, self.attempt, self.token)


@dataclass(frozen=True)
class Requeue:
    """What the reaper must do about an expired lease."""

    action: str
    platform: str = ""
    attempt: int = 0


class Collector:
    """The run state in Redis: submission, leases, settling and finalizing."""

    def __init__(self, client: redis.Redis, per_thread: bool = False) -> None:
        """`per_thread`: state changes go over one connection per calling thread (workers,
        whose pool threads make two per agent); otherwise through the client's pool."""
        self.redis = client
        self._run = _script(client, "run.lua")
        self._claim = _script(client, "claim.lua")
        self._change: Callable[..., Any] = (
            ThreadScript(client, self._run) if per_thread else self._run
        )

    def _call(self, op: str, run_id: str, agent: str, *args: object) -> Any:
        return self._change(keys=keys.run_script_keys(run_id, agent), args=[op, *args])

    def create(self, spec: RunSpec, messages: Sequence[tuple[str, str]]) -> bool:
        """Write an accepted run's state and its spawn messages (queue, message) in one step;
        False, writing nothing, when a run with this run_id exists."""
        submitted_ms = now_ms()
        deadline_ms = submitted_ms + int(spec.deadline_s * 1000)
        run_json = spec.model_copy(update={"agents": []}).model_dump_json()
        pairs: list[str] = []
        for agent in spec.agents:
            pairs += [agent.name, agent.model_dump_json(exclude_defaults=True)]

        created = self._run(
            keys=[*keys.run_script_keys(spec.run_id), *(queue for queue, _ in messages)],
            args=[
                "submit",
                spec.run_id,
                len(spec.agents),
                now_iso(),
                deadline_ms,
                json.dumps(spec.labels, separators=(",", ":"), sort_keys=True),
                run_json,
                int(spec.deadline_s) + spec.ttl_s,
                spec.ttl_s,
                *pairs,
                *(message for _, message in messages),
            ],
        )
        return bool(created)

    def publish(self, messages: Sequence[tuple[str, str]]) -> None:
        """Push spawn messages (queue, message) onto their queues in one round trip."""
        pipe = self.redis.pipeline(transaction=False)
        for queue, message in messages:
            pipe.lpush(queue, message)
        pipe.execute()

    def acquire(
        self, run_id: str, name: str, attempt: int, token: str, ttl_s: float
    ) -> Lease | str:
        """Take the lease of one agent attempt: a Lease, or the reason it was refused."""
        member = keys.lease_member(run_id, name, attempt, token)
        reply = self._call(
            "lease", run_id, name, name, attempt, token, int(ttl_s * 1000), now_ms(), member
        )
        if reply[0] != "ok":
            return str(reply[0])

        agent = AgentSpec.model_validate_json(reply[1])
        run = RunSpec.model_validate({**json.loads(reply[2]), "agents": [agent]})
        return Lease(run_id, agent, run, attempt, token)

    def renew(self, lease: Lease, ttl_s: float) -> str:
        """Extend a lease: `ok`, or `settled`, `lost`, `gone` when its agent must stop."""
        return str(
            self._call(
                "renew",
                lease.run_id,
                lease.agent.name,
                lease.agent.name,
                lease.attempt,
                lease.token,
                int(ttl_s * 1000),
                now_ms(),
                lease.member,
            )
        )

    def settle(self, run_id: str, outcome: AgentOutcome, token: str = "", member: str = "") -> str:
        """Record an outcome once: `settled`, `complete` (aggregate written), `duplicate`."""
        failed = "1" if outcome.status is OutcomeStatus.FAILED else "0"
        usage: list[object] = []
        if outcome.usage is not None or outcome.cost_usd is not None:
            u = outcome.usage
            usage = [
                u.input_tokens if u else 0,
                u.output_tokens if u else 0,
                u.cache_read_tokens if u else 0,
                u.cache_creation_tokens if u else 0,
                outcome.cost_usd or 0.0,
            ]
        return str(
            self._call(
                "settle",
                run_id,
                outcome.name,
                outcome.name,
                outcome.model_dump_json(),
                failed,
                token,
                now_iso(),
                member,
                *usage,
            )
        )

    def finalize(self, run_id: str, kind: FailureKind, message: str, cancel: bool) -> str:
        """Settle every open agent as `kind` and write the aggregate, unless already done."""
        forced = RunStatus.CANCELLED.value if cancel else ""
        return str(self._call("finalize", run_id, "", kind.value, message, now_iso(), forced))

    def requeue(self, member: str, max_attempts: int) -> Requeue:
        """Decide the fate of an expired lease: a next attempt, worker_lost, or nothing."""
        run_id, name, attempt, _token = keys.parse_lease_member(member)
        reply = self._call(
            "requeue", run_id, name, name, attempt, max_attempts, now_iso(), now_ms(), member
        )
        if reply[0] == "requeue":
            return Requeue("requeue", str(reply[1]), int(reply[2]))
        return Requeue(str(reply[0]))

    def claim_due(self, schedule: str, limit: int = 100) -> list[str]:
        """Members of a schedule that are due, held back from other reapers for a while."""
        return list(self._claim(keys=[schedule], args=[now_ms(), SCHEDULE_HOLD_MS, limit]))

    def aggregate(self, run_id: str) -> RunAggregate | None:
        """The run's aggregate, or None while it is still running."""
        doc = self.redis.get(keys.run_key(run_id, "aggregate"))
        if doc is None:
            return None
        return RunAggregate.model_validate_json(doc)

    def wait_aggregate(self, run_id: str, block_s: float) -> RunAggregate | None:
        """Block until the run's done signal is present (or `block_s` passes); the aggregate
        then, read in the same round trip, or None."""
        done = keys.run_key(run_id, "done")
        # BLMOVE from a list onto itself leaves the signal in place for every other waiter;
        # the GET queued behind it on the connection runs the moment it returns.
        # redis-py types the timeout as int; Redis itself takes fractional seconds.
        timeout: Any = block_s
        pipe = self.redis.pipeline(transaction=False)
        pipe.blmove(done, done, timeout, "RIGHT", "LEFT")
        pipe.get(keys.run_key(run_id, "aggregate"))
        signal, doc = pipe.execute()
        if signal is None or doc is None:
            return None
        return RunAggregate.model_validate_json(doc)

    def aggregate_or_deadline(self, run_id: str) -> RunAggregate | int:
        """The run's aggregate, or while it runs its deadline in epoch ms, in one round
        trip; RunNotFoundError when the run is not in Redis."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.get(keys.run_key(run_id, "aggregate"))
        pipe.hget(keys.run_key(run_id, "meta"), "deadline_ms")
        doc, deadline_ms = pipe.execute()
        if doc is not None:
            return RunAggregate.model_validate_json(doc)
        if deadline_ms is None:
            raise RunNotFoundError(f"no run {run_id!r} in Redis")
        return int(deadline_ms)

    def exists(self, run_id: str) -> bool:
        """Whether the run's state is in Redis."""
        return bool(self.redis.exists(keys.run_key(run_id, "meta")))

    def progress(self, run_id: str) -> RunProgress:
        """Live progress of a run: settled of total."""
        meta: dict[str, str] = self.redis.hgetall(keys.run_key(run_id, "meta"))  # type: ignore[assignment]
        if not meta:
            raise RunNotFoundError(f"no run {run_id!r} in Redis")

        settled, failed = int(meta["settled"]), int(meta["failed"])
        return RunProgress.model_validate(
            {
                "run_id": run_id,
                "state": meta.get("status", meta["state"]),
                "total": int(meta["total"]),
                "settled": settled,
                "succeeded_count": settled - failed,
                "failed_count": failed,
                "submitted_at": meta["submitted_at"],
                "deadline_at": datetime.fromtimestamp(int(meta["deadline_ms"]) / 1000, UTC),
            }
        )
