"""A minimal Faust app for the Kafka spike: one agent that reads a source topic and writes to a sink topic.

Run as a worker process by ``test_faust_kafka.py``::

    python tests/spikes/faust_echo_app.py worker --without-web

Everything that makes a run unique comes from the environment: ``SPIKE_APP_ID`` (also the consumer group),
``SPIKE_SOURCE_TOPIC``, ``SPIKE_SINK_TOPIC``, ``SPIKE_DATADIR`` and ``KAFKA_BOOTSTRAP_SERVERS``.
"""

import os
from typing import Any

import faust

BOOTSTRAP_SERVERS = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:19092")

app = faust.App(
    os.environ["SPIKE_APP_ID"],
    # Faust separates brokers with ';', Kafka clients with ','.
    broker=[f"kafka://{server}" for server in BOOTSTRAP_SERVERS.split(",")],
    datadir=os.environ["SPIKE_DATADIR"],
    store="memory://",
    web_enabled=False,
    topic_replication_factor=1,
    topic_partitions=2,
    # Records produced before the group's first assignment must not be skipped.
    consumer_auto_offset_reset="earliest",
)

source = app.topic(os.environ["SPIKE_SOURCE_TOPIC"], key_serializer="raw", value_serializer="json")
sink = app.topic(os.environ["SPIKE_SINK_TOPIC"], key_serializer="raw", value_serializer="json")


def transform(value: dict[str, Any]) -> dict[str, Any]:
    """The agent's whole job: double the reading and say who did it."""
    return {"seq": value["seq"], "doubled": value["value"] * 2, "by": "faust"}


@app.agent(source)
async def echo(stream: faust.StreamT[dict[str, Any]]) -> None:
    """Forward every record to the sink topic, transformed, under the same key."""
    async for key, value in stream.items():
        await sink.send(key=key, value=transform(value))


if __name__ == "__main__":
    app.main()
