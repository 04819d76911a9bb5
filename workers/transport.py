"""The broker transport workers use: kombu's Redis transport with its consuming loop cut short.

kombu's Redis transport hands a worker one message per BRPOP, records it as unacked in a
second round trip, and builds a new redis client for every ack. A worker consumes on one
thread, so a run's spawns reached the pool one every few milliseconds (bench/). This
transport keeps kombu's keys, message format, acks and visibility-timeout restore, and
changes three things:

- after BRPOP hands over a message, one Lua call records it as unacked and moves up to as
  many further messages as the worker has free prefetch slots from its queues into
  kombu's unacked set, atomically, so a burst of spawns reaches the pool in one round
  trip after the BRPOP;
- in a worker's event loop, acks leave Redis with the next pull, or in one round trip
  per loop tick once the oldest has waited `ACK_DELAY_S`;
- a channel reuses one redis client for its acks and unacked records.

A worker that dies between its BRPOP and that Lua call loses the popped message, as with
kombu's own transport; its agent then settles `deadline_exceeded` at the run's deadline.
A worker that dies before its batch of acks leaves Redis leaves their unacked records to
kombu's visibility-timeout restore: the redelivered spawn finds its agent settled and
ends without running it (workers/tasks.py), so a late ack costs a message, not a run.

A broker with a global key prefix (kombu's `global_keyprefix`) gets kombu's own behaviour.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from queue import Empty
from typing import Any

import redis
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual

from orchestrator.connection import ThreadScript

# Acks ride along with the next pull; a loop tick sends those that waited longer alone.
ACK_DELAY_S = 0.05

# How many messages one pull takes when the consumer set no prefetch limit.
UNLIMITED_PULL = 1000

# KEYS: kombu's unacked index and unacked hash, then queue lists in the order to pop them.
# ARGV: how many messages to pop at most, the time to index them under, the message BRPOP
# already popped, then how many delivery tags were acked since the last call and those
# tags, whose records go first. Each message is stored the way kombu's QoS.append stores it: the
# raw message with its exchange and routing key, indexed by delivery tag and time.
PULL_SCRIPT = """
local acked = tonumber(ARGV[4])
if acked > 0 then
  redis.call('ZREM', KEYS[1], unpack(ARGV, 5, 4 + acked))
  redis.call('HDEL', KEYS[2], unpack(ARGV, 5, 4 + acked))
end

local function record(raw)
  local props = cjson.decode(raw)['properties']
  local info = props['delivery_info']
  redis.call('ZADD', KEYS[1], ARGV[2], props['delivery_tag'])
  redis.call('HSET', KEYS[2], props['delivery_tag'], '[' .. raw .. ','
    .. cjson.encode(info['exchange']) .. ',' .. cjson.encode(info['routing_key']) .. ']')
end

record(ARGV[3])
local taken = {}
local room = tonumber(ARGV[1])
for i = 3, #KEYS do
  while room > 0 do
    local raw = redis.call('RPOP', KEYS[i])
    if not raw then break end
    record(raw)
    taken[#taken + 1] = KEYS[i]
    taken[#taken + 1] = raw
    room = room - 1
  end
end
return taken
"""


class QoS(kombu_redis.QoS):
    """kombu's ack emulation, told which deliveries the pull already recorded as unacked."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.recorded: set[str] = set()
        self.acked: list[str] = []
        self.first_acked_at = 0.0

    def ack(self, delivery_tag: str) -> None:
        if not self.channel.connection.batches_acks:
            super().ack(delivery_tag)
            return
        if not self.acked:
            self.first_acked_at = time.monotonic()
        self.acked.append(delivery_tag)
        virtual.QoS.ack(self, delivery_tag)

    def flush_acks(self, older_than_s: float = 0.0) -> None:
        """Remove the unacked records of every ack since the last flush, in one round trip,
        unless the oldest of them is younger than `older_than_s`."""
        tags = list(self.acked)
        if not tags or time.monotonic() - self.first_acked_at < older_than_s:
            return
        with self.channel.conn_or_acquire() as client:
            pipe = client.pipeline()
            pipe.zrem(self.unacked_index_key, *tags).hdel(self.unacked_key, *tags).execute()
        del self.acked[: len(tags)]

    def append(self, message: Any, delivery_tag: str) -> None:
        if delivery_tag in self.recorded:
            self.recorded.discard(delivery_tag)
            virtual.QoS.append(self, message, delivery_tag)
            return
        super().append(message, delivery_tag)


class Channel(kombu_redis.Channel):
    """A Redis channel that pulls ready messages in bursts and keeps one client."""

    QoS = QoS

    # The reused client and the pull script on it; only the consumer's thread pulls, so
    # the pull goes over that thread's own connection.
    _reused: tuple[redis.Redis, ThreadScript] | None = None
    _reused_pool: object = None

    def _brpop_read(self, **options: Any) -> bool:
        if not isinstance(self.qos, QoS) or self.global_keyprefix:
            return bool(super()._brpop_read(**options))
        try:
            try:
                reply = self.client.parse_response(self.client.connection, "BRPOP", **options)
            except self.connection_errors:
                # As kombu does: the next poll reconnects.
                self.client.connection.disconnect()
                raise
        finally:
            self._in_poll = False
            self._flush_brpop_reauth()
        if not reply:
            raise Empty()

        key, raw = reply
        queue = _text(key).rsplit(self.sep, 1)[0]
        self._queue_cycle.rotate(queue)
        self._take(queue, raw)
        return True

    def _take(self, queue: str, popped: bytes) -> None:
        """Record the popped message and pull more, up to the free slots; deliver them all."""
        # The free slots still count the popped message; no prefetch limit reads as None.
        estimate = self.qos.can_consume_max_estimate()
        room = UNLIMITED_PULL if estimate is None else max(estimate - 1, 0)
        # kombu's queue order, rotated after each BRPOP, so no platform's queue starves.
        order = self._queue_cycle.consume(len(self.active_queues))
        queues = [self._q_for_pri(q, pri) for pri in self.priority_steps for q in order]
        _, pull = self._reused_pair()

        acked = list(self.qos.acked)
        taken = pull(
            [self.unacked_index_key, self.unacked_key, *queues],
            [room, time.time(), popped, len(acked), *acked],
        )
        del self.qos.acked[: len(acked)]
        self._deliver_recorded(queue, popped)
        for key, raw in zip(taken[::2], taken[1::2], strict=True):
            self._deliver_recorded(_text(key).rsplit(self.sep, 1)[0], raw)

    def _deliver_recorded(self, queue: str, raw: bytes) -> None:
        message = json.loads(raw)
        self.qos.recorded.add(message["properties"]["delivery_tag"])
        self.connection._deliver(message, queue)

    def _reused_client(self) -> redis.Redis:
        return self._reused_pair()[0]

    def _reused_pair(self) -> tuple[redis.Redis, ThreadScript]:
        # A new pool (after a reconnect) gets a new client; otherwise one serves them all.
        pool = self.pool
        if self._reused is None or self._reused_pool is not pool:
            client = self._create_client()
            self._reused = (client, ThreadScript(client, client.register_script(PULL_SCRIPT)))
            self._reused_pool = pool
        return self._reused

    @contextlib.contextmanager
    def conn_or_acquire(self, client: redis.Redis | None = None) -> Iterator[redis.Redis]:
        yield client if client is not None else self._reused_client()

    def close(self) -> None:
        if isinstance(self.qos, QoS):
            # Redis may be gone; the records left then come back through kombu's restore.
            with contextlib.suppress(redis.RedisError):
                self.qos.flush_acks()
        super().close()


class Transport(kombu_redis.Transport):
    """kombu's Redis transport with the channel above."""

    Channel = Channel
    batches_acks = False

    def register_with_event_loop(self, connection: Any, loop: Any) -> None:
        super().register_with_event_loop(connection, loop)
        self.batches_acks = True
        loop.on_tick.add(self._flush_acks)

    def _flush_acks(self) -> None:
        for channel in self.channels:
            if isinstance(channel.qos, QoS):
                channel.qos.flush_acks(older_than_s=ACK_DELAY_S)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
