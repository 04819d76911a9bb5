"""Worker log lines written in batches: order, delay, warnings at once, nothing lost at exit."""

from __future__ import annotations

import io
import json
import subprocess
import sys

from orchestrator.logs import LineBatcher
from tests.faults import wait_until

# Long enough that no batch falls due while a test looks at the stream.
NEVER_S = 60.0


def test_info_lines_wait_for_their_batch_and_keep_their_order() -> None:
    """Queued lines are not written at once; within the batch interval they are, in order."""
    stream = io.StringIO()
    batcher = LineBatcher(stream, batch_s=0.2)

    for line in ("one", "two", "three"):
        batcher.add(line)
    before = stream.getvalue()

    assert before == ""
    wait_until(lambda: stream.getvalue() != "", timeout_s=5)
    assert stream.getvalue() == "one\ntwo\nthree\n"


def test_a_warning_is_written_at_once_after_the_lines_before_it() -> None:
    """add_now writes every queued line and then its own, without waiting for the batch."""
    stream = io.StringIO()
    batcher = LineBatcher(stream, batch_s=NEVER_S)

    batcher.add("info")
    batcher.add_now("warning")

    assert stream.getvalue() == "info\nwarning\n"


def test_a_full_batch_is_written_without_waiting() -> None:
    """Once the queued lines reach the batch size they are written at once."""
    stream = io.StringIO()
    batcher = LineBatcher(stream, batch_s=NEVER_S, batch_chars=10)

    batcher.add("12345")
    waiting = stream.getvalue()
    batcher.add("67890")

    assert waiting == ""
    assert stream.getvalue() == "12345\n67890\n"


def test_lines_still_queued_at_exit_are_written() -> None:
    """A process that exits right after an info line still writes it, after its warning."""
    program = (
        "import structlog\n"
        "from orchestrator.logs import configure_logging\n"
        "from orchestrator.settings import Settings\n"
        "configure_logging(Settings(log_format='json'), batched=True)\n"
        "log = structlog.get_logger()\n"
        "log.warning('first', n=1)\n"
        "log.info('last', n=2)\n"
    )

    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=True
    )

    events = [json.loads(line)["event"] for line in done.stderr.splitlines()]
    assert events == ["first", "last"]
