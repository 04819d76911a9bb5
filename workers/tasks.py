"""The spawn task: lease one agent, run it, settle its outcome. Failures are data."""

from __future__ import annotations

import contextlib
import itertools
import re
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import redis
import structlog
from celery import Celery

from orchestrator.collector import Collector, Lease
from orchestrator.connection import TRANSIENT_ERRORS
from orchestrator.keys import SPAWN_TASK
from orchestrator.models import AgentError, AgentOutcome, FailureKind, OutcomeStatus
from orchestrator.settings import Settings
from workers.platforms import Platform
from workers.platforms.base import ProcessResult, Verdict
from workers.runner import SpawnFailedError, run_process

log = structlog.get_logger(__name__)

T = TypeVar("T")

IDENTIFIER = re.compile(r"[A-Za-z0-9._-]{1,128}")


@dataclass
class Running:
    """An agent this worker is running: its lease and the event that stops it."""

    lease: Lease
    stop: threading.Event = field(default_factory=threading.Event)
    why_stopped: str = ""


@dataclass
class WorkerContext:
    """What the spawn task needs in a worker process, built once at worker start."""

    settings: Settings
    collector: Collector
    platforms: dict[str, Platform]
    hostname: str = field(default_factory=socket.gethostname)
    worker_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    running: dict[str, Running] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # Tokens need to be unique, not secret: a count after the worker's random id is, and
    # costs no call for random bytes per agent.
    serials: Iterator[int] = field(default_factory=itertools.count)

    @property
    def token_prefix(self) -> str:
        """The start of every token this worker hands out: its host, then its own id."""
        return f"{self.hostname}/{self.worker_id}."

    def new_token(self) -> str:
        """A fresh lease token naming this host and worker, so leftovers can be found later."""
        return f"{self.token_prefix}{next(self.serials)}"


_context: WorkerContext | None = None


def bind_context(context: WorkerContext | None) -> None:
    """Install the context the spawn task of this process uses."""
    global _context
    _context = context


def register(app: Celery) -> None:
    """Register the spawn task on `app`."""

    @app.task(name=SPAWN_TASK, ignore_result=True, acks_late=True)  # type: ignore[untyped-decorator]
    def spawn(run_id: str, agent_name: str, attempt: int) -> None:
        if _context is None:
            raise RuntimeError("the spawn task runs only inside an agentfleet worker")
        if not spawn_args_valid(run_id, agent_name, attempt):
            # A forged or corrupt message: its arguments may not reach any Redis key.
            log.warning("spawn_refused", why="malformed spawn arguments")
            return
        execute_spawn(_context, run_id, agent_name, attempt)


def spawn_args_valid(run_id: object, agent_name: object, attempt: object) -> bool:
    """Whether a spawn message names a run and agent the way a submitted run does."""
    names_ok = all(
        isinstance(value, str) and IDENTIFIER.fullmatch(value) is not None
        for value in (run_id, agent_name)
    )
    return names_ok and type(attempt) is int and attempt >= 1


def execute_spawn(ctx: WorkerContext, run_id: str, agent_name: str, attempt: int) -> None:
    """Run one attempt of one agent and settle its outcome; a no-op for stale copies."""
    token = ctx.new_token()
    # Taking the lease again with the same token is a no-op, so a retry is safe; if Redis
    # stays away, the error fails the task and the run's deadline settles the agent.
    claim = ride_out_outage(
        ctx,
        "lease",
        lambda: ctx.collector.acquire(
            run_id, agent_name, attempt, token, ctx.settings.lease_ttl_s
        ),
        run_id=run_id,
        agent=agent_name,
    )
    if not isinstance(claim, Lease):
        log.info("spawn_skipped", run_id=run_id, agent=agent_name, attempt=attempt, why=claim)
        return

    running = Running(claim)
    with ctx.lock:
        ctx.running[claim.member] = running
    try:
        outcome = run_agent(ctx, claim, running.stop)
    finally:
        with ctx.lock:
            ctx.running.pop(claim.member, None)

    if running.why_stopped in ("lost", "gone"):
        # Another attempt owns this agent now (or the run vanished): its outcome is theirs.
        log.warning("outcome_dropped", run_id=run_id, agent=agent_name, why=running.why_stopped)
        return
    settle_with_retry(ctx, claim, outcome)


def run_agent(ctx: WorkerContext, lease: Lease, stop: threading.Event) -> AgentOutcome:
    """Run the leased agent on its platform and turn whatever happened into an outcome."""
    agent = lease.agent
    started_at = datetime.now(UTC)
    log.debug(
        "agent_started",
        run_id=lease.run_id,
        agent=agent.name,
        platform=agent.platform,
        attempt=lease.attempt,
    )

    with _workdir(ctx.platforms.get(agent.platform)) as workdir:
        verdict, result = _run_on_platform(ctx, lease, workdir, stop)

    return _outcome(ctx, lease, verdict, result, started_at)


@contextlib.contextmanager
def _workdir(platform: Platform | None) -> Iterator[Path]:
    """A private folder for platforms that need one; making and removing it costs about a
    tenth of a fast agent's worker CPU (bench/), so the others get the shared temp folder."""
    if platform is None or not platform.needs_workdir:
        yield Path(tempfile.gettempdir())
        return
    folder = Path(tempfile.mkdtemp(prefix="agentfleet-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _run_on_platform(
    ctx: WorkerContext, lease: Lease, workdir: Path, stop: threading.Event
) -> tuple[Verdict, ProcessResult | None]:
    agent = lease.agent
    platform = ctx.platforms.get(agent.platform)
    if platform is None:
        return _failure(FailureKind.SPAWN_ERROR, f"no platform {agent.platform!r} here"), None

    try:
        invocation = platform.prepare(agent, lease.run, workdir)
    except Exception as err:  # an adapter bug or bad input must become data, not a crash
        return _failure(FailureKind.SPAWN_ERROR, f"cannot prepare agent: {err}"), None
    try:
        result = run_process(
            invocation,
            platform.agent_env({**invocation.env, **agent.env}),
            lease.token,
            agent.timeout_s,
            agent.max_output_bytes or ctx.settings.default_max_output_bytes,
            ctx.settings.kill_grace_s,
            stop,
        )
    except SpawnFailedError as err:
        return _failure(FailureKind.SPAWN_ERROR, str(err)), None
    finally:
        if invocation.cleanup is not None:
            invocation.cleanup()
    return _judge(platform, lease, result, stop), result


def _judge(
    platform: Platform, lease: Lease, result: ProcessResult, stop: threading.Event
) -> Verdict:
    if stop.is_set():
        return _failure(FailureKind.CANCELLED, "agent stopped: its run was settled elsewhere")
    if result.timed_out:
        message = f"agent exceeded its timeout of {lease.agent.timeout_s:g} s and was killed"
        return Verdict(
            output=result.stdout.decode("utf-8", errors="replace"),
            error=AgentError(
                kind=FailureKind.TIMEOUT,
                message=message,
                signal=result.signal,
                stderr_tail=result.stderr_tail,
            ),
        )
    try:
        return platform.interpret(lease.agent, result)
    except Exception as err:  # an adapter that cannot read the output says so as data
        return _failure(FailureKind.INVALID_OUTPUT, f"cannot interpret output: {err}")


def _failure(kind: FailureKind, message: str) -> Verdict:
    return Verdict(error=AgentError(kind=kind, message=message))


def _outcome(
    ctx: WorkerContext,
    lease: Lease,
    verdict: Verdict,
    result: ProcessResult | None,
    started_at: datetime,
) -> AgentOutcome:
    finished_at = datetime.now(UTC)
    return AgentOutcome(
        name=lease.agent.name,
        platform=lease.agent.platform,
        status=OutcomeStatus.FAILED if verdict.error else OutcomeStatus.SUCCEEDED,
        output=verdict.output,
        output_truncated=result.stdout_truncated if result else False,
        exit_code=result.exit_code if result else None,
        error=verdict.error,
        started_at=started_at,
        finished_at=finished_at,
        duration_s=round((finished_at - started_at).total_seconds(), 6),
        attempts=lease.attempt,
        worker=ctx.hostname,
        session_id=verdict.session_id,
        usage=verdict.usage,
        cost_usd=verdict.cost_usd,
        num_turns=verdict.num_turns,
    )


def ride_out_outage(ctx: WorkerContext, action: str, call: Callable[[], T], **context: Any) -> T:
    """Run an idempotent Redis call, retrying through an outage of up to `settle_retry_s`."""
    give_up_at = time.monotonic() + ctx.settings.settle_retry_s
    delay_s = 0.1
    while True:
        try:
            return call()
        except TRANSIENT_ERRORS as err:
            if time.monotonic() > give_up_at:
                raise
            log.warning("redis_retry", action=action, error=str(err), **context)
            time.sleep(delay_s)
            delay_s = min(delay_s * 2, 2.0)


def settle_with_retry(ctx: WorkerContext, lease: Lease, outcome: AgentOutcome) -> None:
    """Settle the outcome, riding out a Redis outage for up to `settle_retry_s`."""
    try:
        result = ride_out_outage(
            ctx,
            "settle",
            lambda: ctx.collector.settle(lease.run_id, outcome, lease.token, lease.member),
            run_id=lease.run_id,
            agent=outcome.name,
        )
    except TRANSIENT_ERRORS as err:
        # The lease expires and the reaper runs the agent again: nothing is lost.
        log.error("settle_abandoned", run_id=lease.run_id, agent=outcome.name, error=str(err))
        return

    log.info(
        "agent_settled",
        run_id=lease.run_id,
        agent=outcome.name,
        platform=outcome.platform,
        attempt=lease.attempt,
        status=outcome.status.value,
        kind=outcome.error.kind.value if outcome.error else None,
        duration_s=outcome.duration_s,
        result=result,
    )


def renew_leases(ctx: WorkerContext) -> None:
    """Renew every lease this worker holds; stop agents that were settled or lost."""
    with ctx.lock:
        running = list(ctx.running.values())
    for item in running:
        try:
            state = ctx.collector.renew(item.lease, ctx.settings.lease_ttl_s)
        except redis.RedisError as err:
            log.warning(
                "lease_renew_failed",
                run_id=item.lease.run_id,
                agent=item.lease.agent.name,
                error=str(err),
            )
            continue
        if state != "ok":
            log.info(
                "agent_stopping", run_id=item.lease.run_id, agent=item.lease.agent.name, why=state
            )
            item.why_stopped = state
            item.stop.set()
