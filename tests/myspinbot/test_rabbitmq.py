"""On RabbitMQ the platform's queues are durable quorum queues on a topic exchange, and a
send returns only once the broker has confirmed the message (publisher confirms)."""

from __future__ import annotations

import uuid

import amqp
import pytest
from django.conf import settings
from kombu import Exchange, Queue
from kombu.exceptions import OperationalError

from myspinbot.settings.base import broker_transport_options
from testkit import broker
from testkit.services import control_app


def test_the_settings_give_rabbitmq_quorum_queues_and_confirms_and_redis_neither() -> None:
    url = "amqp://guest:guest@127.0.0.1:5672/myspinbot"

    assert broker_transport_options(url) == {"confirm_publish": True, "connect_timeout": 4.0}
    assert "confirm_publish" not in broker_transport_options("redis://127.0.0.1:6379/0")
    assert [
        (queue.name, queue.exchange.type, queue.queue_arguments)
        for queue in control_app(url).conf.task_queues
    ] == [
        (settings.CELERY_CPU_QUEUE, "topic", {"x-queue-type": "quorum"}),
        (settings.CELERY_GPU_QUEUE, "topic", {"x-queue-type": "quorum"}),
    ]
    assert [
        (queue.exchange.type, queue.queue_arguments)
        for queue in control_app("redis://127.0.0.1:6379/0").conf.task_queues
    ] == [("direct", None), ("direct", None)]


def test_a_confirmed_send_lands_in_a_quorum_queue_on_the_topic_exchange(
    rabbitmq_url: str,
) -> None:
    app = control_app(rabbitmq_url)
    app.conf.broker_transport_options = broker_transport_options(rabbitmq_url)
    cpu, gpu = settings.CELERY_CPU_QUEUE, settings.CELERY_GPU_QUEUE
    broker.purge(app, [cpu, gpu])

    app.send_task("debug.echo", args=["job", "n0", 1], queue=cpu, ignore_result=True)

    assert broker.queue_length(app, cpu) == 1
    assert broker.queue_length(app, gpu) == 0
    with app.connection_for_write() as connection:
        assert connection.default_channel.connection.confirm_publish is True
        # Declaring either as a classic queue or the exchange as direct is refused: they
        # exist as quorum queues on a topic exchange.
        with pytest.raises(amqp.exceptions.PreconditionFailed):
            Queue(cpu, queue_arguments={"x-queue-type": "classic"}, durable=True).bind(
                connection.channel()
            ).declare()
    with (
        app.connection_for_write() as connection,
        pytest.raises(amqp.exceptions.PreconditionFailed),
    ):
        Exchange("myspinbot", type="direct", durable=True).bind(connection.channel()).declare()
    broker.purge(app, [cpu])
    assert broker.queue_length(app, cpu) == 0


def test_a_message_the_broker_refuses_raises_instead_of_passing_for_sent(
    rabbitmq_url: str,
) -> None:
    """With confirms a send waits for the broker's answer: a refused message (here a
    queue that is full and rejects publishes) raises, after Celery's publish retries,
    kombu's ``OperationalError`` from the broker's nack: the error the dispatch relay
    counts as not sent, so the sweeper sends it again."""
    app = control_app(rabbitmq_url)
    app.conf.broker_transport_options = broker_transport_options(rabbitmq_url)
    name = f"full-{uuid.uuid4().hex[:8]}"
    exchange = app.conf.task_queues[0].exchange
    full = Queue(
        name,
        exchange,
        routing_key=name,
        durable=True,
        # A classic queue: it refuses the first message past its length exactly (a quorum
        # queue's limit is approximate: it takes one more before refusing).
        queue_arguments={
            "x-queue-type": "classic",
            "x-max-length": 1,
            "x-overflow": "reject-publish",
        },
    )
    with app.connection_for_write() as connection:
        full.bind(connection.default_channel).declare()
    try:
        app.send_task("debug.echo", args=["job", "n0", 1], queue=full, ignore_result=True)
        with pytest.raises(OperationalError) as refused:
            app.send_task("debug.echo", args=["job", "n0", 2], queue=full, ignore_result=True)
    finally:
        with app.connection_for_write() as connection:
            full.bind(connection.default_channel).delete()
    assert isinstance(refused.value.__cause__, amqp.exceptions.MessageNacked)
