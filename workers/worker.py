"""Starting a worker: check its platforms and Redis, then consume the platforms' queues."""

from __future__ import annotations

import contextlib
import logging
import socket
import subprocess

import redis
import structlog

from orchestrator.collector import Collector
from orchestrator.connection import check_reachable, connect, mask_url, redis_url
from orchestrator.keys import queue_for
from orchestrator.settings import Settings
from workers.app import create_app
from workers.platforms import Platform, load_platform
from workers.reaper import Reaper
from workers.runner import become_subreaper, start_keeper
from workers.tasks import WorkerContext, bind_context

log = structlog.get_logger(__name__)

EVICTING_POLICIES = (
    "allkeys-lru",
    "allkeys-lfu",
    "allkeys-random",
    "volatile-lru",
    "volatile-lfu",
    "volatile-random",
    "volatile-ttl",
)


def load_platforms(names: list[str], settings: Settings) -> dict[str, Platform]:
    """Adapters for `names`, each checked; PlatformUnavailableError names what is missing."""
    platforms = {name: load_platform(name, settings) for name in names}
    for platform in platforms.values():
        platform.check()
    return platforms


def warn_if_evicting(client: redis.Redis) -> None:
    """Report a Redis that may evict keys: an evicted queue or run key loses work."""
    try:
        policy = client.config_get("maxmemory-policy").get("maxmemory-policy", "")
    except redis.ResponseError:
        return  # CONFIG is disabled for this user; nothing to read.
    if policy in EVICTING_POLICIES:
        log.warning(
            "redis_may_evict",
            maxmemory_policy=policy,
            advice="set maxmemory-policy noeviction: evicted keys lose work",
        )


def quiet_task_lines(settings: Settings) -> None:
    """Drop Celery's own "received" and "succeeded" line per task below debug level: the
    spawn task's `agent_settled` line says more, and the two cost about a twentieth of a
    worker's CPU per fast agent (bench/). Celery's warnings and errors still show."""
    if settings.log_level.upper() != "DEBUG":
        for name in ("celery.app.trace", "celery.worker.strategy"):
            logging.getLogger(name).setLevel(logging.WARNING)


def run_worker(
    settings: Settings, platform_names: list[str], concurrency: int, name: str | None = None
) -> None:
    """Serve the spawns of `platform_names` until the worker is stopped."""
    platforms = load_platforms(platform_names, settings)
    url = redis_url(settings)
    client = connect(settings, url)
    check_reachable(client, url)
    warn_if_evicting(client)

    app = create_app(settings, url)
    quiet_task_lines(settings)
    ctx = WorkerContext(settings, Collector(client, per_thread=True), platforms)
    bind_context(ctx)
    keeper = start_keeper(ctx.token_prefix)
    adopts_orphans = become_subreaper()
    reaper = Reaper(ctx, app)
    reaper.start()

    nodename = name or f"agentfleet-{'-'.join(platform_names)}@{socket.gethostname()}"
    log.info(
        "worker_starting",
        platforms=platform_names,
        concurrency=concurrency,
        redis=mask_url(url),
        node=nodename,
        adopts_orphans=adopts_orphans,
    )
    queues = ",".join(queue_for(p) for p in platform_names)
    try:
        app.worker_main(
            [
                "worker",
                "-Q",
                queues,
                "-P",
                "threads",
                "-c",
                str(concurrency),
                "-n",
                nodename,
                *(["-E"] if settings.task_events else []),
                "--without-gossip",
                "--without-mingle",
                "-l",
                settings.log_level.upper(),
            ]
        )
    finally:
        reaper.halt.set()
        _release_keeper(keeper)


def _release_keeper(keeper: subprocess.Popen[bytes]) -> None:
    """Let the keeper kill whatever agent a cold shutdown abandoned, then reap it."""
    if keeper.stdin is not None:
        keeper.stdin.close()
    with contextlib.suppress(subprocess.TimeoutExpired):
        keeper.wait(5.0)
