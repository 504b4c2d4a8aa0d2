"""Per-part measurements for ``o2o bench``: the ingest stage alone and the HTTP collector.

Each part gets its own topic prefix so it never mixes with the end-to-end run.
"""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import orjson

from pipeline.config import Settings
from pipeline.kafka.admin import delete_prefixed, ensure_topics
from pipeline.producer import send_events
from pipeline.runtime.stages import settings_env
from pipeline.simulate import simulate
from pipeline.stack.kafka_net import free_port


def part_settings(settings: Settings, name: str) -> Settings:
    """Settings of one measured part: its own prefix and groups."""
    prefix = f"bench-{name}."
    return settings.model_copy(update={"topic_prefix": prefix, "consumer_group_prefix": prefix})


def events_for(n: int, seed: int) -> Iterator[dict[str, Any]]:
    """``n`` simulated events (about 37 per customer)."""
    return itertools.islice(simulate(n // 30 + 10, 30, seed), n)


def ingest_rate(settings: Settings, n: int, seed: int) -> tuple[int, float]:
    """Events/s of the ingest stage alone, draining ``n`` raw events (start-up included)."""
    part = part_settings(settings, "ingest")
    delete_prefixed(part)
    ensure_topics(part)
    sent = send_events(part, events_for(n, seed))
    start = time.monotonic()
    subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "--log-level", "WARNING", "run", "ingest", "--drain"],
        env=settings_env(part),
        check=True,
    )
    seconds = time.monotonic() - start
    delete_prefixed(part)
    return sent, seconds


def collector_rate(settings: Settings, n: int, seed: int, batch: int = 100) -> tuple[int, int, float]:
    """(requests, events, seconds) posting ``n`` events in batches of ``batch`` to a local collector."""
    import httpx

    part = part_settings(settings, "collector")
    delete_prefixed(part)
    ensure_topics(part)
    port = free_port()
    env = settings_env(part)
    env["O2O_COLLECTOR_WRITE_KEYS"] = "web=bench-web,app=bench-app,geofence=bench-geo,pos=bench-pos"
    server = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "--log-level", "WARNING", "collector", "--port", str(port)],
        env=env,
    )
    keys = {"web": "bench-web", "app": "bench-app", "geofence": "bench-geo", "pos": "bench-pos"}
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the collector did not start")
            time.sleep(0.2)
        by_source: dict[str, list[dict[str, Any]]] = {}
        for event in events_for(n, seed):
            by_source.setdefault(event["source"], []).append(event)
        bodies = [
            (source, orjson.dumps({"batch": events[i : i + batch]}))
            for source, events in by_source.items()
            for i in range(0, len(events), batch)
        ]
        start = time.monotonic()
        accepted = asyncio.run(_post_all(base, bodies, keys))
        seconds = time.monotonic() - start
    finally:
        server.terminate()
        server.wait(30)
        delete_prefixed(part)
    return len(bodies), accepted, seconds


async def _post_all(
    base: str, bodies: list[tuple[str, bytes]], keys: dict[str, str], clients: int = 8
) -> int:
    import httpx

    queue = list(reversed(bodies))
    accepted = 0

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal accepted
        while queue:
            source, body = queue.pop()
            response = await client.post(
                f"{base}/v1/events",
                content=body,
                auth=(keys[source], ""),
                headers={"content-type": "application/json"},
            )
            response.raise_for_status()
            accepted += int(response.json()["accepted"])

    async with httpx.AsyncClient(timeout=60) as client:
        await asyncio.gather(*(worker(client) for _ in range(clients)))
    return accepted
