"""Driving a real agent CLI through an adapter and the worker's runner, for the CLI tests."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from orchestrator.models import AgentSpec, RunSpec
from workers.platforms.base import Platform, ProcessResult, Verdict
from workers.runner import run_process


def drive(
    platform: Platform,
    spec: AgentSpec,
    run: RunSpec,
    workdir: Path,
    env: dict[str, str],
) -> tuple[Verdict, ProcessResult, str]:
    """prepare(), the runner and interpret(), as a worker does; returns the agent's token."""
    invocation = platform.prepare(spec, run, workdir)
    agent_env = {"PATH": os.environ["PATH"], **invocation.env, **env}
    token = uuid.uuid4().hex
    result = run_process(invocation, agent_env, token, spec.timeout_s, 1 << 20, kill_grace_s=1.0)
    verdict = platform.interpret(spec, result) if not result.timed_out else Verdict()
    return verdict, result, token
