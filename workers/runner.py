"""The subprocess runner: one agent process, its own process group, killed as a group.

The runner never uses a shell. It feeds the prompt on stdin, captures stdout up to a byte
cap (draining and dropping the rest, so memory stays bounded), keeps a short stderr tail
and enforces the agent's timeout itself: TERM to the group, a short grace, then KILL.
Every process it starts carries a marker variable naming the attempt, so descendants
that left the group (a new session) are still found and killed.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from workers.platforms.base import Invocation, ProcessResult, tail_text

MARKER_VAR = "AGENTFLEET_AGENT_TOKEN"
STDERR_TAIL_BYTES = 8192
READ_CHUNK_BYTES = 65536
POLL_S = 0.25

# The keeper: a tiny process beside each worker, in its own session so no signal meant
# for the worker reaches it. It blocks on a pipe only the worker holds; when the worker
# dies, even by SIGKILL, the pipe closes and the keeper kills every agent process whose
# marker starts with the worker's prefix. Pure stdlib, so it starts in milliseconds.
KEEPER_SOURCE = """
import os, signal, sys, time
sys.stdin.buffer.read()
needle = (sys.argv[1] + '=' + sys.argv[2]).encode()
def marked():
    for name in filter(str.isdigit, os.listdir('/proc')):
        try:
            with open('/proc/' + name + '/environ', 'rb') as environ:
                entries = environ.read().split(b'\\0')
        except OSError:
            continue
        if any(entry.startswith(needle) for entry in entries):
            yield int(name)
for _ in range(50):
    pids = list(marked())
    if not pids:
        break
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    time.sleep(0.02)
"""


class SpawnFailedError(Exception):
    """Raised inside the runner when the agent process could not be started at all."""


@dataclass
class Capture:
    """Bounded buffers for one process's stdout and stderr."""

    max_output_bytes: int
    stdout: bytearray = field(default_factory=bytearray)
    stderr: bytearray = field(default_factory=bytearray)
    truncated: bool = False

    def add_stdout(self, data: bytes) -> None:
        room = self.max_output_bytes - len(self.stdout)
        if len(data) > room:
            self.truncated = True
            data = data[: max(room, 0)]
        self.stdout += data

    def add_stderr(self, data: bytes) -> None:
        self.stderr += data
        del self.stderr[:-STDERR_TAIL_BYTES]


def run_process(
    invocation: Invocation,
    env: dict[str, str],
    token: str,
    timeout_s: float,
    max_output_bytes: int,
    kill_grace_s: float,
    stop: threading.Event | None = None,
) -> ProcessResult:
    """Run one agent process to its end, its timeout, or `stop`; never raises for the agent."""
    started = time.monotonic()
    process = _start(invocation, {**env, MARKER_VAR: token})
    capture = Capture(max_output_bytes)
    timed_out = False
    try:
        timed_out = _pump(process, invocation.stdin, capture, started + timeout_s, stop)
    finally:
        _kill_all(process, token, kill_grace_s if timed_out or _stopped(stop) else 0.0)

    return ProcessResult(
        exit_code=process.returncode if process.returncode >= 0 else None,
        signal=-process.returncode if process.returncode < 0 else None,
        stdout=bytes(capture.stdout),
        stdout_truncated=capture.truncated,
        stderr_tail=tail_text(bytes(capture.stderr)),
        timed_out=timed_out,
        duration_s=round(time.monotonic() - started, 6),
    )


def _stopped(stop: threading.Event | None) -> bool:
    return stop is not None and stop.is_set()


def _start(invocation: Invocation, env: dict[str, str]) -> subprocess.Popen[bytes]:
    try:
        return subprocess.Popen(
            invocation.argv,
            # An agent with nothing to read gets /dev/null: no pipe to make and close at once.
            stdin=subprocess.PIPE if invocation.stdin else _devnull(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            # The pipes are read with os.read: unbuffered file objects, no buffer to set up.
            bufsize=0,
            env=env,
            cwd=invocation.cwd,
            start_new_session=True,
            close_fds=True,
        )
    except OSError as err:
        raise SpawnFailedError(f"cannot start {invocation.argv[0]!r}: {err.strerror}") from err


@functools.cache
def _devnull() -> int:
    """One /dev/null descriptor for the process's agents, instead of an open per agent."""
    return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)


def _pump(
    process: subprocess.Popen[bytes],
    stdin: bytes,
    capture: Capture,
    deadline: float,
    stop: threading.Event | None,
) -> bool:
    """Feed stdin and drain the pipes until the process exits; True when it timed out."""
    # poll(2) over epoll: at most four descriptors, and no epoll instance to create per agent.
    with selectors.PollSelector() as selector, _exit_watch(process) as exit_fd:
        _register_pipes(selector, process, stdin)
        if exit_fd is not None:
            selector.register(exit_fd, selectors.EVENT_READ, "exit")
        pending = memoryview(stdin)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return True
            if _stopped(stop):
                return False
            for key, _ in selector.select(min(remaining, POLL_S)):
                pending = _service(selector, key, pending, capture)
            if process.poll() is not None and not pending:
                # The agent exited; what its leftovers still print is read briefly below.
                _drain_briefly(selector, capture)
                return False
            if not selector.get_map():
                _wait_exit(process, min(remaining, POLL_S))


@contextlib.contextmanager
def _exit_watch(process: subprocess.Popen[bytes]) -> Iterator[int | None]:
    """A descriptor that turns readable when the process exits (Linux pidfd), or None.

    Without it the loop learns of the exit by polling, which adds up to a few
    milliseconds to every short agent.
    """
    try:
        exit_fd: int | None = os.pidfd_open(process.pid)
    except (AttributeError, OSError):
        exit_fd = None
    try:
        yield exit_fd
    finally:
        if exit_fd is not None:
            os.close(exit_fd)


def _register_pipes(
    selector: selectors.BaseSelector, process: subprocess.Popen[bytes], stdin: bytes
) -> None:
    assert process.stdout and process.stderr
    selector.register(process.stdout, selectors.EVENT_READ, "stdout")
    selector.register(process.stderr, selectors.EVENT_READ, "stderr")
    if stdin and process.stdin is not None:
        os.set_blocking(process.stdin.fileno(), False)
        selector.register(process.stdin, selectors.EVENT_WRITE, "stdin")


def _service(
    selector: selectors.BaseSelector,
    key: selectors.SelectorKey,
    pending: memoryview,
    capture: Capture,
) -> memoryview:
    if key.data == "stdin":
        return _feed(selector, key, pending)
    if key.data == "exit":
        selector.unregister(key.fileobj)  # the process exited; process.poll() will say so
        return pending

    data = os.read(key.fd, READ_CHUNK_BYTES)
    if not data:
        selector.unregister(key.fileobj)
    elif key.data == "stdout":
        capture.add_stdout(data)
    else:
        capture.add_stderr(data)
    return pending


def _feed(
    selector: selectors.BaseSelector, key: selectors.SelectorKey, pending: memoryview
) -> memoryview:
    try:
        written = os.write(key.fd, pending[:READ_CHUNK_BYTES])
        pending = pending[written:]
    except BrokenPipeError:
        pending = pending[:0]
    if not pending:
        selector.unregister(key.fileobj)
        key.fileobj.close()  # type: ignore[union-attr]
    return pending


def _drain_briefly(selector: selectors.BaseSelector, capture: Capture) -> None:
    """Read what is already buffered in the pipes once the agent's main process exited."""
    end = time.monotonic() + 0.05
    while selector.get_map() and time.monotonic() < end:
        events = selector.select(0.01)
        if not events:
            return
        for key, _ in events:
            if key.data != "stdin":
                _service(selector, key, memoryview(b""), capture)


def _wait_exit(process: subprocess.Popen[bytes], timeout_s: float) -> None:
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout_s)


def _kill_all(process: subprocess.Popen[bytes], token: str, grace_s: float) -> None:
    """Stop the agent's group (TERM, grace, KILL) and every process carrying its marker."""
    if grace_s > 0 and process.poll() is None:
        _signal_group(process.pid, signal.SIGTERM)
        _wait_exit(process, grace_s)
    _signal_group(process.pid, signal.SIGKILL)
    process.wait()
    if _subreaper.enabled:
        kill_orphans(token)
    else:
        kill_marked(token)
    for pipe in (process.stdin, process.stdout, process.stderr):
        if pipe is not None:
            with contextlib.suppress(OSError):
                pipe.close()


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


class _Subreaper:
    """Whether this process adopts its agents' orphans (see become_subreaper)."""

    enabled = False
    # The adopting thread's `children` file, kept open: re-reading it from offset 0 costs
    # about 1 us where opening it again cost about 20 us per agent.
    children_fd = -1
    # The adopting thread's own children when it became the subreaper (the keeper): they
    # are no agent's orphans, and skipping them spares every agent a read of their
    # environment.
    own_children: frozenset[int] = frozenset()


_subreaper = _Subreaper()
PR_SET_CHILD_SUBREAPER = 36
# The children file is read with this buffer first, growing while it comes back full:
# asking for 1 MiB at once cost about 15 us per agent, 4 KiB about 1 us.
CHILDREN_READ_BYTES = 4096
# How many times kill_orphans looks at the adopted orphans of one agent at most.
ORPHAN_ROUNDS = 50


def become_subreaper() -> bool:
    """Adopt every orphaned descendant of this process's agents, from the calling thread on.

    Call it from the thread that never starts agents and lives as long as the process (a
    worker's main thread): Linux hands orphans to that thread, so the descendants an
    agent left behind are found by reading one `children` file instead of every process's
    environment (measured: about 7 ms per agent for the full /proc scan with 120
    processes, well under 0.1 ms for this).
    """
    tid = threading.get_native_id()
    try:
        children_fd = os.open(f"/proc/self/task/{tid}/children", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False  # a kernel without the children file: the /proc scan serves instead
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        os.close(children_fd)
        return False
    _subreaper.children_fd = children_fd
    _subreaper.own_children = frozenset(_read_children())
    _subreaper.enabled = True
    return True


def adopted_children() -> list[int]:
    """Pids of the orphans this subreaper adopted (children of the adopting thread)."""
    return [pid for pid in _read_children() if pid not in _subreaper.own_children]


def _read_children() -> list[int]:
    size = CHILDREN_READ_BYTES
    try:
        while len(data := os.pread(_subreaper.children_fd, size, 0)) == size:
            size *= 16
    except OSError:
        return []
    return [int(pid) for pid in data.split()]


def _carries(pid: int, needle: bytes) -> bool | None:
    """Whether the process's environment holds `needle`; None when it cannot tell yet: the
    environment reads empty while the process is between fork and exec, and cannot be
    read while it exits."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as environ:
            data = environ.read()
    except OSError:
        return None
    return needle in data if data else None


def kill_orphans(token: str) -> int:
    """Kill and reap the adopted orphans carrying `token`'s marker; reap dead orphans too.

    An orphan whose environment cannot be read yet is looked at again, up to
    `ORPHAN_ROUNDS` times a millisecond apart: it is either exiting (and reaped once dead)
    or about to show its marker. One that cleared its environment stays unreadable, so
    while it lives each agent's end spends up to those rounds on it.
    """
    needle = f"{MARKER_VAR}={token}\0".encode()
    killed = 0
    for _ in range(ORPHAN_ROUNDS):
        adopted = adopted_children()
        if not adopted:
            break
        verdicts = {pid: _carries(pid, needle) for pid in adopted}
        targets = [pid for pid, marked in verdicts.items() if marked]
        _reap_dead(pid for pid, marked in verdicts.items() if not marked)
        if not targets:
            if None not in verdicts.values():
                break
            time.sleep(0.001)
            continue
        for pid in targets:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                killed += 1
        for pid in targets:
            # A killed orphan's own children are adopted as it dies: wait, then look again.
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
    return killed


def _reap_dead(pids: Iterable[int]) -> None:
    """Collect adopted orphans that already exited, so none lingers as a zombie."""
    for pid in pids:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


def marked_pids(token: str) -> list[int]:
    """Pids of live processes whose environment carries the marker for `token`."""
    needle = f"{MARKER_VAR}={token}\0".encode()
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as environ:
                if needle in environ.read():
                    found.append(int(entry.name))
        except OSError:
            continue
    return found


def start_keeper(token_prefix: str) -> subprocess.Popen[bytes]:
    """Start the keeper that kills agents whose token starts with `token_prefix` at our death.

    Close the returned process's stdin to release it (it then kills what is left).
    """
    return subprocess.Popen(
        [sys.executable, "-I", "-c", KEEPER_SOURCE, MARKER_VAR, token_prefix],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        close_fds=True,
    )


def kill_marked(token: str) -> int:
    """SIGKILL every process carrying the marker for `token`; returns how many were hit."""
    killed = 0
    for _ in range(5):
        pids = marked_pids(token)
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
                killed += 1
        time.sleep(0.01)
    return killed
