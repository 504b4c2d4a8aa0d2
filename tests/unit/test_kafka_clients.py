"""Kafka client helpers without a broker: a command waiting for acknowledgements gives up in time."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import load_settings
from pipeline.errors import KafkaUnavailable
from pipeline.kafka.clients import flush_within, make_producer, produce


def test_a_flush_gives_up_with_a_clear_error_when_kafka_is_away(tmp_path: Path) -> None:
    settings = load_settings(bootstrap_servers="127.0.0.1:9", state_dir=tmp_path)  # nothing listens there
    producer = make_producer(settings)
    produce(producer, "t", b"x", b"k")
    with pytest.raises(KafkaUnavailable, match=r"did not acknowledge 1 message\(s\) of the copy within 2 s"):
        flush_within(producer, "the copy", 2.0)
    producer.purge()
