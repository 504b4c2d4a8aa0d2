-- activation_lift: per rule, persons messaged against persons held out, and
-- what they bought within 7 days of their first decision of the rule
-- (docs/activation.md#lift). `sale`: 'all', 'online' (web and app orders) or
-- 'store' (till purchases and pickup upsells). Rates are shares of persons
-- with at least one conversion; `lift` is the difference of the two rates,
-- `lift_low` and `lift_high` its 95% confidence interval (normal
-- approximation of two independent proportions). Revenue is kept per currency
-- (a map currency -> amount), never added across currencies.

CREATE OR REPLACE VIEW {db}.activation_lift AS
WITH
    decided AS (
        SELECT a.rule AS rule, a.person_id AS person_id, min(a.outcome) AS arm, min(a.decided_at) AS first_at
        FROM {db}.activations AS a
        WHERE a.outcome IN ('sent', 'holdout')
        GROUP BY a.rule, a.person_id
    ),
    joined AS (
        SELECT
            d.rule AS rule, s.sale AS sale, d.person_id AS person_id, d.arm AS arm,
            c.currency AS currency, c.revenue AS revenue,
            c.conversion_id != ''
                AND c.occurred_at >= d.first_at AND c.occurred_at < d.first_at + INTERVAL 7 DAY
                AND (s.sale = 'all' OR (s.sale = 'online') = (c.source IN ('web', 'app'))) AS counted
        FROM decided AS d
        CROSS JOIN (SELECT arrayJoin(['all', 'online', 'store']) AS sale) AS s
        LEFT JOIN {db}.conversions AS c ON c.person_id = d.person_id
    ),
    per_person AS (
        SELECT rule, sale, person_id, arm, max(counted) AS converted,
            sumMapIf(map(currency, revenue), counted) AS revenue
        FROM joined
        GROUP BY rule, sale, person_id, arm
    )
SELECT
    rule, sale,
    countIf(arm = 'sent') AS messaged,
    countIf(arm = 'holdout') AS held_out,
    countIf(arm = 'sent' AND converted) AS messaged_converted,
    countIf(arm = 'holdout' AND converted) AS held_out_converted,
    if(messaged = 0, 0, messaged_converted / messaged) AS messaged_rate,
    if(held_out = 0, 0, held_out_converted / held_out) AS held_out_rate,
    messaged_rate - held_out_rate AS lift,
    1.96 * sqrt(if(messaged = 0, 0, messaged_rate * (1 - messaged_rate) / messaged)
                + if(held_out = 0, 0, held_out_rate * (1 - held_out_rate) / held_out)) AS margin,
    lift - margin AS lift_low,
    lift + margin AS lift_high,
    sumMapIf(revenue, arm = 'sent') AS messaged_revenue,
    sumMapIf(revenue, arm = 'holdout') AS held_out_revenue,
    mapApply((currency, total) -> (currency, total / messaged), messaged_revenue)
        AS messaged_revenue_per_person,
    mapApply((currency, total) -> (currency, total / held_out), held_out_revenue)
        AS held_out_revenue_per_person
FROM per_person
GROUP BY rule, sale;
