"""Real claude and opencode agents, run by real workers against the stub model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from orchestrator import Fleet
from orchestrator.models import FailureKind, RunStatus
from orchestrator.settings import Settings
from tests.conftest import WorkerFactory
from tests.stubmodel import Reply, StubModel
from workers.platforms.base import resolve_binary

REPO = Path(__file__).resolve().parent.parent
TOOLS_DIR = REPO / ".agentfleet" / "tools"
OPENCODE_MODEL = "anthropic/claude-sonnet-4-5"

pytestmark = [pytest.mark.e2e, pytest.mark.cli]


@pytest.fixture
def cli_worker(start_worker: WorkerFactory, tmp_path: Path) -> None:
    """A worker serving both CLI platforms, with small retry budgets and a private HOME."""
    settings = Settings(tools_dir=TOOLS_DIR)
    missing = [b for b in ("claude", "opencode") if resolve_binary(b, settings) is None]
    # `make test` installs the CLIs; a missing one is a failed set-up, never a skip.
    assert not missing, f"{', '.join(missing)} not installed: run scripts/install-clis.sh"
    home = tmp_path / "home"
    home.mkdir()
    start_worker(
        "claude-code",
        "opencode",
        settings={"tools_dir": str(TOOLS_DIR), "claude_max_retries": "1"},
        extra_env={"HOME": str(home)},
    )


def claude_agent(name: str, prompt: str, stub: StubModel) -> dict[str, Any]:
    env = {"ANTHROPIC_BASE_URL": stub.base_url, "ANTHROPIC_API_KEY": "sk-stub"}
    return {"name": name, "platform": "claude-code", "prompt": prompt, "env": env, "timeout_s": 90}


def opencode_agent(name: str, prompt: str, stub: StubModel) -> dict[str, Any]:
    options = {"baseURL": f"{stub.base_url}/v1", "apiKey": "sk-stub"}
    config = {"provider": {"anthropic": {"options": options}}}
    return {
        "name": name,
        "platform": "opencode",
        "prompt": prompt,
        "model": OPENCODE_MODEL,
        "env": {"OPENCODE_CONFIG_CONTENT": json.dumps(config)},
        "timeout_s": 120,
    }


def test_mixed_cli_run_with_an_api_error_on_each_platform_is_partial(
    fleet: Fleet, cli_worker: None, stub: StubModel, run_id: str
) -> None:
    """Two agents per CLI, one of each hitting an API error: partial, every fact reported."""
    stub.when("CLAUDE-GOOD", Reply.text_reply("claude: all tests pass"))
    stub.when("CLAUDE-BAD", Reply.error(500))
    stub.when("OPENCODE-GOOD", Reply.text_reply("opencode: found 2 bugs"))
    stub.when("OPENCODE-BAD", Reply.error(429))
    agents = [
        claude_agent("c-ok", "CLAUDE-GOOD run the tests", stub),
        claude_agent("c-bad", "CLAUDE-BAD run the tests", stub),
        opencode_agent("o-ok", "OPENCODE-GOOD review the diff", stub),
        opencode_agent("o-bad", "OPENCODE-BAD review the diff", stub),
    ]

    aggregate = fleet.submit({"run_id": run_id, "agents": agents}).fleet.wait_settled(
        run_id, timeout_s=240
    )

    bodies = [r.raw for r in stub.message_requests()]
    seen = aggregate.model_dump_json(include={"failed"})
    assert any("CLAUDE-BAD" in b for b in bodies), f"the claude fault never fired: {seen}"
    assert any("OPENCODE-BAD" in b for b in bodies), f"the opencode fault never fired: {seen}"
    assert aggregate.status is RunStatus.PARTIAL
    assert {o.name: o.output for o in aggregate.successful} == {
        "c-ok": "claude: all tests pass",
        "o-ok": "opencode: found 2 bugs",
    }
    failures = {o.name: o.error for o in aggregate.failed}
    assert {name: e.kind if e else None for name, e in failures.items()} == {
        "c-bad": FailureKind.AGENT_ERROR,
        "o-bad": FailureKind.AGENT_ERROR,
    }
    assert "API error 500" in str(failures["c-bad"] and failures["c-bad"].message)
    assert "API error 429" in str(failures["o-bad"] and failures["o-bad"].message)
    for outcome in aggregate.successful:
        assert outcome.session_id
        assert outcome.usage is not None
        assert (outcome.usage.input_tokens, outcome.usage.output_tokens) == (21, 8)
        assert outcome.cost_usd
        assert outcome.num_turns == 1
    assert aggregate.usage.input_tokens == 42
    assert aggregate.usage.cache_read_tokens == 10
    assert aggregate.cost_usd > 0


def test_unknown_opencode_agent_fails_as_spawn_error_without_calling_the_model(
    fleet: Fleet, cli_worker: None, stub: StubModel, run_id: str
) -> None:
    """OpenCode would fall back to its default agent; the worker refuses it as spawn_error."""
    spec = {**opencode_agent("o-ghost", "anything", stub), "agent": "ghost"}

    aggregate = fleet.submit({"run_id": run_id, "agents": [spec]}).fleet.wait_settled(
        run_id, timeout_s=60
    )

    [outcome] = aggregate.failed
    assert outcome.error is not None
    assert outcome.error.kind is FailureKind.SPAWN_ERROR
    assert "ghost" in outcome.error.message
    assert stub.message_requests() == []
