-- activation_redemptions (docs/activation.md#coupons): each coupon an
-- activation decision handed out (outcome 'sent'), joined by its code to the
-- purchases and online orders that redeemed it (properties.coupon_code) at or
-- after the decision, with the conversion's revenue. same_person is 1 when
-- identity put the redemption on the person the coupon was sent to; a
-- redemption identity could not link (an anonymous till purchase) shows 0.

CREATE OR REPLACE VIEW {db}.activation_redemptions AS
SELECT
    a.decision_id AS decision_id, a.rule AS rule, a.person_id AS person_id, a.channel AS channel,
    a.coupon AS coupon, a.decided_at AS decided_at,
    r.event_id AS redeemed_event_id, r.source AS redeemed_source, r.occurred_at AS redeemed_at,
    r.person_id AS redeemed_by, toUInt8(r.person_id = a.person_id) AS same_person,
    c.conversion_id AS conversion_id, c.revenue AS revenue, c.currency AS currency
FROM {db}.activations AS a
INNER JOIN (
    SELECT event_id, source, occurred_at, person_id, JSONExtractString(properties, 'coupon_code') AS coupon
    FROM {db}.events
    WHERE type IN ('purchase', 'order_completed') AND coupon != ''
) AS r ON r.coupon = a.coupon
LEFT JOIN {db}.conversions AS c ON c.event_id = r.event_id
WHERE a.outcome = 'sent' AND a.coupon != '' AND r.occurred_at >= a.decided_at
SETTINGS join_use_nulls = 0;
