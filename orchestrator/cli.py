"""The `agentfleet` command: submit, wait, inspect and cancel runs; start workers.

Exit codes: 0 every agent succeeded, 3 partial, 4 every agent failed or the run was
cancelled, 2 invalid input, 1 anything else (one line on stderr, no traceback).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
from rich.console import Console
from rich.table import Table

from orchestrator.client import Fleet
from orchestrator.connection import redis_url
from orchestrator.errors import AgentfleetError, EmbeddedError, SpecError, WaitTimeoutError
from orchestrator.logs import configure_logging
from orchestrator.models import RunAggregate, RunStatus, read_spec_file
from orchestrator.settings import Settings

EXIT_OK, EXIT_ERROR, EXIT_INVALID, EXIT_PARTIAL, EXIT_FAILED = 0, 1, 2, 3, 4
EXIT_BY_STATUS = {
    RunStatus.SUCCEEDED: EXIT_OK,
    RunStatus.PARTIAL: EXIT_PARTIAL,
    RunStatus.FAILED: EXIT_FAILED,
    RunStatus.CANCELLED: EXIT_FAILED,
}
EMBEDDED_WAIT_SLICE_S = 1.0

F = TypeVar("F", bound=Callable[..., Any])
# Off a terminal (pipes, CI logs) rich assumes 80 columns; give the table room instead.
out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 140)
err = Console(stderr=True, soft_wrap=True)


def fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    """Print one line to stderr and exit with `code`."""
    err.print(f"agentfleet: {message}", markup=False, highlight=False)
    sys.exit(code)


def handles_errors(command: F) -> F:
    """Turn agentfleet errors into one-line messages and the documented exit codes."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except SpecError as problem:
            fail(str(problem), EXIT_INVALID)
        except AgentfleetError as problem:
            fail(str(problem).splitlines()[0] if str(problem) else type(problem).__name__)
        except KeyboardInterrupt:
            fail("interrupted")

    return wrapper  # type: ignore[return-value]


def load_settings(batched_logs: bool = False) -> Settings:
    """Settings from the environment, with logging configured from them."""
    settings = Settings()
    configure_logging(settings, batched=batched_logs)
    return settings


def connect_fleet(settings: Settings) -> Fleet:
    """A Fleet for AGENTFLEET_REDIS_URL."""
    return Fleet.from_url(redis_url(settings))


def outcome_table(aggregate: RunAggregate) -> Table:
    """A readable table of every outcome of a run."""
    table = Table(title=f"run {aggregate.run_id}: {aggregate.status.value} ({aggregate.message})")
    for column in ("agent", "platform", "status", "failure", "seconds", "output or reason"):
        table.add_column(column)
    for outcome in [*aggregate.successful, *aggregate.failed]:
        error = outcome.error
        text = error.message if error else outcome.output
        first_line = text.strip().splitlines()[0] if text.strip() else ""
        table.add_row(
            outcome.name,
            outcome.platform,
            outcome.status.value,
            error.kind.value if error else "",
            f"{outcome.duration_s or 0:.2f}",
            first_line[:80],
        )
    return table


def report(aggregate: RunAggregate, as_json: bool) -> NoReturn:
    """Print the aggregate (table or JSON) and exit with the code for its status."""
    if as_json:
        click.echo(aggregate.model_dump_json(indent=2))
    else:
        out.print(outcome_table(aggregate))
    sys.exit(EXIT_BY_STATUS[aggregate.status])


@click.group()
def main() -> None:
    """Run fleets of coding agents on Celery and Redis and get every outcome back."""


@main.command("submit")
@click.argument("spec", type=click.Path(path_type=Path))
@click.option("--wait", "wait_", is_flag=True, help="Wait for the aggregate and report it.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@handles_errors
def submit_command(spec: Path, wait_: bool, as_json: bool) -> None:
    """Validate and enqueue a run; print its run id."""
    settings = load_settings()
    data = read_spec_file(spec, settings.max_spec_bytes)
    handle = connect_fleet(settings).submit(data)
    if wait_:
        report(handle.fleet.wait_settled(handle.run_id), as_json)
    click.echo(handle.run_id)


@main.command("wait")
@click.argument("run_id")
@click.option("--timeout", "timeout_s", type=float, default=None, help="Seconds to wait.")
@click.option("--json", "as_json", is_flag=True)
@handles_errors
def wait_command(run_id: str, timeout_s: float | None, as_json: bool) -> None:
    """Wait for a run's aggregate and report it."""
    report(connect_fleet(load_settings()).wait_settled(run_id, timeout_s), as_json)


@main.command("result")
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True)
@handles_errors
def result_command(run_id: str, as_json: bool) -> None:
    """Report a finished run's aggregate (exit 1 while it still runs)."""
    aggregate = connect_fleet(load_settings()).result(run_id)
    if aggregate is None:
        fail(f"run {run_id} is still running")
    report(aggregate, as_json)


@main.command("status")
@click.argument("run_id")
@handles_errors
def status_command(run_id: str) -> None:
    """Print live progress of a run as JSON."""
    click.echo(connect_fleet(load_settings()).status(run_id).model_dump_json(indent=2))


@main.command("cancel")
@click.argument("run_id")
@handles_errors
def cancel_command(run_id: str) -> None:
    """Cancel a run: open agents settle `cancelled`, running agents are stopped."""
    aggregate = connect_fleet(load_settings()).cancel(run_id)
    click.echo(f"{run_id}: {aggregate.status.value if aggregate else 'cancelling'}")


@main.command("worker")
@click.option(
    "--platform",
    "platforms",
    multiple=True,
    required=True,
    help="A platform whose queue this worker consumes (repeatable).",
)
@click.option("--concurrency", type=int, default=None, help="Agents run at once.")
@click.option("--name", default=None, help="Celery node name.")
@handles_errors
def worker_command(platforms: tuple[str, ...], concurrency: int | None, name: str | None) -> None:
    """Start a worker serving the given platforms."""
    from workers.worker import run_worker

    settings = load_settings(batched_logs=True)
    run_worker(settings, list(platforms), concurrency or settings.worker_concurrency, name)


@main.command("run")
@click.argument("spec", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True)
@handles_errors
def run_command(spec: Path, as_json: bool) -> None:
    """Submit a run and wait for it; without AGENTFLEET_REDIS_URL, on an embedded Redis."""
    settings = load_settings()
    data = read_spec_file(spec, settings.max_spec_bytes)
    if settings.redis_url is not None:
        handle = connect_fleet(settings).submit(data)
        report(handle.fleet.wait_settled(handle.run_id), as_json)
    report(_run_embedded(settings, data), as_json)


def _run_embedded(settings: Settings, data: dict[str, Any]) -> RunAggregate:
    from orchestrator.embedded import embedded_deployment
    from orchestrator.submission import validate_run

    spec = validate_run(data, settings)
    platforms = sorted({agent.platform for agent in spec.agents})
    with embedded_deployment(platforms, settings.worker_concurrency) as (url, worker, log):
        handle = Fleet.from_url(url).submit(spec)
        while True:
            try:
                return handle.fleet.wait_settled(handle.run_id, EMBEDDED_WAIT_SLICE_S)
            except WaitTimeoutError:
                if worker.poll() is not None:
                    tail = log.read_text(errors="replace").strip().splitlines()[-1:]
                    raise EmbeddedError(f"embedded worker exited: {' '.join(tail)}") from None


if __name__ == "__main__":
    main()
