"""Resets of the demo and the bench: every topic and consumer group under the configured prefix goes.

A reset often runs right after the broker started, and a broker just
started answers a groups listing from the offsets partitions it has loaded
so far, without an error for the others: a group on a partition still
loading is simply not in the list. A group left behind keeps its committed
offsets, and on topics made anew its stage would take everything below them
as already handled. So the reset first waits until the group coordinator
of every offsets partition answers, then lists.
"""

from __future__ import annotations

import logging
import struct
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient  # type: ignore[attr-defined]

from pipeline.config import STAGES, Settings
from pipeline.errors import KafkaUnavailable
from pipeline.kafka.admin import admin_client, broker_away, wait_done, worth_asking_again

log = logging.getLogger(__name__)

OFFSETS_TOPIC = "__consumer_offsets"
ASK_AGAIN_SECONDS = 0.2


def delete_prefixed(settings: Settings, timeout: float = 30.0) -> list[str]:
    """Delete every topic and consumer group under the configured prefix; the names of the topics deleted.

    The stages' groups are deleted by name as well, whether listed or not.
    """
    admin = admin_client(settings)
    prefix = settings.topic_prefix
    names = [t for t in admin.list_topics(timeout=timeout).topics if t.startswith(prefix)]
    if names:
        wait_done(admin.delete_topics(names, operation_timeout=timeout), timeout, tolerate=("UNKNOWN_TOPIC",))
    deadline = time.monotonic() + timeout
    wait_group_coordinators(admin, settings.consumer_group_prefix, deadline)
    groups = prefixed_groups(admin, settings.consumer_group_prefix, deadline)
    delete_groups(admin, groups | {settings.group(stage) for stage in STAGES}, deadline)
    _wait_topics_gone(admin, names, timeout)
    return names


def java_string_hash(text: str) -> int:
    """Java's ``String.hashCode`` of ``text`` (a signed 32-bit int), which Kafka uses to place a group."""
    value = 0
    data = text.encode("utf-16-be")
    for unit in struct.unpack(f">{len(data) // 2}H", data):
        value = (31 * value + unit) & 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def offsets_partition(group: str, partitions: int) -> int:
    """The partition of ``__consumer_offsets`` that holds ``group`` (Kafka's ``Utils.abs(hash) % n``)."""
    value = java_string_hash(group)
    return (0 if value == -(1 << 31) else abs(value)) % partitions


def probe_groups(prefix: str, partitions: int) -> list[str]:
    """One group id under ``prefix`` for each of the ``partitions`` offsets partitions (never created)."""
    found: dict[int, str] = {}
    index = 0
    while len(found) < partitions:
        group = f"{prefix}coordinator-probe-{index}"
        found.setdefault(offsets_partition(group, partitions), group)
        index += 1
    return list(found.values())


def wait_group_coordinators(admin: AdminClient, prefix: str, deadline: float) -> None:
    """Wait until the coordinator of every offsets partition answers: describe one group on each.

    No offsets topic: no group was ever made, nothing to wait for. An error
    other than "loading", "not coordinator" or the broker away (a missing
    ACL to describe the probes, say) ends the wait: the listing then goes as
    it would without it.
    """
    topic = admin.list_topics(timeout=max(1.0, deadline - time.monotonic())).topics.get(OFFSETS_TOPIC)
    if topic is None:
        return

    def failed(group: str, exc: KafkaException) -> bool:
        err = exc.args[0]
        if err.retriable() or broker_away(err):
            raise KafkaUnavailable(f"the group coordinators are still loading: {exc}") from exc
        log.info("cannot tell whether the group coordinators have loaded (%s); listing anyway", exc)
        return True

    probes = probe_groups(prefix, len(topic.partitions))
    _until_answered(admin.describe_consumer_groups, probes, deadline, failed)


def prefixed_groups(admin: AdminClient, prefix: str, deadline: float) -> set[str]:
    """The consumer groups whose id starts with ``prefix``; asked again while the listing has errors."""
    while True:
        listed = admin.list_consumer_groups(request_timeout=max(1.0, deadline - time.monotonic())).result()
        if not listed.errors:
            return {group.group_id for group in listed.valid if group.group_id.startswith(prefix)}
        error = listed.errors[0]
        err = error.args[0] if isinstance(error, KafkaException) else error
        if not isinstance(err, KafkaError) or not worth_asking_again(err, deadline):
            raise KafkaUnavailable(f"listing the consumer groups failed: {error}")
        time.sleep(ASK_AGAIN_SECONDS)


def delete_groups(admin: AdminClient, groups: Iterable[str], deadline: float) -> None:
    """Delete ``groups``; those that do not exist are fine, a coordinator still loading is asked again."""

    def failed(group: str, exc: KafkaException) -> bool:
        if exc.args[0].code() == KafkaError.NON_EMPTY_GROUP:  # a process of it still runs
            log.warning("%s: %s (not deleted)", group, exc)
            return False
        raise KafkaUnavailable(f"deleting the consumer group {group} failed: {exc}") from exc

    _until_answered(admin.delete_consumer_groups, groups, deadline, failed)


GroupRequest = Callable[..., Mapping[str, Future[Any]]]


def _until_answered(
    request: GroupRequest,
    groups: Iterable[str],
    deadline: float,
    failed: Callable[[str, KafkaException], bool],
) -> None:
    """Send ``request`` for ``groups``, again for those whose answer is worth asking again, until each
    has answered (a group that does not exist is an answer). Any other error goes to ``failed``, which
    raises, or returns True to end it all or False to go on."""
    left = sorted(groups)
    while left:
        again = []
        for group, future in request(left, request_timeout=max(1.0, deadline - time.monotonic())).items():
            try:
                future.result()
            except KafkaException as exc:
                err = exc.args[0]
                if err.code() == KafkaError.GROUP_ID_NOT_FOUND:
                    continue
                if worth_asking_again(err, deadline):
                    again.append(group)
                elif failed(group, exc):
                    return
        left = again
        if left:
            log.debug("%d consumer groups asked again", len(left))
            time.sleep(ASK_AGAIN_SECONDS)


def _wait_topics_gone(admin: AdminClient, names: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while names and time.monotonic() < deadline:
        left = set(names) & set(admin.list_topics(timeout=timeout).topics)
        if not left:
            return
        time.sleep(ASK_AGAIN_SECONDS)
