"""The run contract: what a pipeline submits (RunSpec) and what it gets back (RunAggregate)."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from orchestrator.errors import SpecError

Identifier = Annotated[
    str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._-]+$")
]
EnvName = Annotated[str, StringConstraints(min_length=1, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]


def new_run_id() -> str:
    """Return a fresh run id for a spec that did not choose one."""
    return f"run-{uuid.uuid4().hex[:16]}"


class OutcomeStatus(StrEnum):
    """How one agent ended."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"


class RunStatus(StrEnum):
    """How a whole run ended."""

    SUCCEEDED = "succeeded"
    PARTIAL = "partial"
    FAILED = "failed"
    CANCELLED = "cancelled"


class FailureKind(StrEnum):
    """Why an agent failed: a closed set, stable for pipelines to match on."""

    SPAWN_ERROR = "spawn_error"
    EXIT_NONZERO = "exit_nonzero"
    TIMEOUT = "timeout"
    AGENT_ERROR = "agent_error"
    INVALID_OUTPUT = "invalid_output"
    WORKER_LOST = "worker_lost"
    CANCELLED = "cancelled"
    DEADLINE_EXCEEDED = "deadline_exceeded"


class AgentSpec(BaseModel):
    """One agent to spawn: which platform runs it, with what prompt, for how long."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Identifier
    platform: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    prompt: str = ""
    argv: list[str] | None = None
    agent: Identifier | None = None
    model: Annotated[str, StringConstraints(min_length=1, max_length=256)] | None = None
    timeout_s: float = Field(default=900.0, gt=0)
    cwd: str | None = None
    env: dict[EnvName, str] = Field(default_factory=dict)
    max_output_bytes: int | None = Field(default=None, ge=1)


class RunSpec(BaseModel):
    """A run: agents spawned together whose outcomes come back as one aggregate."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    run_id: Identifier = Field(default_factory=new_run_id)
    agents: list[AgentSpec] = Field(min_length=1)
    deadline_s: float = Field(default=3600.0, gt=0)
    labels: dict[str, str] = Field(default_factory=dict)
    ttl_s: int = Field(default=7 * 24 * 3600, ge=60)
    agent_definitions: dict[Identifier, str] = Field(default_factory=dict)

    @field_validator("agents")
    @classmethod
    def _names_are_unique(cls, agents: list[AgentSpec]) -> list[AgentSpec]:
        counts = Counter(agent.name for agent in agents)
        duplicates = sorted(name for name, count in counts.items() if count > 1)
        if duplicates:
            raise ValueError(f"duplicate agent names: {', '.join(duplicates)}")
        return agents


class Usage(BaseModel):
    """Tokens an LLM agent used, as its CLI reported them."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_creation_tokens: int = 0


class AgentError(BaseModel):
    """Why an agent failed, with the raw facts that explain it."""

    kind: FailureKind
    message: str
    exit_code: int | None = None
    signal: int | None = None
    stderr_tail: str = ""


class AgentOutcome(BaseModel):
    """What became of one agent: its output when it succeeded, its error when it failed."""

    name: str
    platform: str
    status: OutcomeStatus
    output: str = ""
    output_truncated: bool = False
    exit_code: int | None = None
    error: AgentError | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_s: float | None = None
    attempts: int = 0
    worker: str | None = None
    session_id: str | None = None
    usage: Usage | None = None
    cost_usd: float | None = None
    num_turns: int | None = None


class RunAggregate(BaseModel):
    """Every outcome of a run, written once to `agentfleet:run:<run_id>:aggregate`."""

    run_id: str
    status: RunStatus
    message: str
    total: int
    succeeded_count: int
    failed_count: int
    submitted_at: datetime
    finished_at: datetime
    labels: dict[str, str] = Field(default_factory=dict)
    usage: Usage = Field(default_factory=Usage)
    cost_usd: float = 0.0
    successful: list[AgentOutcome] = Field(default_factory=list)
    failed: list[AgentOutcome] = Field(default_factory=list)

    def outcome(self, name: str) -> AgentOutcome:
        """Return the outcome of the agent called `name`."""
        for outcome in [*self.successful, *self.failed]:
            if outcome.name == name:
                return outcome
        raise KeyError(name)


class RunProgress(BaseModel):
    """Live progress of a run: how many of its agents have settled."""

    run_id: str
    state: str
    total: int
    settled: int
    succeeded_count: int
    failed_count: int
    submitted_at: datetime
    deadline_at: datetime


def parse_spec_text(text: str, source: str = "<spec>") -> dict[str, Any]:
    """Parse YAML or JSON text into a mapping, or raise SpecError naming the source."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise SpecError([(source, f"not valid YAML or JSON: {err}")]) from err

    if not isinstance(data, dict):
        raise SpecError([(source, "a run spec must be a mapping with an 'agents' list")])
    return data


def read_spec_file(path: Path, max_bytes: int) -> dict[str, Any]:
    """Read a YAML or JSON spec file, refusing one larger than `max_bytes`."""
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise SpecError([(str(path), f"spec is {size} bytes, over the {max_bytes} limit")])
        return parse_spec_text(path.read_text(encoding="utf-8"), str(path))
    except OSError as err:
        raise SpecError([(str(path), f"cannot read spec: {err.strerror}")]) from err


def spec_json_size(data: Any) -> int:
    """Size in bytes of a spec rendered as JSON, the measure its size limit uses."""
    return len(json.dumps(data, default=str).encode())
