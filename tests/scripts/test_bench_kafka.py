"""The benchmarks' Kafka is the configured one, and only ever on loopback."""

import pytest

from scripts.bench.streams import loopback_bootstrap


def test_the_configured_loopback_servers_are_used_as_given() -> None:
    assert loopback_bootstrap("127.0.0.1:19392") == "127.0.0.1:19392"
    assert loopback_bootstrap("localhost:1,127.0.0.1:2") == "localhost:1,127.0.0.1:2"


@pytest.mark.parametrize("servers", ["10.0.0.1:9092", "127.0.0.1:19092,kafka.example.com:9092", "0.0.0.0:9092"])
def test_a_server_off_loopback_is_refused(servers: str) -> None:
    with pytest.raises(RuntimeError, match="loopback"):
        loopback_bootstrap(servers)
