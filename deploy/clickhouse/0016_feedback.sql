-- Feedback (docs/data-model.md#feedback): reviews, NPS answers, survey
-- answers and support contacts from web, app and the till, one row each,
-- with what an analyst compares them by: the store, the channel of the
-- person's session before the feedback's own one, the O2O label of their
-- latest conversion before it, how their latest online order before it was
-- fulfilled, the staff member, and the activation decision that asked for it.
-- feedback_scores sums them up per dimension and value.

CREATE OR REPLACE VIEW {db}.feedback AS
WITH
    f AS (
        SELECT
            e.event_id AS event_id, e.person_id AS person_id, e.source AS source, e.type AS kind,
            e.occurred_at AS occurred_at, e.session_id AS session_id, e.store_id AS store_id,
            e.properties AS properties,
            if(s.session_id = '', e.occurred_at, s.started_at) AS own_start
        FROM {db}.events AS e
        LEFT JOIN {db}.sessions AS s ON s.session_id = e.session_id
        WHERE e.type IN ('review', 'nps_response', 'survey_response', 'support_contact')
            AND e.person_id != ''
    ),
    before_session AS (
        SELECT f.event_id AS event_id, s.channel AS channel
        FROM f
        ASOF LEFT JOIN (
            SELECT person_id, started_at, channel FROM {db}.sessions WHERE kind != ''
        ) AS s ON s.person_id = f.person_id AND s.started_at < f.own_start
    ),
    before_conversion AS (
        SELECT f.event_id AS event_id, c.o2o_label AS o2o_label
        FROM f
        ASOF LEFT JOIN (
            SELECT person_id, occurred_at, o2o_label FROM {db}.conversions
        ) AS c ON c.person_id = f.person_id AND c.occurred_at <= f.occurred_at
    ),
    before_order AS (
        SELECT f.event_id AS event_id, o.fulfilment AS fulfilment
        FROM f
        ASOF LEFT JOIN (
            SELECT person_id, occurred_at, JSONExtractString(properties, 'fulfillment') AS fulfilment
            FROM {db}.events WHERE type = 'order_completed'
        ) AS o ON o.person_id = f.person_id AND o.occurred_at <= f.occurred_at
    ),
    before_purchase AS (
        SELECT f.event_id AS event_id, p.staff_id AS staff_id, p.till_store AS till_store
        FROM f
        ASOF LEFT JOIN (
            SELECT person_id, occurred_at, store_id AS till_store, JSONExtractString(properties, 'staff_id') AS staff_id
            FROM {db}.events WHERE type IN ('purchase', 'click_and_collect_pickup')
        ) AS p ON p.person_id = f.person_id AND p.occurred_at <= f.occurred_at
    )
SELECT
    f.event_id AS event_id, f.person_id AS person_id, f.source AS source, f.kind AS kind,
    f.occurred_at AS occurred_at,
    if(f.store_id != '', f.store_id, bp.till_store) AS store_id,
    JSONExtract(f.properties, 'rating', 'Nullable(UInt8)') AS rating,
    multiIf(
        f.kind = 'nps_response', JSONExtract(f.properties, 'score', 'Nullable(Float64)'),
        f.kind = 'survey_response', JSONExtract(f.properties, 'score', 'Nullable(Float64)'),
        NULL
    ) AS score,
    multiIf(f.kind != 'nps_response' OR score IS NULL, '', score >= 9, 'promoter', score >= 7, 'passive', 'detractor')
        AS nps_group,
    if(JSONHas(f.properties, 'text'), JSONExtractString(f.properties, 'text'), JSONExtractString(f.properties, 'comment'))
        AS text,
    JSONExtractString(f.properties, 'survey_id') AS survey_id,
    JSONExtractString(f.properties, 'contact_channel') AS contact_channel,
    JSONExtractString(f.properties, 'topic') AS topic,
    if(JSONExtractString(f.properties, 'staff_id') != '', JSONExtractString(f.properties, 'staff_id'), bp.staff_id)
        AS staff_id,
    bs.channel AS preceding_channel,
    bc.o2o_label AS o2o_label,
    bo.fulfilment AS fulfilment,
    JSONExtractString(f.properties, 'decision_id') AS decision_id,
    a.rule AS rule
FROM f
LEFT JOIN before_session AS bs ON bs.event_id = f.event_id
LEFT JOIN before_conversion AS bc ON bc.event_id = f.event_id
LEFT JOIN before_order AS bo ON bo.event_id = f.event_id
LEFT JOIN before_purchase AS bp ON bp.event_id = f.event_id
LEFT JOIN {db}.activations AS a ON a.decision_id = JSONExtractString(f.properties, 'decision_id')
SETTINGS join_use_nulls = 0;

CREATE OR REPLACE VIEW {db}.feedback_scores AS
SELECT
    d.1 AS dimension, d.2 AS value,
    count() AS responses,
    countIf(kind = 'nps_response' AND nps_group != '') AS nps_responses,
    countIf(nps_group = 'promoter') AS promoters,
    countIf(nps_group = 'detractor') AS detractors,
    if(nps_responses = 0, NULL, round(100 * (promoters - detractors) / nps_responses, 1)) AS nps,
    countIf(kind = 'review') AS reviews,
    if(reviews = 0, NULL, round(avgIf(toFloat64(assumeNotNull(rating)), kind = 'review'), 2)) AS avg_rating,
    countIf(kind = 'support_contact') AS support_contacts
FROM {db}.feedback
ARRAY JOIN [
    ('store', store_id), ('preceding_channel', preceding_channel), ('o2o_label', o2o_label),
    ('fulfilment', fulfilment), ('staff_id', staff_id), ('rule', rule)
] AS d
WHERE d.2 != ''
GROUP BY dimension, value;
