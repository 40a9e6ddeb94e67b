"""The test's view of the broker's queues, on either transport.

Redis keeps a queue as a list that exists once something is in it; RabbitMQ refuses any
operation on a queue nobody declared (``NOT_FOUND - no queue 'cpu'``). So on RabbitMQ the
configured queues (quorum, bound to the topic exchange) are declared first, exactly as a
worker declares them, and nothing here declares anything on Redis."""

from __future__ import annotations

from typing import Any

from myspinbot.settings.broker import is_rabbitmq


def _declared(app: Any, connection: Any, name: str) -> Any:
    """The configured queue ``name`` bound to the connection's channel, declared on
    RabbitMQ; on Redis the channel itself is enough."""
    channel = connection.default_channel
    if not is_rabbitmq(str(app.conf.broker_url)):
        return None
    queue = app.amqp.queues[name].bind(channel)
    queue.declare()
    return queue


def purge(app: Any, names: list[str]) -> None:
    """Drop every message waiting in the queues ``names``."""
    with app.connection_for_write() as connection:
        for name in names:
            queue = _declared(app, connection, name)
            if queue is None:
                connection.default_channel.queue_purge(name)
            else:
                queue.purge()


def queue_length(app: Any, name: str) -> int:
    """How many messages wait (ready, not delivered to a worker) in queue ``name``."""
    with app.connection_for_write() as connection:
        queue = _declared(app, connection, name)
        if queue is None:
            return int(connection.default_channel.client.llen(name))
        _, count, _ = queue.queue_declare(passive=True)
        return int(count)
