"""Kafka client helpers without a broker: a command waiting for acknowledgements gives up in time;
librdkafka's repeated lines while the broker is away are logged once in a while."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from pipeline.config import load_settings
from pipeline.errors import KafkaUnavailable
from pipeline.kafka import admin as admin_module
from pipeline.kafka import clients as clients_module
from pipeline.kafka.clients import flush_within, make_producer, produce


def test_a_flush_gives_up_with_a_clear_error_when_kafka_is_away(tmp_path: Path) -> None:
    settings = load_settings(bootstrap_servers="127.0.0.1:9", state_dir=tmp_path)  # nothing listens there
    producer = make_producer(settings)
    produce(producer, "t", b"x", b"k")
    with pytest.raises(KafkaUnavailable, match=r"did not acknowledge 1 message\(s\) of the copy within 2 s"):
        flush_within(producer, "the copy", 2.0)
    producer.purge()


def test_librdkafka_lines_repeated_while_the_broker_is_away_are_logged_once_in_a_while(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    now = [100.0]
    monkeypatch.setattr(clients_module.time, "monotonic", lambda: now[0])
    settings = load_settings(bootstrap_servers="127.0.0.1:9", state_dir=tmp_path)
    assert isinstance(clients_module.client_config(settings)["logger"], clients_module.LibrdkafkaLog)
    admin = admin_module.Admin(settings)  # its own logger counts early disconnects, then the same
    refused = "FAIL [rdkafka#producer-{}] 127.0.0.1:9/bootstrap: Connection refused (after {}ms)"
    with caplog.at_level(logging.WARNING, logger="pipeline.kafka.admin"):
        for attempt in range(50):
            admin.log(logging.ERROR, refused.format(1, attempt))
        admin.log(logging.WARNING, "another line")
        admin.log(logging.INFO, "not a warning")
        now[0] += clients_module.LibrdkafkaLog.REPEAT_SECONDS
        admin.log(logging.ERROR, refused.format(1, 7))
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        refused.format(1, 0),
        "another line",
        refused.format(1, 7) + " (and 49 more like it in the last 10 s)",
    ]
