-- Late events and re-cut sessions.
-- `events.late` = 1: the event came later than the allowed lateness; it is
-- stored, but no session was rewritten for it.
-- `sessions_store.retracted` = 1: a late event joined this session to another
-- or gave it a new first event (so a new id); the view hides such sessions.

ALTER TABLE {db}.events_store
    ADD COLUMN IF NOT EXISTS late UInt8 DEFAULT 0 AFTER properties;

ALTER TABLE {db}.sessions_store
    ADD COLUMN IF NOT EXISTS retracted UInt8 DEFAULT 0 AFTER referrer;

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
    e.properties AS properties, e.late AS late, e.version AS version
FROM {db}.events_store AS e FINAL
LEFT JOIN {db}.person_map AS m ON m.person_id = e.person_id
SETTINGS join_use_nulls = 0;

CREATE OR REPLACE VIEW {db}.sessions AS
SELECT
    s.session_id AS session_id,
    if(m.canonical_id = '', s.person_id, m.canonical_id) AS person_id,
    s.kind AS kind, s.channel AS channel, s.started_at AS started_at, s.ended_at AS ended_at,
    s.store_id AS store_id, s.event_count AS event_count, s.page_views AS page_views,
    s.screen_views AS screen_views, s.conversions AS conversions, s.revenue AS revenue,
    s.campaign_source AS campaign_source, s.campaign_medium AS campaign_medium,
    s.campaign_name AS campaign_name, s.landing AS landing, s.referrer AS referrer,
    s.retracted AS retracted, s.version AS version
FROM {db}.sessions_store AS s FINAL
LEFT JOIN {db}.person_map AS m ON m.person_id = s.person_id
WHERE s.retracted = 0
SETTINGS join_use_nulls = 0;
