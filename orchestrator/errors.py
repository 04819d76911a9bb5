"""The exception tree: every error agentfleet raises derives from AgentfleetError."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from orchestrator.models import AgentOutcome, RunAggregate


class AgentfleetError(Exception):
    """Root of every error agentfleet raises."""


class SpecError(AgentfleetError):
    """Raised when a run spec is invalid; nothing was written or enqueued."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        lines = [f"{path}: {message}" for path, message in problems]
        super().__init__("invalid run spec:\n  " + "\n  ".join(lines))


class RedisUnavailableError(AgentfleetError):
    """Raised when Redis cannot be reached or refuses the credentials."""


class RunNotFoundError(AgentfleetError):
    """Raised when no run with the given run_id exists in Redis."""


class RunLostError(AgentfleetError):
    """Raised when a run's state vanished from Redis (a restart without persistence)."""


class WaitTimeoutError(AgentfleetError):
    """Raised when a wait ends before the run's aggregate was written."""


class PlatformUnavailableError(AgentfleetError):
    """Raised when a worker cannot serve a platform: no adapter or no binary."""


class EmbeddedError(AgentfleetError):
    """Raised when the embedded Redis or worker cannot be started."""


class MultiAgentError(AgentfleetError):
    """Raised by a wait when at least one agent of the run failed; carries partial results."""

    def __init__(self, aggregate: RunAggregate) -> None:
        self.aggregate = aggregate
        self.successful: list[AgentOutcome] = list(aggregate.successful)
        self.failed: list[AgentOutcome] = list(aggregate.failed)
        super().__init__(f"run {aggregate.run_id} {aggregate.status.value}: {aggregate.message}")
