-- Ready-made views for analysts, on top of the deduplicated views.

-- Credited conversions and revenue per day, model, channel and campaign.
CREATE OR REPLACE VIEW {db}.credits_daily AS
SELECT
    toDate(converted_at) AS day, model, channel, campaign_name,
    sum(credit) AS conversions, sum(revenue_credit) AS revenue
FROM {db}.attribution
GROUP BY day, model, channel, campaign_name;

-- Credited conversions and revenue per store of the conversion ('' = online).
CREATE OR REPLACE VIEW {db}.credits_by_store AS
SELECT
    c.store_id AS store_id, a.model AS model, a.channel AS channel,
    sum(a.credit) AS conversions, sum(a.revenue_credit) AS revenue
FROM {db}.attribution AS a
INNER JOIN {db}.conversions AS c ON c.conversion_id = a.conversion_id
GROUP BY store_id, model, channel;

-- The channel sequence of every credited conversion (every model credits the
-- same touches, so one model's rows give the path).
CREATE OR REPLACE VIEW {db}.conversion_paths AS
SELECT
    conversion_id,
    arrayStringConcat(arrayMap(t -> t.2, arraySort(groupArray((position, channel)))), ' > ') AS path,
    count() AS touches
FROM {db}.attribution
WHERE (conversion_id, model) IN (SELECT conversion_id, min(model) FROM {db}.attribution GROUP BY conversion_id)
GROUP BY conversion_id;

-- The most common online-to-offline paths.
CREATE OR REPLACE VIEW {db}.o2o_paths AS
SELECT p.path AS path, c.o2o_label AS o2o_label, count() AS conversions, sum(c.revenue) AS revenue
FROM {db}.conversion_paths AS p
INNER JOIN {db}.conversions AS c ON c.conversion_id = p.conversion_id
GROUP BY path, o2o_label;
