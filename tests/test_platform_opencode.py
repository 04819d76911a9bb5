"""The opencode adapter: how it starts OpenCode and how it reads its JSON event stream."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from orchestrator.models import AgentSpec, FailureKind, RunSpec
from orchestrator.settings import Settings
from tests.clis import drive
from tests.stubmodel import Reply, StubModel
from workers.platforms.agentdefs import AgentDefinitionError
from workers.platforms.base import ProcessResult, Verdict, resolve_binary
from workers.platforms.opencode import OpenCodePlatform, database_path, ensure_database
from workers.runner import marked_pids

REPO = Path(__file__).resolve().parent.parent
TOOLS_DIR = REPO / ".agentfleet" / "tools"
MODEL = "anthropic/claude-sonnet-4-5"
REVIEWER = """---
name: reviewer
description: Reviews a diff for bugs
model: anthropic/claude-haiku-4-5
tools: [Read, Grep]
---
You are OC-REVIEWER-51c2. Point at the bug.
"""


def settings(**fields: Any) -> Settings:
    return Settings(**{"tools_dir": TOOLS_DIR, **fields})


def agent(**fields: Any) -> AgentSpec:
    return AgentSpec(**{"name": "o1", "platform": "opencode", "prompt": "hi", **fields})


def run_of(spec: AgentSpec, **fields: Any) -> RunSpec:
    return RunSpec(agents=[spec], **fields)


def event(kind: str, **fields: Any) -> str:
    return json.dumps({"type": kind, "timestamp": 1, "sessionID": "ses_1", **fields})


def text(value: str) -> str:
    return event("text", part={"type": "text", "text": value})


def step_finish(input_tokens: int, output_tokens: int, cost: float) -> str:
    tokens = {
        "input": input_tokens,
        "output": output_tokens,
        "reasoning": 1,
        "cache": {"read": 3, "write": 2},
    }
    return event("step_finish", part={"type": "step-finish", "tokens": tokens, "cost": cost})


def api_error(status: int, message: str) -> str:
    data = {"message": message, "statusCode": status, "isRetryable": False}
    return event("error", error={"name": "APIError", "data": data})


def interpret(lines: list[str], exit_code: int = 0) -> Verdict:
    stdout = ("\n".join(lines) + "\n").encode()
    result = ProcessResult(exit_code, None, stdout, False, "stderr tail", False, 1.0)
    return OpenCodePlatform(settings()).interpret(agent(), result)


# prepare()


def test_prepare_runs_opencode_json_with_agent_and_model_and_prompt_on_stdin(
    tmp_path: Path,
) -> None:
    """argv is `run --format json --agent NAME -m MODEL`; the prompt is only on stdin."""
    prompt = "--help $(touch x)"
    spec = agent(prompt=prompt, agent="reviewer", model=MODEL)
    platform = OpenCodePlatform(settings())

    invocation = platform.prepare(
        spec, run_of(spec, agent_definitions={"reviewer": REVIEWER}), tmp_path
    )

    assert invocation.argv[1:] == ["run", "--format", "json", "--agent", "reviewer", "-m", MODEL]
    assert invocation.stdin == prompt.encode()
    assert invocation.cwd == str(tmp_path)


def test_prepare_writes_the_agent_into_a_per_run_config(tmp_path: Path) -> None:
    """The run's config, named by OPENCODE_CONFIG, holds the agent as a primary agent."""
    spec = agent(agent="reviewer")
    platform = OpenCodePlatform(settings())

    env = platform.prepare(
        spec, run_of(spec, agent_definitions={"reviewer": REVIEWER}), tmp_path
    ).env

    config = json.loads(Path(env["OPENCODE_CONFIG"]).read_text())
    assert Path(env["OPENCODE_CONFIG"]).is_relative_to(tmp_path)
    assert config["autoupdate"] is False
    assert config["agent"]["reviewer"] == {
        "description": "Reviews a diff for bugs",
        "mode": "primary",
        "prompt": "You are OC-REVIEWER-51c2. Point at the bug.",
        "model": "anthropic/claude-haiku-4-5",
        "tools": {"*": False, "grep": True, "read": True},
    }


def test_prepare_turns_off_updates_model_fetches_and_npm_installs(tmp_path: Path) -> None:
    """The environment stops autoupdate, the models fetch and the start-up npm install."""
    env = OpenCodePlatform(settings()).prepare(agent(), run_of(agent()), tmp_path).env

    assert env["OPENCODE_DISABLE_AUTOUPDATE"] == "1"
    assert env["OPENCODE_DISABLE_MODELS_FETCH"] == "1"
    assert env["npm_config_offline"] == "true"


def test_prepare_refuses_an_unknown_agent_instead_of_falling_back(tmp_path: Path) -> None:
    """An agent with no definition fails in prepare() (spawn_error), never runs as default."""
    spec = agent(agent="ghost")

    with pytest.raises(AgentDefinitionError, match="ghost"):
        OpenCodePlatform(settings()).prepare(spec, run_of(spec), tmp_path)


def test_prepare_accepts_opencode_builtin_agents(tmp_path: Path) -> None:
    """OpenCode's own `build` and `plan` agents need no definition."""
    spec = agent(agent="plan")

    invocation = OpenCodePlatform(settings()).prepare(spec, run_of(spec), tmp_path)

    assert invocation.argv[-2:] == ["--agent", "plan"]


def test_validate_wants_models_as_provider_slash_model() -> None:
    """A model without a provider prefix is a spec problem for opencode."""
    spec = agent(model="sonnet")

    problems = OpenCodePlatform(settings()).validate(spec, run_of(spec))

    assert problems == [("model", "opencode needs a model as provider/model")]


# interpret()


def test_text_parts_are_joined_and_steps_summed() -> None:
    """Text parts make the output; tokens, cost and turns add up over step_finish events."""
    lines = [
        event("step_start"),
        text("first"),
        step_finish(10, 4, 0.5),
        text("second"),
        step_finish(20, 6, 0.25),
    ]

    verdict = interpret(lines)

    assert verdict.error is None
    assert verdict.output == "first\nsecond"
    assert verdict.session_id == "ses_1"
    assert verdict.usage is not None
    assert verdict.usage.model_dump() == {
        "input_tokens": 30,
        "output_tokens": 12,
        "cache_read_tokens": 6,
        "cache_creation_tokens": 4,
    }
    assert (verdict.cost_usd, verdict.num_turns) == (0.75, 2)


@pytest.mark.parametrize("exit_code", [0, 1])
def test_error_event_is_agent_error_naming_the_status(exit_code: int) -> None:
    """An error event fails the agent with its status and message, whatever the exit code."""
    verdict = interpret([event("step_start"), api_error(429, "slow down")], exit_code)

    assert verdict.error is not None
    assert verdict.error.kind is FailureKind.AGENT_ERROR
    assert verdict.error.message == "API error 429: slow down (APIError)"
    assert verdict.session_id == "ses_1"


def test_nonzero_exit_without_error_event_is_exit_nonzero() -> None:
    """A non-zero exit with no error event is exit_nonzero carrying the stderr tail."""
    verdict = interpret([text("partial")], exit_code=3)

    assert verdict.error is not None
    assert verdict.error.kind is FailureKind.EXIT_NONZERO
    assert verdict.error.stderr_tail == "stderr tail"


def test_output_without_any_event_is_invalid_output() -> None:
    """Exit 0 with no JSON event at all is invalid_output keeping the tail of the output."""
    verdict = interpret(["opencode says hello", "THE-END"])

    assert verdict.error is not None
    assert verdict.error.kind is FailureKind.INVALID_OUTPUT
    assert verdict.error.message.endswith("THE-END\n")


# The real opencode binary against the stub model


@pytest.fixture
def opencode_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A HOME for opencode of its own, shared by the tests of this module."""
    # `make test` installs the CLIs; a missing one is a failed set-up, never a skip.
    assert resolve_binary("opencode", settings()), "opencode missing: run scripts/install-clis.sh"
    return tmp_path_factory.mktemp("opencode-home")


def stub_provider(stub: StubModel) -> dict[str, str]:
    """Agent env pointing OpenCode's anthropic provider at the stub."""
    options = {"baseURL": f"{stub.base_url}/v1", "apiKey": "sk-stub"}
    config = {"provider": {"anthropic": {"options": options}}}
    return {"OPENCODE_CONFIG_CONTENT": json.dumps(config)}


def run_opencode(
    stub: StubModel, home: Path, workdir: Path, spec: AgentSpec, run: RunSpec | None = None
) -> tuple[Verdict, ProcessResult, str]:
    """Drive the real opencode through prepare(), the worker's runner and interpret()."""
    env = {"HOME": str(home), **stub_provider(stub)}
    return drive(OpenCodePlatform(settings()), spec, run or run_of(spec), workdir, env)


def oc_agent(**fields: Any) -> AgentSpec:
    return agent(**{"model": MODEL, "timeout_s": 90, **fields})


@pytest.mark.cli
def test_opencode_returns_exactly_the_model_text_with_usage(
    stub: StubModel, opencode_home: Path, tmp_path: Path
) -> None:
    """A normal reply is the output, with a session id, the stub's token counts and cost."""
    stub.reply_with(Reply.text_reply("The answer is 42."))

    verdict, result, _ = run_opencode(stub, opencode_home, tmp_path, oc_agent())

    assert verdict.error is None, result.stderr_tail
    assert verdict.output == "The answer is 42."
    assert verdict.session_id
    assert verdict.usage is not None
    assert (verdict.usage.input_tokens, verdict.usage.output_tokens) == (21, 8)
    assert (verdict.usage.cache_read_tokens, verdict.usage.cache_creation_tokens) == (5, 3)
    assert verdict.num_turns == 1
    assert verdict.cost_usd


@pytest.mark.cli
@pytest.mark.parametrize("status", [500, 429, 401])
def test_opencode_api_error_is_agent_error_naming_the_status(
    stub: StubModel, opencode_home: Path, tmp_path: Path, status: int
) -> None:
    """An API error OpenCode gives up on becomes agent_error whose message names the status."""
    stub.reply_with(Reply.error(status))

    verdict, result, _ = run_opencode(stub, opencode_home, tmp_path, oc_agent())

    assert stub.message_requests(), "the fault never fired: opencode sent no request"
    assert verdict.error is not None, result.stdout
    assert verdict.error.kind is FailureKind.AGENT_ERROR
    assert f"API error {status}" in verdict.error.message


@pytest.mark.cli
def test_opencode_malformed_stream_is_agent_error(
    stub: StubModel, opencode_home: Path, tmp_path: Path
) -> None:
    """A stream that breaks off with invalid JSON ends as agent_error saying so."""
    stub.reply_with(Reply.malformed())

    verdict, _, _ = run_opencode(stub, opencode_home, tmp_path, oc_agent())

    assert stub.message_requests(), "the fault never fired: opencode sent no request"
    assert verdict.error is not None
    assert verdict.error.kind is FailureKind.AGENT_ERROR
    assert "JSON" in verdict.error.message


@pytest.mark.cli
def test_opencode_named_agent_prompt_reaches_the_system_prompt(
    stub: StubModel, opencode_home: Path, tmp_path: Path
) -> None:
    """The named agent's body is part of the system prompt, its tools the only tools."""
    spec = oc_agent(agent="reviewer")
    run = run_of(spec, agent_definitions={"reviewer": REVIEWER})

    verdict, result, _ = run_opencode(stub, opencode_home, tmp_path, spec, run)

    assert verdict.error is None, result.stdout
    [request] = stub.message_requests()
    assert "You are OC-REVIEWER-51c2." in request.system_text()
    assert sorted(tool["name"] for tool in request.body["tools"]) == ["grep", "read"]


@pytest.mark.cli
def test_opencode_prompt_with_shell_syntax_and_flags_reaches_the_model_literally(
    stub: StubModel, opencode_home: Path, tmp_path: Path
) -> None:
    """`$(touch x)` and a flag in the prompt are text to the model; no file x appears."""
    prompt = "--dangerously-skip-permissions $(touch x) `touch y`; touch z"

    verdict, _, _ = run_opencode(stub, opencode_home, tmp_path, oc_agent(prompt=prompt))

    assert verdict.error is None
    assert any(prompt in r.messages_text() for r in stub.message_requests())
    assert not any((tmp_path / name).exists() for name in "xyz")


@pytest.mark.cli
def test_opencode_hung_call_is_killed_at_the_timeout_leaving_no_process(
    stub: StubModel, opencode_home: Path, tmp_path: Path
) -> None:
    """A model that never answers: the runner kills opencode at its timeout, nothing lingers."""
    stub.reply_with(Reply.hang())

    _, result, token = run_opencode(stub, opencode_home, tmp_path, oc_agent(timeout_s=25))

    assert stub.message_requests(), "the fault never fired: opencode sent no request"
    assert result.timed_out
    assert 25 <= result.duration_s < 35
    assert marked_pids(token) == []


def test_the_database_is_created_once_before_concurrent_agents_start(tmp_path: Path) -> None:
    """Four agents starting on a fresh data folder run OpenCode's migration exactly once."""
    calls = tmp_path / "calls"
    fake = tmp_path / "opencode"
    fake.write_text(
        "#!/bin/sh\necho x >> " + str(calls) + "\nsleep 0.2\n"
        'mkdir -p "$HOME/.local/share/opencode"; touch "$HOME/.local/share/opencode/opencode.db"\n'
    )
    fake.chmod(0o755)
    env = {"HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin"}

    threads = [threading.Thread(target=ensure_database, args=(str(fake), env)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert database_path(env).exists()
    assert calls.read_text().count("x") == 1
