"""The reaper: a thread in every worker that keeps accepted runs moving.

Each tick it renews the leases this worker holds, hands expired leases of dead workers
to a next attempt (or settles them `worker_lost`), finalizes runs past their deadline,
and kills leftover agent processes that other workers asked this host to kill.
"""

from __future__ import annotations

import threading
import time

import redis
import structlog
from celery import Celery

from orchestrator import keys
from orchestrator.models import FailureKind
from orchestrator.submission import publish
from workers.runner import kill_marked
from workers.tasks import WorkerContext, renew_leases

log = structlog.get_logger(__name__)


class Reaper(threading.Thread):
    """Background thread doing the periodic duties of one worker."""

    def __init__(self, ctx: WorkerContext, app: Celery) -> None:
        super().__init__(name="agentfleet-reaper", daemon=True)
        self.ctx = ctx
        self.app = app
        self.halt = threading.Event()
        self._renewed_at = 0.0
        self._tick_done_at = 0.0
        self._steady_since = 0.0

    def run(self) -> None:
        while not self.halt.wait(self.ctx.settings.reaper_interval_s):
            try:
                self.tick()
            except redis.RedisError as err:
                log.warning("reaper_redis_error", error=str(err))
            except Exception:  # the thread must outlive any one bad round (a broker error)
                log.exception("reaper_round_failed")

    def tick(self) -> None:
        """One round of every duty."""
        if time.monotonic() - self._renewed_at >= self.ctx.settings.lease_renew_s:
            renew_leases(self.ctx)
            self._renewed_at = time.monotonic()

        self.kill_requested()
        if self._redis_steady():
            self.recover_expired_leases()
        self.finalize_past_deadline()
        self._tick_done_at = time.monotonic()

    def _redis_steady(self) -> bool:
        """Whether this reaper has reached Redis without a gap for a whole lease TTL.

        After a gap longer than one renewal (Redis paused or restarting, this worker just
        started) leases may look expired although their holders are alive; holders renew
        within a third of a TTL, so waiting one TTL keeps live agents from being killed.
        """
        now = time.monotonic()
        settings = self.ctx.settings
        if now - self._tick_done_at > settings.lease_renew_s + settings.reaper_interval_s:
            self._steady_since = now
        return now - self._steady_since >= settings.lease_ttl_s

    def kill_requested(self) -> None:
        """Kill the leftover processes of agents whose leases expired elsewhere."""
        queue = keys.kill_list(self.ctx.hostname)
        while (token := self.ctx.collector.redis.lpop(queue)) is not None:
            killed = kill_marked(str(token))
            log.info("leftovers_killed", token=token, processes=killed)

    def recover_expired_leases(self) -> None:
        """Kill what an expired lease left running, then re-run or settle its agent."""
        collector = self.ctx.collector
        for member in collector.claim_due(keys.LEASES):
            run_id, agent, attempt, token = keys.parse_lease_member(member)
            decision = collector.requeue(member, self.ctx.settings.max_attempts)
            # Only a lease Redis found dead is cleared away: its holder may have renewed
            # between the claim and the decision. The kill precedes the next attempt's
            # message, so two copies never run at once.
            if decision.action != "alive":
                self._kill_leftovers(token)

            log.info(
                "lease_expired",
                run_id=run_id,
                agent=agent,
                attempt=attempt,
                action=decision.action,
            )
            if decision.action == "requeue":
                publish(
                    self.app, collector, run_id, [(agent, decision.platform, decision.attempt)]
                )
            if decision.action != "alive":
                collector.redis.zrem(keys.LEASES, member)

    def _kill_leftovers(self, token: str) -> None:
        host = token.split("/", 1)[0]
        if host == self.ctx.hostname:
            kill_marked(token)
        else:
            self.ctx.collector.redis.rpush(keys.kill_list(host), token)

    def finalize_past_deadline(self) -> None:
        """Settle every open agent of a run whose deadline passed; write its aggregate."""
        collector = self.ctx.collector
        for run_id in collector.claim_due(keys.DEADLINES):
            result = collector.finalize(
                run_id, FailureKind.DEADLINE_EXCEEDED, "the run's deadline passed", cancel=False
            )
            log.info("deadline_reached", run_id=run_id, result=result)
            collector.redis.zrem(keys.DEADLINES, run_id)
