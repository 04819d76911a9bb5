"""Every Redis key agentfleet uses, in one place.

A run owns the keys `agentfleet:run:<run_id>:<part>`; run ids are restricted to
`[A-Za-z0-9._-]`, so no run can reach another run's keys. Two sorted sets are shared
by all runs: they schedule the work the reaper does (lease expiry, deadlines).
"""

from __future__ import annotations

PREFIX = "agentfleet"

SPAWN_TASK = "agentfleet.spawn"
QUEUE_PREFIX = "agentfleet."

LEASES = f"{PREFIX}:leases"
DEADLINES = f"{PREFIX}:deadlines"

# The order of the keys a run script receives; orchestrator/lua/run.lua reads them by index.
RUN_PARTS = ("meta", "agents", "order", "outcomes", "attempts", "aggregate", "done")


def run_key(run_id: str, part: str) -> str:
    """The key of one part of a run, such as `agentfleet:run:r1:aggregate`."""
    return f"{PREFIX}:run:{run_id}:{part}"


def lease_key(run_id: str, agent: str) -> str:
    """The key whose holder may run `agent` of `run_id`."""
    return f"{PREFIX}:run:{run_id}:lease:{agent}"


def kill_list(host: str) -> str:
    """The list of agent tokens whose processes the reaper on `host` must kill."""
    return f"{PREFIX}:kill:{host}"


def run_script_keys(run_id: str, agent: str = "") -> list[str]:
    """The keys every run script operation receives, global sets and a lease last."""
    parts = [run_key(run_id, part) for part in RUN_PARTS]
    return [*parts, LEASES, DEADLINES, lease_key(run_id, agent or "-")]


def lease_member(run_id: str, agent: str, attempt: int, token: str) -> str:
    """The member naming one attempt's lease, and its holder, in the LEASES sorted set."""
    return f"{run_id}\n{agent}\n{attempt}\n{token}"


def parse_lease_member(member: str) -> tuple[str, str, int, str]:
    """Split a LEASES member into run id, agent name, attempt and holder token."""
    run_id, agent, attempt, token = member.split("\n")
    return run_id, agent, int(attempt), token


def queue_for(platform: str) -> str:
    """The Celery queue that carries the spawns of one platform."""
    return f"{QUEUE_PREFIX}{platform}"
