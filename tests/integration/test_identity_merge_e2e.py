"""A cookie browsing, a loyalty card in a store, then a login that links them, through the real broker."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from pipeline.config import Settings
from pipeline.identity.graph import person_id_for
from tests.conftest import at, o2o, query
from tests.conftest import story_event as ev

pytestmark = pytest.mark.integration

EVENTS = [
    ev("w1", "web", "page_view", at(), {"anonymous_id": "c-ww"},
       context={"campaign": {"source": "google", "medium": "cpc", "name": "boots"},
                "page": {"url": "https://shop.example/boots"}}),
    ev("s1", "pos", "loyalty_scan", at(days=1, hours=1), {"loyalty_id": "L-ww"},
       context={"store_id": "s7"}, properties={"store_id": "s7"}),
    ev("l1", "web", "login", at(days=2), {"anonymous_id": "c-ww", "user_id": "u-ww", "loyalty_id": "L-ww"}),
    ev("o1", "web", "order_completed", at(days=2, minutes=5), {"user_id": "u-ww"},
       properties={"order_id": "o-ww", "revenue": 90.0, "currency": "EUR", "fulfillment": "delivery"}),
]  # fmt: skip


def test_the_next_conversion_after_the_linking_login_holds_both_worlds(
    settings: Settings, tmp_path: Path
) -> None:
    o2o(settings, "init")
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in EVENTS))
    o2o(settings, "produce", "--file", str(path))
    o2o(settings, "run", "all", "--drain")

    person = person_id_for("anonymous_id:c-ww")  # the oldest identifier names the person
    identities = query(settings, "SELECT id_type, person_id FROM {db}.identities ORDER BY id_type")
    assert identities == [("anonymous_id", person), ("loyalty_id", person), ("user_id", person)]
    merges = query(settings, "SELECT from_person, to_person FROM {db}.person_merges")
    assert merges == [(person_id_for("loyalty_id:L-ww"), person)]

    conversions = query(settings, "SELECT person_id, path_length, o2o_label FROM {db}.conversions")
    assert conversions == [(person, 3, "mixed")]  # the web ad, the store visit, the order's session
    credits = query(
        settings,
        "SELECT channel, credit FROM {db}.attribution WHERE model = 'linear' ORDER BY touch_at",
    )
    assert [c for c, _ in credits] == ["paid_search", "store", "direct"]
    assert all(credit == pytest.approx(1 / 3) for _, credit in credits)
    first = query(settings, "SELECT channel FROM {db}.attribution WHERE model = 'first_touch' AND credit = 1")
    assert first == [("paid_search",)]
