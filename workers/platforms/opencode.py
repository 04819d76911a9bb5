"""The `opencode` platform: `opencode run --format json`, judged from its event stream.

OpenCode prints one JSON event per line (step_start, text, tool_use, step_finish, error).
The output is the text parts joined; an error event or a non-zero exit is a failure.
The prompt goes on stdin, which `opencode run` reads to its end when it is not a TTY, so a
prompt that starts with `--` is never parsed as a flag.

Each run gets a config file of its own in the agent's private workdir, named by
OPENCODE_CONFIG: it turns off autoupdate and sharing, and holds the named agent's
definition. OpenCode silently falls back to its default agent when `--agent` names one it
does not know, so the adapter refuses an agent it has no definition for (spawn_error).
"""

from __future__ import annotations

import fcntl
import json
import subprocess
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.models import AgentError, AgentSpec, FailureKind, RunSpec, Usage
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

BINARY = "opencode"
CONFIG_FOLDER = "opencode-config"
# OpenCode's own primary agents: they need no definition.
BUILTIN_AGENTS = frozenset({"build", "plan"})
# Claude Code tool names in shared agent definitions, spelled the OpenCode way.
TOOL_NAMES = {
    "bash": "bash",
    "edit": "edit",
    "multiedit": "edit",
    "write": "write",
    "read": "read",
    "grep": "grep",
    "glob": "glob",
    "ls": "list",
    "webfetch": "webfetch",
    "todowrite": "todowrite",
    "todoread": "todoread",
    "task": "task",
}


class OpenCodePlatform(Platform):
    """OpenCode agents: `opencode run`, prompt on stdin, agents from a per-run config."""

    name = "opencode"
    extra_env = ("HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY", "XDG_CONFIG_HOME", "XDG_DATA_HOME")
    extra_env_prefixes = (
        "OPENCODE_",
        "ANTHROPIC_",
        "OPENAI_",
        "OPENROUTER_",
        "GEMINI_",
        "GOOGLE_",
    )

    def binary(self) -> str:
        return BINARY

    def validate(self, agent: AgentSpec, run: RunSpec) -> list[tuple[str, str]]:
        problems = validate_llm_agent(agent, run)
        if agent.model and "/" not in agent.model:
            problems.append(("model", "opencode needs a model as provider/model"))
        return problems

    def prepare(self, agent: AgentSpec, run: RunSpec, workdir: Path) -> Invocation:
        binary = require_binary(BINARY, self.settings)
        definition = self._definition(agent, run)
        config_path = write_config(workdir / CONFIG_FOLDER, definition)

        env = opencode_env(config_path)
        ensure_database(binary, self.agent_env({**env, **agent.env}))

        argv = [binary, "run", "--format", "json"]
        if agent.agent:
            argv += ["--agent", agent.agent]
        if agent.model:
            argv += ["-m", agent.model]
        return Invocation(
            argv=argv,
            stdin=agent.prompt.encode(),
            env=env,
            cwd=agent.cwd or str(workdir),
        )

    def interpret(self, agent: AgentSpec, result: ProcessResult) -> Verdict:
        events = read_events(result.stdout)
        verdict = Verdict(
            output="\n".join(events.texts),
            session_id=events.session_id,
            usage=events.usage if events.steps else None,
            cost_usd=events.cost_usd if events.steps else None,
            num_turns=events.steps or None,
        )
        verdict.error = events_error(events, result)
        return verdict

    def _definition(self, agent: AgentSpec, run: RunSpec) -> AgentDefinition | None:
        if not agent.agent:
            return None
        if agent.agent in BUILTIN_AGENTS and agent.agent not in run.agent_definitions:
            return None
        return find_agent_definition(agent.agent, run, self.settings.agents_dir)


def opencode_env(config_path: Path) -> dict[str, str]:
    """Variables that keep OpenCode on this run's config and off the network."""
    return {
        "OPENCODE_CONFIG": str(config_path),
        "OPENCODE_DISABLE_AUTOUPDATE": "1",
        "OPENCODE_DISABLE_MODELS_FETCH": "1",
        "OPENCODE_DISABLE_SHARE": "1",
        "OPENCODE_DISABLE_LSP_DOWNLOAD": "1",
        "OPENCODE_DISABLE_DEFAULT_PLUGINS": "1",
        # OpenCode installs @opencode-ai/plugin into its config folders from the npm
        # registry at every start, with no switch to stop it (anomalyco/opencode#37888);
        # offline mode makes that install fail at once, harmlessly.
        "npm_config_offline": "true",
    }


def write_config(folder: Path, definition: AgentDefinition | None) -> Path:
    """Write the run's opencode.json into `folder` and return its path."""
    agents: dict[str, Any] = {"title": {"disable": True}}
    if definition is not None:
        agents[definition.name] = agent_entry(definition)
    config = {"autoupdate": False, "share": "disabled", "agent": agents}

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "opencode.json"
    path.write_text(json.dumps(config, indent=2), encoding="utf-8")
    return path


def agent_entry(definition: AgentDefinition) -> dict[str, Any]:
    """A definition as an OpenCode primary agent; a model without a provider is left out."""
    entry: dict[str, Any] = {
        "description": definition.description,
        "mode": "primary",
        "prompt": definition.prompt,
    }
    if definition.model and "/" in definition.model:
        entry["model"] = definition.model
    if definition.tools is not None:
        allowed = {TOOL_NAMES.get(t.lower(), t.lower()) for t in definition.tools}
        entry["tools"] = {"*": False, **dict.fromkeys(sorted(allowed), True)}
    return entry


@dataclass
class Events:
    """What the event stream said: text, totals over steps, and the first error."""

    texts: list[str] = field(default_factory=list)
    session_id: str | None = None
    usage: Usage = field(default_factory=Usage)
    cost_usd: float = 0.0
    steps: int = 0
    error: dict[str, Any] | None = None
    parsed: int = 0


def read_events(stdout: bytes) -> Events:
    """Fold every JSON line of `stdout` into Events; lines that are not JSON are skipped."""
    events = Events()
    for line in stdout.decode("utf-8", errors="replace").splitlines():
        event = _json_line(line)
        if event is not None:
            events.parsed += 1
            _fold(events, event)
    return events


def _json_line(line: str) -> dict[str, Any] | None:
    try:
        event = json.loads(line)
    except json.JSONDecodeError:
        return None
    return event if isinstance(event, dict) else None


def _fold(events: Events, event: dict[str, Any]) -> None:
    events.session_id = events.session_id or event.get("sessionID")
    part = _mapping(event.get("part"))
    kind = event.get("type")
    if kind == "text" and isinstance(part.get("text"), str):
        events.texts.append(part["text"])
    elif kind == "step_finish":
        events.steps += 1
        _add_usage(events, part)
    elif kind == "error" and events.error is None:
        error = event.get("error")
        events.error = error if isinstance(error, dict) else {"data": {"message": str(error)}}


def _add_usage(events: Events, part: dict[str, Any]) -> None:
    tokens = _mapping(part.get("tokens"))
    cache = _mapping(tokens.get("cache"))
    usage = events.usage
    usage.input_tokens += _count(tokens.get("input"))
    usage.output_tokens += _count(tokens.get("output")) + _count(tokens.get("reasoning"))
    usage.cache_read_tokens += _count(cache.get("read"))
    usage.cache_creation_tokens += _count(cache.get("write"))
    cost = part.get("cost")
    if isinstance(cost, int | float) and not isinstance(cost, bool):
        events.cost_usd += float(cost)


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def events_error(events: Events, result: ProcessResult) -> AgentError | None:
    """The failure the stream or the exit reports, or None when the agent succeeded."""
    if events.error is not None:
        return AgentError(
            kind=FailureKind.AGENT_ERROR,
            message=error_message(events.error),
            exit_code=result.exit_code,
            signal=result.signal,
            stderr_tail=result.stderr_tail,
        )
    if result.exit_code != 0:
        return exit_failure(result)
    if events.parsed == 0:
        ending = tail_text(result.stdout, 500)
        return AgentError(
            kind=FailureKind.INVALID_OUTPUT,
            message=f"opencode printed no JSON events; it ended with: {ending}",
            exit_code=result.exit_code,
            stderr_tail=result.stderr_tail,
        )
    return None


def error_message(error: dict[str, Any]) -> str:
    """A one-line reason from an error event, naming the API status when there is one."""
    data = _mapping(error.get("data"))
    message = str(data.get("message") or error.get("message") or "unknown error")
    name = str(error.get("name") or "error")
    status = data.get("statusCode")
    if status is not None:
        return f"API error {status}: {message} ({name})"
    return f"{name}: {message}"


_database_lock = threading.Lock()


def database_path(env: Mapping[str, str]) -> Path:
    """Where OpenCode keeps its SQLite database for an agent with environment `env`."""
    data_home = env.get("XDG_DATA_HOME") or str(Path(env.get("HOME", "/")) / ".local" / "share")
    return Path(data_home) / "opencode" / "opencode.db"


def ensure_database(binary: str, env: Mapping[str, str]) -> None:
    """Create OpenCode's database once, before agents share it.

    Two `opencode run` processes starting on a fresh data folder both run its schema
    migrations and one fails ("Failed query: CREATE TABLE `workspace` ...", exit 1; seen
    with 1.18.33 in about one run in three). `opencode db path` migrates and exits, so it is
    run once per data folder, under a lock that other threads and workers on this host honour.
    """
    database = database_path(env)
    if database.exists():
        return
    database.parent.mkdir(parents=True, exist_ok=True)
    with _database_lock, (database.parent / ".agentfleet-init.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not database.exists():
            subprocess.run(
                [binary, "db", "path"],
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=120,
                check=False,
            )
