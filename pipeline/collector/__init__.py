"""The HTTP collector: contract v1 events and Segment-compatible tracking calls into the raw topics.

* :mod:`pipeline.collector.segment` -- pure mapping of Segment HTTP tracking
  API messages to contract v1 events.
* :mod:`pipeline.collector.kafka_sink` -- asyncio bridge to a confluent-kafka
  producer: ``await`` one message's delivery report.
* :mod:`pipeline.collector.app` -- the ASGI application
  (:func:`~pipeline.collector.app.create_app`), served by ``o2o collector``.
"""

from __future__ import annotations
