"""Logging: key/value events through structlog; JSON off a terminal, readable lines on one."""

from __future__ import annotations

import atexit
import logging
import sys
import threading
import time
from typing import Any, TextIO

import structlog

from orchestrator.settings import Settings

# A worker writes its debug and info lines in batches: one write per this many seconds, or
# sooner when this many characters are waiting. Warnings and worse go out at once.
LOG_BATCH_S = 0.2
LOG_BATCH_CHARS = 65536


def configure_logging(settings: Settings, batched: bool = False) -> None:
    """Set up structlog and the standard logging it shares with Celery, once per program.

    `batched`: debug and info lines wait in memory up to `LOG_BATCH_S` (see LineBatcher);
    for workers, whose line per settled agent otherwise costs a write of its own.
    """
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
        logger_factory=(
            BatchedLoggerFactory(LineBatcher(sys.stderr))
            if batched
            else structlog.WriteLoggerFactory(file=sys.stderr)
        ),
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


class LineBatcher:
    """A log stream written in batches: one write for every line of the last `batch_s`.

    Each write wakes the threads waiting for the interpreter lock; a worker settling a
    fast agent spent about 6 % of its CPU on the write of that agent's line alone (bench/).
    Lines keep their order. The cost: a debug or info line reaches the stream up to
    `batch_s` late, and a process killed with SIGKILL loses the lines of its last
    `batch_s`. A warning or worse is written at once, with every line before it; what
    waits is written at exit.
    """

    def __init__(
        self, stream: TextIO, batch_s: float = LOG_BATCH_S, batch_chars: int = LOG_BATCH_CHARS
    ) -> None:
        self._stream = stream
        self._batch_s = batch_s
        self._batch_chars = batch_chars
        self._lock = threading.Lock()
        self._lines: list[str] = []
        self._chars = 0
        self._waiting = threading.Event()
        threading.Thread(target=self._write_batches, name="agentfleet-log", daemon=True).start()
        atexit.register(self.flush)

    def add(self, line: str) -> None:
        """Queue one line; it is written with its batch."""
        with self._lock:
            self._lines.append(line)
            self._chars += len(line)
            full = self._chars >= self._batch_chars
        if full:
            self.flush()
        else:
            self._waiting.set()

    def add_now(self, line: str) -> None:
        """Write one line at once, after every line queued before it."""
        with self._lock:
            self._lines.append(line)
        self.flush()

    def flush(self) -> None:
        """Write every queued line."""
        with self._lock:
            if not self._lines:
                return
            text = "\n".join(self._lines) + "\n"
            self._lines.clear()
            self._chars = 0
            self._stream.write(text)
            self._stream.flush()

    def _write_batches(self) -> None:
        while True:
            self._waiting.wait()
            time.sleep(self._batch_s)
            # Cleared before the write: a line queued from here on waits for the next batch.
            self._waiting.clear()
            self.flush()


class BatchedLogger:
    """A structlog logger whose lines go through a LineBatcher."""

    def __init__(self, batcher: LineBatcher) -> None:
        self._batcher = batcher

    def msg(self, message: str) -> None:
        self._batcher.add(message)

    def msg_now(self, message: str) -> None:
        self._batcher.add_now(message)

    log = debug = info = msg
    warn = warning = err = error = critical = exception = fatal = failure = msg_now


class BatchedLoggerFactory:
    """Hands every structlog logger the one LineBatcher of the process."""

    def __init__(self, batcher: LineBatcher) -> None:
        self._logger = BatchedLogger(batcher)

    def __call__(self, *args: Any) -> BatchedLogger:
        return self._logger
