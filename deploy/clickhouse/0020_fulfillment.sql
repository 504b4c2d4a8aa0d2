-- How an online order is fulfilled (properties.fulfillment: 'delivery',
-- 'click_and_collect', ...; '' when the order does not say, and for in-store
-- conversions), stored with each conversion.

ALTER TABLE {db}.conversions_store
    ADD COLUMN IF NOT EXISTS fulfillment LowCardinality(String) DEFAULT '' AFTER staff_id;

CREATE OR REPLACE VIEW {db}.conversions AS
SELECT
    c.conversion_id AS conversion_id, c.event_id AS event_id,
    if(m.canonical_id = '', c.person_id, m.canonical_id) AS person_id,
    c.occurred_at AS occurred_at, c.kind AS kind, c.source AS source, c.revenue AS revenue,
    c.currency AS currency, c.order_id AS order_id, c.store_id AS store_id, c.staff_id AS staff_id,
    c.fulfillment AS fulfillment,
    c.session_id AS session_id, c.path_length AS path_length, c.o2o_label AS o2o_label,
    c.first_touch_at AS first_touch_at, c.time_to_convert_seconds AS time_to_convert_seconds,
    c.version AS version
FROM {db}.conversions_store AS c FINAL
LEFT JOIN {db}.person_map AS m ON m.person_id = c.person_id
SETTINGS join_use_nulls = 0;
