"""Copying another prefix's raw topics into this one (``o2o replay``).

The raw topics hold what producers sent, before any processing. Running the
pipeline again over them, under a new topic prefix and database, rebuilds
every output with today's code: after a bug fix, or to change the partition
count. Each message is copied as it is (key, value, headers, timestamp);
keys land on the new topic's partitions by the producers' partitioner.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence

from pipeline.config import Settings
from pipeline.errors import ConfigError
from pipeline.kafka.clients import DeliveryTracker, flush_within, make_producer, produce
from pipeline.kafka.reader import read_topics
from pipeline.kafka.topics import RAW_TOPICS
from pipeline.stop_flag import StopFlag

log = logging.getLogger(__name__)


def copy_raw(
    settings: Settings,
    from_prefix: str,
    sources: Sequence[str] = (),
    follow: bool = False,
    on_copied: Callable[[int], None] | None = None,
) -> Counter[str]:
    """Copy the raw topics of ``from_prefix`` into this prefix's; returns messages copied per source.

    Without ``follow`` the copy ends at each partition's end offset at the
    start; with it, it goes on copying what producers still send there until
    SIGTERM or Ctrl-C.
    """
    if from_prefix == settings.topic_prefix:
        raise ConfigError(f"--from-prefix {from_prefix!r} is this prefix: the copy would feed itself")
    wanted = list(sources) or list(RAW_TOPICS)
    unknown = sorted(set(wanted) - set(RAW_TOPICS))
    if unknown:
        raise ConfigError(f"unknown source {', '.join(unknown)}; sources: {', '.join(RAW_TOPICS)}")
    target = {f"{from_prefix}{RAW_TOPICS[s]}": (s, settings.topic(RAW_TOPICS[s])) for s in wanted}
    stop = StopFlag() if follow else None
    delivery = DeliveryTracker()
    producer = make_producer(settings, on_delivery=delivery)
    copied: Counter[str] = Counter()
    pending = 0
    messages = read_topics(
        settings, list(target), "raw-copy", follow=None if stop is None else lambda: not stop.stopped
    )
    for message in messages:
        source, topic = target[message.topic() or ""]
        _kind, stamp = message.timestamp()
        produce(producer, topic, message.value() or b"", message.key(), headers=message.headers() or [],
                timestamp=stamp)  # fmt: skip
        copied[source] += 1
        pending += 1
        if pending >= 1000:
            producer.poll(0)
            delivery.raise_if_failed()
            if on_copied is not None:
                on_copied(pending)
            pending = 0
    flush_within(producer, "the copy")
    delivery.raise_if_failed()
    if on_copied is not None and pending:
        on_copied(pending)
    log.info("copied %d raw messages from %s: %s", sum(copied.values()), from_prefix, dict(copied))
    return copied


def raw_backlog(settings: Settings, from_prefix: str, sources: Sequence[str] = ()) -> int:
    """Messages the raw topics of ``from_prefix`` hold now (for a progress bar)."""
    from pipeline.kafka.admin import admin_client, partition_offsets

    admin = admin_client(settings)
    metadata = admin.list_topics(timeout=10).topics
    names = [f"{from_prefix}{RAW_TOPICS[s]}" for s in (sources or RAW_TOPICS) if s in RAW_TOPICS]
    partitions = [(t, p) for t in names if t in metadata for p in metadata[t].partitions]
    ends = partition_offsets(admin, partitions)
    starts = partition_offsets(admin, partitions, earliest=True)
    return sum(ends[tp] - starts[tp] for tp in partitions)
