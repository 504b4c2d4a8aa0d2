-- How long a conversion's path took: from the start of its first touch to the conversion.

ALTER TABLE {db}.conversions_store
    ADD COLUMN IF NOT EXISTS first_touch_at DateTime64(3, 'UTC') DEFAULT occurred_at AFTER o2o_label;

ALTER TABLE {db}.conversions_store
    ADD COLUMN IF NOT EXISTS time_to_convert_seconds Float64 DEFAULT 0 AFTER first_touch_at;

CREATE OR REPLACE VIEW {db}.conversions AS
SELECT
    c.conversion_id AS conversion_id, c.event_id AS event_id,
    if(m.canonical_id = '', c.person_id, m.canonical_id) AS person_id,
    c.occurred_at AS occurred_at, c.kind AS kind, c.source AS source, c.revenue AS revenue,
    c.currency AS currency, c.order_id AS order_id, c.store_id AS store_id, c.staff_id AS staff_id,
    c.session_id AS session_id, c.path_length AS path_length, c.o2o_label AS o2o_label,
    c.first_touch_at AS first_touch_at, c.time_to_convert_seconds AS time_to_convert_seconds,
    c.version AS version
FROM {db}.conversions_store AS c FINAL
LEFT JOIN {db}.person_map AS m ON m.person_id = c.person_id
SETTINGS join_use_nulls = 0;

-- Credits (and return adjustments) are those of the conversion's newest version: a
-- re-attribution that leaves nothing to credit (every touch withdrawn) hides the old ones.
CREATE OR REPLACE VIEW {db}.attribution AS
SELECT
    a.conversion_id AS conversion_id, a.model AS model, a.session_id AS session_id,
    if(m.canonical_id = '', a.person_id, m.canonical_id) AS person_id,
    a.channel AS channel, a.campaign_name AS campaign_name, a.touch_at AS touch_at,
    a.converted_at AS converted_at, a.position AS position, a.credit AS credit,
    a.revenue_credit AS revenue_credit, a.model_version AS model_version, a.version AS version
FROM {db}.attribution_store AS a FINAL
LEFT JOIN {db}.person_map AS m ON m.person_id = a.person_id
WHERE (a.conversion_id, a.version) IN (
    SELECT conversion_id, max(version) FROM {db}.conversions_store GROUP BY conversion_id
)
SETTINGS join_use_nulls = 0;

CREATE OR REPLACE VIEW {db}.attribution_adjustments AS
SELECT
    a.adjustment_id AS adjustment_id, a.conversion_id AS conversion_id, a.model AS model,
    a.session_id AS session_id,
    if(m.canonical_id = '', a.person_id, m.canonical_id) AS person_id,
    a.channel AS channel, a.return_event_id AS return_event_id, a.returned_at AS returned_at,
    a.revenue_adjustment AS revenue_adjustment, a.version AS version
FROM {db}.attribution_adjustments_store AS a FINAL
LEFT JOIN {db}.person_map AS m ON m.person_id = a.person_id
WHERE (a.conversion_id, a.version) IN (
    SELECT conversion_id, max(version) FROM {db}.conversions_store GROUP BY conversion_id
)
SETTINGS join_use_nulls = 0;
