"""Submission: validate a whole run, then write its state and one spawn per agent at once."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import structlog
from celery import Celery
from pydantic import ValidationError

from orchestrator.collector import Collector
from orchestrator.errors import PlatformUnavailableError, SpecError
from orchestrator.messages import Spawn, spawn_messages
from orchestrator.models import RunSpec, read_spec_file, spec_json_size
from orchestrator.settings import Settings

log = structlog.get_logger(__name__)

SpecSource = RunSpec | Mapping[str, Any] | Path


def validate_run(source: SpecSource, settings: Settings) -> RunSpec:
    """Return the run as a RunSpec, or raise SpecError listing every offending path."""
    spec = _parse(source, settings)
    problems = _check_limits(spec, settings) + _check_platforms(spec, settings)
    if problems:
        raise SpecError(problems)
    return spec


def _parse(source: SpecSource, settings: Settings) -> RunSpec:
    if isinstance(source, RunSpec):
        return source
    data = read_spec_file(source, settings.max_spec_bytes) if isinstance(source, Path) else source

    size = spec_json_size(data)
    if size > settings.max_spec_bytes:
        raise SpecError([("<spec>", f"spec is {size} bytes, over the {settings.max_spec_bytes}")])
    try:
        return RunSpec.model_validate(data)
    except ValidationError as err:
        raise SpecError([(_path(e["loc"]), e["msg"]) for e in err.errors()]) from err


def _path(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "<spec>"


def _check_limits(spec: RunSpec, settings: Settings) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    if len(spec.agents) > settings.max_agents:
        problems.append(("agents", f"{len(spec.agents)} agents, over the {settings.max_agents}"))
    if spec.deadline_s > settings.max_deadline_s:
        problems.append(("deadline_s", f"over the limit of {settings.max_deadline_s} s"))

    for i, agent in enumerate(spec.agents):
        prompt_bytes = len(agent.prompt.encode())
        if prompt_bytes > settings.max_prompt_bytes:
            problems.append(
                (f"agents.{i}.prompt", f"{prompt_bytes} bytes, over {settings.max_prompt_bytes}")
            )
        if agent.timeout_s > settings.max_agent_timeout_s:
            problems.append(
                (f"agents.{i}.timeout_s", f"over the limit of {settings.max_agent_timeout_s} s")
            )
    return problems


def _check_platforms(spec: RunSpec, settings: Settings) -> list[tuple[str, str]]:
    # Imported here: the adapters import orchestrator's models, whose package imports this.
    from workers.platforms import load_platform

    problems: list[tuple[str, str]] = []
    for i, agent in enumerate(spec.agents):
        try:
            platform = load_platform(agent.platform, settings)
        except PlatformUnavailableError as err:
            problems.append((f"agents.{i}.platform", str(err)))
            continue
        problems += [(f"agents.{i}.{field}", msg) for field, msg in platform.validate(agent, spec)]
    return problems


def submit(collector: Collector, app: Celery, spec: RunSpec) -> bool:
    """Accept a validated run: its state and spawn messages in one step; False if it existed."""
    spawns = [(agent.name, agent.platform, 1) for agent in spec.agents]
    created = collector.create(spec, spawn_messages(app, spec.run_id, spawns))
    if not created:
        log.info("run_exists", run_id=spec.run_id)
        return False

    log.debug("run_submitted", run_id=spec.run_id, agents=len(spec.agents))
    return True


def publish(app: Celery, collector: Collector, run_id: str, spawns: list[Spawn]) -> None:
    """Publish one spawn message per (agent name, platform, attempt); ids only, no prompt."""
    collector.publish(spawn_messages(app, run_id, spawns))
