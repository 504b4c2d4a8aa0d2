-- The staff member of an in-store conversion (POS purchase, click-and-collect upsell).

ALTER TABLE {db}.conversions_store
    ADD COLUMN IF NOT EXISTS staff_id String DEFAULT '' AFTER store_id;

CREATE OR REPLACE VIEW {db}.conversions AS
SELECT
    c.conversion_id AS conversion_id, c.event_id AS event_id,
    if(m.canonical_id = '', c.person_id, m.canonical_id) AS person_id,
    c.occurred_at AS occurred_at, c.kind AS kind, c.source AS source, c.revenue AS revenue,
    c.currency AS currency, c.order_id AS order_id, c.store_id AS store_id, c.staff_id AS staff_id,
    c.session_id AS session_id, c.path_length AS path_length, c.o2o_label AS o2o_label,
    c.version AS version
FROM {db}.conversions_store AS c FINAL
LEFT JOIN {db}.person_map AS m ON m.person_id = c.person_id
SETTINGS join_use_nulls = 0;
