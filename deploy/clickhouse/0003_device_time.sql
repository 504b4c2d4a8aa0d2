-- The device's own clock reading of an event, before ingest corrected clock
-- skew from `sent_at` (equal to occurred_at when nothing was corrected).

ALTER TABLE {db}.events_store
    ADD COLUMN IF NOT EXISTS original_occurred_at DateTime64(3, 'UTC') DEFAULT occurred_at AFTER received_at;

CREATE OR REPLACE VIEW {db}.events AS
SELECT
    e.event_id AS event_id,
    if(m.canonical_id = '', e.person_id, m.canonical_id) AS person_id,
    e.source AS source, e.type AS type, e.occurred_at AS occurred_at,
    e.received_at AS received_at, e.original_occurred_at AS original_occurred_at,
    e.session_id AS session_id, e.store_id AS store_id,
    e.conversion_kind AS conversion_kind, e.revenue AS revenue, e.currency AS currency,
    e.campaign_source AS campaign_source, e.campaign_medium AS campaign_medium,
    e.campaign_name AS campaign_name, e.page_url AS page_url, e.referrer AS referrer,
    e.consent_analytics AS consent_analytics, e.consent_marketing AS consent_marketing,
    e.properties AS properties, e.version AS version
FROM {db}.events_store AS e FINAL
LEFT JOIN {db}.person_map AS m ON m.person_id = e.person_id
SETTINGS join_use_nulls = 0;
