"""Small network helpers of the local Kafka stack: free ports, reachability, metadata."""

from __future__ import annotations

import logging
import socket

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

log = logging.getLogger(__name__)

HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port of 127.0.0.1 that is free right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int) -> bool:
    """True when a server could listen on 127.0.0.1:``port`` (as the JVM would, SO_REUSEADDR on)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


def accepts(port: int, timeout: float = 1.0) -> bool:
    """True when something accepts TCP connections on 127.0.0.1:``port``."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


def topic_count(bootstrap: str, timeout: float) -> int | None:
    """Topics of the broker at ``bootstrap`` (internal ones excluded), or None if it does not answer."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": max(1000, int(timeout * 1000))})
    try:
        meta = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        log.debug("broker at %s did not answer metadata: %s", bootstrap, exc)
        return None
    if not meta.brokers:
        return None
    return sum(1 for name in meta.topics if not name.startswith("__"))
