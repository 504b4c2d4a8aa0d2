"""Fitting Markov and Shapley on stored paths; the streaming stage credits with the newest fit."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import orjson
import pytest

from pipeline.attribution.paths import conversion_id_for
from pipeline.config import Settings
from tests.conftest import o2o, query

pytestmark = pytest.mark.integration


def test_fit_publish_store_and_credit_new_conversions(settings: Settings, tmp_path: Path) -> None:
    o2o(settings, "init")
    o2o(settings, "simulate", "--customers", "120", "--days", "10", "--seed", "1")
    o2o(settings, "run", "all", "--drain", timeout=300)
    before = query(settings, "SELECT count() FROM {db}.attribution WHERE model IN ('markov', 'shapley')")
    assert before == [(0,)]  # no fit yet: no data-driven credits

    # converting sessions since the middle of the simulated days, counted here in SQL
    (day,) = query(settings, "SELECT toString(toDate(min(started_at)) + 5) FROM {db}.sessions")[0]
    since, every = query(
        settings,
        f"SELECT countIf(conversions > 0 AND toDate(started_at) >= '{day}'), countIf(conversions > 0) "
        "FROM {db}.sessions",
    )[0]
    assert 0 < since < every

    # a dry run fits every path at the default order 1, prints, and publishes nothing (checked below)
    dry = o2o(settings, "attribution", "fit", "--dry-run", "--format", "json")
    assert f"{every:,} with a conversion" in dry.stderr and "fitted markov: version markov-o1-" in dry.stderr
    assert "published" not in dry.stderr
    assert {row["channel"] for row in orjson.loads(dry.stdout)} >= {"store", "direct"}

    fitted = o2o(
        settings, "attribution", "fit", "--since", day, "--order", "2", "--report", "--format", "json"
    )
    assert f"{since:,} with a conversion" in fitted.stderr and "version markov-o2-" in fitted.stderr
    weights = orjson.loads(fitted.stdout[fitted.stdout.index("[") :])
    assert {row["channel"] for row in weights} >= {"store", "direct"}
    for kind in ("markov", "shapley"):
        assert math.fsum(row[kind] for row in weights) == pytest.approx(1.0, abs=1e-3)  # rounded to 4 places

    # conversions after the fit (later than the simulated days) get markov and shapley credits
    later = [
        {"event_id": "n1", "source": "web", "type": "page_view", "occurred_at": "2026-11-20T10:00:00Z",
         "ids": {"anonymous_id": "new-1"},
         "context": {"campaign": {"medium": "cpc"}, "page": {"url": "https://shop.example/"}}},
        {"event_id": "n2", "source": "app", "type": "app_open", "occurred_at": "2026-11-21T10:00:00Z",
         "ids": {"anonymous_id": "new-1", "user_id": "new-u1"}},
        {"event_id": "n3", "source": "app", "type": "order_completed", "occurred_at": "2026-11-21T10:05:00Z",
         "ids": {"user_id": "new-u1"},
         "properties": {"order_id": "n-o1", "revenue": 70.0, "currency": "EUR", "fulfillment": "delivery"}},
    ]  # fmt: skip
    path = tmp_path / "later.jsonl"
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in later))
    o2o(settings, "produce", "--file", str(path))
    o2o(settings, "run", "all", "--drain", timeout=300)

    # stored rows, not the deduplicating view: the dry run published nothing; --since and
    # --order shaped the one published fit of each kind
    models = query(
        settings,
        "SELECT kind, model_version, markov_order, conversions_used FROM {db}.attribution_models_store "
        "ORDER BY kind",
    )
    assert [(k, o, c) for k, _v, o, c in models] == [("markov", 2, since), ("shapley", 1, since)]
    versions = {k: v for k, v, _o, _c in models}
    latest = query(
        settings,
        "SELECT kind, sum(weight) FROM {db}.attribution_model_weights "
        "WHERE latest GROUP BY kind ORDER BY kind",
    )
    assert [k for k, _ in latest] == ["markov", "shapley"] and all(s == pytest.approx(1.0) for _, s in latest)

    rows = query(
        settings,
        "SELECT conversion_id, model, model_version, credit, revenue_credit FROM {db}.attribution "
        "WHERE model IN ('markov', 'shapley')",
    )
    assert {r[1] for r in rows} == {"markov", "shapley"}, "the order after the fit is credited"
    assert {r[0] for r in rows} == {conversion_id_for("n3")}
    sums: dict[tuple[str, str], list[float]] = defaultdict(list)
    for conversion_id, model, version, credit, _revenue in rows:
        assert version == versions[model]
        sums[(conversion_id, model)].append(credit)
    assert all(math.fsum(credits) == pytest.approx(1.0, abs=1e-9) for credits in sums.values())
    revenue = dict(query(settings, "SELECT conversion_id, revenue FROM {db}.conversions"))
    by_conversion: dict[tuple[str, str], float] = defaultdict(float)
    for conversion_id, model, _version, _credit, money in rows:
        by_conversion[(conversion_id, model)] += money
    for (conversion_id, _model), money in by_conversion.items():
        assert money == pytest.approx(revenue[conversion_id], abs=1e-6)
