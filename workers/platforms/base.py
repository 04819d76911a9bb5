"""The platform adapter interface: how one kind of agent is started and how it is judged."""

from __future__ import annotations

import os
import shutil
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from orchestrator.errors import PlatformUnavailableError
from orchestrator.models import AgentError, AgentSpec, FailureKind, RunSpec, Usage
from orchestrator.settings import Settings


@dataclass(frozen=True)
class Invocation:
    """The process to start for one agent: never a shell, the prompt on stdin."""

    argv: list[str]
    stdin: bytes = b""
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    cleanup: Callable[[], None] | None = None


@dataclass(frozen=True)
class ProcessResult:
    """What the runner saw of an agent process once it ended."""

    exit_code: int | None
    signal: int | None
    stdout: bytes
    stdout_truncated: bool
    stderr_tail: str
    timed_out: bool
    duration_s: float


@dataclass
class Verdict:
    """A platform's reading of a finished process: an output, or an error."""

    output: str = ""
    error: AgentError | None = None
    session_id: str | None = None
    usage: Usage | None = None
    cost_usd: float | None = None
    num_turns: int | None = None


class Platform(ABC):
    """An agent platform: builds the agent's process and turns its result into a verdict."""

    name: ClassVar[str]
    # Variable names a platform's CLI needs from the worker's environment, on top of the
    # core allowlist: credentials reach the agents of this platform and no other.
    extra_env: ClassVar[tuple[str, ...]] = ()
    extra_env_prefixes: ClassVar[tuple[str, ...]] = ()
    # Whether prepare() writes to its workdir; a platform that does not gets the shared
    # temp folder instead of a private one, and must not write there.
    needs_workdir: ClassVar[bool] = True

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def binary(self) -> str | None:
        """Name or path of the executable a worker needs for this platform, if any."""
        return None

    def check(self) -> None:
        """Raise PlatformUnavailableError when this worker cannot run the platform's agents."""
        binary = self.binary()
        if binary is not None and resolve_binary(binary, self.settings) is None:
            raise PlatformUnavailableError(
                f"platform {self.name!r} needs the {binary!r} executable; "
                f"it is neither in {self.settings.tools_dir} nor on PATH"
            )

    def agent_env(self, extra: Mapping[str, str]) -> dict[str, str]:
        """The environment an agent of this platform gets: the core allowlist and this
        platform's variables from the worker's environment, then `extra` on top."""
        allowlist = [*self.settings.env_allowlist, *self.extra_env]
        return build_env(os.environ, allowlist, self.extra_env_prefixes, extra)

    def validate(self, agent: AgentSpec, run: RunSpec) -> list[tuple[str, str]]:
        """Return (field, problem) pairs for an agent this platform cannot run."""
        return []

    @abstractmethod
    def prepare(self, agent: AgentSpec, run: RunSpec, workdir: Path) -> Invocation:
        """Build the process for `agent`; `workdir` is a private folder removed afterwards."""

    @abstractmethod
    def interpret(self, agent: AgentSpec, result: ProcessResult) -> Verdict:
        """Judge a process that ended on its own (not killed at its timeout)."""


def build_env(
    source: Mapping[str, str],
    allowlist: list[str],
    prefixes: tuple[str, ...],
    extra: Mapping[str, str],
) -> dict[str, str]:
    """The agent's environment: allowlisted names from `source`, then `extra` on top."""
    env = {name: source[name] for name in allowlist if name in source}
    if prefixes:
        env.update({k: v for k, v in source.items() if k.startswith(prefixes)})
    env.update(extra)
    return env


def resolve_binary(binary: str, settings: Settings) -> str | None:
    """Find `binary` in the project's tools folder first, then on PATH."""
    if "/" in binary:
        return binary if Path(binary).is_file() else None

    local = settings.tools_dir / "node_modules" / ".bin" / binary
    if local.is_file():
        return str(local.resolve())
    return shutil.which(binary)


def tail_text(data: bytes, max_chars: int = 2000) -> str:
    """Decode the end of `data` with replacement, for messages and stderr tails."""
    return data[-max_chars * 4 :].decode("utf-8", errors="replace")[-max_chars:]


def exit_failure(result: ProcessResult, message: str | None = None) -> AgentError:
    """The error of a process that exited non-zero or died of a signal."""
    if result.signal is not None:
        default = f"agent process killed by signal {result.signal}"
    else:
        default = f"agent process exited with code {result.exit_code}"
    return AgentError(
        kind=FailureKind.EXIT_NONZERO,
        message=message or default,
        exit_code=result.exit_code,
        signal=result.signal,
        stderr_tail=result.stderr_tail,
    )
