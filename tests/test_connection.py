"""Lua scripts over one connection per thread, on a real Redis."""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from orchestrator.connection import TRANSIENT_ERRORS, ThreadScript, connect
from orchestrator.settings import Settings
from tests.faults import redis_server, wait_until

ECHO = "return {KEYS[1], ARGV[1]}"


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    """A client built the way agentfleet builds its own."""
    client = connect(Settings(), redis_url)
    yield client
    client.close()


def own_connections(client: redis.Redis, name: str) -> int:
    """How many connections named `name` Redis has open."""
    return sum(1 for entry in client.client_list() if entry["name"] == name)


def test_each_thread_keeps_one_connection_while_it_lives(
    redis_url: str, client: redis.Redis
) -> None:
    """Calls from two threads use two connections, however many calls each makes; a
    thread's connection closes once the thread has ended and it is collected."""
    named = redis.Redis.from_url(redis_url, decode_responses=True, client_name="per-thread")
    call = ThreadScript(named, named.register_script(ECHO))
    replies: list[object] = []
    called, finish = threading.Barrier(3), threading.Event()

    def calls() -> None:
        replies.extend(call(["k"], [n]) for n in range(5))
        called.wait()
        finish.wait()

    threads = [threading.Thread(target=calls) for _ in range(2)]
    for thread in threads:
        thread.start()
    called.wait()
    during = own_connections(client, "per-thread")
    finish.set()
    for thread in threads:
        thread.join()
    gc.collect()

    assert len(replies) == 10 and ["k", "4"] in replies
    assert during == 2
    wait_until(lambda: own_connections(client, "per-thread") == 0, timeout_s=5)
    named.close()


def test_a_flushed_script_cache_is_refilled(client: redis.Redis) -> None:
    """After Redis lost its scripts (a restart), the next call loads the script again."""
    call = ThreadScript(client, client.register_script(ECHO))
    assert call(["k"], ["before"]) == ["k", "before"]

    client.script_flush()

    assert call(["k"], ["after"]) == ["k", "after"]


def test_a_broken_connection_fails_one_call_then_is_dialled_again(
    redis_url: str, client: redis.Redis
) -> None:
    """A call on a connection Redis dropped raises ConnectionError; the next call succeeds."""
    named = redis.Redis.from_url(redis_url, decode_responses=True, client_name="to-drop")
    call = ThreadScript(named, named.register_script(ECHO))
    assert call(["k"], ["1"]) == ["k", "1"]

    killed = sum(
        client.client_kill_filter(_id=entry["id"])
        for entry in client.client_list()
        if entry["name"] == "to-drop"
    )

    assert killed == 1
    with pytest.raises(redis.ConnectionError):
        call(["k"], ["2"])
    assert call(["k"], ["3"]) == ["k", "3"]
    named.close()


def test_a_call_to_a_frozen_redis_fails_after_its_socket_timeout(tmp_path: Path) -> None:
    """A call waits for a frozen Redis about its socket timeout, then raises a transient
    error; once Redis answers again the next call succeeds."""
    with redis_server(tmp_path) as server:
        client = connect(Settings(redis_socket_timeout_s=0.5), server.url)
        call = ThreadScript(client, client.register_script(ECHO))
        assert call(["k"], ["1"]) == ["k", "1"]

        server.freeze()
        frozen = redis.Redis.from_url(server.url, socket_timeout=0.3, socket_connect_timeout=0.3)
        with pytest.raises(TRANSIENT_ERRORS):
            frozen.ping()  # the fault fired: Redis answers nobody
        started = time.monotonic()
        with pytest.raises(TRANSIENT_ERRORS):
            call(["k"], ["2"])
        waited_s = time.monotonic() - started
        server.thaw()

        assert 0.4 <= waited_s < 3.0
        assert call(["k"], ["3"]) == ["k", "3"]
        frozen.close()
        client.close()
