"""agentfleet's workers: the Celery app, the spawn task, platform adapters, the runner."""

__all__: list[str] = []
