"""A record the consumer skipped is read again, not lost: identity, journeys and attribution.

After the drain every analyst view equals an undisturbed run row for row
(tests/integration/crash_runs.py).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pipeline.config import Settings
from tests.conftest import o2o
from tests.integration import crash_runs
from tests.integration.crash_runs import expect_same, keep_log, produce_piece

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

settings, events_file, undisturbed = crash_runs.FIXTURES  # bound here for pytest to find


def test_records_the_consumer_skipped_are_read_again(
    settings: Settings, events_file: Path, undisturbed: dict[str, list[tuple[object, ...]]]
) -> None:
    """A record faust's fetcher never handed over (it can, around a seek) is read again, not lost.

    Identity, journeys and attribution each skip the first record of their
    first batch in one drain of the whole input (ingest is through it
    before, so identity's first batch holds records that follow the one it
    skips; downstream, the next record of the partition shows the hole).
    """
    o2o(settings, "init")
    produce_piece(settings, events_file.read_bytes())
    o2o(settings, "run", "ingest", "--drain", timeout=120)
    stages = ("identity", "journeys", "attribution")
    faulty = settings.model_copy(update={"fault_at": ",".join(f"{stage}:misread:1" for stage in stages)})
    err = o2o(faulty, "run", "all", "--drain", timeout=240).stderr
    keep_log(settings, "misread", err)
    for stage in stages:
        assert f"{stage}: fault injected at misread" in err, err[-3000:]
        assert re.search(rf"{stage}: offsets \d+ to \d+ of .* reading them again", err), (stage, err[-3000:])
    expect_same(settings, undisturbed, drain=False)  # that drain read everything
