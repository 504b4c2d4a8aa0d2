"""Personal data in URLs: e-mails, phone numbers and named parameters in query strings are hashed."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import orjson
import pytest

from pipeline.config import load_settings
from pipeline.ingest.normalize import EventNormalizer, hash_pii
from pipeline.ingest.url_pii import UrlScrubber

SALT = "test-salt-1234"
scrubber = UrlScrubber(SALT, "DE")


def query(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query, keep_blank_values=True)


def test_an_encoded_email_in_a_query_string_is_hashed_like_the_identifier() -> None:
    url = scrubber.scrub_url("https://shop.example/welcome?utm_source=mail&who=Alice%40Example.com#top")
    assert query(url) == {"utm_source": ["mail"], "who": ["sha256:" + hash_pii("alice@example.com", SALT)]}
    assert url.startswith("https://shop.example/welcome?") and url.endswith("#top")


@pytest.mark.parametrize(
    ("url", "param", "normal"),
    [
        ("https://s.example/?ref=%2B49%20170%201234567", "ref", "+491701234567"),
        ("https://s.example/?tel=0170%201234567", "tel", "+491701234567"),  # a named parameter, national form
        ("https://s.example/?e=somebody", "e", "somebody"),  # named: hashed whatever it holds
        ("https://s.example/?EMAIL=bob@example.com", "EMAIL", "bob@example.com"),
    ],
)
def test_phone_numbers_and_named_parameters_are_hashed(url: str, param: str, normal: str) -> None:
    assert query(scrubber.scrub_url(url))[param] == ["sha256:" + hash_pii(normal, SALT)]


@pytest.mark.parametrize(
    "url",
    [
        "https://s.example/p/123?utm_campaign=spring&order=12345678&q=shoes",  # numbers are not phones
        "https://s.example/?email=sha256:" + "a" * 64,  # hashed already
        "no url at all",
        "https://s.example/path",
    ],
)
def test_everything_else_stays_as_it_was(url: str) -> None:
    assert scrubber.scrub_url(url) == url


def test_ingest_stores_no_address_that_came_in_a_url() -> None:
    normalizer = EventNormalizer.from_settings(load_settings(salt=SALT))
    raw = orjson.dumps(
        {
            "event_id": "e1", "source": "web", "type": "page_view", "occurred_at": "2026-12-01T10:00:00Z",
            "ids": {"anonymous_id": "a1"},
            "context": {"page": {"url": "https://s.example/?email=carol%40example.com", "referrer": "x"}},
            "properties": {"links": ["https://s.example/?m=%2B4917012345678"]},
        }
    )  # fmt: skip
    event = normalizer.normalise(raw, received_at=1_796_119_201_000)
    stored = orjson.dumps(event)
    assert b"carol" not in stored and b"4917012345678" not in stored
    assert hash_pii("carol@example.com", SALT).encode() in stored


def test_a_quick_look_skips_objects_that_cannot_hold_one() -> None:
    assert not scrubber.needs(b'{"page": {"url": "https://s.example/?utm_source=news"}}')
    assert scrubber.needs(b'{"page": {"url": "https://s.example/?x=a%40b.de"}}')
    assert scrubber.needs(b'{"page": {"url": "https://s.example/?phone=1"}}')
