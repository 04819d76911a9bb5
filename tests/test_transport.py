"""The workers' broker transport on a real Redis: bursts pulled atomically, kombu's acks kept."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator

import pytest
import redis
from kombu import Connection, Consumer, Exchange, Message, Producer, Queue

from orchestrator import Fleet
from tests.conftest import WorkerFactory, command_agent
from tests.faults import RedisServer, wait_until
from workers.transport import Transport

VISIBILITY_S = 1


@pytest.fixture
def queue() -> Queue:
    """A fresh direct queue of its own name."""
    name = f"transport-{uuid.uuid4().hex[:8]}"
    return Queue(name, Exchange(name, type="direct"), routing_key=name)


@pytest.fixture
def url(server: RedisServer) -> str:
    """A Redis of this test alone: kombu's unacked records are shared by every queue."""
    return server.url


@pytest.fixture
def client(url: str) -> Iterator[redis.Redis]:
    """A plain client of that Redis."""
    plain = redis.Redis.from_url(url, decode_responses=True)
    yield plain
    plain.close()


def connect(url: str) -> Connection:
    """A kombu connection through the workers' transport, with a short visibility timeout."""
    return Connection(
        url, transport=Transport, transport_options={"visibility_timeout": VISIBILITY_S}
    )


@pytest.fixture
def connection(url: str) -> Iterator[Connection]:
    """A consumer's connection, released after the test."""
    conn = connect(url)
    yield conn
    conn.release()


def publish(connection: Connection, queue: Queue, count: int) -> None:
    """`count` JSON messages numbered from 0."""
    producer = Producer(connection.default_channel)
    for number in range(count):
        producer.publish(
            {"n": number},
            exchange=queue.exchange,
            routing_key=queue.routing_key,
            declare=[queue],
            serializer="json",
        )


def consume_once(
    connection: Connection, queue: Queue | list[Queue], prefetch: int
) -> list[Message]:
    """One poll of a consumer allowed `prefetch` unacked messages; what it was handed."""
    received: list[Message] = []
    consumer = Consumer(
        connection.default_channel,
        queue if isinstance(queue, list) else [queue],
        callbacks=[lambda _body, message: received.append(message)],
        accept=["json"],
    )
    consumer.qos(prefetch_count=prefetch)
    consumer.consume()
    connection.drain_events(timeout=5)
    return received


def test_one_poll_hands_over_as_many_messages_as_free_prefetch_slots(
    connection: Connection, queue: Queue, client: redis.Redis
) -> None:
    """Five waiting, three slots: one poll delivers three in order and leaves two queued."""
    publish(connection, queue, 5)

    received = consume_once(connection, queue, prefetch=3)

    assert [m.decode()["n"] for m in received] == [0, 1, 2]
    assert client.llen(queue.name) == 2


def test_a_burst_takes_from_every_queue_the_consumer_serves(
    connection: Connection, client: redis.Redis
) -> None:
    """Three waiting in each of two queues, three slots: the burst is not all from one."""
    first, second = (
        Queue(name, Exchange(name, type="direct"), routing_key=name)
        for name in (f"first-{uuid.uuid4().hex[:6]}", f"second-{uuid.uuid4().hex[:6]}")
    )
    publish(connection, first, 3)
    publish(connection, second, 3)

    received = consume_once(connection, [first, second], prefetch=3)

    taken_from = {m.delivery_info["routing_key"] for m in received}
    assert len(received) == 3
    assert taken_from == {first.name, second.name}


def test_pulled_messages_are_recorded_unacked_in_kombus_format(
    connection: Connection, queue: Queue, client: redis.Redis
) -> None:
    """Every delivered message sits in the unacked hash as [message, exchange, routing key]."""
    publish(connection, queue, 4)

    received = consume_once(connection, queue, prefetch=4)

    unacked = client.hgetall("unacked")
    for message in received:
        raw, exchange, routing_key = json.loads(unacked[message.delivery_tag])
        assert raw["properties"]["delivery_tag"] == message.delivery_tag
        assert (exchange, routing_key) == (queue.exchange.name, queue.routing_key)
        assert client.zscore("unacked_index", message.delivery_tag) is not None


def test_acking_pulled_messages_clears_their_unacked_records(
    connection: Connection, queue: Queue, client: redis.Redis
) -> None:
    """After the acks no record of the burst is left behind."""
    publish(connection, queue, 3)
    received = consume_once(connection, queue, prefetch=3)
    tags = [m.delivery_tag for m in received]
    assert all(client.hexists("unacked", tag) for tag in tags)

    for message in received:
        message.ack()

    assert not any(client.hexists("unacked", tag) for tag in tags)
    assert all(client.zscore("unacked_index", tag) is None for tag in tags)


def test_a_burst_held_by_a_vanished_consumer_returns_to_its_queue(
    url: str, connection: Connection, queue: Queue, client: redis.Redis
) -> None:
    """Past the visibility timeout another consumer puts the unacked burst back in the queue."""
    publish(connection, queue, 3)
    received = consume_once(connection, queue, prefetch=3)
    assert len(received) == 3 and client.llen(queue.name) == 0
    # The consumer dies without a goodbye: nothing of its own restores the messages.
    connection.default_channel.qos._delivered.clear()

    time.sleep(VISIBILITY_S + 0.2)
    with connect(url) as other:
        other.default_channel.qos.restore_visible(num=10)

    assert client.llen(queue.name) == 3
    bodies = [json.loads(raw) for raw in client.lrange(queue.name, 0, -1)]
    assert {b["properties"]["delivery_tag"] for b in bodies} == {m.delivery_tag for m in received}


def test_a_worker_leaves_no_unacked_record_once_its_runs_settle(
    url: str, client: redis.Redis, start_worker: WorkerFactory
) -> None:
    """Acks batched per loop tick still reach Redis: every record goes, none lingers."""
    start_worker(url=url, concurrency=4)
    fleet = Fleet.from_url(url)
    handles = [
        fleet.submit({"agents": [command_agent(f"a{i}", "true") for i in range(5)]})
        for _ in range(4)
    ]
    for handle in handles:
        fleet.wait_settled(handle.run_id, timeout_s=30)
    fleet.close()

    wait_until(lambda: client.hlen("unacked") == 0, timeout_s=5)
    assert client.zcard("unacked_index") == 0


def test_redis_replies_are_parsed_by_hiredis(client: redis.Redis) -> None:
    """The project's install brings redis-py's C parser, which every client then uses."""
    connection = client.connection_pool.get_connection()
    try:
        assert type(connection._parser).__name__ == "_HiredisParser"
    finally:
        client.connection_pool.release(connection)
