"""O2O customer-journey pipeline.

Producers use :class:`EventProducer` to send contract events to Kafka::

    from pipeline import EventProducer

    with EventProducer(bootstrap_servers="localhost:9092") as producer:
        producer.send({"event_id": "e1", "source": "web", "type": "page_view",
                       "occurred_at": "2026-11-01T10:00:00Z", "ids": {"anonymous_id": "c1"}})
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["EventProducer"]

if TYPE_CHECKING:
    from pipeline.event_producer import EventProducer


def __getattr__(name: str) -> Any:
    # imported on first use, so `import pipeline` stays light for the CLI
    if name == "EventProducer":
        from pipeline.event_producer import EventProducer

        return EventProducer
    raise AttributeError(name)
