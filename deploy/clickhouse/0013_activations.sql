-- Activation decisions (the activation stage, docs/activation.md): one row per
-- rule and triggering event, sent, held out or suppressed with the guard that
-- stopped it (consent, quiet_hours, frequency_cap, duplicate, cancelled,
-- coupons_exhausted).

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
