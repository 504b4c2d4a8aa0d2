-- Returns never edit a conversion's credits: each return adds adjustment rows
-- (negative revenue) split over the original conversion's credited sessions,
-- per model, with the same weights.

CREATE TABLE IF NOT EXISTS {db}.attribution_adjustments_store
(
    adjustment_id String,
    conversion_id String,
    model LowCardinality(String),
    session_id String,
    person_id String,
    channel LowCardinality(String),
    return_event_id String,
    returned_at DateTime64(3, 'UTC'),
    revenue_adjustment Float64,
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY adjustment_id;

CREATE OR REPLACE VIEW {db}.attribution_adjustments AS
SELECT
    a.adjustment_id AS adjustment_id, a.conversion_id AS conversion_id, a.model AS model,
    a.session_id AS session_id,
    if(m.canonical_id = '', a.person_id, m.canonical_id) AS person_id,
    a.channel AS channel, a.return_event_id AS return_event_id, a.returned_at AS returned_at,
    a.revenue_adjustment AS revenue_adjustment, a.version AS version
FROM {db}.attribution_adjustments_store AS a FINAL
LEFT JOIN {db}.person_map AS m ON m.person_id = a.person_id
SETTINGS join_use_nulls = 0;
