"""The broker's shape: which kind a URL names and the queues Celery declares on it.

Plain functions of their arguments, so the test settings can apply them to another URL."""

from __future__ import annotations

from kombu import Exchange, Queue


def is_rabbitmq(broker_url: str) -> bool:
    """Whether ``broker_url`` names a RabbitMQ (AMQP) broker rather than Redis."""
    return broker_url.startswith(("amqp://", "amqps://"))


def task_queues(broker_url: str, cpu: str, gpu: str) -> tuple[Queue, Queue]:
    """The ``cpu`` and ``gpu`` broker queues on the ``myspinbot`` exchange.

    On RabbitMQ they are durable quorum queues (replicated on a cluster, kept across a
    restart) bound to a topic exchange, the kind Celery's native delayed delivery (the
    retry countdown on quorum queues) binds to; on Redis a direct exchange as before."""
    if is_rabbitmq(broker_url):
        exchange = Exchange("myspinbot", type="topic", durable=True)
        quorum = {"x-queue-type": "quorum"}
        return (
            Queue(cpu, exchange, routing_key=cpu, durable=True, queue_arguments=quorum),
            Queue(gpu, exchange, routing_key=gpu, durable=True, queue_arguments=quorum),
        )
    exchange = Exchange("myspinbot", type="direct", durable=True)
    return (
        Queue(cpu, exchange, routing_key=cpu),
        Queue(gpu, exchange, routing_key=gpu),
    )
