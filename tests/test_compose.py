"""docker-compose.yml and the Dockerfile: validated here, since no Docker engine runs CI."""

from __future__ import annotations

from typing import Any

import yaml

from tests.conftest import REPO
from workers.platforms import platform_names


def compose() -> dict[str, Any]:
    """The parsed compose file, anchors and merge keys resolved."""
    data: dict[str, Any] = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    return data


def test_every_worker_service_serves_an_installed_platform() -> None:
    """Each worker service runs `agentfleet worker --platform P` for a known platform."""
    workers = {k: v for k, v in compose()["services"].items() if k.startswith("worker-")}

    served = set()
    for service in workers.values():
        command = service["command"]
        assert command[0] == "worker"
        served.add(command[command.index("--platform") + 1])
        assert service["environment"]["AGENTFLEET_REDIS_URL"] == "redis://redis:6379/0"
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"

    assert served == set(platform_names())


def test_redis_is_configured_not_to_lose_work() -> None:
    """The compose Redis never evicts keys and keeps an append-only file."""
    command = compose()["services"]["redis"]["command"]

    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
    assert command[command.index("--appendonly") + 1] == "yes"


def test_flower_watches_the_same_redis_with_events_on() -> None:
    """Flower runs the project's Celery app; the workers it watches send task events."""
    services = compose()["services"]

    assert services["flower"]["entrypoint"][:3] == ["celery", "-A", "workers.app"]
    assert services["flower"]["environment"]["AGENTFLEET_REDIS_URL"] == "redis://redis:6379/0"
    assert services["worker-command"]["environment"]["AGENTFLEET_TASK_EVENTS"] == "true"


def test_the_dockerfile_copies_only_paths_that_exist() -> None:
    """Every COPY source of the Dockerfile is in the repository."""
    lines = (REPO / "Dockerfile").read_text().splitlines()

    sources = [line.split()[1:-1] for line in lines if line.startswith("COPY ")]

    assert sources
    for paths in sources:
        assert all((REPO / path).exists() for path in paths), paths
