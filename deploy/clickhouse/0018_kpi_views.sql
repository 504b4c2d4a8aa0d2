-- KPI views that store and online teams share (docs/data-model.md#kpi-views).
-- Every amount is per currency: no view adds one currency to another.

-- click_and_collect: one row per online order with fulfillment
-- 'click_and_collect', linked by order_id to its first pickup at a till.
-- picked_up 0: not collected yet (picked_up_at, hours_to_pickup NULL);
-- days_waiting counts the days since the order until now for those.
CREATE OR REPLACE VIEW {db}.click_and_collect AS
SELECT
    o.order_id AS order_id, o.person_id AS person_id, o.ordered_at AS ordered_at,
    o.order_source AS order_source, o.order_revenue AS order_revenue, o.currency AS currency,
    toUInt8(p.order_id != '') AS picked_up,
    if(picked_up = 1, p.picked_up_at, NULL) AS picked_up_at,
    if(picked_up = 1, p.store_id, o.store_id) AS store_id,
    p.staff_id AS pickup_staff_id,
    p.upsell_revenue AS upsell_revenue, p.upsell_currency AS upsell_currency,
    if(picked_up = 1, dateDiff('second', o.ordered_at, p.picked_up_at) / 3600, NULL) AS hours_to_pickup,
    if(picked_up = 1, 0, dateDiff('day', o.ordered_at, now64(3))) AS days_waiting
FROM (
    SELECT
        JSONExtractString(properties, 'order_id') AS order_id, argMin(person_id, occurred_at) AS person_id,
        min(occurred_at) AS ordered_at, argMin(source, occurred_at) AS order_source,
        argMin(revenue, occurred_at) AS order_revenue, argMin(currency, occurred_at) AS currency,
        argMin(store_id, occurred_at) AS store_id
    FROM {db}.events
    WHERE type = 'order_completed' AND JSONExtractString(properties, 'fulfillment') = 'click_and_collect'
    GROUP BY order_id
) AS o
LEFT JOIN (
    SELECT
        JSONExtractString(properties, 'order_id') AS order_id, min(occurred_at) AS picked_up_at,
        argMin(store_id, occurred_at) AS store_id,
        argMin(JSONExtractString(properties, 'staff_id'), occurred_at) AS staff_id,
        argMin(JSONExtractFloat(properties, 'upsell_revenue'), occurred_at) AS upsell_revenue,
        argMin(JSONExtractString(properties, 'currency'), occurred_at) AS upsell_currency
    FROM {db}.events
    WHERE type = 'click_and_collect_pickup'
    GROUP BY order_id
) AS p ON p.order_id = o.order_id
SETTINGS join_use_nulls = 0;

-- store_influence: online orders (web, app) whose path holds a visit to the
-- store, per day of the order and model, with the revenue that model credits
-- to the visits to that store. credits_by_store groups by the conversion's
-- own store, which online orders do not have.
CREATE OR REPLACE VIEW {db}.store_influence AS
SELECT
    s.store_id AS store_id, toDate(c.occurred_at) AS day, a.model AS model, c.currency AS currency,
    uniqExact(c.conversion_id) AS online_orders, sum(a.credit) AS credited_orders,
    sum(a.revenue_credit) AS credited_revenue
FROM {db}.attribution AS a
INNER JOIN {db}.sessions AS s ON s.session_id = a.session_id
INNER JOIN {db}.conversions AS c ON c.conversion_id = a.conversion_id
WHERE a.channel = 'store' AND s.store_id != '' AND c.source IN ('web', 'app')
GROUP BY store_id, day, model, currency;

-- store_visits_daily: per store and day, store visits (geofence and till
-- sessions), those with a purchase, the conversion rate (0-1), and first
-- visits (a person's first visit to that store ever) against returning ones.
CREATE OR REPLACE VIEW {db}.store_visits_daily AS
SELECT
    store_id, toDate(started_at) AS day, count() AS visits,
    countIf(conversions > 0) AS visits_with_purchase, visits_with_purchase / visits AS conversion_rate,
    countIf(nth = 1) AS first_visits, countIf(nth > 1) AS returning_visits
FROM (
    SELECT store_id, started_at, conversions,
           row_number() OVER (PARTITION BY person_id, store_id ORDER BY started_at, session_id) AS nth
    FROM {db}.sessions
    WHERE kind = 'store_visit' AND store_id != ''
)
GROUP BY store_id, day;

-- coupons: one row per coupon code claimed (coupon_claimed), with the channel
-- of the session it was claimed in, and its first redemption by a till
-- purchase or an online order carrying the code (properties.coupon_code).
CREATE OR REPLACE VIEW {db}.coupons AS
SELECT
    c.coupon_code AS coupon_code, c.person_id AS person_id, c.claimed_at AS claimed_at,
    c.claim_source AS claim_source, if(s.session_id = '', '', s.channel) AS claim_channel,
    toUInt8(r.coupon_code != '') AS redeemed,
    if(redeemed = 1, r.redeemed_at, NULL) AS redeemed_at,
    r.redeemed_source AS redeemed_source, r.store_id AS redeemed_store_id,
    r.revenue AS revenue, r.currency AS currency,
    if(redeemed = 1, dateDiff('second', c.claimed_at, r.redeemed_at) / 3600, NULL) AS hours_to_redeem
FROM (
    SELECT
        JSONExtractString(properties, 'coupon_code') AS coupon_code, min(occurred_at) AS claimed_at,
        argMin(person_id, occurred_at) AS person_id, argMin(session_id, occurred_at) AS session_id,
        argMin(source, occurred_at) AS claim_source
    FROM {db}.events
    WHERE type = 'coupon_claimed' AND coupon_code != ''
    GROUP BY coupon_code
) AS c
LEFT JOIN (
    SELECT
        JSONExtractString(properties, 'coupon_code') AS coupon_code, min(occurred_at) AS redeemed_at,
        argMin(source, occurred_at) AS redeemed_source, argMin(store_id, occurred_at) AS store_id,
        argMin(revenue, occurred_at) AS revenue, argMin(currency, occurred_at) AS currency
    FROM {db}.events
    WHERE type IN ('purchase', 'order_completed') AND coupon_code != ''
    GROUP BY coupon_code
) AS r ON r.coupon_code = c.coupon_code
LEFT JOIN {db}.sessions AS s ON s.session_id = c.session_id
SETTINGS join_use_nulls = 0;

-- staff_performance: per store, staff member, day and currency: till sales,
-- click-and-collect pickups handed over and those with an upsell, returns
-- taken back (amounts as positive numbers), from the till events' staff_id.
CREATE OR REPLACE VIEW {db}.staff_performance AS
SELECT
    store_id, JSONExtractString(properties, 'staff_id') AS staff_id, toDate(occurred_at) AS day,
    JSONExtractString(properties, 'currency') AS currency,
    countIf(type = 'purchase') AS sales,
    sumIf(JSONExtractFloat(properties, 'revenue'), type = 'purchase') AS sales_revenue,
    countIf(type = 'click_and_collect_pickup') AS pickups,
    countIf(type = 'click_and_collect_pickup' AND JSONExtractFloat(properties, 'upsell_revenue') > 0) AS upsells,
    sumIf(JSONExtractFloat(properties, 'upsell_revenue'), type = 'click_and_collect_pickup') AS upsell_revenue,
    countIf(type = 'return') AS returns,
    sumIf(JSONExtractFloat(properties, 'revenue'), type = 'return') AS returned_revenue
FROM {db}.events
WHERE source = 'pos' AND type IN ('purchase', 'click_and_collect_pickup', 'return') AND staff_id != ''
GROUP BY store_id, staff_id, day, currency;
