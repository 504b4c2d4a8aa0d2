"""The simulated world: stores, catalog, traffic sources, clocks and customer profiles.

Everything here is deterministic: stores and catalog are fixed tables, and a
:class:`Customer` is drawn from the caller's seeded :class:`random.Random` plus a
hash of ``(seed, index)``, never from global randomness or the wall clock.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_right
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from random import Random
from typing import Any

SHOP = "https://shop.example.com"
APP_NAME = "ExampleShop"
APP_VERSIONS = ("5.2.0", "5.3.1", "5.4.0", "5.4.2")
CURRENCY = "EUR"
DAY_MS = 86_400_000
MINUTE_MS = 60_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_CITIES = (
    ("Paris", 48.8566, 2.3522),
    ("Lyon", 45.7640, 4.8357),
    ("Marseille", 43.2965, 5.3698),
    ("Lille", 50.6292, 3.0573),
    ("Bordeaux", 44.8378, -0.5792),
    ("Nantes", 47.2184, -1.5536),
    ("Toulouse", 43.6047, 1.4442),
    ("Strasbourg", 48.5734, 7.7521),
    ("Nice", 43.7102, 7.2620),
    ("Rennes", 48.1173, -1.6778),
    ("Montpellier", 43.6108, 3.8767),
    ("Brussels", 50.8503, 4.3517),
)


@dataclass(frozen=True, slots=True)
class Store:
    """A physical store with its geofence and its staff."""

    store_id: str
    geofence_id: str
    city: str
    lat: float
    lon: float
    staff: tuple[str, ...]


def make_stores(count: int) -> tuple[Store, ...]:
    """``count`` stores (at least one), the same for every seed."""
    stores = []
    for k in range(max(1, count)):
        city, lat, lon = _CITIES[k % len(_CITIES)]
        nth = k // len(_CITIES)
        sid = f"store-{k + 1:03d}"
        staff = tuple(f"staff-{k + 1:03d}-{j:02d}" for j in range(1, 4 + k % 5))
        name = city if nth == 0 else f"{city} {nth + 1}"
        stores.append(
            Store(sid, f"gf-{sid}", name, round(lat + 0.013 * nth, 5), round(lon - 0.017 * nth, 5), staff)
        )
    return tuple(stores)


class World:
    """What all customers of a run share: the calendar, the stores and one Random (reseeded per activity)."""

    def __init__(self, seed: int, start: datetime, days: int, stores: int) -> None:
        if start.tzinfo is None:
            start = start.replace(tzinfo=UTC)
        self.seed = seed
        self.start = (start - _EPOCH) // timedelta(milliseconds=1)
        self.end = self.start + max(0, days) * DAY_MS
        self.days = [(self.start + d * DAY_MS, (start + timedelta(days=d)).weekday()) for d in range(days)]
        self.stores = make_stores(stores)
        self.rng = Random(seed)

    def at(self, day: int, hours: tuple[int, ...], r: float, r2: float) -> int:
        """Epoch ms on ``day`` at a local hour drawn from ``hours`` (``r``, ``r2`` uniform in [0, 1))."""
        start = self.days[day][0]
        local = int((hours[int(r * len(hours))] * 60 + r2 * 60) * MINUTE_MS)
        return start + local - local_offset(start) * MINUTE_MS


@dataclass(frozen=True, slots=True)
class Product:
    """One catalog entry."""

    sku: str
    name: str
    category: str
    price: float


_RANGES = {
    "shoes": (("Trail runner", 89.9), ("Leather boot", 149.0), ("Canvas sneaker", 59.9), ("Loafer", 119.0)),
    "outerwear": (("Rain jacket", 129.0), ("Wool coat", 219.0), ("Puffer jacket", 169.0), ("Fleece", 49.9)),
    "knitwear": (("Merino jumper", 79.9), ("Cardigan", 69.9), ("Cable knit", 89.0), ("Knit scarf", 29.9)),
    "shirts": (("Oxford shirt", 49.9), ("Linen shirt", 55.0), ("Flannel shirt", 45.0), ("Polo", 35.0)),
    "trousers": (("Chinos", 59.9), ("Selvedge jeans", 99.0), ("Cargo trousers", 69.0), ("Joggers", 39.9)),
    "accessories": (("Leather belt", 35.0), ("Beanie", 19.9), ("Tote bag", 24.9), ("Socks 3-pack", 14.9)),
}
CATALOG: tuple[Product, ...] = tuple(
    Product(f"SKU-{100 + 10 * c + j:04d}", name, category, price)
    for c, (category, items) in enumerate(_RANGES.items())
    for j, (name, price) in enumerate(items)
)
CATEGORIES: tuple[str, ...] = tuple(_RANGES)


def line_item(p: Product, quantity: int = 1) -> dict[str, Any]:
    """An order or basket line of ``quantity`` times product ``p``."""
    return {"sku": p.sku, "name": p.name, "category": p.category, "quantity": quantity, "price": p.price}


def total(items: list[dict[str, Any]]) -> float:
    """The value of some lines, rounded to cents."""
    return round(float(sum(i["price"] * i["quantity"] for i in items)), 2)


# Digital traffic: (campaign source, medium, campaign names, term or content, referrer), with weights.
Traffic = tuple[str, str, tuple[str, ...], str, str]
_TRAFFIC = (
    (17, "google", "cpc", "brand_search generic_shoes generic_outerwear", "winter jacket", "https://www.google.com/"),
    (21, "", "", "", "", "https://www.google.com/"),
    (3, "", "", "", "", "https://www.bing.com/"),
    (20, "", "", "", "", ""),
    (9, "facebook", "paid_social", "autumn_collection cart_retargeting", "", "https://m.facebook.com/"),
    (7, "instagram", "social", "influencer_drop story_link", "", "https://l.instagram.com/"),
    (5, "partner", "affiliate", "cashback_partner voucher_site", "", "https://www.partner-deals.example/"),
    (5, "display network", "display", "prospecting_banner retargeting_banner", "300x250", "https://ads.dsp.example/"),
    (6, "", "", "", "", "https://www.style-blog.example/autumn-picks"),
)  # fmt: skip
TRAFFIC: tuple[Traffic, ...] = tuple(
    (src, med, tuple(names.split()), extra, ref)
    for w, src, med, names, extra, ref in _TRAFFIC
    for _ in range(w)
)
EMAIL_TRAFFIC: Traffic = ("newsletter", "email", ("newsletter",), "", "")
_REVIEW_TEXTS = ("", "", "Great fit, fast delivery.", "Helpful staff.", "Queue was too long.",
                 "Colour differs from the photo.", "Will buy again.")  # fmt: skip
_SUPPORT_TOPICS = ("delivery", "return", "product", "payment", "loyalty")
_CONTACT_CHANNELS = ("phone", "chat", "email", "in_store", "social")


def feedback(rng: Random, staff_id: str = "") -> tuple[str, dict[str, Any]]:
    """A feedback event's type and properties: mostly reviews and NPS answers, skewed to happy."""
    r = rng.random
    pick = r()
    props: dict[str, Any]
    if pick < 0.4:
        props = {
            "rating": 5 - min(4, int(r() * r() * 6)),
            "text": _REVIEW_TEXTS[int(r() * len(_REVIEW_TEXTS))],
        }
        kind = "review"
    elif pick < 0.7:
        kind, props = "nps_response", {"score": 10 - min(10, int(r() * r() * 12))}
    elif pick < 0.88:
        kind = "survey_response"
        props = {"survey_id": "post_purchase", "answers": {"easy": r() < 0.8}, "score": round(r() * 10, 1)}
    else:
        kind = "support_contact"
        channel = _CONTACT_CHANNELS[int(r() * len(_CONTACT_CHANNELS))]
        props = {"contact_channel": channel, "topic": _SUPPORT_TOPICS[int(r() * len(_SUPPORT_TOPICS))]}
        props["resolved"] = r() < 0.7
    if staff_id:
        props["staff_id"] = staff_id
    return kind, props


PUSH_CAMPAIGNS = ("flash_sale", "back_in_stock", "loyalty_points", "weekend_offer")
QR_CAMPAIGNS = ("instore_new_collection", "window_poster", "fitting_room")
SCREENS = ("home", "search", "offers", "loyalty_card", "wishlist", "store_locator")

# Local hours weighted by how often each activity starts then (repeats are weights).
WEB_HOURS = (7, 8, 9, 10, 11, 12, 12, 13, 13, 14, 15, 16, 17, 18, 19, 19, 20, 20, 20, 21, 21, 21, 22, 22, 23)
APP_HOURS = (7, 8, 8, 9, 12, 12, 13, 13, 17, 18, 18, 19, 20, 20, 21, 21, 22, 22, 23)
STORE_HOURS = (10, 11, 11, 12, 12, 13, 14, 15, 15, 16, 16, 17, 17, 17, 18, 18)
EMAIL_HOURS = (8, 9, 9, 10, 12, 13, 18, 19, 20, 21)

_NAMES = (
    "marie lucas emma hugo lea louis chloe gabriel sarah arthur ines jules camille adam manon nathan julie",
    "martin bernard dubois thomas robert richard petit durand leroy moreau simon laurent michel garcia roux",
    "gmail.com outlook.com yahoo.fr orange.fr free.fr icloud.com proton.me gmx.de",
)
_FIRST, _LAST, _DOMAINS = (tuple(names.split()) for names in _NAMES)

# Segment: weight, daily probability of a web session, an app session, a store visit.
SEGMENTS: dict[str, tuple[int, float, float, float]] = {
    "digital": (30, 0.27, 0.15, 0.04),
    "omnichannel": (30, 0.16, 0.15, 0.11),
    "store_regular": (20, 0.06, 0.08, 0.2),
    "occasional": (20, 0.09, 0.07, 0.06),
}
_SEGMENT_DRAW = tuple(name for name, spec in SEGMENTS.items() for _ in range(spec[0]))


def _eu_transitions() -> tuple[int, ...]:
    """Epoch ms of the EU summer-time switches (last Sunday of March/October, 01:00 UTC), 1990-2100."""
    out: list[int] = []
    for year in range(1990, 2101):
        for month in (3, 10):
            last = datetime(year, month, 31, 1, tzinfo=UTC)
            day = 31 - (last.weekday() + 1) % 7
            out.append(int(datetime(year, month, day, 1, tzinfo=UTC).timestamp()) * 1000)
    return tuple(out)


_TRANSITIONS = _eu_transitions()
_SUFFIX = {0: "Z", 60: "+01:00", 120: "+02:00"}
_HOUR_PREFIX: dict[tuple[int, int], tuple[str, str]] = {}


def local_offset(ms: int) -> int:
    """The Central European offset in minutes (60 or 120) at ``ms`` epoch milliseconds."""
    return 120 if bisect_right(_TRANSITIONS, ms) % 2 else 60


def rfc3339(ms: int, offset: int) -> str:
    """``ms`` as RFC 3339 with millisecond precision in the given offset (0 gives ``Z``)."""
    hour, rest = divmod(ms + offset * MINUTE_MS, 3_600_000)
    key = (hour, offset)
    prefix = _HOUR_PREFIX.get(key)
    if prefix is None:
        if len(_HOUR_PREFIX) > 100_000:
            _HOUR_PREFIX.clear()
        sign = "+" if offset >= 0 else "-"
        suffix = _SUFFIX.get(offset) or f"{sign}{abs(offset) // 60:02d}:{abs(offset) % 60:02d}"
        prefix = _HOUR_PREFIX[key] = (
            datetime.fromtimestamp(hour * 3600, UTC).strftime("%Y-%m-%dT%H:"),
            suffix,
        )
    minutes, rest = divmod(rest, MINUTE_MS)
    secs, milli = divmod(rest, 1000)
    return f"{prefix[0]}{minutes:02d}:{secs:02d}.{milli:03d}{prefix[1]}"


def _uuid(bits: int) -> str:
    h = f"{bits:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


@dataclass(slots=True)
class Customer:
    """One simulated person: identifiers, consent, habits and the state their journey changes."""

    index: int
    seed: int
    id_prefix: str
    segment: str
    rates: tuple[float, float, float]
    cookies: list[str]
    device_id: str | None
    account: str
    user_id: str | None
    email_address: str
    email: str | None
    phone: str | None
    loyalty_card: str
    loyalty_id: str | None
    cards: list[str]
    analytics: bool
    marketing: bool
    home_stores: tuple[int, ...]
    location: bool
    web_local_time: bool
    app_version: str
    remember_login: float
    app_logged_in: bool = False
    coupons: list[str] = field(default_factory=list)
    orders: int = 0

    def phone_variant(self, rng: Random) -> str | None:
        """The phone as some till or form happened to spell it (all normalise to one number)."""
        if self.phone is None:
            return None
        digits = self.phone[3:]
        pick = rng.random()
        if pick < 0.4:
            return f"+33 {digits[0]} {digits[1:3]} {digits[3:5]} {digits[5:7]} {digits[7:]}"
        return f"0033{digits}" if pick < 0.55 else self.phone

    def email_variant(self, rng: Random) -> str:
        """The email as typed: mostly as is, sometimes capitalised or with stray spaces."""
        if rng.random() < 0.85:
            return self.email_address
        return " " + self.email_address.title() if rng.random() < 0.5 else self.email_address.upper()


def make_customer(seed: int, index: int, stores: int, rng: Random) -> Customer:
    """Customer ``index`` of the run with ``seed``; reseeds ``rng`` for this customer and draws from it."""
    digest = hashlib.blake2b(f"o2o-sim:{seed}:{index}".encode(), digest_size=32).digest()
    cust_seed = int.from_bytes(digest[10:18], "big")
    rng.seed(cust_seed)
    r = rng.random
    segment = _SEGMENT_DRAW[int(r() * len(_SEGMENT_DRAW))]
    _, web, app, store = SEGMENTS[segment]
    scale = 0.55 + r()
    hx = digest[:10].hex()
    has_app = r() < {"digital": 0.5, "omnichannel": 0.6, "store_regular": 0.3, "occasional": 0.25}[segment]
    has_account = r() < (0.85 if has_app else 0.45)
    first, last = _FIRST[int(r() * len(_FIRST))], _LAST[int(r() * len(_LAST))]
    email = f"{first}.{last}{index}@{_DOMAINS[int(r() * len(_DOMAINS))]}"
    knows_email = has_account or r() < 0.25
    device = None
    if has_app:
        device = _uuid(rng.getrandbits(128)).upper() if r() < 0.55 else f"{rng.getrandbits(64):016x}"
    cookies = [_uuid(rng.getrandbits(128)) for _ in range(2 if r() < 0.3 else 1)]
    loyalty = f"LC{(index * 104_729 + seed) % 10**12:012d}"
    has_loyalty = (
        r() < {"digital": 0.3, "omnichannel": 0.6, "store_regular": 0.75, "occasional": 0.3}[segment]
    )
    analytics = r() >= 0.01
    marketing = analytics and r() >= 0.05
    n_stores = max(1, stores)
    home = (int(r() * n_stores),) if r() < 0.7 else (int(r() * n_stores), int(r() * n_stores))
    return Customer(
        index=index,
        seed=cust_seed,
        id_prefix=f"{hx[:8]}-{hx[8:12]}-{hx[12:16]}-{hx[16:20]}-",
        segment=segment,
        rates=(web * scale, app * scale, store * scale),
        cookies=cookies,
        device_id=device,
        account=f"u_{digest[18:26].hex()}",
        user_id=f"u_{digest[18:26].hex()}" if has_account else None,
        email_address=email,
        email=email if knows_email else None,
        phone=f"+336{(index * 7919 + seed) % 10**8:08d}" if r() < 0.35 else None,
        loyalty_card=loyalty,
        loyalty_id=loyalty if has_loyalty else None,
        cards=[f"tok_{rng.getrandbits(96):024x}" for _ in range(2 if r() < 0.25 else 1)],
        analytics=analytics,
        marketing=marketing,
        home_stores=home,
        location=r() < 0.7,
        web_local_time=r() < 0.6,
        app_version=APP_VERSIONS[int(r() * len(APP_VERSIONS))],
        remember_login=0.3 + 0.5 * r(),
        app_logged_in=has_app and has_account and r() < 0.6,
    )
