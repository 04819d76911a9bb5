"""Platform adapters, found through the `agentfleet.platforms` entry-point group."""

from __future__ import annotations

from functools import cache
from importlib.metadata import EntryPoint, entry_points

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
def _registry() -> dict[str, EntryPoint]:
    return {entry.name: entry for entry in entry_points(group=ENTRY_POINT_GROUP)}


@cache
def _adapter(name: str) -> type[Platform]:
    entry = _registry().get(name)
    if entry is None:
        known = ", ".join(platform_names()) or "none"
        raise PlatformUnavailableError(f"no adapter for platform {name!r} (installed: {known})")
    try:
        adapter = entry.load()
    except Exception as err:  # a broken third-party adapter must not break the others
        raise PlatformUnavailableError(
            f"adapter for platform {name!r} fails to load: {err}"
        ) from err
    if not (isinstance(adapter, type) and issubclass(adapter, Platform)):
        raise PlatformUnavailableError(f"entry point {name!r} is not a Platform subclass")
    return adapter


def platform_names() -> list[str]:
    """Names of every installed platform adapter."""
    return sorted(_registry())


def load_platform(name: str, settings: Settings) -> Platform:
    """Instantiate the adapter for `name`, or raise PlatformUnavailableError."""
    return _adapter(name)(settings)
