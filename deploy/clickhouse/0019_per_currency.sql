-- Revenue per currency in the ready-made views: each gets a `currency`
-- column (the conversion's), so no view adds one currency to another.
-- Summing a view's revenue over currencies is now a visible choice.

CREATE OR REPLACE VIEW {db}.credits_daily AS
SELECT
    toDate(a.converted_at) AS day, a.model AS model, a.channel AS channel, a.campaign_name AS campaign_name,
    c.currency AS currency, sum(a.credit) AS conversions, sum(a.revenue_credit) AS revenue
FROM {db}.attribution AS a
INNER JOIN {db}.conversions AS c ON c.conversion_id = a.conversion_id
GROUP BY day, model, channel, campaign_name, currency;

CREATE OR REPLACE VIEW {db}.credits_by_store AS
SELECT
    c.store_id AS store_id, a.model AS model, a.channel AS channel, c.currency AS currency,
    sum(a.credit) AS conversions, sum(a.revenue_credit) AS revenue
FROM {db}.attribution AS a
INNER JOIN {db}.conversions AS c ON c.conversion_id = a.conversion_id
GROUP BY store_id, model, channel, currency;

CREATE OR REPLACE VIEW {db}.o2o_paths AS
SELECT p.path AS path, c.o2o_label AS o2o_label, c.currency AS currency, count() AS conversions,
       sum(c.revenue) AS revenue
FROM {db}.conversion_paths AS p
INNER JOIN {db}.conversions AS c ON c.conversion_id = p.conversion_id
GROUP BY path, o2o_label, currency;

CREATE OR REPLACE VIEW {db}.o2o_split AS
SELECT
    toDate(c.occurred_at) AS day, r.model AS model,
    if(c.source IN ('pos', 'geofence'), 'offline', 'online') AS conversion_world,
    if(r.channel = 'store', 'store', 'online') AS touch_world,
    r.channel AS channel, c.currency AS currency,
    sum(r.credit) AS conversions, sum(r.revenue_credit) AS revenue,
    sum(r.revenue_adjustment) AS returns,
    sum(r.revenue_credit) + sum(r.revenue_adjustment) AS net_revenue
FROM
(
    SELECT conversion_id, model, channel, credit, revenue_credit, toFloat64(0) AS revenue_adjustment
    FROM {db}.attribution
    UNION ALL
    SELECT conversion_id, model, channel, toFloat64(0), toFloat64(0), revenue_adjustment
    FROM {db}.attribution_adjustments
) AS r
INNER JOIN {db}.conversions AS c ON c.conversion_id = r.conversion_id
GROUP BY day, model, conversion_world, touch_world, channel, currency;
