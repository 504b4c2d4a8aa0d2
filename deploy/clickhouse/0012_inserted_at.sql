-- When ClickHouse stored each row (the insert's clock): how fresh the pipeline
-- is, measured where analysts read (o2o bench --live). The analyst views do
-- not show it.

ALTER TABLE {db}.events_store
    ADD COLUMN IF NOT EXISTS inserted_at DateTime64(3, 'UTC') DEFAULT now64(3);

ALTER TABLE {db}.conversions_store
    ADD COLUMN IF NOT EXISTS inserted_at DateTime64(3, 'UTC') DEFAULT now64(3);

ALTER TABLE {db}.attribution_store
    ADD COLUMN IF NOT EXISTS inserted_at DateTime64(3, 'UTC') DEFAULT now64(3);
