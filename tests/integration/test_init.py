"""`o2o init` on topics that exist, and stages whose state no longer lines up with their input.

Init adds partitions only when told to and puts changed topic configs back;
a stateful stage whose changelogs and input differ in partitions refuses to start.
"""

from __future__ import annotations

import time

import pytest
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, NewPartitions

from pipeline.config import Settings
from pipeline.kafka import topics
from pipeline.kafka.admin import admin_client, partition_counts
from tests.conftest import o2o

pytestmark = pytest.mark.integration

DAY_MS = 86_400_000


def retention_ms(settings: Settings, name: str, expect: str) -> str:
    """The ``retention.ms`` the broker holds for a topic, once it is ``expect`` or after 5 s.

    The broker answers from its metadata image, which can lag an alteration
    that has just returned.
    """
    admin = admin_client(settings)
    resource = ConfigResource(ConfigResource.Type.TOPIC, settings.topic(name))
    deadline = time.monotonic() + 5
    while True:
        configs = admin.describe_configs([resource])[resource].result(timeout=10)
        value = str(configs["retention.ms"].value)
        if value == expect or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def test_init_adds_partitions_only_when_told_and_updates_topic_configs(settings: Settings) -> None:
    o2o(settings, "init")
    assert partition_counts(settings)[settings.topic(topics.VALID)] == 2
    admin = admin_client(settings)
    entry = ConfigEntry("retention.ms", "60000", incremental_operation=AlterConfigOpType.SET)
    resource = ConfigResource(
        ConfigResource.Type.TOPIC, settings.topic(topics.DLQ), incremental_configs=[entry]
    )
    admin.incremental_alter_configs([resource])[resource].result(timeout=10)
    assert retention_ms(settings, topics.DLQ, "60000") == "60000"

    more = settings.model_copy(update={"partitions": 3})
    refused = o2o(more, "init", check=False)
    assert refused.returncode == 2, refused.stderr
    assert "existing topics have fewer partitions than declared" in " ".join(refused.stderr.split())
    assert partition_counts(settings)[settings.topic(topics.VALID)] == 2  # nothing grown
    ran = o2o(more, "init", "--add-partitions")
    counts = partition_counts(settings)
    specs = topics.topic_specs(more)  # changelog topics included
    assert {name: counts[name] for name, _p, _c in specs} == {name: p for name, p, _c in specs}
    assert counts[settings.topic(topics.SEQUENCE)] == 1  # declared with one partition
    grown = sum(1 for _name, p, _c in specs if p == 3)
    assert grown > 10 and f"{grown} created or updated" in " ".join(ran.stderr.split())
    assert retention_ms(settings, topics.DLQ, str(30 * DAY_MS)) == str(
        30 * DAY_MS
    )  # the declared value again


def test_a_stage_whose_state_does_not_line_up_with_its_input_refuses_to_start(settings: Settings) -> None:
    o2o(settings, "init")  # identity reads events.valid; its changelogs have its 2 partitions
    sequenced = settings.model_copy(update={"identity_workers": 2})
    ran = o2o(sequenced, "run", "identity", "--drain", check=False, timeout=120)
    said = " ".join(ran.stderr.split())
    assert ran.returncode == 2, ran.stderr[-3000:]
    assert "identity: its state does not line up with its input partitions" in said
    assert f"{settings.group('identity')}-identity_ids-changelog has 2 partitions, the input " in said
    assert "if O2O_IDENTITY_WORKERS was 1 before (now 2), set it back" in said

    admin = admin_client(settings)  # partitions added behind the pipeline's back
    grown = admin.create_partitions([NewPartitions(settings.topic(topics.IDENTIFIED), 3)])
    for future in grown.values():
        future.result(timeout=30)
    ran = o2o(settings, "run", "journeys", "--drain", check=False, timeout=120)
    said = " ".join(ran.stderr.split())
    assert ran.returncode == 2, ran.stderr[-3000:]
    assert f"the input {settings.topic(topics.IDENTIFIED)} has 3" in said
    assert "O2O_IDENTITY_WORKERS" not in said
