"""Run specs: every problem is reported by path, and a bad run writes nothing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import redis

from orchestrator import Fleet, RunSpec, Settings, SpecError
from orchestrator.submission import validate_run
from tests.conftest import command_agent


def problems_of(data: Any, settings: Settings | None = None) -> dict[str, str]:
    """Validate `data` and return its problems by path."""
    with pytest.raises(SpecError) as caught:
        validate_run(data, settings or Settings())
    return dict(caught.value.problems)


def test_a_valid_spec_gets_defaults_and_a_generated_run_id() -> None:
    """Omitted fields take their documented defaults."""
    spec = validate_run({"agents": [command_agent("a", "true")]}, Settings())

    assert spec.run_id.startswith("run-")
    assert spec.deadline_s == 3600
    assert spec.ttl_s == 7 * 24 * 3600
    assert spec.agents[0].timeout_s == 900


def test_every_offending_path_is_listed() -> None:
    """Unknown fields, bad values and a bad run id are all reported at once."""
    data = {
        "run_id": "bad id!",
        "bogus": 1,
        "agents": [
            command_agent("a", "true", timeout_s=-1),
            {"name": "b", "platform": "command", "argv": ["true"], "colour": "red"},
        ],
    }

    problems = problems_of(data)

    assert {"run_id", "bogus", "agents.0.timeout_s", "agents.1.colour"} <= problems.keys()


def test_duplicate_agent_names_are_rejected() -> None:
    """Two agents with one name cannot both report an outcome."""
    data = {"agents": [command_agent("a", "true"), command_agent("a", "false")]}

    problems = problems_of(data)

    assert "duplicate agent names: a" in problems["agents"]


@pytest.mark.parametrize(
    ("agent", "path"),
    [
        ({"name": "x", "platform": "nonesuch"}, "agents.0.platform"),
        ({"name": "x", "platform": "command"}, "agents.0.argv"),
        ({"name": "x:y", "platform": "command", "argv": ["true"]}, "agents.0.name"),
        (
            {"name": "x", "platform": "command", "argv": ["true"], "env": {"1X": "v"}},
            "agents.0.env.1X.[key]",
        ),
    ],
)
def test_agent_problems_name_their_field(agent: dict[str, Any], path: str) -> None:
    """An unknown platform, a missing argv, a bad name or env name point at the field."""
    problems = problems_of({"agents": [agent]})

    assert path in problems


def test_limits_come_from_settings() -> None:
    """The agent cap, prompt size and timeout cap are settings, reported by path."""
    settings = Settings(max_agents=2, max_prompt_bytes=4, max_agent_timeout_s=10)
    agents = [command_agent(f"a{i}", "true", prompt="hello", timeout_s=60) for i in range(3)]

    problems = problems_of({"agents": agents}, settings)

    assert "3 agents, over the 2" in problems["agents"]
    assert "agents.0.prompt" in problems
    assert "agents.2.timeout_s" in problems


def test_an_oversized_spec_file_is_refused_before_parsing(tmp_path: Path) -> None:
    """A spec file over max_spec_bytes is rejected by size."""
    path = tmp_path / "big.yaml"
    path.write_text("agents: []\n" + "#" * 4096)

    problems = problems_of(path, Settings(max_spec_bytes=1024))

    assert "over the 1024 limit" in problems[str(path)]


def test_a_spec_round_trips_through_yaml(tmp_path: Path) -> None:
    """A YAML spec file loads into the same RunSpec as the equivalent mapping."""
    path = tmp_path / "spec.yaml"
    path.write_text("run_id: r1\nagents:\n  - {name: a, platform: command, argv: [echo, hi]}\n")

    spec = validate_run(path, Settings())

    assert spec == RunSpec.model_validate(
        {"run_id": "r1", "agents": [{"name": "a", "platform": "command", "argv": ["echo", "hi"]}]}
    )


def test_an_invalid_run_writes_nothing_to_redis(
    fleet: Fleet, redis_client: redis.Redis, run_id: str
) -> None:
    """When one agent of a run is invalid, no key and no queue message is written."""
    before = sorted(redis_client.keys("*"))
    data = {"run_id": run_id, "agents": [command_agent("ok", "true"), {"name": "bad"}]}

    with pytest.raises(SpecError):
        fleet.submit(data)

    assert sorted(redis_client.keys("*")) == before
    assert redis_client.llen("agentfleet.command") == 0
