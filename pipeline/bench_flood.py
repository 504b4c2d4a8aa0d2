"""``o2o bench --flood``: the collector keeps serving valid clients while abusive ones flood it.

A collector with its default limits runs on loopback. A valid client posts
small batches at a steady pace, first alone, then while a second process
floods the collector from other loopback addresses (127.0.0.0/8 is all this
machine, and the limits are per address) with requests that must be refused
cheaply: bodies without a write key, bodies declared larger than the limit,
gzip bombs with the key in the body, gzip bombs with a valid key in the
header, and requests whose bodies never finish. The bench prints, for each
phase, the valid client's answers and latency percentiles, what the flood got
back by kind and status, and the collector's CPU and memory.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import orjson
import psutil

from pipeline.bench_parts import COLLECTOR_KEYS, part_settings, running_collector
from pipeline.bench_report import section, table
from pipeline.bench_stats import percentile
from pipeline.bench_steps import StepRunner
from pipeline.cli.common import console
from pipeline.config import Settings

VALID_ADDRESS = "127.0.0.2"
FLOOD_ADDRESSES = {
    "no_key": "127.0.0.3",
    "declared_too_large": "127.0.0.4",
    "gzip_bomb_body_key": "127.0.0.5",
    "gzip_bomb_header_key": "127.0.0.6",
    "never_finished": "127.0.0.7",
}
VALID_PACE_S = 0.05  # 20 requests/s of 10 events: under the per-address default of 50/s
FLOOD_WORKERS = 4  # concurrent connections per kind


@dataclass
class Phase:
    """What the valid client saw in one phase, and the collector's resources over it."""

    name: str
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    cpu_s: float = 0.0
    peak_rss: int = 0


def run_flood(runner: StepRunner, settings: Settings, seconds: float, stack_limit: float) -> None:
    """Start the stack and a collector, measure the valid client alone and under the flood, print."""
    from pipeline.bench_parts import prepare

    where = runner.run("start the stack; reset the bench prefix", prepare, settings, timeout=stack_limit)
    console.print(f"using {where}")
    phases, flood = runner.run(
        f"collector: a valid client alone, then under a flood ({seconds:g} s each)",
        measure, settings, seconds,
    )  # fmt: skip
    rows = []
    for phase in phases:
        q = [f"{percentile(phase.latencies, p) * 1000:.1f}" if phase.latencies else "-" for p in (50, 95, 99)]
        rows.append(
            [phase.name, str(sum(phase.statuses.values())), str(phase.statuses.get("200", 0)),
             _answers(phase.statuses, but="200") or "none", *q, f"{phase.cpu_s:.1f}",
             f"{phase.peak_rss / 2**20:,.0f}"]
        )  # fmt: skip
    headers = ["phase", "requests", "200", "other answers", "p50 ms", "p95 ms", "p99 ms"]
    table(
        "collector: the valid client's requests (10 events each)",
        [*headers, "collector CPU s", "peak RSS MiB"],
        rows,
        note=f"{VALID_PACE_S * 1000:.0f} ms between requests from {VALID_ADDRESS}; "
        "the collector runs with its default limits",
    )
    table(
        "collector: what the flood got back, by kind",
        ["kind", "requests", "answers"],
        [[kind, str(sum(c.values())), _answers(c)] for kind, c in sorted(flood.items())],
        note=f"{FLOOD_WORKERS} connections per kind, each from its own loopback address, "
        "from a second process",
    )
    section("steps", [(name, f"{s:.1f} s") for name, s in runner.done])


def _answers(statuses: Counter[str], but: str = "") -> str:
    return ", ".join(f"{status}: {n}" for status, n in sorted(statuses.items()) if status != but)


def measure(settings: Settings, seconds: float) -> tuple[list[Phase], dict[str, Counter[str]]]:
    """The two phases against one collector; the flood runs in a child process during the second."""
    with running_collector(part_settings(settings, "flood")) as (base, server):
        process = psutil.Process(server.pid)
        alone = _valid_phase("alone", base, seconds, process)
        flood = subprocess.Popen(
            [sys.executable, "-m", "pipeline.bench_flood", base, str(seconds + 2)],
            stdout=subprocess.PIPE,
        )
        try:
            time.sleep(1.0)  # the flood under way
            under = _valid_phase("under the flood", base, seconds, process)
            out, _err = flood.communicate(timeout=seconds + 60)
        finally:
            if flood.poll() is None:
                flood.kill()
                flood.wait()
    results = {kind: Counter(counts) for kind, counts in orjson.loads(out or b"{}").items()}
    return [alone, under], results


def _valid_phase(name: str, base: str, seconds: float, process: psutil.Process) -> Phase:
    import httpx

    phase = Phase(name)
    cpu = process.cpu_times()
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(0.1):
            phase.peak_rss = max(phase.peak_rss, process.memory_info().rss)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    transport = httpx.HTTPTransport(local_address=VALID_ADDRESS)
    with httpx.Client(
        base_url=base, transport=transport, auth=(COLLECTOR_KEYS["web"], ""), timeout=10
    ) as http:
        end = time.monotonic() + seconds
        number = 0
        while time.monotonic() < end:
            started = time.monotonic()
            batch = [_event(f"{name[:5]}-{number}-{i}") for i in range(10)]
            try:
                status = str(http.post("/v1/events", json={"batch": batch}).status_code)
                phase.latencies.append(time.monotonic() - started)
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            phase.statuses[status] += 1
            number += 1
            time.sleep(max(0.0, VALID_PACE_S - (time.monotonic() - started)))
    stop.set()
    watcher.join()
    after = process.cpu_times()
    phase.cpu_s = after.user + after.system - cpu.user - cpu.system
    return phase


def _event(event_id: str) -> dict[str, object]:
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return {"event_id": event_id, "source": "web", "type": "page_view", "occurred_at": now,
            "ids": {"anonymous_id": f"flood-bench-{event_id[:8]}"}}  # fmt: skip


# -- the flood (a second process) ---------------------------------------------------------------


def flood(base: str, seconds: float) -> dict[str, dict[str, int]]:
    """Send every abusive kind from its own address for ``seconds``; answers by kind and status."""
    host, port = base.removeprefix("http://").split(":")
    bomb = gzip.compress(b"\0" * 64 * 2**20, compresslevel=9)  # 64 MiB of zeros in about 64 KiB
    big = orjson.dumps({"batch": [{"n": i, "pad": "x" * 200} for i in range(2000)]})  # about 450 KB, no key
    basic = "Basic " + base64.b64encode(f"{COLLECTOR_KEYS['web']}:".encode()).decode()
    results: dict[str, Counter[str]] = {kind: Counter() for kind in FLOOD_ADDRESSES}

    async def http_kind(kind: str, body: bytes, headers: dict[str, str]) -> None:
        import httpx

        transport = httpx.AsyncHTTPTransport(local_address=FLOOD_ADDRESSES[kind])
        async with httpx.AsyncClient(base_url=base, transport=transport, timeout=30) as client:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                try:
                    response = await client.post("/v1/events", content=body, headers=headers)
                    results[kind][str(response.status_code)] += 1
                except httpx.HTTPError as exc:
                    results[kind][type(exc).__name__] += 1

    async def raw_kind(kind: str, head: bytes, body: bytes) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            results[kind][
                await asyncio.to_thread(_raw_request, host, int(port), FLOOD_ADDRESSES[kind], head, body)
            ] += 1

    async def main() -> None:
        declared = b"POST /v1/events HTTP/1.1\r\nHost: c\r\nContent-Length: 209715200\r\n\r\n"
        unfinished = b"POST /v1/events HTTP/1.1\r\nHost: c\r\nContent-Length: 1000\r\n\r\n"
        gz = {"content-encoding": "gzip", "content-type": "application/json"}
        await asyncio.gather(*(
            task
            for _ in range(FLOOD_WORKERS)
            for task in (
                http_kind("no_key", big, {"content-type": "application/json"}),
                raw_kind("declared_too_large", declared, b"{"),
                http_kind("gzip_bomb_body_key", bomb, gz),
                http_kind("gzip_bomb_header_key", bomb, {**gz, "authorization": basic}),
                raw_kind("never_finished", unfinished, b"{"),
            )
        ))  # fmt: skip

    asyncio.run(main())
    return {kind: dict(counts) for kind, counts in results.items()}


def _raw_request(host: str, port: int, source: str, head: bytes, body: bytes) -> str:
    """Send ``head`` and ``body`` on a new connection and return the answer's status (or what went wrong)."""
    try:
        with socket.create_connection((host, port), timeout=30, source_address=(source, 0)) as connection:
            connection.sendall(head + body)
            status = connection.recv(64).split(b" ", 2)[1:2]
            return status[0].decode() if status else "closed"
    except OSError as exc:
        return type(exc).__name__


if __name__ == "__main__":
    print(orjson.dumps(flood(sys.argv[1], float(sys.argv[2]))).decode())
