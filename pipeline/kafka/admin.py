"""Creating and updating topics, and reading offsets, with confluent-kafka's AdminClient."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from concurrent.futures import Future
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import (  # type: ignore[attr-defined]
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    NewPartitions,
    NewTopic,
    OffsetSpec,
)

from pipeline.config import Settings
from pipeline.errors import ConfigError, KafkaUnavailable
from pipeline.kafka.clients import LibrdkafkaLog, client_config
from pipeline.kafka.layout import PROCEDURE, growth
from pipeline.kafka.security import security_failure
from pipeline.kafka.topics import topic_specs

log = logging.getLogger(__name__)


class Admin(AdminClient):
    """An AdminClient whose metadata request stops at once, with the reason, when security settings are wrong.

    librdkafka retries a failed authentication or TLS handshake for ever, so
    a plain ``list_topics`` would only say "timed out" after its whole
    timeout. Here the client's error callback notes such a failure
    (:func:`~pipeline.kafka.security.security_failure`) and ``list_topics``
    raises ConfigError naming it. Every stage and command asks for metadata
    first, so wrong credentials, an unknown CA or plain text against TLS end
    there (exit 2).
    """

    CLOSED_EARLY_LIMIT = 3
    """Connections closed before the broker's first answer that mean plain text reached a TLS listener."""

    def __init__(self, settings: Settings) -> None:
        self.bootstrap = settings.bootstrap_servers
        self.security_error: str | None = None
        self.closed_early = 0
        self.lines = LibrdkafkaLog(log)
        extra = {"socket.timeout.ms": 10000, "log_level": 6, "logger": self, "error_cb": self._on_error}
        super().__init__(client_config(settings, **extra))

    def _on_error(self, err: KafkaError) -> None:
        reason = security_failure(err)
        if reason is not None and self.security_error is None:
            self.security_error = reason

    def log(self, level: int, message: str, *args: Any) -> None:
        """librdkafka's log lines: warnings and worse go to ``logging`` (:class:`LibrdkafkaLog`); early
        disconnects are counted."""
        text = message % args if args else message
        if "Disconnected" in text and "state APIVERSION_QUERY" in text:
            # a TLS listener closes a plain-text connection at its first request
            self.closed_early += 1
            if self.closed_early >= self.CLOSED_EARLY_LIMIT and self.security_error is None:
                self.security_error = (
                    "the broker closed every connection before answering its first request: is it a "
                    "TLS listener reached with plain text? Check O2O_KAFKA_SECURITY_PROTOCOL"
                )
        self.lines.log(level, "%s", text)

    def list_topics(self, *args: Any, timeout: float = -1, **kwargs: Any) -> Any:
        """Cluster metadata, asked for in growing steps (1, 2, 4 ... s) so a security failure ends the wait.

        The steps grow so that a broker slow to answer (a loaded cluster) is
        still waited for as long as ``timeout`` allows.
        """
        deadline = time.monotonic() + (timeout if timeout >= 0 else 60.0)
        wait = 1.0
        while True:
            step = max(min(wait, deadline - time.monotonic()), 0.01)
            wait *= 2
            try:
                metadata = super().list_topics(*args, timeout=step, **kwargs)
                self.poll(0)  # serves the log lines queued meanwhile (a long-lived client keeps none)
                return metadata
            except KafkaException:
                self.poll(0)  # serves the error callback
                if self.security_error is not None:
                    reason = self.security_error
                    raise ConfigError(f"cannot use Kafka at {self.bootstrap}: {reason}") from None
                if time.monotonic() >= deadline:
                    raise


def admin_client(settings: Settings) -> Admin:
    """An AdminClient for the configured cluster."""
    return Admin(settings)


def ensure_topics(settings: Settings, timeout: float = 30.0, add_partitions: bool = False) -> dict[str, str]:
    """Create missing topics and update configs of existing ones; with ``add_partitions``, grow them.

    Idempotent; returns what happened per topic (``created``, ``updated``,
    ``ok``). An existing topic with fewer partitions than declared is refused
    (ConfigError) unless ``add_partitions``: adding partitions moves keys and
    splits the stateful stages' state (:mod:`pipeline.kafka.layout`).
    """
    admin = admin_client(settings)
    try:
        existing = admin.list_topics(timeout=timeout).topics
    except KafkaException as exc:
        raise KafkaUnavailable(f"cannot reach Kafka at {settings.bootstrap_servers}: {exc}") from exc
    grown = growth(settings, {name: len(t.partitions) for name, t in existing.items()})
    if grown and not add_partitions:
        names = sorted(grown)
        listed = ", ".join(f"{n} ({grown[n][0]} -> {grown[n][1]})" for n in names[:5])
        more = f" and {len(names) - 5} more" if len(names) > 5 else ""
        raise ConfigError(
            f"{len(names)} existing topics have fewer partitions than declared: {listed}{more}. "
            "Adding partitions moves keys to other partitions and splits the stateful stages' state. "
            f"Set O2O_PARTITIONS (and O2O_IDENTITY_WORKERS) as they were, or replay into a new topic "
            f"prefix ({PROCEDURE}); `o2o init --add-partitions` adds them anyway"
        )
    result: dict[str, str] = {}
    to_create = []
    for name, partitions, config in topic_specs(settings):
        if name not in existing:
            to_create.append(NewTopic(name, partitions, settings.replication_factor, config=config))
            result[name] = "created"
            continue
        result[name] = "ok"
        have = len(existing[name].partitions)
        if have < partitions:
            wait_done(admin.create_partitions([NewPartitions(name, partitions)]), timeout)
            result[name] = "updated"
        resource = ConfigResource(
            ConfigResource.Type.TOPIC,
            name,
            incremental_configs=[
                ConfigEntry(key, value, incremental_operation=AlterConfigOpType.SET)
                for key, value in config.items()
            ],
        )
        wait_done(admin.incremental_alter_configs([resource]), timeout)
    if to_create:
        wait_done(
            admin.create_topics(to_create, operation_timeout=timeout),
            timeout,
            tolerate=("TOPIC_ALREADY_EXISTS",),
        )
    for name, what in result.items():
        log.debug("topic %s: %s", name, what)
    return result


def wait_done(futures: Mapping[Any, Future[Any]], timeout: float, tolerate: tuple[str, ...] = ()) -> None:
    """Wait for every admin operation in ``futures``; a failure whose text holds a ``tolerate`` code is
    logged and passed over, any other is :class:`KafkaUnavailable`."""
    for key, future in futures.items():
        try:
            future.result(timeout=timeout)
        except KafkaException as exc:
            if any(code in str(exc) for code in tolerate):
                log.warning("%s: %s (ignored)", key, exc)
                continue
            raise KafkaUnavailable(f"admin operation on {key} failed: {exc}") from exc


def end_offsets(
    settings: Settings, topics: Iterable[str], timeout: float = 10.0
) -> dict[tuple[str, int], int]:
    """The current end offset (high watermark) of every partition of ``topics``."""
    admin = admin_client(settings)
    metadata = admin.list_topics(timeout=timeout).topics
    partitions = [(topic, p) for topic in topics if topic in metadata for p in metadata[topic].partitions]
    return partition_offsets(admin, partitions, timeout=timeout)


def partition_offsets(
    admin: AdminClient, partitions: Iterable[tuple[str, int]], earliest: bool = False, timeout: float = 10.0
) -> dict[tuple[str, int], int]:
    """The end offset (or with ``earliest`` the first offset) of each partition, in one request.

    One ListOffsets round trip for all of them: a consumer's watermark query
    asks per partition, which for a sink's twenty partitions took two seconds.
    Partitions whose answer is a retriable error (a broker just restarted:
    "leader epoch is newer than broker epoch") are asked again, within ``timeout``.
    """
    spec = OffsetSpec.earliest if earliest else OffsetSpec.latest
    request = {TopicPartition(t, p): spec() for t, p in partitions}  # type: ignore[no-untyped-call]
    deadline = time.monotonic() + timeout
    offsets: dict[tuple[str, int], int] = {}
    while request:
        futures = admin.list_offsets(request, request_timeout=max(deadline - time.monotonic(), 0.5))
        again = {}
        for tp, future in futures.items():
            try:
                offsets[(tp.topic, tp.partition)] = future.result().offset
            except KafkaException as exc:
                if not worth_asking_again(exc.args[0], deadline):
                    raise
                again[tp] = request[tp]
        if again:
            time.sleep(0.2)
        request = again
    return offsets


def committed_offsets(
    settings: Settings, group: str, topics: Iterable[str], timeout: float = 10.0
) -> dict[tuple[str, int], int]:
    """The offsets a consumer group has committed on ``topics`` (missing: not committed).

    Asked through a consumer that never joins the group: librdkafka's admin
    ListConsumerGroupOffsets crashed the process here for groups without
    commits, the consumer's OffsetFetch does not.
    """
    admin = admin_client(settings)
    metadata = admin.list_topics(timeout=timeout).topics
    partitions = [(t, p) for t in topics if t in metadata for p in metadata[t].partitions]
    return group_offsets(settings, group, partitions, timeout)


COORDINATOR_BUSY = frozenset(
    {
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
    }
)
"""Errors of a group coordinator that is loading or moving: worth asking again."""

BROKER_AWAY = frozenset(
    {
        KafkaError._WAIT_COORD,
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError._TIMED_OUT,
    }
)
"""Errors librdkafka raises itself while the brokers are away (restarting): not marked retriable,
but they pass when the broker is back."""


LEADER_SETTLING = frozenset(
    {
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.UNKNOWN_LEADER_EPOCH,
        KafkaError.FENCED_LEADER_EPOCH,
        KafkaError.OFFSET_NOT_AVAILABLE,
    }
)
"""Answers about a partition whose leadership is settling (a broker just restarted): ask again."""


def broker_away(err: KafkaError) -> bool:
    """True for an error that passes once the broker is back, its partitions' leaders settled and its
    group coordinator loaded."""
    return err.code() in BROKER_AWAY or err.code() in COORDINATOR_BUSY or err.code() in LEADER_SETTLING


def worth_asking_again(err: KafkaError, deadline: float) -> bool:
    """True for an error that passes when asked again (retriable, or the broker away), before ``deadline``
    (a ``time.monotonic()`` time)."""
    return (err.retriable() or broker_away(err)) and time.monotonic() <= deadline


def offsets_consumer(settings: Settings, group: str) -> Consumer:
    """A consumer that only asks what ``group`` committed (it never joins the group)."""
    return Consumer(client_config(settings, **{"group.id": group, "enable.auto.commit": False}))


def group_offsets(
    settings: Settings,
    group: str,
    partitions: Iterable[tuple[str, int]],
    timeout: float,
    consumer: Consumer | None = None,
) -> dict[tuple[str, int], int]:
    """The offsets ``group`` committed on these partitions (missing: none).

    Retried while the group's coordinator is loading or moving. ``consumer``
    (from :func:`offsets_consumer` for this group) is used and left open;
    without it one is made and closed.
    """
    wanted = [TopicPartition(t, p) for t, p in partitions]
    if not wanted:
        return {}
    owned = consumer is None
    consumer = consumer or offsets_consumer(settings, group)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                committed = consumer.committed(wanted, timeout=timeout)
                break
            except KafkaException as exc:
                # a coordinator still loading or moving answers with a retriable error
                if not worth_asking_again(exc.args[0], deadline):
                    raise
                time.sleep(0.2)
    finally:
        if owned:
            consumer.close()
    return {(tp.topic, tp.partition): tp.offset for tp in committed if tp.offset >= 0}


def group_lag(settings: Settings, group: str, topics: Iterable[str]) -> int:
    """Messages in ``topics`` not yet committed by ``group``."""
    ends = end_offsets(settings, topics)
    done = group_offsets(settings, group, ends, timeout=10.0)  # the partitions end_offsets found
    return sum(max(0, end - done.get(tp, 0)) for tp, end in ends.items())


def partition_counts(settings: Settings, timeout: float = 10.0, every: bool = False) -> dict[str, int]:
    """Partitions of every existing topic under the configured prefix (``every``: all), by full name."""
    metadata = admin_client(settings).list_topics(timeout=timeout).topics
    return {
        name: len(t.partitions)
        for name, t in metadata.items()
        if every or name.startswith(settings.topic_prefix)
    }


def active_groups(settings: Settings, group_ids: Iterable[str], timeout: float = 10.0) -> set[str]:
    """The consumer groups among ``group_ids`` with at least one member now (their stage runs)."""
    wanted = list(group_ids)
    if not wanted:
        return set()
    active: set[str] = set()
    for group_id, future in (
        admin_client(settings).describe_consumer_groups(wanted, request_timeout=timeout).items()
    ):
        try:
            if future.result().members:
                active.add(group_id)
        except KafkaException:
            continue  # a group Kafka does not know has no member
    return active
