"""``o2o bench`` end to end on the test broker, tiny: only the structure of its output is checked.

Timings are printed by the bench, never asserted here.
"""

from __future__ import annotations

import re

from pipeline.config import Settings
from tests.conftest import o2o

NUMBER = r"[\d,]+(?:\.\d+)?"


def _sections(stdout: str) -> dict[str, list[str]]:
    sections: dict[str, list[str]] = {}
    current: list[str] = []
    for line in stdout.splitlines():
        if line.startswith("## "):
            current = sections.setdefault(line[3:], [])
        elif line.strip():
            current.append(line)
    return sections


def _value(lines: list[str], label: str) -> str:
    found = [line for line in lines if line.startswith(label)]
    assert found, f"no line {label!r} in {lines}"
    return found[0][len(label) :].strip()


STAGE_LABELS = {"ingest", "identity", "journeys", "attribution", "sink"}


def test_bench_throughput_prints_every_section(settings: Settings) -> None:
    args = ["--events", "1000", "--no-parts", "--profile", "--step-timeout", "150"]
    proc = o2o(settings, "bench", *args, timeout=300)
    print(proc.stdout)
    assert "did not finish within" not in proc.stderr
    sections = _sections(proc.stdout)
    pipeline = sections["pipeline end to end (o2o run all --drain)"]
    assert re.search(
        rf"^{NUMBER} events/s", _value(pipeline, "steady state (10% to 90% of the sink's input)")
    )
    assert re.search(rf"^{NUMBER} s$", _value(pipeline, "start-up (launch until the sink's first commit)"))
    assert re.search(rf"^{NUMBER}$", _value(pipeline, "ratio steady state / passthrough"))
    cpu = next(lines for title, lines in sections.items() if title.startswith("CPU seconds per process"))
    labels = {line.split("  ")[0] for line in cpu}
    assert labels >= STAGE_LABELS
    assert any(line.startswith("Kafka broker (pid") for line in cpu)
    peaks = [line.split()[-1] for line in cpu if line.split("  ")[0] in STAGE_LABELS]
    assert len(peaks) == 5 and all(re.fullmatch(NUMBER, p) and p != "0" for p in peaks), cpu
    rss, pss = (
        float(_value(pipeline, f"peak memory, stage processes (summed {kind})").split()[0].replace(",", ""))
        for kind in ("RSS", "PSS")
    )
    assert 0 < pss < rss  # the stage processes share the interpreter's pages at least
    topics = next(
        lines for title, lines in sections.items() if title.startswith("records and bytes per input")
    )
    names = {line.split()[0] for line in topics}
    assert {"raw.web", "events.valid", "rows.events", "identity-identity_ids-changelog"} <= names
    raw = next(line for line in topics if line.startswith("raw.web"))
    assert all(re.fullmatch(NUMBER, cell) for cell in raw.split()[1:4])
    profile = next(lines for title, lines in sections.items() if title.startswith("where the time goes"))
    sampled = [line.split(" (")[0] for line in profile if re.match(rf"^\w+ \({NUMBER} samples\)$", line)]
    assert sampled and set(sampled) <= {"ingest", "identity", "journeys", "attribution", "sink"}
    assert any(line.strip().endswith("%") and "package" in line for line in profile)
    assert "steps" in sections
    longest = next(
        lines for title, lines in sections.items() if title.startswith("longest step per stateful")
    )
    assert {line.split()[0] for line in longest} == {"identity", "journeys", "attribution"}
    assert all(re.search(rf"  {NUMBER} ms \({NUMBER} records\)$", line) for line in longest), longest


def test_bench_live_prints_percentiles(settings: Settings) -> None:
    args = [
        "--live",
        "--activation",
        "--rate",
        "200",
        "--seconds",
        "4",
        "--bound",
        "10",
        "--step-timeout",
        "150",
    ]
    proc = o2o(settings, "bench", *args, timeout=300)
    print(proc.stdout)
    assert "did not finish within" not in proc.stderr
    sections = _sections(proc.stdout)
    sending = next(lines for title, lines in sections.items() if title.startswith("live: sending"))
    assert re.search(rf"^{NUMBER} events in {NUMBER} s", _value(sending, "sent"))
    lag = _value(sending, "messages not yet committed when sending ended, by stage")
    assert re.fullmatch(
        rf"ingest {NUMBER}, identity {NUMBER}, journeys {NUMBER}, attribution {NUMBER}, sink {NUMBER}, "
        rf"activation {NUMBER}",
        lag,
    )
    # --activation: the example rules run, and decisions made at their trigger are timed
    decisions = sections["live: seconds from send until the decision is on `activations`"]
    row = next(line for line in decisions if re.match(rf"^{NUMBER} ", line))
    counted, *quantiles, rest = row.split(None, 5)
    assert int(counted.replace(",", "")) > 0, decisions
    assert all(re.fullmatch(NUMBER, q) for q in quantiles) and "events triggered a decision" in rest
    visible = sections["live: seconds from send until visible in ClickHouse"]
    rows = {
        line.split(" (")[0]: line for line in visible if line.startswith(("events", "conversions", "credits"))
    }
    assert set(rows) == {"events", "conversions", "credits"}
    for row in rows.values():
        cells = row.split(")", 1)[1].split()
        expected, seen, *latencies, not_visible, _all = cells
        assert int(expected.replace(",", "")) > 0 and re.fullmatch(NUMBER, seen)
        assert re.fullmatch(NUMBER, not_visible)
        # p50, p95, p99, max: numbers, or "-" when nothing was seen in time (never a timing assertion)
        assert all(re.fullmatch(NUMBER, c) or c == "-" for c in latencies) and len(latencies) == 4
    hops = sections["live: where the time goes, hop by hop (seconds)"]
    stages = [line.split(":")[0] for line in hops if ": " in line and "->" in line]
    assert stages == ["ingest", "identity", "journeys", "sink and ClickHouse"], hops
    for line in hops:
        if "->" in line:
            counted, *quantiles = line.rsplit(None, 4)[1:]
            assert int(counted.replace(",", "")) > 0 and all(re.fullmatch(NUMBER, q) for q in quantiles), line
    assert any(title.startswith("CPU seconds per process") for title in sections)
    assert any(title.startswith("records and bytes per sent event") for title in sections)


def test_bench_flood_prints_both_phases_and_the_flood_is_only_ever_refused(settings: Settings) -> None:
    quick = settings.model_copy(update={"collector_read_timeout_seconds": 2.0})  # never-finished bodies
    proc = o2o(quick, "bench", "--flood", "--seconds", "3", "--step-timeout", "150", timeout=300)
    print(proc.stdout)
    assert "did not finish within" not in proc.stderr
    sections = _sections(proc.stdout)
    valid = sections["collector: the valid client's requests (10 events each)"]
    phases = {line.split("  ")[0]: line for line in valid if line.startswith(("alone", "under the flood"))}
    assert set(phases) == {"alone", "under the flood"}
    for line in phases.values():
        requests, ok = line.split("  ", 1)[1].split()[:2]
        assert int(ok) > 0 and int(requests) >= int(ok)
    flood = sections["collector: what the flood got back, by kind"]
    kinds = {line.split()[0]: line for line in flood[1:] if not line.startswith(("kind", "4 connections"))}
    assert set(kinds) == {"no_key", "declared_too_large", "gzip_bomb_body_key", "gzip_bomb_header_key",
                          "never_finished"}, flood  # fmt: skip
    for kind, line in kinds.items():
        answers = dict(pair.split(": ") for pair in line.split(None, 2)[2].split(", "))
        assert answers and set(answers) <= {"401", "408", "413", "429"}, (
            kind,
            answers,
        )  # refused, never served
    assert "408" in dict(p.split(": ") for p in kinds["never_finished"].split(None, 2)[2].split(", "))
