-- Consent per person over time (docs/identity.md#consent): one row per
-- statement the identity stage recorded, i.e. every purpose a consent_updated
-- event states and every flag of another event that changed the person's
-- consent at its time. `previous` is what the flag was just before
-- ('granted', 'denied' or 'unknown'). consent_current holds each person's
-- newest statement per purpose, in event time.

CREATE TABLE IF NOT EXISTS {db}.consent_store
(
    consent_id String,
    person_id String,
    purpose LowCardinality(String),
    granted UInt8,
    previous LowCardinality(String),
    occurred_at DateTime64(3, 'UTC'),
    source LowCardinality(String),
    event_type LowCardinality(String),
    event_id String,
    method String,
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY consent_id;

CREATE OR REPLACE VIEW {db}.consent AS
SELECT
    c.consent_id AS consent_id,
    if(m.canonical_id = '', c.person_id, m.canonical_id) AS person_id,
    c.purpose AS purpose, c.granted AS granted, c.previous AS previous, c.occurred_at AS occurred_at,
    c.source AS source, c.event_type AS event_type, c.event_id AS event_id, c.method AS method
FROM {db}.consent_store AS c FINAL
LEFT JOIN {db}.person_map AS m ON m.person_id = c.person_id
SETTINGS join_use_nulls = 0;

CREATE OR REPLACE VIEW {db}.consent_current AS
SELECT
    person_id, purpose,
    argMax(granted, (occurred_at, consent_id)) AS granted,
    max(occurred_at) AS stated_at,
    count() AS statements
FROM {db}.consent
GROUP BY person_id, purpose;
