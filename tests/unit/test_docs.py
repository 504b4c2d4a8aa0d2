"""The README and docs/ say what the code does: settings, metrics, topics, commands, tests.

Each test reads the Markdown and compares it with the code it describes, so a
renamed setting, a new topic or an undocumented test file fails here instead
of misleading a reader. No broker, no network.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from prometheus_client.metrics import MetricWrapperBase

from pipeline.cli.main import full_cli
from pipeline.collector.metrics import CollectorMetrics
from pipeline.config import OTHER_VARIABLES, STAGES, Settings
from pipeline.kafka.lag import PartitionLag, StageLag
from pipeline.kafka.topics import TOPICS
from pipeline.metrics import CountsCollector
from pipeline.runtime.lag_watch import LagCollector, LagWatch
from pipeline.sink.metrics import CLICKHOUSE_GAUGES, insert_histogram

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))

# O2O_ names a doc may mention although they are not settings, and why.
NOT_SETTINGS = {
    "O2O_BOOTSTRAP_SERVER": "docs/configuration.md: the error a misspelt variable gives",
    "O2O_SINK_MAX_RETRIES": "docs/configuration.md: a removed setting, to be removed from environments",
}
ENV_NAME = re.compile(r"\bO2O_[A-Z0-9]+(?:_[A-Z0-9]+)*")
CODE_SPAN = re.compile(r"`([^`\n]+)`")


def text(path: Path) -> str:
    """A file of the repository as text."""
    return path.read_text(encoding="utf-8")


def table_rows(markdown: str) -> Iterator[list[str]]:
    """The cells of every Markdown table row (header and separator rows included)."""
    for line in markdown.splitlines():
        if line.startswith("|") and line.rstrip().endswith("|"):
            cells = re.split(r"(?<!\\)\|", line.strip()[1:-1])
            yield [cell.strip() for cell in cells]


def code_names(cell: str) -> list[str]:
    """The code spans of a table cell, in order."""
    return CODE_SPAN.findall(cell)


def section(markdown: str, heading: str) -> str:
    """The text under a heading (``## X``), up to the next heading of the same or a higher level."""
    level = heading.split(" ", 1)[0]
    lines = markdown.splitlines()
    start = lines.index(heading) + 1
    end = next(
        (i for i in range(start, len(lines)) if re.match(rf"#{{1,{len(level)}}} ", lines[i])), len(lines)
    )
    return "\n".join(lines[start:end])


def setting_variables() -> set[str]:
    """``O2O_<NAME>`` of every field of Settings."""
    return {f"O2O_{name.upper()}" for name in Settings.model_fields}


# -- settings ---------------------------------------------------------------------


def tabled_variables(markdown: str) -> set[str]:
    """Environment variables that have a table row of their own (a cell holding just the name)."""
    cells = {cell for row in table_rows(markdown) for cell in row}
    return {cell.strip("`") for cell in cells if re.fullmatch(rf"`{ENV_NAME.pattern}`", cell)}


def test_every_setting_is_in_the_readme_quick_reference() -> None:
    reference = section(text(README), "## Configuration")
    missing = setting_variables() - tabled_variables(reference)
    assert not missing, f"README's settings table lacks {sorted(missing)}"


def test_every_setting_is_in_the_configuration_reference() -> None:
    missing = setting_variables() - tabled_variables(text(ROOT / "docs" / "configuration.md"))
    assert not missing, f"docs/configuration.md lacks {sorted(missing)}"


def test_no_doc_names_a_setting_that_does_not_exist() -> None:
    known = setting_variables() | OTHER_VARIABLES | set(NOT_SETTINGS)
    wrong = {
        f"{path.relative_to(ROOT)}: {name}"
        for path in [README, *DOCS, ROOT / "docker-compose.yml"]
        for name in ENV_NAME.findall(text(path))
        if name not in known
    }
    assert not wrong, f"no such settings: {sorted(wrong)}"
    mentioned = set(ENV_NAME.findall("\n".join(text(p) for p in DOCS)))
    assert set(NOT_SETTINGS) <= mentioned, "NOT_SETTINGS lists a name no doc mentions any more"


# -- metrics ----------------------------------------------------------------------

METRIC = re.compile(
    r"\bo2o_[a-z0-9_]+?(?:_total|_seconds|_bytes|_count|_sum|_bucket|_created|_records|_alert)\b(?:\{[^}`]*\})?"
)


SAMPLE_SUFFIXES = {"counter": ("_total",), "histogram": ("", "_bucket", "_count", "_sum"), "gauge": ("",)}


def exported_metrics() -> dict[str, set[str]]:
    """Every sample name the code exports (``_total`` of counters, a histogram's parts) -> its labels."""
    collector = CollectorMetrics()
    wrappers = [value for value in vars(collector).values() if isinstance(value, MetricWrapperBase)]
    labels = {wrapper.describe()[0].name: set(wrapper._labelnames) for wrapper in wrappers}
    for family in CountsCollector("ingest", {"": lambda: {"valid": 1}}).collect():
        labels[family.name] = set(family.samples[0].labels)
    watch = LagWatch(Settings(), "ingest")
    watch.latest = StageLag("ingest", "group", (PartitionLag("topic", 0, 0, 1, None),))
    for family in LagCollector(watch).collect():
        labels[family.name] = set(family.samples[0].labels)
    inserts = insert_histogram()
    labels[inserts.describe()[0].name] = set(inserts._labelnames)
    families = [
        *collector.registry.collect(),
        *CountsCollector("ingest", {}).collect(),
        *LagCollector(watch).collect(),
        *inserts.collect(),
    ]
    exported = {
        family.name + suffix: labels[family.name]
        for family in families
        for suffix in SAMPLE_SUFFIXES[family.type]
    }
    return exported | {name: set(labels) for name, (_help, labels) in CLICKHOUSE_GAUGES.items()}


def counted_keys(*packages: str) -> set[str]:
    """Every string literal under these packages of pipeline/: the keys stages count outcomes under."""
    folders = [ROOT / "pipeline" / package for package in packages] or [ROOT / "pipeline"]
    source = "\n".join(text(path) for folder in folders for path in folder.rglob("*.py"))
    return set(re.findall(r"""["']([a-z_]+)["']""", source))


# An outcome is "source.key": no source for ingest's own counts and a faust stage's
# "processed", "input_holes", "put_back" and "restore_stalls" (pipeline/runtime/stages.py), else the
# counter it comes from.
OUTCOME_SOURCES = {*STAGES, "identity_stage", "rows", "dead_letter"}


def outcome_problem(outcome: str) -> str | None:
    """Why ``outcome`` is not a counter key a stage exports, or None when it is one."""
    source, _, key = outcome.rpartition(".")
    if not source:
        known = counted_keys("ingest", "runtime")
        return None if key in known else f"{key} is counted only under a source (such as journeys.{key})"
    if source not in OUTCOME_SOURCES:
        return f"no counter source {source}"
    return None if key in counted_keys() else f"nothing is counted as {key}"


def test_every_metric_in_the_docs_is_exported() -> None:
    exported = exported_metrics()
    problems = []
    for path in [README, *DOCS]:
        for match in METRIC.finditer(text(path)):
            name, _, labels = match.group(0).partition("{")
            where = f"{path.relative_to(ROOT)}: {match.group(0)}"
            if name not in exported:
                problems.append(f"{where}: no such metric")
                continue
            for label, value in re.findall(r'(\w+)="([^"]*)"', labels):
                if label not in exported[name]:
                    problems.append(f"{where}: no label {label}")
                elif label == "stage" and value not in STAGES:
                    problems.append(f"{where}: no stage {value}")
                elif label == "outcome" and (problem := outcome_problem(value)):
                    problems.append(f"{where}: {problem}")
    assert not problems, "\n".join(problems)


def test_the_metric_check_sees_a_wrong_name() -> None:
    assert "o2o_collector_requests_total" in exported_metrics()
    assert "o2o_journeys_very_late_events_total" not in exported_metrics()
    assert "o2o_stage_lag_alert" in exported_metrics() and "o2o_stage_lag_records" in exported_metrics()
    assert METRIC.findall('`o2o_stage_lag_records{stage="sink"}`') == ['o2o_stage_lag_records{stage="sink"}']
    assert METRIC.findall('counted (`o2o_stage_records_total{outcome="x"}`)') == [
        'o2o_stage_records_total{outcome="x"}'
    ]
    assert outcome_problem("very_late_events") and outcome_problem("journey.very_late_events")
    assert outcome_problem("journeys.very_late_events") is None and outcome_problem("input_holes") is None


# -- topics -----------------------------------------------------------------------


def test_every_topic_is_in_the_architecture_table_and_diagram() -> None:
    architecture = text(ROOT / "docs" / "architecture.md")
    topics_section = section(architecture, "## Stages and topics")
    tabled = {name for row in table_rows(topics_section) if row for name in code_names(row[0])}
    declared = {spec.name for spec in TOPICS}
    assert declared - tabled == set(), f"the topics table lacks {sorted(declared - tabled)}"
    topicish = {name for name in tabled if re.fullmatch(r"[a-z_]+(\.[a-z_]+)+|dlq|journeys", name)}
    assert topicish - declared == set(), f"the topics table names undeclared {sorted(topicish - declared)}"
    diagram = architecture.split("```")[1]
    undrawn = {name for name in declared if not re.search(rf"(?<![\w.]){re.escape(name)}(?![\w])", diagram)}
    assert not undrawn, f"the architecture diagram lacks {sorted(undrawn)}"


# -- commands ---------------------------------------------------------------------


def shown_invocations(markdown: str) -> Iterator[str]:
    """Every ``o2o ...`` command line the text shows: in code blocks, tables and inline code."""
    blocks = markdown.split("```")
    for i, block in enumerate(blocks):
        chunks = [block] if i % 2 else CODE_SPAN.findall(block)
        for chunk in chunks:
            for line in chunk.splitlines():
                for part in re.split(r"&&|;|&", re.split(r"\s#", line, maxsplit=1)[0].replace("\\|", "|")):
                    found = re.search(r"(?:^|[\s/])o2o( .*)?$", part.strip())
                    if found and (found.group(1) or "").strip():
                        yield "o2o" + found.group(1).rstrip()


def options_of(command: click.Command) -> dict[str, click.Option]:
    """Every option a command accepts, by each of its names."""
    return {
        opt: param
        for param in command.params
        if isinstance(param, click.Option)
        for opt in (*param.opts, *param.secondary_opts)
    }


def check_invocation(cli: click.Group, line: str) -> list[str]:
    """Problems of one shown command line: unknown commands or options."""
    try:
        words = shlex.split(line)[1:]
    except ValueError:  # an unbalanced quote in prose
        words = line.split()[1:]
    command: click.Command = cli
    path = ["o2o"]
    problems = []
    takes_value: click.Option | None = None
    for word in (w.strip("[]().,") for w in words):
        option = re.match(r"(--?[a-z][a-z-]*)(=?)", word)
        if option:
            known = options_of(command)
            if option.group(1) in ("--help", "-h"):
                continue
            if option.group(1) not in known:
                problems.append(f"{line!r}: {' '.join(path)} has no option {option.group(1)}")
                continue
            given = known[option.group(1)]
            takes_value = None if given.is_flag or option.group(2) else given
            continue
        if takes_value is not None:
            choices = takes_value.type.choices if isinstance(takes_value.type, click.Choice) else None
            if choices is not None and re.fullmatch(r"[a-z_]+(\|[a-z_]+)*", word):
                unknown = [value for value in word.split("|") if value not in choices]
                if unknown:
                    problems.append(f"{line!r}: {takes_value.opts[0]} takes no {unknown}")
            takes_value = None
            continue
        if isinstance(command, click.Group) and re.fullmatch(r"[a-z][a-z-]*", word):
            sub = command.commands.get(word)
            if sub is None:
                problems.append(f"{line!r}: {' '.join(path)} has no command {word}")
                return problems
            command, path = sub, [*path, word]
    return problems


def test_every_command_and_option_the_readme_shows_exists() -> None:
    cli = full_cli()
    shown = list(shown_invocations(text(README)))
    assert len(shown) > 30, "the README's commands were not found"
    problems = [problem for line in shown for problem in check_invocation(cli, line)]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    "line",
    [
        "o2o stack sideways",
        "o2o run all --drian",
        "o2o attribution fit --modle markov",
        "o2o sql --format csv",
    ],
)
def test_the_command_check_sees_a_wrong_one(line: str) -> None:
    assert check_invocation(full_cli(), line)


# -- tests ------------------------------------------------------------------------


def test_every_test_file_is_in_the_readme_test_table() -> None:
    tests = section(text(README), "## Tests")
    unit_part, _, integration_part = tests.partition("**Integration tests**")
    for folder, part in (("unit", unit_part), ("integration", integration_part)):
        tabled = {name for row in table_rows(part) if row for name in code_names(row[0])}
        present = {path.name for path in (ROOT / "tests" / folder).glob("test_*.py")}
        assert present - tabled == set(), f"README's {folder} test table lacks {sorted(present - tabled)}"
        assert tabled - present == set(), f"README's {folder} test table names missing {tabled - present}"
