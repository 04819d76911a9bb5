"""agentfleet's orchestrator: submit runs of agents and collect every outcome."""

from orchestrator.client import Fleet, RunHandle
from orchestrator.errors import (
    AgentfleetError,
    MultiAgentError,
    RedisUnavailableError,
    RunLostError,
    RunNotFoundError,
    SpecError,
    WaitTimeoutError,
)
from orchestrator.logs import quiet_by_default
from orchestrator.models import (
    AgentError,
    AgentOutcome,
    AgentSpec,
    FailureKind,
    OutcomeStatus,
    RunAggregate,
    RunProgress,
    RunSpec,
    RunStatus,
    Usage,
)
from orchestrator.settings import Settings

quiet_by_default()

__all__ = [
    "AgentError",
    "AgentOutcome",
    "AgentSpec",
    "AgentfleetError",
    "FailureKind",
    "Fleet",
    "MultiAgentError",
    "OutcomeStatus",
    "RedisUnavailableError",
    "RunAggregate",
    "RunHandle",
    "RunLostError",
    "RunNotFoundError",
    "RunProgress",
    "RunSpec",
    "RunStatus",
    "Settings",
    "SpecError",
    "Usage",
    "WaitTimeoutError",
]
