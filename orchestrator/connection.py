"""Redis connections: one way to build a client from the settings, with retries and TLS."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from orchestrator.errors import RedisUnavailableError
from orchestrator.settings import Settings

TRANSIENT_ERRORS = (redis.ConnectionError, redis.TimeoutError)


def mask_url(url: str) -> str:
    """The URL with its password replaced by `***`, safe to print or log."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}{port}"))


def redis_url(settings: Settings) -> str:
    """The configured Redis URL, or a clear error when there is none."""
    if settings.redis_url is None:
        raise RedisUnavailableError("AGENTFLEET_REDIS_URL is not set")
    return settings.redis_url.get_secret_value()


def connect(settings: Settings, url: str | None = None) -> redis.Redis:
    """A client that retries transient errors briefly; TLS when the URL is `rediss://`."""
    url = url or redis_url(settings)
    options: dict[str, object] = {}
    if url.startswith("rediss://"):
        options["ssl_cert_reqs"] = "required"
        if settings.redis_tls_ca_file is not None:
            options["ssl_ca_certs"] = str(settings.redis_tls_ca_file)

    return redis.Redis.from_url(
        url,
        decode_responses=True,
        socket_timeout=settings.redis_socket_timeout_s,
        socket_connect_timeout=settings.redis_socket_timeout_s,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=3),
        retry_on_error=list(TRANSIENT_ERRORS),
        health_check_interval=30,
        **options,
    )


def check_reachable(client: redis.Redis, url: str) -> None:
    """Ping Redis, turning any failure into a one-line RedisUnavailableError."""
    try:
        client.ping()
    except redis.AuthenticationError as err:
        raise RedisUnavailableError(f"Redis at {mask_url(url)} refused the credentials") from err
    except redis.RedisError as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise RedisUnavailableError(f"Redis at {mask_url(url)} unreachable: {reason}") from err
