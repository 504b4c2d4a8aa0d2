-- Analysts' views: deduplicated, current state. person_id is always the
-- current canonical person (person_aliases maps merged persons to it).

CREATE OR REPLACE VIEW {db}.person_map AS
SELECT person_id, argMax(canonical_id, version) AS canonical_id
FROM {db}.person_aliases_store
GROUP BY person_id;

CREATE OR REPLACE VIEW {db}.events AS
SELECT
    e.event_id AS event_id,
    if(m.canonical_id = '', e.person_id, m.canonical_id) AS person_id,
    e.source AS source, e.type AS type, e.occurred_at AS occurred_at,
    e.received_at AS received_at, e.session_id AS session_id, e.store_id AS store_id,
    e.conversion_kind AS conversion_kind, e.revenue AS revenue, e.currency AS currency,
    e.campaign_source AS campaign_source, e.campaign_medium AS campaign_medium,
    e.campaign_name AS campaign_name, e.page_url AS page_url, e.referrer AS referrer,
    e.consent_analytics AS consent_analytics, e.consent_marketing AS consent_marketing,
    e.properties AS properties, e.version AS version
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
    s.version AS version
FROM {db}.sessions_store AS s FINAL
LEFT JOIN {db}.person_map AS m ON m.person_id = s.person_id
SETTINGS join_use_nulls = 0;

CREATE OR REPLACE VIEW {db}.conversions AS
SELECT
    c.conversion_id AS conversion_id, c.event_id AS event_id,
    if(m.canonical_id = '', c.person_id, m.canonical_id) AS person_id,
    c.occurred_at AS occurred_at, c.kind AS kind, c.source AS source, c.revenue AS revenue,
    c.currency AS currency, c.order_id AS order_id, c.store_id AS store_id,
    c.session_id AS session_id, c.path_length AS path_length, c.o2o_label AS o2o_label,
    c.version AS version
FROM {db}.conversions_store AS c FINAL
LEFT JOIN {db}.person_map AS m ON m.person_id = c.person_id
SETTINGS join_use_nulls = 0;

-- A re-attributed conversion gets a whole new version of its rows; a touch
-- that dropped out of the path keeps an older version, so only rows of the
-- newest version per (conversion, model) are current.
CREATE OR REPLACE VIEW {db}.attribution AS
SELECT
    a.conversion_id AS conversion_id, a.model AS model, a.session_id AS session_id,
    if(m.canonical_id = '', a.person_id, m.canonical_id) AS person_id,
    a.channel AS channel, a.campaign_name AS campaign_name, a.touch_at AS touch_at,
    a.converted_at AS converted_at, a.position AS position, a.credit AS credit,
    a.revenue_credit AS revenue_credit, a.version AS version
FROM {db}.attribution_store AS a FINAL
LEFT JOIN {db}.person_map AS m ON m.person_id = a.person_id
WHERE (a.conversion_id, a.model, a.version) IN (
    SELECT conversion_id, model, max(version) FROM {db}.attribution_store GROUP BY conversion_id, model
)
SETTINGS join_use_nulls = 0;

CREATE OR REPLACE VIEW {db}.identities AS
SELECT
    i.id_type AS id_type, i.id_value AS id_value,
    if(m.canonical_id = '', i.person_id, m.canonical_id) AS person_id,
    i.first_seen AS first_seen, i.version AS version
FROM {db}.identities_store AS i FINAL
LEFT JOIN {db}.person_map AS m ON m.person_id = i.person_id
SETTINGS join_use_nulls = 0;

CREATE OR REPLACE VIEW {db}.person_merges AS
SELECT person_id AS from_person, canonical_id AS to_person, merged_at, reason, version
FROM {db}.person_aliases_store FINAL;

CREATE OR REPLACE VIEW {db}.dead_letters AS
SELECT dead_letter_id, reason, detail, payload, topic, partition, offset, received_at
FROM {db}.dead_letters_store FINAL;
