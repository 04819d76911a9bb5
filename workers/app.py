"""The Celery app: JSON only, late acks, one message in hand per slot, queues per platform."""

from __future__ import annotations

import ssl
from typing import Any

from celery import Celery

from orchestrator.connection import redis_url
from orchestrator.keys import queue_for
from orchestrator.settings import Settings


def broker_tls_options(settings: Settings) -> dict[str, Any]:
    """TLS options for the broker: the server certificate is always checked."""
    options: dict[str, Any] = {"ssl_cert_reqs": ssl.CERT_REQUIRED}
    if settings.redis_tls_ca_file is not None:
        options["ssl_ca_certs"] = str(settings.redis_tls_ca_file)
    return options


def create_app(settings: Settings, url: str | None = None, with_tasks: bool = True) -> Celery:
    """A Celery app bound to the configured Redis; a worker's also registers the spawn task."""
    app = Celery("agentfleet", set_as_current=False)
    app.conf.update(
        broker_url=url or redis_url(settings),
        broker_transport="workers.transport:Transport",
        broker_connection_retry_on_startup=True,
        # A message unacked longer than this is delivered again while the first copy may
        # still run: keep it above the longest allowed agent timeout.
        broker_transport_options={"visibility_timeout": settings.visibility_timeout_s},
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        event_serializer="json",
        result_backend=None,
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=False,
        worker_prefetch_multiplier=1,
        task_default_queue=queue_for("default"),
        worker_hijack_root_logger=False,
        worker_send_task_events=settings.task_events,
        task_send_sent_event=settings.task_events,
    )
    if app.conf.broker_url.startswith("rediss://"):
        # kombu takes TLS options only as a dict: without one a rediss:// URL is dialled
        # in plain text, so certificate checking is asked for explicitly.
        app.conf.broker_use_ssl = broker_tls_options(settings)

    if with_tasks:
        from workers.tasks import register

        register(app)
    return app


def __getattr__(name: str) -> Any:
    # `celery -A workers.app flower` reads `app`: build it from the environment on first
    # use, never at import.
    if name == "app":
        return create_app(Settings())
    raise AttributeError(name)
