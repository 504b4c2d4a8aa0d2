-- Identifiers that did not link two persons, and why:
-- `unique_id`: the persons hold different user_id or loyalty_id values (never merged);
-- `shared_identifier`: the identifier came with more persons than
-- O2O_IDENTITY_MAX_PERSONS_PER_ID (a shared tablet) and stopped linking.

CREATE TABLE IF NOT EXISTS {db}.identity_conflicts_store
(
    conflict_id String,
    event_id String,
    occurred_at DateTime64(3, 'UTC'),
    person_id String,
    other_person String,
    id_type LowCardinality(String),
    id_value String,
    reason LowCardinality(String),
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY conflict_id;

CREATE OR REPLACE VIEW {db}.identity_conflicts AS
SELECT
    c.conflict_id AS conflict_id, c.event_id AS event_id, c.occurred_at AS occurred_at,
    if(m.canonical_id = '', c.person_id, m.canonical_id) AS person_id,
    if(o.canonical_id = '', c.other_person, o.canonical_id) AS other_person,
    c.id_type AS id_type, c.id_value AS id_value, c.reason AS reason, c.version AS version
FROM {db}.identity_conflicts_store AS c FINAL
LEFT JOIN {db}.person_map AS m ON m.person_id = c.person_id
LEFT JOIN {db}.person_map AS o ON o.person_id = c.other_person
SETTINGS join_use_nulls = 0;
