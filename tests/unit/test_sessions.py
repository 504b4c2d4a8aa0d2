"""Sessionising rules: gaps, caps, store visits, channels."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from pipeline.journeys.channels import classify
from pipeline.journeys.sessions import Output, SessionRules
from pipeline.journeys.timeline import JourneyTimeline

MIN = 60_000
HOUR = 60 * MIN


def timeline() -> JourneyTimeline:
    return JourneyTimeline(
        SessionRules(timeout_ms=30 * MIN, max_length_ms=24 * HOUR, visit_timeout_ms=30 * MIN)
    )


COUNTER = itertools.count()


def ev(at: int, source: str = "web", etype: str = "page_view", **extra: Any) -> dict[str, Any]:
    return {
        "event_id": f"e{next(COUNTER):06d}",
        "person_id": "p1",
        "source": source,
        "type": etype,
        "occurred_at": at,
        **extra,
    }


def run(events: list[dict[str, Any]], flush: bool = True) -> list[Output]:
    """Events one by one, the watermark at the newest event time seen so far."""
    t, state, out = timeline(), None, []
    watermark = 0
    for e in events:
        state = t.place(state, [e], watermark, out)
        watermark = max(watermark, e["occurred_at"])
        state = t.advance(state, watermark, out)
    if flush and state is not None:
        t.close_all(state, out)
    return out


def session_ids(out: list[Output]) -> list[str]:
    """The newest session of each event, in the order the events were first emitted."""
    latest: dict[str, dict[str, Any]] = {}
    for kind, r in out:
        if kind == "event" and r["version"] >= latest.get(r["event_id"], {"version": -1})["version"]:
            latest[r["event_id"]] = r
    return [r["session_id"] for r in latest.values()]


def final_sessions(out: list[Output]) -> dict[str, dict[str, Any]]:
    latest: dict[str, dict[str, Any]] = {}
    for kind, r in out:
        if kind == "session" and r["version"] >= latest.get(r["session_id"], {"version": 0})["version"]:
            latest[r["session_id"]] = r
    return {sid: r for sid, r in latest.items() if not r["retracted"]}


def test_gap_just_under_30_minutes_stays_in_the_session() -> None:
    ids = session_ids(run([ev(0), ev(30 * MIN - 1000)]))
    assert ids[0] == ids[1]


def test_gap_of_30_minutes_starts_a_new_session() -> None:
    ids = session_ids(run([ev(0), ev(30 * MIN)]))
    assert ids[0] != ids[1]


def test_web_and_app_share_digital_sessions() -> None:
    ids = session_ids(run([ev(0), ev(5 * MIN, source="app", etype="screen_view")]))
    assert ids[0] == ids[1]


def test_session_never_exceeds_24_hours() -> None:
    events = [ev(i * 20 * MIN) for i in range(80)]  # 26+ hours of activity every 20 minutes
    sessions = final_sessions(run(events))
    assert len(sessions) == 2
    assert all(s["ended_at"] - s["started_at"] < 24 * HOUR for s in sessions.values())


def test_store_visit_from_enter_to_exit_with_pos_inside() -> None:
    store = {"context": {"store_id": "s1"}, "properties": {"store_id": "s1"}}
    out = run(
        [
            ev(0, "geofence", "enter", **store),
            ev(
                10 * MIN,
                "pos",
                "purchase",
                properties={"store_id": "s1", "revenue": 50, "transaction_id": "t"},
            ),
            ev(20 * MIN, "geofence", "exit", **store),
        ]
    )
    ids = session_ids(out)
    assert len(set(ids)) == 1
    (visit,) = final_sessions(out).values()
    assert visit["kind"] == "store_visit" and visit["channel"] == "store"
    assert (visit["started_at"], visit["ended_at"], visit["event_count"]) == (0, 20 * MIN, 3)
    assert visit["revenue"] == 50 and visit["conversions"] == 1
    assert [r["kind"] for k, r in out if k == "conversion"] == ["purchase"]


def test_pos_without_geofence_opens_a_visit_and_dwell_timeout_closes_it() -> None:
    pos = {"properties": {"store_id": "s9", "revenue": 10, "transaction_id": "t"}}
    out = run([ev(0, "pos", "purchase", **pos), ev(31 * MIN, "pos", "purchase", **pos)])
    ids = session_ids(out)
    assert ids[0] != ids[1]
    assert {s["store_id"] for s in final_sessions(out).values()} == {"s9"}


def test_digital_session_and_store_visit_overlap() -> None:
    out = run([ev(0, "geofence", "enter", context={"store_id": "s1"}), ev(MIN, "app", "screen_view")])
    kinds = sorted(s["kind"] for s in final_sessions(out).values())
    assert kinds == ["digital", "store_visit"]


def test_touch_emitted_once_per_session_before_its_conversion() -> None:
    out = run([ev(0), ev(MIN, etype="order_completed", properties={"revenue": 30, "order_id": "o1"})])
    kinds = [k for k, _ in out if k in ("touch", "conversion")]
    assert kinds == ["touch", "conversion"]


def test_the_watermark_closes_idle_sessions_then_finalises_them_after_the_lateness() -> None:
    t, out = timeline(), []
    state = t.place(None, [ev(0)], 0, out)
    state = t.place(state, [ev(MIN)], 0, out)
    assert [r["version"] for k, r in out if k == "session"] == [1]  # an open session's growth waits
    state = t.advance(state, 30 * MIN, out)
    assert [r["version"] for k, r in out if k == "session"] == [1]  # 29 min idle: still open
    state = t.advance(state, 31 * MIN, out)
    closed = [r for k, r in out if k == "session"][-1]
    assert (closed["version"], closed["event_count"], closed["ended_at"]) == (2, 2, MIN)
    assert state["events"], "held until the lateness has passed too"
    state = t.advance(state, 31 * MIN + HOUR - 1, out)
    assert state["events"]
    state = t.advance(state, 31 * MIN + HOUR, out)
    assert state["events"] == [] and state["next"] is None


def campaign(
    medium: str = "", referrer: str = "", source: str = "web", etype: str = "page_view"
) -> dict[str, Any]:
    return {
        "source": source,
        "type": etype,
        "context": {
            "campaign": {"medium": medium},
            "page": {"url": "https://shop.example/x", "referrer": referrer},
        },
    }


@pytest.mark.parametrize(
    ("event", "channel"),
    [
        (campaign("cpc"), "paid_search"),
        (campaign("PPC"), "paid_search"),
        (campaign("paid_social"), "paid_social"),
        (campaign("social"), "organic_social"),
        (campaign("email"), "email"),
        (campaign("banner"), "display"),
        (campaign("affiliate"), "affiliate"),
        (campaign("push"), "push"),
        (campaign(source="app", etype="push_opened"), "push"),
        (campaign("sms"), "sms"),
        (campaign(source="app", etype="qr_scanned"), "qr"),
        (campaign(referrer="https://www.google.de/search?q=x"), "organic_search"),
        (campaign(referrer="https://blog.example.org/post"), "referral"),
        (campaign(referrer="https://www.shop.example/cart"), "direct"),
        (campaign(), "direct"),
        (campaign("cpc", referrer="https://www.google.com/"), "paid_search"),
    ],
)
def test_channel_rules(event: dict[str, Any], channel: str) -> None:
    assert classify(event) == channel  # type: ignore[arg-type]


def test_store_visit_channel_wins() -> None:
    assert classify(campaign("cpc"), store_visit=True) == "store"  # type: ignore[arg-type]


def test_a_channel_rules_file_adds_rules_mediums_and_search_engines(tmp_path: Any) -> None:
    from pipeline.journeys.channels import load_channel_rules

    path = tmp_path / "channels.toml"
    path.write_text(
        'search_engines = ["kagi.com"]\n'
        '[mediums]\nnewsletter = "email"\ntv = "tv"\n'
        '[[rules]]\nchannel = "partner"\ncampaign_source = ["Partner-A", "partner-b"]\n'
        '[[rules]]\nchannel = "app_store"\nsource = "app"\nreferrer_contains = "apps.apple.com"\n'
    )
    rules = load_channel_rules(path)
    event = campaign("cpc")
    event["context"]["campaign"]["source"] = "partner-a"
    assert rules.classify(event) == "partner"  # type: ignore[arg-type]
    assert rules.classify(campaign("newsletter")) == "email"  # type: ignore[arg-type]
    assert rules.classify(campaign("tv")) == "tv"  # type: ignore[arg-type]
    assert rules.classify(campaign(referrer="https://kagi.com/search?q=x")) == "organic_search"  # type: ignore[arg-type]
    assert rules.classify(campaign(referrer="https://www.google.com/")) == "referral"  # type: ignore[arg-type]
    app = campaign(referrer="https://apps.apple.com/x", source="app", etype="screen_view")
    assert rules.classify(app) == "app_store"  # type: ignore[arg-type]
    assert rules.classify(app, store_visit=True) == "store"  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[rules]]\nmedium = 'x'\n", "needs channel"),
        ("[[rules]]\nchannel = 'x'\n", "at least one condition"),
        ("[[rules]]\nchannel = 'x'\ncolour = 'red'\n", "unknown keys"),
        ("[[rules]]\nchannel = 'x'\nmedium = 3\n", "string or a list"),
        ("[mediums]\ncpc = 1\n", "non-empty string"),
        ("[extra]\n", "unknown sections"),
        ("search_engines = 'google'\n", "list of non-empty strings"),
        ("[[rules]\n", "not valid TOML"),
    ],
)
def test_channel_rules_files_are_validated(tmp_path: Any, text: str, message: str) -> None:
    from pipeline.errors import ConfigError
    from pipeline.journeys.channels import load_channel_rules

    path = tmp_path / "channels.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_channel_rules(path)


def test_settings_reject_a_broken_channel_rules_file_at_start_up(tmp_path: Any) -> None:
    from pipeline.config import Settings
    from pipeline.errors import ConfigError

    path = tmp_path / "channels.toml"
    path.write_text("[[rules]]\nchannel = 'x'\n")
    with pytest.raises((ConfigError, ValueError), match="at least one condition"):
        Settings(channel_rules=path)  # type: ignore[call-arg]
