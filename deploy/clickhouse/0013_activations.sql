-- Activation decisions (the activation stage, docs/activation.md): one row per
-- rule and triggering event, sent, held out or suppressed with the guard that
-- stopped it (consent, quiet_hours, frequency_cap, duplicate, cancelled,
-- coupons_exhausted); and the delivery status of each decision posted by
-- `o2o activations deliver` (sending, delivered, failed, unknown).

CREATE TABLE IF NOT EXISTS {db}.activations_store
(
    decision_id String,
    rule LowCardinality(String),
    person_id String,
    trigger_event_id String,
    triggered_at DateTime64(3, 'UTC'),
    decided_at DateTime64(3, 'UTC'),
    channel LowCardinality(String),
    outcome LowCardinality(String),
    reason LowCardinality(String),
    store_id String,
    order_id String,
    coupon String,
    message String,
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY decision_id;

CREATE OR REPLACE VIEW {db}.activations AS
SELECT
    a.decision_id AS decision_id, a.rule AS rule,
    if(m.canonical_id = '', a.person_id, m.canonical_id) AS person_id,
    a.trigger_event_id AS trigger_event_id, a.triggered_at AS triggered_at, a.decided_at AS decided_at,
    a.channel AS channel, a.outcome AS outcome, a.reason AS reason, a.store_id AS store_id,
    a.order_id AS order_id, a.coupon AS coupon, a.message AS message
FROM {db}.activations_store AS a FINAL
LEFT JOIN {db}.person_map AS m ON m.person_id = a.person_id
SETTINGS join_use_nulls = 0;

CREATE TABLE IF NOT EXISTS {db}.activation_deliveries_store
(
    decision_id String,
    rule LowCardinality(String),
    person_id String,
    status LowCardinality(String),
    attempts UInt32,
    http_status UInt16,
    error String,
    updated_at DateTime64(3, 'UTC'),
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY decision_id;

CREATE OR REPLACE VIEW {db}.activation_deliveries AS
SELECT
    d.decision_id AS decision_id, d.rule AS rule,
    if(m.canonical_id = '', d.person_id, m.canonical_id) AS person_id,
    d.status AS status, d.attempts AS attempts, d.http_status AS http_status, d.error AS error,
    d.updated_at AS updated_at
FROM {db}.activation_deliveries_store AS d FINAL
LEFT JOIN {db}.person_map AS m ON m.person_id = d.person_id
SETTINGS join_use_nulls = 0;
