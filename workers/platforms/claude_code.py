"""The `claude-code` platform: Claude Code's headless mode, judged from its JSON result.

`claude -p --output-format json` reads the prompt from stdin and prints one JSON result
object. The exit code is not trusted: Claude Code can exit 0 with `is_error: true` (an API
error it gave up on) and exits 1 on `error_max_turns`, so the verdict comes from the
result's `is_error`, `subtype` and `api_error_status`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from orchestrator.models import AgentError, AgentSpec, FailureKind, RunSpec, Usage
from orchestrator.settings import Settings
from workers.platforms.agentdefs import (
    AgentDefinition,
    find_agent_definition,
    require_binary,
    validate_llm_agent,
)
from workers.platforms.base import (
    Invocation,
    Platform,
    ProcessResult,
    Verdict,
    exit_failure,
    tail_text,
)

BINARY = "claude"
SUBTYPE_MESSAGES = {
    "error_max_turns": "agent stopped at its maximum number of turns",
    "error_during_execution": "agent failed during execution",
    "error_max_budget_usd": "agent stopped at its maximum budget in USD",
}


class ClaudeCodePlatform(Platform):
    """Claude Code agents: `claude -p`, prompt on stdin, named agents through `--agents`."""

    name = "claude-code"
    extra_env = ("HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY")
    extra_env_prefixes = ("ANTHROPIC_", "CLAUDE_CODE_")

    def binary(self) -> str:
        return BINARY

    def validate(self, agent: AgentSpec, run: RunSpec) -> list[tuple[str, str]]:
        return validate_llm_agent(agent, run)

    def prepare(self, agent: AgentSpec, run: RunSpec, workdir: Path) -> Invocation:
        binary = require_binary(BINARY, self.settings)
        argv = [binary, "-p", "--output-format", "json", *self._permission_args()]
        if agent.model:
            argv += ["--model", agent.model]
        if agent.agent:
            definition = find_agent_definition(agent.agent, run, self.settings.agents_dir)
            argv += ["--agents", agents_json(definition), "--agent", definition.name]

        return Invocation(
            argv=argv,
            stdin=agent.prompt.encode(),
            env=claude_env(self.settings),
            cwd=agent.cwd or str(workdir),
        )

    def interpret(self, agent: AgentSpec, result: ProcessResult) -> Verdict:
        data = parse_result(result.stdout)
        if data is None:
            return unparseable(result)

        verdict = Verdict(
            output=str(data.get("result") or ""),
            session_id=data.get("session_id"),
            usage=claude_usage(data.get("usage")),
            cost_usd=_number(data.get("total_cost_usd")),
            num_turns=_int(data.get("num_turns")),
        )
        verdict.error = result_error(data, result)
        return verdict

    def _permission_args(self) -> list[str]:
        args = ["--permission-mode", self.settings.claude_permission_mode]
        if self.settings.claude_allowed_tools:
            args += ["--allowedTools", ",".join(self.settings.claude_allowed_tools)]
        return args


def claude_env(settings: Settings) -> dict[str, str]:
    """Variables that keep Claude Code headless, quiet on the network and quick to give up."""
    return {
        "CLAUDE_CODE_MAX_RETRIES": str(settings.claude_max_retries),
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_ERROR_REPORTING": "1",
    }


def agents_json(definition: AgentDefinition) -> str:
    """The `--agents` JSON object defining one agent."""
    entry: dict[str, Any] = {"description": definition.description, "prompt": definition.prompt}
    if definition.model:
        entry["model"] = definition.model
    if definition.tools is not None:
        entry["tools"] = list(definition.tools)
    return json.dumps({definition.name: entry})


def parse_result(stdout: bytes) -> dict[str, Any] | None:
    """The result object Claude Code printed, or None when there is none."""
    text = stdout.decode("utf-8", errors="replace").strip()
    for candidate in [text, *reversed(text.splitlines())]:
        try:
            data = json.loads(candidate)
        except json.JSONDecodeError:
            continue
        if isinstance(data, dict) and data.get("type") == "result":
            return data
    return None


def unparseable(result: ProcessResult) -> Verdict:
    """An agent that printed no result object: a crash, or output that is not JSON."""
    if not result.stdout.strip() and result.exit_code != 0:
        return Verdict(error=exit_failure(result))

    cause = "was cut at max_output_bytes" if result.stdout_truncated else "is not a JSON result"
    message = f"claude output {cause}; it ended with: {tail_text(result.stdout, 500)}"
    return Verdict(
        output=result.stdout.decode("utf-8", errors="replace"),
        error=AgentError(
            kind=FailureKind.INVALID_OUTPUT,
            message=message,
            exit_code=result.exit_code,
            signal=result.signal,
            stderr_tail=result.stderr_tail,
        ),
    )


def result_error(data: dict[str, Any], result: ProcessResult) -> AgentError | None:
    """The error a result object reports, or None when the agent succeeded."""
    subtype = str(data.get("subtype") or "")
    if not data.get("is_error") and subtype == "success":
        return None

    return AgentError(
        kind=FailureKind.AGENT_ERROR,
        message=error_message(data, subtype),
        exit_code=result.exit_code,
        signal=result.signal,
        stderr_tail=result.stderr_tail,
    )


def error_message(data: dict[str, Any], subtype: str) -> str:
    """A one-line reason: the API status first, then the subtype, then the result text."""
    detail = str(data.get("result") or "; ".join(map(str, data.get("errors") or [])))
    status = data.get("api_error_status")
    if status is not None:
        return f"API error {status}: {detail}".strip()
    if subtype in SUBTYPE_MESSAGES:
        turns = f" ({data['num_turns']} turns)" if data.get("num_turns") else ""
        return f"{SUBTYPE_MESSAGES[subtype]}{turns}" + (f": {detail}" if detail else "")
    return detail or f"agent reported an error (subtype {subtype or 'unknown'})"


def claude_usage(raw: Any) -> Usage | None:
    """Token counts from the result's `usage` object."""
    if not isinstance(raw, dict):
        return None
    return Usage(
        input_tokens=_int(raw.get("input_tokens")) or 0,
        output_tokens=_int(raw.get("output_tokens")) or 0,
        cache_read_tokens=_int(raw.get("cache_read_input_tokens")) or 0,
        cache_creation_tokens=_int(raw.get("cache_creation_input_tokens")) or 0,
    )


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None
