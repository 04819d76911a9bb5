"""Logging: key/value events through structlog; JSON off a terminal, readable lines on one."""

from __future__ import annotations

import logging
import sys

import structlog

from orchestrator.settings import Settings


def configure_logging(settings: Settings) -> None:
    """Set up structlog and the standard logging it shares with Celery, once per program."""
    level = logging.getLevelNamesMapping().get(settings.log_level.upper(), logging.INFO)
    as_json = settings.log_format == "json" or (
        settings.log_format == "auto" and not sys.stderr.isatty()
    )
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if as_json else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=max(level, logging.WARNING), stream=sys.stderr)


def quiet_by_default() -> None:
    """Keep a host program that never configured structlog free of our debug and info lines.

    structlog's unconfigured default prints every level; a library must not. A program that
    configures structlog itself (as the agentfleet CLI does) replaces this.
    """
    if not structlog.is_configured():
        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
