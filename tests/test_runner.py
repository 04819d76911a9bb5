"""The subprocess runner: stdin, capture caps, timeouts that kill every descendant."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from workers.platforms.base import Invocation, ProcessResult, build_env
from workers.runner import SpawnFailedError, marked_pids, run_process


def run(
    argv: list[str],
    stdin: bytes = b"",
    timeout_s: float = 10.0,
    max_output_bytes: int = 1 << 20,
    token: str | None = None,
) -> ProcessResult:
    """Run argv through the runner with a fresh token and the current PATH."""
    return run_process(
        Invocation(argv=argv, stdin=stdin),
        {"PATH": os.environ["PATH"]},
        token or uuid.uuid4().hex,
        timeout_s,
        max_output_bytes,
        kill_grace_s=0.5,
    )


def test_the_prompt_arrives_on_stdin_byte_for_byte() -> None:
    """A prompt full of shell syntax is data on stdin, never run by a shell."""
    prompt = b"$(touch pwned) `id` --dangerously-skip-permissions; rm -rf /\n"

    result = run(["cat"], stdin=prompt)

    assert result.stdout == prompt
    assert result.exit_code == 0
    assert not Path("pwned").exists()


def test_a_large_prompt_does_not_deadlock_against_a_large_output() -> None:
    """Writing 4 MB of stdin while the agent echoes it back completes."""
    prompt = os.urandom(2 << 20).hex().encode()

    result = run(["cat"], stdin=prompt, max_output_bytes=len(prompt))

    assert result.stdout == prompt
    assert not result.stdout_truncated


def test_output_past_the_cap_is_dropped_and_marked_truncated() -> None:
    """Only max_output_bytes are kept; the rest is drained so the agent can finish."""
    result = run(["sh", "-c", "head -c 5000000 /dev/zero"], max_output_bytes=1000)

    assert len(result.stdout) == 1000
    assert result.stdout_truncated
    assert result.exit_code == 0


def test_exit_code_and_stderr_tail_are_reported() -> None:
    """A non-zero exit keeps its code and the end of stderr."""
    result = run(["sh", "-c", "echo first >&2; echo last words >&2; exit 7"])

    assert result.exit_code == 7
    assert result.stderr_tail.endswith("last words\n")


def test_a_timeout_kills_the_agent_and_its_children() -> None:
    """At timeout_s the whole group dies, a TERM-ignoring child included."""
    token = uuid.uuid4().hex
    script = "trap '' TERM; sleep 60 & sleep 60 & wait"

    started = time.monotonic()
    result = run(["sh", "-c", script], timeout_s=0.5, token=token)

    assert result.timed_out
    assert time.monotonic() - started < 5
    assert marked_pids(token) == []


def test_a_grandchild_in_a_new_session_is_killed_when_the_agent_ends() -> None:
    """A descendant that left the process group is still found by its marker and killed."""
    token = uuid.uuid4().hex
    script = "setsid sleep 60 > /dev/null 2>&1 < /dev/null & echo started"

    result = run(["sh", "-c", script], token=token)

    assert result.stdout == b"started\n"
    assert marked_pids(token) == []


def test_a_missing_binary_is_a_spawn_failure() -> None:
    """A binary that does not exist raises SpawnFailedError naming it."""
    with pytest.raises(SpawnFailedError, match="no-such-agent-binary"):
        run(["no-such-agent-binary"])


def test_the_environment_is_an_allowlist() -> None:
    """Only allowlisted names, platform prefixes and explicit extras reach the agent."""
    source = {
        "PATH": "/bin",
        "AWS_SECRET_ACCESS_KEY": "s3cr3t",
        "CLAUDE_CODE_X": "1",
        "HOME": "/root",
    }

    env = build_env(source, ["PATH", "HOME"], ("CLAUDE_CODE_",), {"EXTRA": "yes"})

    assert env == {"PATH": "/bin", "HOME": "/root", "CLAUDE_CODE_X": "1", "EXTRA": "yes"}


def python_output(source: str) -> str:
    """What `source` prints, run by a fresh interpreter (a subreaper is one per process)."""
    done = subprocess.run(
        [sys.executable, "-c", source], capture_output=True, text=True, timeout=30, check=True
    )
    return done.stdout


SUBREAPER_SCRIPT = """
import os, threading, uuid
from workers.platforms.base import Invocation
from workers import runner
assert runner.become_subreaper()
token = uuid.uuid4().hex
script = "setsid sh -c 'sleep 60' > /dev/null 2>&1 < /dev/null & echo $!"
result = {}
def agent():
    result['r'] = runner.run_process(Invocation(argv=['sh', '-c', script]),
                                     {'PATH': os.environ['PATH']}, token, 10, 1000, 0.5)
thread = threading.Thread(target=agent)
thread.start()
thread.join()
print(result['r'].stdout.decode().strip(), len(runner.marked_pids(token)),
      len(runner.adopted_children()))
"""


def test_a_subreaper_worker_kills_and_reaps_an_agents_orphans() -> None:
    """With the worker as subreaper, a detached grandchild is adopted, killed and reaped."""
    grandchild, marked, adopted = python_output(SUBREAPER_SCRIPT).split()

    assert int(grandchild) > 0
    assert (marked, adopted) == ("0", "0")


OWN_CHILD_SCRIPT = """
import subprocess
from workers import runner
keeper = subprocess.Popen(['sleep', '30'])
assert runner.become_subreaper()
orphan = subprocess.run(['sh', '-c', 'sleep 30 > /dev/null 2>&1 & echo $!'],
                        capture_output=True, text=True)
print(keeper.pid, orphan.stdout.strip(), *runner.adopted_children())
keeper.kill()
subprocess.run(['kill', orphan.stdout.strip()])
"""


def test_the_subreapers_own_children_are_not_taken_for_orphans() -> None:
    """A child the adopting thread started itself (the keeper) is never listed as adopted."""
    keeper, orphan, *adopted = python_output(OWN_CHILD_SCRIPT).split()

    assert adopted == [orphan]
    assert keeper != orphan


MANY_ORPHANS_SCRIPT = """
import subprocess, time
from workers import runner
runner.CHILDREN_READ_BYTES = 8
assert runner.become_subreaper()
spawn = 'for i in 1 2 3 4 5 6; do sleep 30 > /dev/null 2>&1 & echo $!; done'
orphans = subprocess.run(['sh', '-c', spawn], capture_output=True, text=True).stdout.split()
adopted = runner.adopted_children()
subprocess.run(['kill', *orphans])
print(len(orphans), sorted(map(int, orphans)) == sorted(adopted))
"""


def test_a_children_list_longer_than_the_first_read_is_read_whole() -> None:
    """Orphans whose pids overflow the first read of the children file are all found."""
    count, all_found = python_output(MANY_ORPHANS_SCRIPT).split()

    assert (count, all_found) == ("6", "True")


CLEARED_ENV_SCRIPT = """
import os, subprocess, time
from workers import runner
assert runner.become_subreaper()
spawn = 'env -i sleep 30 > /dev/null 2>&1 & echo $!'
orphan = int(subprocess.run(['sh', '-c', spawn], capture_output=True, text=True).stdout)
while open(f'/proc/{orphan}/comm').read().strip() != 'sleep':
    time.sleep(0.01)
naps = []
runner.time.sleep = naps.append
killed = runner.kill_orphans('some-token')
alive = os.waitpid(orphan, os.WNOHANG) == (0, 0)
os.kill(orphan, 9)
print(killed, len(naps), runner.ORPHAN_ROUNDS, alive)
"""


def test_an_orphan_with_a_cleared_environment_is_looked_at_a_bounded_number_of_times() -> None:
    """An orphan whose environment reads empty is undecided: looked at again, then left."""
    killed, naps, rounds, alive = python_output(CLEARED_ENV_SCRIPT).split()

    assert (killed, alive) == ("0", "True")
    assert int(naps) == int(rounds)
