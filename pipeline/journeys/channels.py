"""The channel of a session: the brief's grouping, first match wins (pure)."""

from __future__ import annotations

from urllib.parse import urlsplit

from pipeline.model.contract import Event

SEARCH_ENGINES = (
    "google.", "bing.com", "yahoo.", "duckduckgo.com", "baidu.com", "yandex.", "ecosia.org",
    "qwant.com", "startpage.com", "search.brave.com", "naver.com", "seznam.cz",
)  # fmt: skip

MEDIUM_CHANNELS: dict[str, str] = {
    "cpc": "paid_search",
    "ppc": "paid_search",
    "paid_search": "paid_search",
    "paid_social": "paid_social",
    "social": "organic_social",
    "email": "email",
    "display": "display",
    "banner": "display",
    "cpm": "display",
    "affiliate": "affiliate",
    "push": "push",
    "sms": "sms",
    "qr": "qr",
}
CHANNELS = ("store", *dict.fromkeys(MEDIUM_CHANNELS.values()), "organic_search", "referral", "direct")


def _host(url: str) -> str:
    try:
        host = (urlsplit(url).hostname or "").lower()
    except ValueError:
        return ""
    return host.removeprefix("www.")


def is_search_engine(host: str) -> bool:
    """True for the hosts of well-known search engines."""
    return any(engine in host for engine in SEARCH_ENGINES)


def classify(event: Event, store_visit: bool = False) -> str:
    """The channel of a session that starts with ``event``."""
    if store_visit:
        return "store"
    context = event.get("context") or {}
    campaign = context.get("campaign") or {}
    medium = str(campaign.get("medium") or "").strip().lower()
    channel = MEDIUM_CHANNELS.get(medium)
    if channel in ("paid_search", "paid_social", "organic_social", "email", "display", "affiliate"):
        return channel
    etype = event.get("type")
    if medium == "push" or (event.get("source") == "app" and etype == "push_opened"):
        return "push"
    if medium == "sms":
        return "sms"
    if medium == "qr" or (event.get("source") == "app" and etype == "qr_scanned"):
        return "qr"
    page = context.get("page") or {}
    referrer_host = _host(str(page.get("referrer") or ""))
    if referrer_host:
        if is_search_engine(referrer_host):
            return "organic_search"
        if referrer_host != _host(str(page.get("url") or "")):
            return "referral"
    return "direct"
