-- Data-driven attribution and re-attribution.
-- `attribution.model_version`: the fit a markov or shapley credit used ('' for rule models).
-- `attribution_models_store`: every fit `o2o attribution fit` published, with its weights;
-- the streaming stage credits with the newest fit of each kind.
-- A re-attributed conversion also re-splits its returns: like `attribution`, the
-- adjustments view keeps the newest version per (return, model).

ALTER TABLE {db}.attribution_store
    ADD COLUMN IF NOT EXISTS model_version String DEFAULT '' AFTER revenue_credit;

CREATE OR REPLACE VIEW {db}.attribution AS
SELECT
    a.conversion_id AS conversion_id, a.model AS model, a.session_id AS session_id,
    if(m.canonical_id = '', a.person_id, m.canonical_id) AS person_id,
    a.channel AS channel, a.campaign_name AS campaign_name, a.touch_at AS touch_at,
    a.converted_at AS converted_at, a.position AS position, a.credit AS credit,
    a.revenue_credit AS revenue_credit, a.model_version AS model_version, a.version AS version
FROM {db}.attribution_store AS a FINAL
LEFT JOIN {db}.person_map AS m ON m.person_id = a.person_id
WHERE (a.conversion_id, a.model, a.version) IN (
    SELECT conversion_id, model, max(version) FROM {db}.attribution_store GROUP BY conversion_id, model
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
WHERE (a.return_event_id, a.model, a.version) IN (
    SELECT return_event_id, model, max(version) FROM {db}.attribution_adjustments_store
    GROUP BY return_event_id, model
)
SETTINGS join_use_nulls = 0;

CREATE TABLE IF NOT EXISTS {db}.attribution_models_store
(
    kind LowCardinality(String),
    model_version String,
    fitted_at DateTime64(3, 'UTC'),
    markov_order UInt8,
    paths_used Float64,
    conversions_used Float64,
    weights String,
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (kind, model_version);

CREATE OR REPLACE VIEW {db}.attribution_models AS
SELECT
    kind, model_version, fitted_at, markov_order, paths_used, conversions_used, weights, version
FROM {db}.attribution_models_store FINAL;

-- one row per fit and channel; `latest` = 1 for the fit the stage uses now
CREATE OR REPLACE VIEW {db}.attribution_model_weights AS
SELECT
    kind, model_version, fitted_at, channel, weight,
    fitted_at = max(fitted_at) OVER (PARTITION BY kind) AS latest
FROM {db}.attribution_models_store FINAL
ARRAY JOIN
    JSONExtractKeys(weights) AS channel,
    arrayMap(k -> JSONExtractFloat(weights, k), JSONExtractKeys(weights)) AS weight;
