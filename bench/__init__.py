"""Benchmarks: agentfleet against a Celery chord, a Celery group join and the in-process floor.

Run it with `python -m bench` (add `--quick` for a smoke run). Every variant runs the same
agents on the same private Redis, with the same worker pool and concurrency, and every
aggregate it produces is checked against the expected one.
"""

__all__: list[str] = []
