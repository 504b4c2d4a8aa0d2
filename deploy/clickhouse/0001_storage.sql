-- Storage tables. Each keeps the highest `version` of each deterministic id
-- (ReplacingMergeTree); analysts read the views of 0002, never these directly.
-- `{db}` is replaced by the configured database name.

CREATE TABLE IF NOT EXISTS {db}.events_store
(
    event_id String,
    person_id String,
    source LowCardinality(String),
    type LowCardinality(String),
    occurred_at DateTime64(3, 'UTC'),
    received_at DateTime64(3, 'UTC'),
    session_id String,
    store_id String,
    conversion_kind LowCardinality(String),
    revenue Float64,
    currency LowCardinality(String),
    campaign_source String,
    campaign_medium String,
    campaign_name String,
    page_url String,
    referrer String,
    consent_analytics UInt8,
    consent_marketing UInt8,
    properties String,
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(occurred_at)
ORDER BY event_id;

CREATE TABLE IF NOT EXISTS {db}.sessions_store
(
    session_id String,
    person_id String,
    kind LowCardinality(String),
    channel LowCardinality(String),
    started_at DateTime64(3, 'UTC'),
    ended_at DateTime64(3, 'UTC'),
    store_id String,
    event_count UInt32,
    page_views UInt32,
    screen_views UInt32,
    conversions UInt32,
    revenue Float64,
    campaign_source String,
    campaign_medium String,
    campaign_name String,
    landing String,
    referrer String,
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY session_id;

CREATE TABLE IF NOT EXISTS {db}.conversions_store
(
    conversion_id String,
    event_id String,
    person_id String,
    occurred_at DateTime64(3, 'UTC'),
    kind LowCardinality(String),
    source LowCardinality(String),
    revenue Float64,
    currency LowCardinality(String),
    order_id String,
    store_id String,
    session_id String,
    path_length UInt32,
    o2o_label LowCardinality(String),
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(occurred_at)
ORDER BY conversion_id;

CREATE TABLE IF NOT EXISTS {db}.attribution_store
(
    conversion_id String,
    model LowCardinality(String),
    session_id String,
    person_id String,
    channel LowCardinality(String),
    campaign_name String,
    touch_at DateTime64(3, 'UTC'),
    converted_at DateTime64(3, 'UTC'),
    position UInt32,
    credit Float64,
    revenue_credit Float64,
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(converted_at)
ORDER BY (conversion_id, model, session_id);

CREATE TABLE IF NOT EXISTS {db}.identities_store
(
    id_type LowCardinality(String),
    id_value String,
    person_id String,
    first_seen DateTime64(3, 'UTC'),
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (id_type, id_value);

CREATE TABLE IF NOT EXISTS {db}.person_aliases_store
(
    person_id String,
    canonical_id String,
    merged_at DateTime64(3, 'UTC'),
    reason LowCardinality(String),
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY person_id;

CREATE TABLE IF NOT EXISTS {db}.dead_letters_store
(
    dead_letter_id String,
    reason LowCardinality(String),
    detail String,
    payload String,
    topic String,
    partition Int32,
    offset Int64,
    received_at DateTime64(3, 'UTC'),
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY dead_letter_id;
