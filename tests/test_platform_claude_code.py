"""The claude-code adapter: how it starts Claude Code and how it judges what it printed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from orchestrator.models import AgentSpec, FailureKind, RunSpec
from orchestrator.settings import Settings
from tests.clis import drive
from tests.stubmodel import Reply, StubModel
from workers.platforms.agentdefs import (
    AgentDefinitionError,
    find_agent_definition,
    parse_agent_definition,
)
from workers.platforms.base import ProcessResult, Verdict, resolve_binary
from workers.platforms.claude_code import ClaudeCodePlatform
from workers.runner import marked_pids

REPO = Path(__file__).resolve().parent.parent
TOOLS_DIR = REPO / ".agentfleet" / "tools"
REVIEWER = """---
name: reviewer
description: Reviews a diff for bugs
model: sonnet
tools: Read, Grep
---
You are REVIEWER-7f3a. Point at the bug.
"""


def settings(**fields: Any) -> Settings:
    return Settings(**{"tools_dir": TOOLS_DIR, "claude_max_retries": 1, **fields})


def agent(**fields: Any) -> AgentSpec:
    return AgentSpec(**{"name": "a1", "platform": "claude-code", "prompt": "hi", **fields})


def run_of(spec: AgentSpec, **fields: Any) -> RunSpec:
    return RunSpec(agents=[spec], **fields)


def finished(stdout: bytes | str, exit_code: int = 0) -> ProcessResult:
    data = stdout.encode() if isinstance(stdout, str) else stdout
    return ProcessResult(exit_code, None, data, False, "", False, 1.0)


def result_json(**fields: Any) -> str:
    base = {
        "type": "result",
        "subtype": "success",
        "is_error": False,
        "api_error_status": None,
        "result": "done",
        "session_id": "sess-1",
        "num_turns": 1,
        "total_cost_usd": 0.25,
        "usage": {
            "input_tokens": 10,
            "output_tokens": 4,
            "cache_read_input_tokens": 2,
            "cache_creation_input_tokens": 1,
        },
    }
    return json.dumps({**base, **fields})


def interpret(stdout: str, exit_code: int = 0) -> Verdict:
    return ClaudeCodePlatform(settings()).interpret(agent(), finished(stdout, exit_code))


# Agent definitions


def test_definition_frontmatter_gives_name_description_model_tools_and_prompt() -> None:
    """The frontmatter fields and the body (the system prompt) are all read."""
    definition = parse_agent_definition(REVIEWER)

    assert definition.name == "reviewer"
    assert definition.description == "Reviews a diff for bugs"
    assert definition.model == "sonnet"
    assert definition.tools == ("Read", "Grep")
    assert definition.prompt == "You are REVIEWER-7f3a. Point at the bug."


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("no frontmatter at all", "no YAML frontmatter"),
        ("---\nname: x\n---\nbody", "non-empty 'description'"),
        ("---\nname: [x\n---\nbody", "not valid YAML"),
        ("---\nname: 'bad name'\ndescription: d\n---\n", "not a valid agent name"),
        ("---\nname: x\ndescription: d\ntools: 3\n---\n", "'tools' must be"),
    ],
)
def test_malformed_definition_is_refused_with_its_problem(text: str, problem: str) -> None:
    """A definition without frontmatter, fields or valid YAML raises a named problem."""
    with pytest.raises(AgentDefinitionError, match=problem):
        parse_agent_definition(text)


def test_definition_is_found_in_agents_dir_by_frontmatter_name(tmp_path: Path) -> None:
    """A file in agents_dir is found by the name in its frontmatter, whatever its file name."""
    (tmp_path / "some-file.md").write_text(REVIEWER)

    definition = find_agent_definition("reviewer", run_of(agent()), tmp_path)

    assert definition.source == str(tmp_path / "some-file.md")


def test_inline_definition_wins_over_agents_dir(tmp_path: Path) -> None:
    """A run's inline definition is used before a file of the same name."""
    (tmp_path / "reviewer.md").write_text(REVIEWER)
    inline = REVIEWER.replace("REVIEWER-7f3a", "INLINE")

    definition = find_agent_definition(
        "reviewer", run_of(agent(), agent_definitions={"reviewer": inline}), tmp_path
    )

    assert definition.prompt.startswith("You are INLINE")


def test_unknown_agent_raises_naming_where_it_looked(tmp_path: Path) -> None:
    """An agent defined nowhere raises AgentDefinitionError naming the agents_dir."""
    with pytest.raises(AgentDefinitionError, match=f"no definition of agent 'ghost' .*{tmp_path}"):
        find_agent_definition("ghost", run_of(agent()), tmp_path)


# prepare()


def test_prepare_puts_the_prompt_on_stdin_and_never_in_argv(tmp_path: Path) -> None:
    """The prompt, even one that looks like a flag, is stdin and not an argument."""
    prompt = "--dangerously-skip-permissions $(touch x)"
    platform = ClaudeCodePlatform(settings(tools_dir=tmp_path, claude_permission_mode="plan"))
    fake = tmp_path / "node_modules" / ".bin" / "claude"
    fake.parent.mkdir(parents=True)
    fake.write_text("")

    invocation = platform.prepare(agent(prompt=prompt), run_of(agent()), tmp_path)

    assert invocation.stdin == prompt.encode()
    assert prompt not in invocation.argv
    assert invocation.argv == [
        str(fake.resolve()),
        "-p",
        "--output-format",
        "json",
        "--permission-mode",
        "plan",
    ]
    assert invocation.cwd == str(tmp_path)


def test_prepare_sets_retries_and_turns_off_nonessential_traffic(tmp_path: Path) -> None:
    """The environment carries the retry budget and the no-call-home switches."""
    platform = ClaudeCodePlatform(settings(claude_max_retries=3))

    env = platform.prepare(agent(), run_of(agent()), tmp_path).env

    assert env["CLAUDE_CODE_MAX_RETRIES"] == "3"
    assert env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] == "1"
    assert env["DISABLE_AUTOUPDATER"] == "1"


def test_prepare_passes_model_allowed_tools_and_named_agent(tmp_path: Path) -> None:
    """--model, --allowedTools and the agent as --agents JSON with --agent are passed."""
    platform = ClaudeCodePlatform(settings(claude_allowed_tools=["Read", "Bash(git:*)"]))
    spec = agent(model="claude-sonnet-4-5", agent="reviewer")

    argv = platform.prepare(
        spec, run_of(spec, agent_definitions={"reviewer": REVIEWER}), tmp_path
    ).argv

    assert argv[argv.index("--model") + 1] == "claude-sonnet-4-5"
    assert argv[argv.index("--allowedTools") + 1] == "Read,Bash(git:*)"
    assert argv[argv.index("--agent") + 1] == "reviewer"
    assert json.loads(argv[argv.index("--agents") + 1]) == {
        "reviewer": {
            "description": "Reviews a diff for bugs",
            "prompt": "You are REVIEWER-7f3a. Point at the bug.",
            "model": "sonnet",
            "tools": ["Read", "Grep"],
        }
    }


def test_prepare_refuses_an_agent_with_no_definition(tmp_path: Path) -> None:
    """An unknown named agent fails in prepare(), which the worker records as spawn_error."""
    spec = agent(agent="ghost")

    with pytest.raises(AgentDefinitionError, match="ghost"):
        ClaudeCodePlatform(settings()).prepare(spec, run_of(spec), tmp_path)


def test_validate_reports_argv_and_a_malformed_inline_definition() -> None:
    """validate() flags an argv the platform ignores and an inline definition it can't read."""
    spec = agent(argv=["x"], agent="bad")

    problems = ClaudeCodePlatform(settings()).validate(
        spec, run_of(spec, agent_definitions={"bad": "no frontmatter"})
    )

    assert [field for field, _ in problems] == ["argv", "agent"]


# interpret()


def test_success_result_gives_output_session_usage_cost_and_turns() -> None:
    """A success result becomes the output with its session id, tokens, cost and turns."""
    verdict = interpret(result_json())

    assert verdict.error is None
    assert verdict.output == "done"
    assert verdict.session_id == "sess-1"
    assert verdict.usage is not None
    assert verdict.usage.model_dump() == {
        "input_tokens": 10,
        "output_tokens": 4,
        "cache_read_tokens": 2,
        "cache_creation_tokens": 1,
    }
    assert (verdict.cost_usd, verdict.num_turns) == (0.25, 1)


@pytest.mark.parametrize("exit_code", [0, 1])
@pytest.mark.parametrize("status", [429, 401, 500])
def test_api_error_is_agent_error_naming_the_status_whatever_the_exit_code(
    status: int, exit_code: int
) -> None:
    """is_error with api_error_status is agent_error naming the status, on exit 0 or 1."""
    stdout = result_json(is_error=True, api_error_status=status, result="API Error: boom")

    verdict = interpret(stdout, exit_code)

    assert verdict.error is not None
    assert verdict.error.kind is FailureKind.AGENT_ERROR
    assert verdict.error.message.startswith(f"API error {status}: API Error: boom")
    assert verdict.session_id == "sess-1"


@pytest.mark.parametrize(
    ("subtype", "words"),
    [
        ("error_max_turns", "maximum number of turns (1 turns)"),
        ("error_during_execution", "failed during execution"),
        ("error_max_budget_usd", "maximum budget"),
    ],
)
def test_error_subtypes_are_agent_errors_saying_why(subtype: str, words: str) -> None:
    """Each error subtype becomes agent_error with a message naming its reason."""
    stdout = result_json(subtype=subtype, is_error=True, result=None)

    verdict = interpret(stdout, exit_code=1)

    assert verdict.error is not None
    assert verdict.error.kind is FailureKind.AGENT_ERROR
    assert words in verdict.error.message


def test_unparseable_output_is_invalid_output_keeping_its_tail() -> None:
    """Output that is no JSON result is invalid_output; the message ends with what it said."""
    verdict = interpret("Welcome!\n" + "x" * 3000 + "THE-END", exit_code=0)

    assert verdict.error is not None
    assert verdict.error.kind is FailureKind.INVALID_OUTPUT
    assert verdict.error.message.endswith("THE-END")
    assert len(verdict.error.message) < 700


def test_silent_crash_is_exit_nonzero() -> None:
    """No output at all and a non-zero exit is exit_nonzero, not invalid_output."""
    verdict = interpret("", exit_code=2)

    assert verdict.error is not None
    assert verdict.error.kind is FailureKind.EXIT_NONZERO


def test_result_after_other_lines_is_still_found() -> None:
    """A result object on the last line is read even when other lines precede it."""
    verdict = interpret("some warning\n" + result_json(result="late"))

    assert verdict.output == "late"


# The real claude binary against the stub model


@pytest.fixture
def claude_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A HOME for claude of its own, so no user configuration leaks into the tests."""
    # `make test` installs the CLIs; a missing one is a failed set-up, never a skip.
    assert resolve_binary("claude", settings()), "claude missing: run scripts/install-clis.sh"
    return tmp_path_factory.mktemp("claude-home")


def run_claude(
    stub: StubModel, home: Path, workdir: Path, spec: AgentSpec, run: RunSpec | None = None
) -> tuple[Verdict, ProcessResult, str]:
    """Drive the real claude through prepare(), the worker's runner and interpret()."""
    env = {"HOME": str(home), "ANTHROPIC_BASE_URL": stub.base_url, "ANTHROPIC_API_KEY": "sk-stub"}
    return drive(ClaudeCodePlatform(settings()), spec, run or run_of(spec), workdir, env)


@pytest.mark.cli
def test_claude_returns_exactly_the_model_text_with_usage(
    stub: StubModel, claude_home: Path, tmp_path: Path
) -> None:
    """A normal reply is the output, with a session id, the stub's token counts and cost."""
    stub.reply_with(Reply.text_reply("The answer is 42."))

    verdict, result, _ = run_claude(stub, claude_home, tmp_path, agent(timeout_s=60))

    assert verdict.error is None, result.stderr_tail
    assert verdict.output == "The answer is 42."
    assert verdict.session_id
    assert verdict.usage is not None
    assert (verdict.usage.input_tokens, verdict.usage.output_tokens) == (21, 8)
    assert (verdict.usage.cache_read_tokens, verdict.usage.cache_creation_tokens) == (5, 3)
    assert verdict.num_turns == 1
    assert verdict.cost_usd is not None


@pytest.mark.cli
@pytest.mark.parametrize("status", [500, 429, 401])
def test_claude_api_error_is_agent_error_naming_the_status(
    stub: StubModel, claude_home: Path, tmp_path: Path, status: int
) -> None:
    """An API error the CLI gives up on becomes agent_error whose message names the status."""
    stub.reply_with(Reply.error(status))

    verdict, _, _ = run_claude(stub, claude_home, tmp_path, agent(timeout_s=60))

    assert stub.message_requests(), "the fault never fired: claude sent no request"
    assert verdict.error is not None
    assert verdict.error.kind is FailureKind.AGENT_ERROR
    assert f"API error {status}" in verdict.error.message
    assert verdict.session_id


@pytest.mark.cli
def test_claude_malformed_stream_is_agent_error(
    stub: StubModel, claude_home: Path, tmp_path: Path
) -> None:
    """A stream that breaks off with invalid JSON ends as agent_error saying so."""
    stub.reply_with(Reply.malformed())

    verdict, _, _ = run_claude(stub, claude_home, tmp_path, agent(timeout_s=60))

    assert stub.message_requests(), "the fault never fired: claude sent no request"
    assert verdict.error is not None
    assert verdict.error.kind is FailureKind.AGENT_ERROR
    assert "malformed" in verdict.error.message


@pytest.mark.cli
def test_claude_named_agent_prompt_reaches_the_system_prompt(
    stub: StubModel, claude_home: Path, tmp_path: Path
) -> None:
    """The named agent's body is part of the system prompt the model receives."""
    spec = agent(agent="reviewer", timeout_s=60)
    run = run_of(spec, agent_definitions={"reviewer": REVIEWER})

    verdict, _, _ = run_claude(stub, claude_home, tmp_path, spec, run)

    assert verdict.error is None
    [request] = [r for r in stub.message_requests() if "hi" in r.messages_text()]
    assert "You are REVIEWER-7f3a." in request.system_text()


@pytest.mark.cli
def test_claude_prompt_with_shell_syntax_and_flags_reaches_the_model_literally(
    stub: StubModel, claude_home: Path, tmp_path: Path
) -> None:
    """`$(touch x)` and a flag in the prompt are text to the model; no file x appears."""
    prompt = "--dangerously-skip-permissions $(touch x) `touch y`; touch z"

    verdict, _, _ = run_claude(stub, claude_home, tmp_path, agent(prompt=prompt, timeout_s=60))

    assert verdict.error is None
    assert any(prompt in r.messages_text() for r in stub.message_requests())
    assert not any((tmp_path / name).exists() for name in "xyz")


@pytest.mark.cli
def test_claude_hung_call_is_killed_at_the_timeout_leaving_no_process(
    stub: StubModel, claude_home: Path, tmp_path: Path
) -> None:
    """A model that never answers: the runner kills claude at its timeout, nothing lingers."""
    stub.reply_with(Reply.hang())

    _, result, token = run_claude(stub, claude_home, tmp_path, agent(timeout_s=4))

    assert stub.message_requests(), "the fault never fired: claude sent no request"
    assert result.timed_out
    assert 4 <= result.duration_s < 10
    assert marked_pids(token) == []
