"""The one settings object, read from `AGENTFLEET_*` variables when a program starts."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_ENV_ALLOWLIST = ("PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "USER")


class Settings(BaseSettings):
    """Every knob of agentfleet; built once by each program (client, worker, CLI)."""

    model_config = SettingsConfigDict(env_prefix="AGENTFLEET_", extra="ignore")

    redis_url: SecretStr | None = Field(
        default=None, description="Redis URL; unset means the CLI runs an embedded Redis."
    )
    redis_socket_timeout_s: float = 5.0
    redis_tls_ca_file: Path | None = None

    max_agents: int = Field(default=1000, ge=1)
    max_spec_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    max_prompt_bytes: int = Field(default=1024 * 1024, ge=1)
    max_agent_timeout_s: float = Field(default=6 * 3600, gt=0)
    max_deadline_s: float = Field(default=7 * 24 * 3600, gt=0)
    default_max_output_bytes: int = Field(default=4 * 1024 * 1024, ge=1)

    lease_ttl_s: float = Field(default=10.0, gt=0)
    reaper_interval_s: float = Field(default=1.0, gt=0)
    max_attempts: int = Field(default=3, ge=1)
    kill_grace_s: float = Field(default=2.0, ge=0)
    settle_retry_s: float = Field(default=300.0, gt=0)

    env_allowlist: list[str] = Field(default_factory=lambda: list(DEFAULT_ENV_ALLOWLIST))
    agents_dir: Path | None = None
    tools_dir: Path = Path(".agentfleet/tools")

    # Platform settings (claude-code, opencode): kept together, one block per platform.
    claude_max_retries: int = Field(default=2, ge=0)
    claude_permission_mode: str = "default"
    claude_allowed_tools: list[str] = Field(default_factory=list)
    # OpenCode has no retry budget to set: 1.18.33 hard-codes five retries (see
    # docs/platforms.md), so a 5xx without retry-after costs about 75 s before it fails.

    # Celery task events feed Flower; they cost about a tenth of a worker's CPU per agent
    # (bench/), so they are off unless asked for.
    task_events: bool = False

    worker_concurrency: int = Field(default=16, ge=1)
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: str = "INFO"

    @property
    def visibility_timeout_s(self) -> float:
        """Broker redelivery delay: above the longest agent timeout, so no agent runs twice."""
        return self.max_agent_timeout_s + 600.0

    @property
    def lease_renew_s(self) -> float:
        """How often a running agent's lease is renewed: three renewals fit in one TTL."""
        return self.lease_ttl_s / 3.0
