"""Platform adapters, found through the `agentfleet.platforms` entry-point group."""

from __future__ import annotations

from functools import cache
from importlib.metadata import entry_points

from orchestrator.errors import PlatformUnavailableError
from orchestrator.settings import Settings
from workers.platforms.base import Invocation, Platform, ProcessResult, Verdict

__all__ = [
    "Invocation",
    "Platform",
    "ProcessResult",
    "Verdict",
    "load_platform",
    "platform_names",
]

ENTRY_POINT_GROUP = "agentfleet.platforms"


@cache
def _registry() -> dict[str, type[Platform]]:
    found: dict[str, type[Platform]] = {}
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        adapter = entry.load()
        if not (isinstance(adapter, type) and issubclass(adapter, Platform)):
            raise PlatformUnavailableError(
                f"entry point {entry.name!r} in {ENTRY_POINT_GROUP} is not a Platform subclass"
            )
        found[entry.name] = adapter
    return found


def platform_names() -> list[str]:
    """Names of every installed platform adapter."""
    return sorted(_registry())


def load_platform(name: str, settings: Settings) -> Platform:
    """Instantiate the adapter for `name`, or raise PlatformUnavailableError."""
    adapter = _registry().get(name)
    if adapter is None:
        known = ", ".join(platform_names()) or "none"
        raise PlatformUnavailableError(f"no adapter for platform {name!r} (installed: {known})")
    return adapter(settings)
