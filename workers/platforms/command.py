"""The `command` platform: runs any argv, the prompt on stdin, stdout as the output."""

from __future__ import annotations

from pathlib import Path

from orchestrator.models import AgentSpec, RunSpec
from workers.platforms.base import Invocation, Platform, ProcessResult, Verdict, exit_failure


class CommandPlatform(Platform):
    """A generic agent: succeeded when it exits 0, its stdout decoded as UTF-8."""

    name = "command"
    needs_workdir = False

    def validate(self, agent: AgentSpec, run: RunSpec) -> list[tuple[str, str]]:
        if not agent.argv:
            return [("argv", "the command platform needs a non-empty argv list")]
        return []

    def prepare(self, agent: AgentSpec, run: RunSpec, workdir: Path) -> Invocation:
        return Invocation(argv=list(agent.argv or []), stdin=agent.prompt.encode(), cwd=agent.cwd)

    def interpret(self, agent: AgentSpec, result: ProcessResult) -> Verdict:
        output = result.stdout.decode("utf-8", errors="replace")
        if result.exit_code != 0:
            return Verdict(output=output, error=exit_failure(result))
        return Verdict(output=output)
