"""Deterministic generator of realistic contract-v1 O2O events.

Each customer is a lazy stream: a plan of activities (web and app sessions,
newsletter and push visits, store visits, and follow-ups such as
click-and-collect pickups and returns) that turns into events only when the
merged output reaches the activity's start, so memory stays small for many
customers. Every activity reseeds one shared :class:`random.Random` from
``(seed, customer, activity)``, so the same seed gives byte-identical output,
and the per-customer streams are merged by event time. A ``return`` carries
the refunded amount as a positive ``revenue``.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from pipeline.simulate import customers as w
from pipeline.simulate.customers import CATALOG, CURRENCY, DAY_MS, MINUTE_MS, SHOP, Customer, Store, rfc3339
from pipeline.simulate.customers import local_offset as tz

DEFAULT_START = datetime(2026, 10, 1, tzinfo=UTC)
EVENTS_PER_CUSTOMER_DAY = 1.24
"""Average events per customer and day of :func:`simulate` (calibrated on 2,000 customers x 30 days)."""

Event = dict[str, Any]
Obj = dict[str, Any]
Ids = dict[str, str]
_Item = tuple[int, int, int, Event | None]  # (time, customer, counter, event or None)
NO: Obj = {}  # an absent context or properties object (never mutated)
_WEB, _APP, _STORE, _EMAIL, _PUSH, _PICKUP, _RETURN = range(7)
_WEB_DOW = (1.0, 0.95, 0.95, 1.0, 0.9, 0.85, 1.25)  # Monday first
_STORE_DOW = (0.7, 0.8, 1.0, 0.9, 1.1, 1.9, 0.0)  # stores are closed on Sunday


def count_estimate(customers: int, days: int) -> int:
    """A cheap estimate of how many events ``simulate(customers, days, ...)`` yields."""
    return round(max(0, customers) * max(0, days) * EVENTS_PER_CUSTOMER_DAY)


def simulate(
    customers: int, days: int, seed: int, start: datetime | None = None, stores: int = 12
) -> Iterator[Event]:
    """Contract-v1 events of ``customers`` customers over ``days`` days from ``start``, sorted by time.

    ``start`` defaults to 2026-10-01T00:00:00Z (a naive ``start`` is taken as UTC);
    every event falls in ``[start, start + days)``. The same arguments always
    give the same events, byte for byte.
    """
    run = w.World(seed, start or DEFAULT_START, days, stores)
    heap: list[tuple[_Item, Iterator[_Item]]] = []
    for index in range(customers):
        stream = _Journey(run, index).stream()
        first = next(stream, None)
        if first is not None:
            heap.append((first, stream))  # items never tie: they hold the customer index
    heapq.heapify(heap)
    pop, replace = heapq.heappop, heapq.heapreplace
    while heap:
        item, stream = heap[0]
        following = next(stream, None)
        if following is None:
            pop(heap)
        else:
            replace(heap, (following, stream))
        if item[3] is not None:
            yield item[3]


class _Journey:
    """One customer's plan and the events produced but not yet handed out."""

    __slots__ = ("c", "free_at", "n", "pending", "plan", "rng", "run", "seq")

    def __init__(self, run: w.World, index: int) -> None:
        self.run = run
        self.rng = run.rng
        self.c: Customer = w.make_customer(run.seed, index, len(run.stores), run.rng)
        self.plan: list[tuple[int, int, int, tuple[Any, ...]]] = []
        self.pending: list[_Item] = []
        self.seq = self.n = self.free_at = 0
        self._plan_days()

    def stream(self) -> Iterator[_Item]:
        """(time, customer, counter, event) in time order; a ``None`` event marks an activity's start."""
        plan, pending, idx = self.plan, self.pending, self.c.index
        while plan or pending:
            if plan and (not pending or plan[0][0] <= pending[0][0]):
                ts, seq, kind, args = heapq.heappop(plan)
                yield ts, idx, -seq, None  # events are made once the merged output gets here
                self.rng.seed(self.c.seed + seq * 0x9E3779B97F4A7C15)
                self._activity(ts, kind, args)
            else:
                yield heapq.heappop(pending)  # no local keeps the event alive once handed out

    def _schedule(self, ts: int, kind: int, args: tuple[Any, ...] = ()) -> None:
        if ts < self.run.end:
            self.seq += 1
            heapq.heappush(self.plan, (ts, self.seq, kind, args))

    def _plan_days(self) -> None:
        r, c, run = self.rng.random, self.c, self.run
        web, app, store = c.rates
        for day, (_, weekday) in enumerate(run.days):
            if r() < web * _WEB_DOW[weekday]:
                self._schedule(run.at(day, w.WEB_HOURS, r(), r()), _WEB)
            if c.device_id and r() < app:
                self._schedule(run.at(day, w.APP_HOURS, r(), r()), _APP)
            if r() < store * _STORE_DOW[weekday]:
                self._schedule(run.at(day, w.STORE_HOURS, r(), r()), _STORE, (self._store_index(),))
            if weekday in (1, 4) and c.email and c.marketing and r() < 0.08:
                self._schedule(run.at(day, w.EMAIL_HOURS, r(), r()), _EMAIL)
            if weekday in (0, 3, 5) and c.device_id and c.marketing and r() < 0.07:
                self._schedule(run.at(day, w.APP_HOURS, r(), r()), _PUSH)

    def _store_index(self) -> int:
        r, homes = self.rng.random(), self.c.home_stores
        return homes[int(r * len(homes))] if r < 0.85 else int(self.rng.random() * len(self.run.stores))

    def _later(self, ts: int, low: int, high: int) -> int | None:
        """Store hours ``low``..``high`` days after ``ts`` (never Sunday), or None past the end."""
        days = self.run.days
        day = (ts - self.run.start) // DAY_MS + low + int(self.rng.random() * (high - low + 1))
        if day < len(days) and days[day][1] == 6:
            day += 1
        if day >= len(days):
            return None
        return self.run.at(day, w.STORE_HOURS, self.rng.random(), self.rng.random())

    def _activity(self, ts: int, kind: int, args: tuple[Any, ...]) -> None:
        if kind == _WEB:
            self._web(ts, w.TRAFFIC[int(self.rng.random() * len(w.TRAFFIC))])
        elif kind == _EMAIL:
            self._web(ts, w.EMAIL_TRAFFIC)
        elif kind in (_APP, _PUSH):
            self._app(ts, push=kind == _PUSH)
        else:
            self._visit(ts, kind, args)

    def _emit(
        self, ts: int, src: str, kind: str, ids: Ids, off: int, ctx: Obj = NO, props: Obj = NO,
        consent: Obj = NO,
    ) -> None:  # fmt: skip
        if ts >= self.run.end:
            return
        c = self.c
        self.n += 1
        event: Event = {
            "event_id": f"{c.id_prefix}{self.n:012x}",
            "source": src,
            "type": kind,
            "occurred_at": rfc3339(ts, off),
            "ids": ids,
            "consent": consent or {"analytics": c.analytics, "marketing": c.marketing},
        }
        if ctx:
            event["context"] = ctx
        if props:
            event["properties"] = props
        heapq.heappush(self.pending, (ts, c.index, self.n, event))

    def _consent(self, ts: int, src: str, ids: Ids, off: int, ctx: Obj, method: str) -> None:
        """A consent_updated: most often marketing given or taken back; now and then analytics too."""
        c, r = self.c, self.rng.random
        if c.analytics and r() < 0.08:
            c.analytics = c.marketing = False
        elif c.analytics:
            c.marketing = not c.marketing if r() < 0.5 else c.marketing
        else:
            c.analytics = r() < 0.5
        stated = {"analytics": c.analytics, "marketing": c.marketing, "personalisation": c.marketing}
        self._emit(ts, src, "consent_updated", ids, off, ctx, {"method": method}, stated)

    def _items(self, most: int) -> list[Obj]:
        r, n = self.rng.random, len(CATALOG)
        return [w.line_item(CATALOG[int(r() * n)], 1 + (r() < 0.15)) for _ in range(1 + int(r() * most))]

    def _code(self, prefix: str) -> str:
        return f"{prefix}-{self.c.id_prefix[:4].upper()}{self.rng.getrandbits(20):05X}"

    def _web(self, ts: int, traffic: w.Traffic) -> None:
        c, r = self.c, self.rng.random
        cookie = c.cookies[0] if len(c.cookies) == 1 or r() < 0.65 else c.cookies[1]
        logged = c.user_id is not None and r() < c.remember_login
        off = tz(ts) if c.web_local_time else 0
        source, medium, names, extra, referrer = traffic
        url = f"{SHOP}/p/{CATALOG[int(r() * len(CATALOG))].sku}" if r() < 0.5 else f"{SHOP}/"
        landing: Obj = {}
        if source:
            name = f"newsletter_{rfc3339(ts, 0)[:10]}" if medium == "email" else names[int(r() * len(names))]
            landing["campaign"] = {"source": source, "medium": medium, "name": name}
            if extra:
                landing["campaign"]["term" if medium == "cpc" else "content"] = extra
            url += f"?utm_source={source.replace(' ', '+')}&utm_medium={medium}&utm_campaign={name}"
        landing["page"] = {"url": url, "referrer": referrer, "title": "ExampleShop"}

        def ids(email: bool = False) -> Ids:
            out = {"anonymous_id": cookie, "user_id": c.account} if logged else {"anonymous_id": cookie}
            if email:
                out["email"] = c.email_variant(self.rng)
            return out

        def page(path: str, title: str) -> Obj:
            return {"page": {"url": f"{SHOP}{path}", "referrer": f"{SHOP}/", "title": title}}

        self._emit(ts, "web", "page_view", ids(), off, landing)
        if r() < 0.004:  # the cookie banner, answered again
            at = ts + 4_000 + int(r() * 20_000)
            self._consent(at, "web", ids(), off, {"page": landing["page"]}, "banner")
        if r() < 0.3:
            return  # bounce
        t = ts
        if c.user_id and not logged and r() < 0.1:
            t += 20_000 + int(r() * 60_000)
            logged = True
            self._emit(t, "web", "login", ids(email=r() < 0.7), off, page("/account/login", "Sign in"))
        cart: list[Obj] = []
        intent = r() < (0.26 if source else 0.18)  # most visits only browse
        for _ in range(1 + int(r() * 5)):
            t += 15_000 + int(r() * 150_000)
            p = CATALOG[int(r() * len(CATALOG))]
            props = {"sku": p.sku, "name": p.name, "category": p.category, "price": p.price}
            self._emit(t, "web", "product_view", ids(), off, page(f"/p/{p.sku}", p.name), props)
            if intent and r() < 0.45:
                t += 5_000 + int(r() * 40_000)
                cart.append(w.line_item(p))
                self._emit(t, "web", "add_to_cart", ids(), off, page(f"/p/{p.sku}", p.name), w.line_item(p))
        if not cart:
            return
        t += 30_000 + int(r() * 120_000)
        checkout = {"cart_value": w.total(cart), "items": len(cart), "currency": CURRENCY}
        self._emit(t, "web", "checkout", ids(), off, page("/checkout", "Checkout"), checkout)
        if r() < 0.4:
            return  # abandoned checkout
        t += 20_000 + int(r() * 60_000)
        if c.user_id and not logged:
            logged = True
            self._emit(t, "web", "login", ids(email=r() < 0.7), off, page("/account/login", "Sign in"))
        elif not c.user_id and r() < 0.35:
            c.user_id, logged = c.account, True
            self._emit(t, "web", "signup", ids(email=True), off, page("/account/signup", "Create account"))
        c.email = c.email_address  # known from now on: checkout asks for it
        t += 40_000 + int(r() * 100_000)
        done = page("/checkout/done", "Thank you")
        self._order(t, "web", ids(email=not logged or r() < 0.5), off, cart, done)

    def _order(self, ts: int, src: str, ids: Ids, off: int, items: list[Obj], ctx: Obj) -> None:
        c, r = self.c, self.rng.random
        c.orders += 1
        order_id = f"ord-{c.id_prefix[:8]}-{c.index:x}-{c.orders:03d}"
        collect = r() < 0.35
        subtotal = w.total(items)
        revenue = subtotal if collect or subtotal >= 60 else round(subtotal + 4.9, 2)
        fulfillment = "click_and_collect" if collect else "delivery"
        props = {"order_id": order_id, "revenue": revenue, "currency": CURRENCY, "fulfillment": fulfillment}
        props["items"] = items
        if c.coupons and r() < 0.4:
            props["coupon_code"] = c.coupons.pop()
        store = self._store_index()
        if collect:
            props["store_id"] = self.run.stores[store].store_id
        self._emit(ts, src, "order_completed", ids, off, ctx, props)
        if r() < 0.3:  # the thank-you page or screen asks for feedback
            kind, answer = w.feedback(self.rng)
            self._emit(ts + 30_000 + int(r() * 60_000), src, kind, ids, off, ctx, answer)
        buyer = {"user_id": c.account} if "user_id" in ids else {"email": c.email_address}
        at = self._later(ts, 1, 2) if collect else self._later(ts, 4, 12)
        if at is None or ts >= self.run.end:
            return
        if collect and r() < 0.95:  # the rest never come
            self._schedule(at, _PICKUP, (store, order_id, buyer))
        elif not collect and r() < 0.08:
            self._schedule(at, _RETURN, (store, "order_id", order_id, revenue, buyer))

    def _app(self, ts: int, push: bool) -> None:
        c, r = self.c, self.rng.random
        off = tz(ts)

        def ids() -> Ids:
            device = c.device_id or ""
            return {"device_id": device, "user_id": c.account} if c.app_logged_in else {"device_id": device}

        def ctx() -> Obj:
            return {"app": {"name": w.APP_NAME, "version": c.app_version}}

        t = ts
        if push:
            name = w.PUSH_CAMPAIGNS[int(r() * len(w.PUSH_CAMPAIGNS))]
            opened = {**ctx(), "campaign": {"source": "app", "medium": "push", "name": name}}
            self._emit(t, "app", "push_opened", ids(), off, opened, {"message_id": self._code("msg")})
            t += 1_000 + int(r() * 3_000)
        self._emit(t, "app", "app_open", ids(), off, ctx())
        if r() < 0.005:
            t += 2_000 + int(r() * 10_000)
            self._consent(t, "app", ids(), off, ctx(), "app_settings")
        elif r() < 0.015:  # the in-app feedback prompt
            t += 2_000 + int(r() * 10_000)
            kind, answer = w.feedback(self.rng)
            self._emit(t, "app", kind, ids(), off, ctx(), answer)
        if c.user_id and not c.app_logged_in and r() < 0.7:
            t += 10_000 + int(r() * 30_000)
            c.app_logged_in = True
            self._emit(t, "app", "login", {**ids(), "email": c.email_variant(self.rng)}, off, ctx())
        cart: list[Obj] = []
        for _ in range(1 + int(r() * 5)):
            t += 8_000 + int(r() * 90_000)
            if r() < 0.4:
                screen = w.SCREENS[int(r() * len(w.SCREENS))]
                self._emit(t, "app", "screen_view", ids(), off, ctx(), {"screen_name": screen})
                continue
            p = CATALOG[int(r() * len(CATALOG))]
            self._emit(t, "app", "screen_view", ids(), off, ctx(), {"screen_name": "product", "sku": p.sku})
            if r() < 0.08:
                t += 3_000 + int(r() * 20_000)
                cart.append(w.line_item(p))
                self._emit(t, "app", "add_to_cart", ids(), off, ctx(), w.line_item(p))
        if r() < (0.35 if push else 0.08):
            self._coupon(t + 5_000 + int(r() * 30_000), ids(), off, ctx())
        if cart and c.app_logged_in and r() < 0.45:
            self._order(t + 30_000 + int(r() * 90_000), "app", ids(), off, cart, ctx())

    def _coupon(self, ts: int, ids: Ids, off: int, ctx: Obj) -> None:
        code = self._code("APP10")
        self.c.coupons.append(code)
        if self.c.loyalty_id:
            ids = {**ids, "loyalty_id": self.c.loyalty_id}  # the coupon is loaded onto the card
        self._emit(ts, "app", "coupon_claimed", ids, off, ctx, {"coupon_code": code, "discount_pct": 10})

    def _visit(self, ts: int, kind: int, args: tuple[Any, ...]) -> None:
        c, r = self.c, self.rng.random
        store = self.run.stores[args[0]]
        ts = max(ts, self.free_at + 5 * MINUTE_MS)  # one store at a time
        geo = bool(c.device_id and c.location)
        device = {"device_id": c.device_id or ""}
        here = {"store_id": store.store_id, "geo": {"lat": store.lat, "lon": store.lon}}
        fence = {"store_id": store.store_id, "geofence_id": store.geofence_id}
        length = (4 + int(r() * 36)) * MINUTE_MS + int(r() * 60_000)
        self.free_at = ts + length
        if geo:
            self._emit(ts, "geofence", "enter", device, 0, here, fence)
            if r() < 0.01:  # the location prompt of the store's offers
                self._consent(ts + 2_000, "geofence", device, 0, here, "location_prompt")
            for k in range(1, 4):
                if k * 300_000 < length - 60_000:
                    dwell = {**fence, "dwell_seconds": k * 300}
                    at = ts + k * 300_000 + int(r() * 9_000)
                    self._emit(at, "geofence", "dwell", device, 0, here, dwell)
        if c.device_id and r() < 0.18:
            self._in_store_app(ts + 60_000 + int(r() * (length // 2)), store)
        till = ts + length - 60_000 - int(r() * 60_000)
        if kind == _PICKUP:
            self._pickup(till, store, args[1], args[2])
        elif kind == _RETURN:
            self._return(till, store, *args[1:])
        elif r() < (0.55 if geo else 0.8):
            self._purchase(till, store, args[0])
        if geo and r() < 0.93:  # the others lose the signal; their visit times out
            self._emit(ts + length, "geofence", "exit", device, 0, here, fence)

    def _in_store_app(self, ts: int, store: Store) -> None:
        c, r = self.c, self.rng.random
        device = c.device_id or ""
        ids = {"device_id": device, "user_id": c.account} if c.app_logged_in else {"device_id": device}
        ctx: Obj = {"app": {"name": w.APP_NAME, "version": c.app_version}, "store_id": store.store_id}
        if r() < 0.6:
            name = w.QR_CAMPAIGNS[int(r() * len(w.QR_CAMPAIGNS))]
            ctx["campaign"] = {"source": "instore_poster", "medium": "qr", "name": name}
            sku = CATALOG[int(r() * len(CATALOG))].sku
            props = {"qr_id": f"qr-{store.store_id}-{name}", "store_id": store.store_id, "sku": sku}
            self._emit(ts, "app", "qr_scanned", ids, tz(ts), ctx, props)
        else:
            self._coupon(ts, ids, tz(ts), ctx)

    def _staff(self, store: Store) -> str:
        return store.staff[int(self.rng.random() * len(store.staff))]

    def _purchase(self, ts: int, store: Store, store_index: int) -> None:
        c, r = self.c, self.rng.random
        off, staff, here = tz(ts), self._staff(store), {"store_id": store.store_id}
        ids: Ids = {}
        scan: Ids = {}
        if c.loyalty_id and r() < 0.85:
            scan = {"loyalty_id": c.loyalty_id}
        elif not c.loyalty_id and r() < 0.08:  # joins the loyalty programme at the till
            c.loyalty_id, c.email = c.loyalty_card, c.email_address
            scan = {"loyalty_id": c.loyalty_id, "email": c.email_variant(self.rng)}
        if scan:
            phone = c.phone_variant(self.rng) if r() < 0.25 else None
            if phone:
                scan["phone"] = phone
            at = ts - 20_000 - int(r() * 40_000)
            self._emit(at, "pos", "loyalty_scan", scan, off, here, {**here, "staff_id": staff})
            if r() < 0.03:  # asked at the till, on the card's tablet
                self._consent(at + 5_000, "pos", {"loyalty_id": scan["loyalty_id"]}, off, here, "till")
            ids["loyalty_id"] = scan["loyalty_id"]
        if r() < 0.8 or not ids:
            ids["payment_token"] = c.cards[int(r() * len(c.cards))]
        if c.email and r() < 0.15:
            ids["email"] = c.email_variant(self.rng)  # e-receipt
        items = self._items(4)
        txn = f"txn-{store.store_id[-3:]}-{c.id_prefix[:8]}-{c.index:x}-{self.n:x}"
        props = {"transaction_id": txn, **here, "revenue": w.total(items), "currency": CURRENCY}
        props.update(staff_id=staff, items=items)
        if c.coupons and r() < 0.7:
            props["coupon_code"] = c.coupons.pop()
            props["revenue"] = round(w.total(items) * 0.9, 2)
        self._emit(ts, "pos", "purchase", ids, off, here, props)
        if r() < 0.06:  # the tablet at the till
            kind, answer = w.feedback(self.rng, staff)
            self._emit(ts + 20_000, "pos", kind, ids, off, here, {**here, **answer})
        back = self._later(ts, 2, 10)
        if back is not None and ts < self.run.end and r() < 0.05:
            self._schedule(back, _RETURN, (store_index, "transaction_id", txn, props["revenue"], ids))

    def _pickup(self, ts: int, store: Store, order_id: str, buyer: Ids) -> None:
        c, r = self.c, self.rng.random
        ids = dict(buyer)
        if c.loyalty_id and r() < 0.5:
            ids["loyalty_id"] = c.loyalty_id
        props: Obj = {"order_id": order_id, "store_id": store.store_id, "upsell_revenue": 0.0}
        props.update(currency=CURRENCY, staff_id=self._staff(store))
        if r() < 0.3:
            items = self._items(2)
            props["upsell_revenue"], props["items"] = w.total(items), items
            ids["payment_token"] = c.cards[int(r() * len(c.cards))]
        self._emit(ts, "pos", "click_and_collect_pickup", ids, tz(ts), {"store_id": store.store_id}, props)

    def _return(self, ts: int, store: Store, key: str, ref: str, amount: float, ids: Ids) -> None:
        r = self.rng.random
        refund = amount if r() < 0.6 else round(amount * (0.3 + 0.5 * r()), 2)
        reason = ("size", "damaged", "changed_mind")[int(r() * 3)]
        props = {key: ref, "store_id": store.store_id, "revenue": refund, "currency": CURRENCY}
        props.update(staff_id=self._staff(store), reason=reason)
        self._emit(ts, "pos", "return", dict(ids), tz(ts), {"store_id": store.store_id}, props)
