"""Agent definitions: markdown files whose YAML frontmatter names and describes an agent.

The same files serve every LLM platform. A definition looks like::

    ---
    name: reviewer
    description: Reviews a diff for bugs
    model: sonnet            # optional, in the platform's own spelling
    tools: Read, Grep        # optional: a list, or names separated by commas
    ---
    You are a careful reviewer. ...

The body is the agent's system prompt. Definitions come from the run itself
(`RunSpec.agent_definitions`, name to markdown text) or from `settings.agents_dir`; an
inline definition wins over a file of the same name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from orchestrator.errors import AgentfleetError, PlatformUnavailableError
from orchestrator.models import AgentSpec, RunSpec
from orchestrator.settings import Settings
from workers.platforms.base import resolve_binary

__all__ = [
    "AgentDefinition",
    "AgentDefinitionError",
    "find_agent_definition",
    "parse_agent_definition",
    "require_binary",
    "validate_llm_agent",
]

NAME_PATTERN = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
FRONTMATTER = re.compile(r"\A---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(?:\r?\n|\Z)(.*)\Z", re.DOTALL)
MAX_DEFINITION_BYTES = 256 * 1024


class AgentDefinitionError(AgentfleetError):
    """Raised when a named agent has no definition or its definition is malformed."""


@dataclass(frozen=True)
class AgentDefinition:
    """One agent: its name, when to use it, its system prompt, model and tools."""

    name: str
    description: str
    prompt: str
    model: str | None = None
    tools: tuple[str, ...] | None = None
    source: str = "<inline>"


def parse_agent_definition(text: str, source: str = "<inline>") -> AgentDefinition:
    """Parse one markdown definition, or raise AgentDefinitionError naming `source`."""
    match = FRONTMATTER.match(text.lstrip("\ufeff"))
    if match is None:
        raise AgentDefinitionError(f"{source}: no YAML frontmatter between '---' lines")

    meta = _load_frontmatter(match.group(1), source)
    name = _required_text(meta, "name", source)
    if not NAME_PATTERN.match(name):
        raise AgentDefinitionError(f"{source}: name {name!r} is not a valid agent name")

    return AgentDefinition(
        name=name,
        description=_required_text(meta, "description", source),
        prompt=match.group(2).strip(),
        model=_optional_text(meta, "model", source),
        tools=_tools(meta.get("tools"), source),
        source=source,
    )


def find_agent_definition(name: str, run: RunSpec, agents_dir: Path | None) -> AgentDefinition:
    """The definition of agent `name`: inline in the run first, then in `agents_dir`."""
    inline = run.agent_definitions.get(name)
    if inline is not None:
        return _checked(parse_agent_definition(inline, f"agent_definitions[{name}]"), name)

    if agents_dir is not None:
        found = _find_in_dir(name, agents_dir)
        if found is not None:
            return found

    where = f"in agent_definitions or in {agents_dir}" if agents_dir else "in agent_definitions"
    raise AgentDefinitionError(f"no definition of agent {name!r} {where}")


def _find_in_dir(name: str, agents_dir: Path) -> AgentDefinition | None:
    direct = agents_dir / f"{name}.md"
    candidates = [direct] if direct.is_file() else []
    candidates += sorted(p for p in agents_dir.glob("*.md") if p != direct)
    for path in candidates:
        definition = parse_agent_definition(_read(path), str(path))
        if definition.name == name:
            return definition
    return None


def _read(path: Path) -> str:
    try:
        if path.stat().st_size > MAX_DEFINITION_BYTES:
            raise AgentDefinitionError(f"{path}: over {MAX_DEFINITION_BYTES} bytes")
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise AgentDefinitionError(f"{path}: cannot read agent definition: {err}") from err


def _checked(definition: AgentDefinition, name: str) -> AgentDefinition:
    if definition.name != name:
        raise AgentDefinitionError(
            f"{definition.source}: frontmatter names {definition.name!r}, expected {name!r}"
        )
    return definition


def _load_frontmatter(text: str, source: str) -> dict[str, Any]:
    try:
        meta = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise AgentDefinitionError(f"{source}: frontmatter is not valid YAML: {err}") from err
    if not isinstance(meta, dict):
        raise AgentDefinitionError(f"{source}: frontmatter must be a mapping")
    return meta


def _required_text(meta: dict[str, Any], key: str, source: str) -> str:
    value = _optional_text(meta, key, source)
    if not value:
        raise AgentDefinitionError(f"{source}: frontmatter needs a non-empty {key!r}")
    return value


def _optional_text(meta: dict[str, Any], key: str, source: str) -> str | None:
    value = meta.get(key)
    if value is None:
        return None
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise AgentDefinitionError(f"{source}: {key!r} must be a string")
    return str(value).strip() or None


def _tools(value: Any, source: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return tuple(t.strip() for t in value.split(",") if t.strip())
    if isinstance(value, list) and all(isinstance(t, str) for t in value):
        return tuple(t.strip() for t in value if t.strip())
    raise AgentDefinitionError(f"{source}: 'tools' must be a list or a comma-separated string")


def require_binary(binary: str, settings: Settings) -> str:
    """The executable's path, or PlatformUnavailableError (the agent fails as spawn_error)."""
    path = resolve_binary(binary, settings)
    if path is None:
        raise PlatformUnavailableError(
            f"{binary!r} is neither in {settings.tools_dir} nor on PATH; "
            "run scripts/install-clis.sh"
        )
    return path


def validate_llm_agent(agent: AgentSpec, run: RunSpec) -> list[tuple[str, str]]:
    """Problems a client can see before submitting: stray argv, malformed inline agents.

    Whether a named agent exists is checked on the worker, which owns `agents_dir`.
    """
    problems: list[tuple[str, str]] = []
    if agent.argv:
        problems.append(("argv", f"not used by platform {agent.platform!r}; use prompt"))
    inline = run.agent_definitions.get(agent.agent) if agent.agent else None
    if inline is not None:
        try:
            parse_agent_definition(inline, f"agent_definitions[{agent.agent}]")
        except AgentDefinitionError as err:
            problems.append(("agent", str(err)))
    return problems
