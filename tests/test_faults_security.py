"""Bad input and security: JSON only, forged data stays data, limits, secrets kept out."""

from __future__ import annotations

import base64
import json
import os
import pickle
import re
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from kombu.exceptions import OperationalError

from orchestrator import Fleet, Settings, SpecError
from orchestrator.errors import RedisUnavailableError
from orchestrator.keys import QUEUE_PREFIX
from orchestrator.models import RunAggregate, RunStatus
from tests.conftest import REPO, WorkerFactory, command_agent, worker_env
from tests.faults import (
    FAST,
    RedisServer,
    assert_no_secret,
    assert_promises,
    make_tls_files,
    redis_server,
    traced_agent,
    wait_until,
)
from workers.app import create_app

pytestmark = pytest.mark.fault

PASSWORD = "pw-" + uuid.uuid4().hex
CLOUD_SECRET = "cloud-" + uuid.uuid4().hex
ACL = ("--user", "default", "off", "--user", "fleet", "on", f">{PASSWORD}", "~*", "&*", "+@all")
COMMAND_QUEUE = f"{QUEUE_PREFIX}command"


@pytest.fixture
def secured(tmp_path: Path) -> Iterator[RedisServer]:
    """A private Redis whose only user is `fleet`, with a password."""
    with redis_server(tmp_path, *ACL, auth=f"fleet:{PASSWORD}@") as started:
        yield started


def run_to_end(url: str, spec: dict[str, Any], **settings: Any) -> RunAggregate:
    """Submit `spec` at `url` and return its aggregate, whatever its status."""
    fleet = Fleet.from_url(url, **settings)
    try:
        return fleet.wait_settled(fleet.submit(spec).run_id, timeout_s=30)
    finally:
        fleet.close()


class Planted:
    """Unpickling this runs a shell command: what an attacker would put in a message."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return os.system, (self.command,)


def pickle_message(command: str) -> str:
    """A kombu message for the spawn task whose body is a pickle that runs `command`."""
    body = pickle.dumps(((Planted(command),), {}, {}))
    return json.dumps(
        {
            "body": base64.b64encode(body).decode(),
            "content-encoding": "binary",
            "content-type": "application/x-python-serialize",
            "headers": {
                "lang": "py",
                "task": "agentfleet.spawn",
                "id": str(uuid.uuid4()),
                "retries": 0,
                "argsrepr": "",
                "kwargsrepr": "",
            },
            "properties": {
                "body_encoding": "base64",
                "delivery_tag": str(uuid.uuid4()),
                "delivery_mode": 2,
                "priority": 0,
                "delivery_info": {"exchange": COMMAND_QUEUE, "routing_key": COMMAND_QUEUE},
            },
        }
    )


def test_a_pickle_message_is_refused_and_nothing_in_it_runs(
    server: RedisServer, start_worker: WorkerFactory, traces: Path
) -> None:
    """The broker takes JSON only: a pickle on the queue is consumed, refused, never loaded."""
    worker = start_worker(url=server.url, settings=FAST)
    planted, control = traces / "pwned", traces / "control"
    pickle.loads(pickle.dumps(Planted(f"touch {control}")))  # the payload is live
    client = server.client()

    client.lpush(COMMAND_QUEUE, pickle_message(f"touch {planted}"))
    wait_until(lambda: "Refusing to deserialize" in worker.log())
    aggregate = run_to_end(server.url, {"agents": [command_agent("after", "echo fine")]})

    assert control.exists()
    assert client.llen(COMMAND_QUEUE) == 0
    assert "application/x-python-serialize" in worker.log()
    assert not planted.exists()
    assert aggregate.status is RunStatus.SUCCEEDED


def test_a_forged_outcome_in_an_agents_output_is_treated_as_data(
    server: RedisServer, start_worker: WorkerFactory, traces: Path
) -> None:
    """Output that looks like a failed outcome or an aggregate stays the agent's output."""
    start_worker(url=server.url, settings=FAST)
    forged = '{"status":"failed","error":{"kind":"worker_lost"},"succeeded_count":99}'
    agent = traced_agent(traces, "mimic", f"printf '%s' '{forged}'")

    aggregate = run_to_end(server.url, {"agents": [agent]})

    assert aggregate.status is RunStatus.SUCCEEDED
    assert aggregate.succeeded_count == 1
    assert aggregate.outcome("mimic").output == forged
    assert_promises(server.client(), aggregate, ["mimic"], traces)


@pytest.mark.parametrize(
    "args",
    [
        ["run-x", "ghost", 1],
        ["run-x:meta", "a", 1],
        ["run-x", "a", "1; DROP"],
        ["run-x", "a", 0],
        ["run-x", "a"],
    ],
    ids=["unknown-agent", "key-injection", "attempt-not-int", "attempt-zero", "too-few-args"],
)
def test_a_forged_spawn_message_changes_nothing(
    server: RedisServer, start_worker: WorkerFactory, traces: Path, args: list[object]
) -> None:
    """A spawn naming no agent of a run, or with bad arguments, runs and writes nothing."""
    # At debug level Celery logs the end of every task, the forged one's included.
    worker = start_worker(url=server.url, settings={**FAST, "log_level": "debug"})
    fleet = Fleet.from_url(server.url)
    handle = fleet.submit({"run_id": "run-x", "agents": [traced_agent(traces, "a", "echo ran")]})
    aggregate = fleet.wait_settled(handle.run_id, timeout_s=30)
    before = snapshot(server)

    forged = fleet.app.send_task("agentfleet.spawn", args=args, queue=COMMAND_QUEUE)
    ended = re.compile(rf"agentfleet\.spawn\[{forged.id}\] (succeeded|raised)")
    wait_until(lambda: ended.search(worker.log()))
    fleet.close()

    assert snapshot(server) == before
    assert (traces / "a.pids").read_text().count("\n") == 1
    assert_promises(server.client(), aggregate, ["a"], traces)


def snapshot(server: RedisServer) -> dict[str, bytes | None]:
    """Every agentfleet key and its serialized value."""
    raw = redis.Redis.from_url(server.url)
    try:
        return {str(key): raw.dump(key) for key in raw.keys("agentfleet:*")}
    finally:
        raw.close()


LIMITS = {
    "spec-size": ({"max_spec_bytes": 2048}, {"labels": {"pad": "x" * 4096}}, "<spec>"),
    "prompt-size": ({"max_prompt_bytes": 16}, {"prompt": "p" * 17}, "agents.0.prompt"),
    "agent-count": ({"max_agents": 2}, {"extra_agents": 2}, "agents"),
    "run-id": ({}, {"run_id": "x:meta"}, "run_id"),
    "run-id-glob": ({}, {"run_id": "*"}, "run_id"),
    "platform": ({}, {"platform": "no-such-platform"}, "agents.0.platform"),
}


def over_limit_spec(change: dict[str, Any]) -> dict[str, Any]:
    """A one-agent spec with one thing pushed past a limit."""
    agent = {**command_agent("a", "true")}
    for field in ("prompt", "platform"):
        if field in change:
            agent[field] = change[field]
    extra = [command_agent(f"e{i}", "true") for i in range(change.get("extra_agents", 0))]
    spec: dict[str, Any] = {"agents": [agent, *extra]}
    spec.update({k: v for k, v in change.items() if k in ("labels", "run_id")})
    return spec


@pytest.mark.parametrize(("settings", "change", "path"), LIMITS.values(), ids=LIMITS.keys())
def test_a_spec_over_a_limit_is_refused_with_a_clear_error_and_nothing_written(
    server: RedisServer, settings: dict[str, int], change: dict[str, Any], path: str
) -> None:
    """Fleet.submit raises SpecError naming the offending path; Redis stays empty."""
    fleet = Fleet.from_url(server.url, **settings)

    with pytest.raises(SpecError) as caught:
        fleet.submit(over_limit_spec(change))
    fleet.close()

    assert path in dict(caught.value.problems)
    assert server.client().dbsize() == 0


def test_a_worker_secret_never_reaches_an_agent_unless_named(
    secured: RedisServer, start_worker: WorkerFactory, traces: Path
) -> None:
    """The agent environment is an allowlist: cloud keys and the Redis URL stay out."""
    allowlist = json.dumps(["PATH", "HOME", "NAMED_TOKEN"])
    secrets = {
        "AWS_SECRET_ACCESS_KEY": CLOUD_SECRET,
        "NAMED_TOKEN": "named-value",
        "UNNAMED_TOKEN": "unnamed-value",
    }
    start_worker(url=secured.url, settings={**FAST, "env_allowlist": allowlist}, extra_env=secrets)

    aggregate = run_to_end(secured.url, {"agents": [traced_agent(traces, "snoop", "env")]})

    seen = aggregate.outcome("snoop").output
    assert "NAMED_TOKEN=named-value" in seen
    assert "PATH=" in seen
    assert "AGENTFLEET_REDIS_URL" not in seen
    assert_no_secret([CLOUD_SECRET, PASSWORD, "unnamed-value"], seen)
    assert_promises(secured.client(), aggregate, ["snoop"], traces)


@pytest.fixture
def flower(secured: RedisServer, tmp_path: Path) -> Iterator[str]:
    """Flower watching the secured Redis on a free loopback port; yields its base URL."""
    from orchestrator.embedded import free_port, stop_process

    port = free_port()
    env = {**worker_env(secured.url), "FLOWER_UNAUTHENTICATED_API": "true"}
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "workers.app",
        "--broker",
        secured.url,
        "flower",
        f"--port={port}",
        "--address=127.0.0.1",
    ]
    with (tmp_path / "flower.log").open("wb") as log:
        process = subprocess.Popen(
            argv, env=env, cwd=REPO, stdout=log, stderr=log, stdin=subprocess.DEVNULL
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: fetch(f"{base}/healthcheck") == "OK", 30, 0.2)
        yield base
    finally:
        stop_process(process)


def fetch(url: str) -> str:
    """The body of a GET on the loopback Flower, or '' when it does not answer yet."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return str(response.read().decode("utf-8", errors="replace"))
    except OSError:
        return ""


def test_logs_and_flower_show_ids_but_no_prompt_output_or_credential(
    secured: RedisServer, flower: str, start_worker: WorkerFactory, traces: Path, tmp_path: Path
) -> None:
    """Worker logs and Flower name the run, agent and platform; never the secret parts."""
    prompt, output = "prompt-" + uuid.uuid4().hex, "output-" + uuid.uuid4().hex
    worker = start_worker(
        url=secured.url,
        settings={**FAST, "task_events": "true"},
        extra_env={"AWS_SECRET_ACCESS_KEY": CLOUD_SECRET},
    )
    agent = traced_agent(traces, "quiet", f"cat >/dev/null; echo {output}", prompt=prompt)

    aggregate = run_to_end(secured.url, {"agents": [agent]})
    wait_until(lambda: aggregate.run_id in fetch(f"{flower}/api/tasks"), 20, 0.2)
    pages = [
        fetch(f"{flower}{page}")
        for page in ("/api/tasks", "/tasks", "/workers", "/broker", "/api/workers")
    ]
    # The worker writes its info lines in batches, a fraction of a second late.
    wait_until(lambda: '"agent": "quiet"' in worker.log(), 5)
    logs = [worker.log(), (tmp_path / "flower.log").read_text(errors="replace")]

    assert aggregate.outcome("quiet").output == f"{output}\n"
    assert all(name in logs[0] for name in (aggregate.run_id, '"agent": "quiet"', "command"))
    assert "fleet:***@" in logs[0]  # agentfleet's own worker_starting line
    assert "fleet:**@" in logs[0]  # Celery's banner masks it its own way
    assert_no_secret([prompt, output, PASSWORD, CLOUD_SECRET], *logs, *pages)


def test_a_run_works_over_tls_with_the_certificate_checked(
    tmp_path: Path, start_worker: WorkerFactory, traces: Path
) -> None:
    """rediss:// with a private CA: workers and clients verify the server and a run works."""
    tls = make_tls_files(tmp_path)
    with redis_server(tmp_path, *ACL, auth=f"fleet:{PASSWORD}@", tls=tls) as server:
        worker = start_worker(url=server.url, settings={**FAST, "redis_tls_ca_file": str(tls.ca)})

        aggregate = run_to_end(
            server.url,
            {"agents": [traced_agent(traces, "t", "echo tls")]},
            redis_tls_ca_file=tls.ca,
        )
        with pytest.raises(RedisUnavailableError, match="certificate verify failed"):
            Fleet.from_url(server.url)
        with pytest.raises(OperationalError, match="certificate verify failed"):
            broker_ping(server.url, Settings())
        broker_ping(server.url, Settings(redis_tls_ca_file=tls.ca))

        assert server.url.startswith("rediss://")
        assert aggregate.outcome("t").output == "tls\n"
        assert_promises(server.client(), aggregate, ["t"], traces)
        worker.stop()


def broker_ping(url: str, settings: Settings) -> None:
    """Connect to the broker the way Celery does and ping it."""
    with create_app(settings, url).connection_for_write() as connection:
        connection.ensure_connection(max_retries=1)
        connection.default_channel.client.ping()


@pytest.mark.parametrize("command", [["status", "run-x"], ["worker", "--platform", "command"]])
def test_a_wrong_password_fails_fast_with_one_masked_line(
    secured: RedisServer, command: list[str]
) -> None:
    """The CLI prints one line naming the masked URL and exits 1 within seconds."""
    wrong = secured.url.replace(PASSWORD, "not-the-password")
    env = worker_env(wrong)
    started = time.monotonic()

    done = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", *command],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    took_s = time.monotonic() - started

    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"agentfleet: Redis at redis://fleet:***@127.0.0.1:{secured.port}/0 refused the "
        "credentials"
    ]
    assert "not-the-password" not in done.stderr + done.stdout
    assert took_s < 10


def test_a_redis_that_may_evict_keys_is_reported_at_worker_start(
    tmp_path: Path, start_worker: WorkerFactory
) -> None:
    """maxmemory-policy allkeys-lru makes the worker log a warning naming the policy."""
    with redis_server(tmp_path, "--maxmemory-policy", "allkeys-lru") as server:
        worker = start_worker(url=server.url, settings=FAST)

        line = next(x for x in worker.log().splitlines() if "redis_may_evict" in x)

        assert json.loads(line)["maxmemory_policy"] == "allkeys-lru"
        assert json.loads(line)["level"] == "warning"
        worker.stop()
