"""The `agentfleet` command: documented exit codes, one-line errors, the embedded default."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, WorkerFactory, command_agent, worker_env

pytestmark = pytest.mark.e2e


def agentfleet(
    *args: str, url: str | None, timeout_s: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run the real CLI; without `url`, AGENTFLEET_REDIS_URL is unset (embedded default)."""
    env = worker_env(url or "")
    if url is None:
        del env["AGENTFLEET_REDIS_URL"]
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        stdin=subprocess.DEVNULL,
    )


def write_spec(tmp_path: Path, agents: list[dict[str, object]], **fields: object) -> Path:
    """Write a run spec as YAML and return its path."""
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump({"agents": agents, **fields}))
    return path


@pytest.mark.parametrize(
    ("scripts", "code"),
    [(["true", "true"], 0), (["true", "exit 1"], 3), (["exit 1", "exit 2"], 4)],
)
def test_submit_and_wait_exit_with_the_runs_status(
    redis_url: str,
    start_worker: WorkerFactory,
    tmp_path: Path,
    run_id: str,
    scripts: list[str],
    code: int,
) -> None:
    """Exit 0 when all succeed, 3 when partial, 4 when all failed."""
    start_worker("command")
    agents = [command_agent(f"a{i}", s) for i, s in enumerate(scripts)]
    spec = write_spec(tmp_path, agents, run_id=run_id)

    result = agentfleet("submit", str(spec), "--wait", "--json", url=redis_url)

    assert result.returncode == code, result.stderr
    assert json.loads(result.stdout)["run_id"] == run_id


def test_submit_prints_the_run_id_and_the_other_commands_find_it(
    redis_url: str, start_worker: WorkerFactory, tmp_path: Path
) -> None:
    """submit prints a run id that wait, status and result then report on."""
    start_worker("command")
    spec = write_spec(tmp_path, [command_agent("a", "echo hello")])

    run_id = agentfleet("submit", str(spec), url=redis_url).stdout.strip()
    waited = agentfleet("wait", run_id, "--json", url=redis_url)
    status = agentfleet("status", run_id, url=redis_url)
    result = agentfleet("result", run_id, url=redis_url)

    assert run_id.startswith("run-")
    assert json.loads(waited.stdout)["successful"][0]["output"] == "hello\n"
    assert json.loads(status.stdout)["settled"] == 1
    assert result.returncode == 0
    assert "hello" in result.stdout


def test_cancel_reports_a_cancelled_run(redis_url: str, tmp_path: Path) -> None:
    """cancel on a run nobody serves settles it cancelled; result then exits 4."""
    spec = write_spec(tmp_path, [command_agent("a", "sleep 60")])
    run_id = agentfleet("submit", str(spec), url=redis_url).stdout.strip()

    cancelled = agentfleet("cancel", run_id, url=redis_url)
    result = agentfleet("result", run_id, "--json", url=redis_url)

    assert cancelled.stdout.strip() == f"{run_id}: cancelled"
    assert result.returncode == 4
    assert json.loads(result.stdout)["failed"][0]["error"]["kind"] == "cancelled"


def test_invalid_input_exits_2_naming_the_field(redis_url: str, tmp_path: Path) -> None:
    """A bad spec exits 2 and names the offending path."""
    spec = write_spec(tmp_path, [command_agent("a", "true", timeout_s=-5)])

    result = agentfleet("submit", str(spec), url=redis_url)

    assert result.returncode == 2
    assert "agents.0.timeout_s" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_unreachable_redis_is_one_line_and_exit_1(tmp_path: Path) -> None:
    """A Redis nobody listens on gives exit 1 and a single line, no traceback."""
    spec = write_spec(tmp_path, [command_agent("a", "true")])

    result = agentfleet("submit", str(spec), url="redis://:hunter2@127.0.0.1:1/0")

    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert "unreachable" in result.stderr
    assert "hunter2" not in result.stderr


def test_a_worker_refuses_a_platform_it_has_no_adapter_for(redis_url: str) -> None:
    """`agentfleet worker --platform nonesuch` exits 1 with a clear message."""
    result = agentfleet("worker", "--platform", "nonesuch", url=redis_url)

    assert result.returncode == 1
    assert "no adapter for platform 'nonesuch'" in result.stderr


@pytest.mark.parametrize(
    ("platform", "binary"), [("claude-code", "claude"), ("opencode", "opencode")]
)
def test_a_worker_refuses_a_platform_whose_binary_is_missing(
    redis_url: str, tmp_path: Path, platform: str, binary: str
) -> None:
    """With no CLI in the tools folder or on PATH, the worker exits 1 naming the binary."""
    env = worker_env(redis_url, {"tools_dir": str(tmp_path)})
    env["PATH"] = str(tmp_path)

    result = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "worker", "--platform", platform],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )

    assert result.returncode == 1
    assert f"needs the '{binary}' executable" in result.stderr
    assert result.stderr.count("\n") == 1


def test_run_without_a_redis_url_uses_the_embedded_default() -> None:
    """The demo runs on a private Redis and worker, prints its table and exits 3."""
    result = agentfleet("run", str(REPO / "examples" / "demo.yaml"), url=None)

    assert result.returncode == 3, result.stderr
    assert "partial (2/6 agents failed)" in result.stdout
    assert "timeout" in result.stdout
    assert "exit_nonzero" in result.stdout
