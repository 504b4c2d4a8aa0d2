-- The online-to-offline split, for analysts and `o2o report`.
--
-- Credited conversions and revenue per day, model, conversion world, touch
-- world and channel:
--   conversion_world  'offline': a pos or geofence conversion (an in-store sale)
--                     'online':  a web or app order
--   touch_world       'store':   the credited touch is a store visit (channel 'store')
--                     'online':  the credited touch is a digital session
-- `returns` is the refund (negative) credited back from the touch by returns
-- (attribution_adjustments); `net_revenue` = revenue + returns. `day` is the
-- UTC day of the conversion, also for its returns. Conversions without
-- attribution rows (path_length = 0) are not in this view.
CREATE OR REPLACE VIEW {db}.o2o_split AS
SELECT
    toDate(c.occurred_at) AS day, r.model AS model,
    if(c.source IN ('pos', 'geofence'), 'offline', 'online') AS conversion_world,
    if(r.channel = 'store', 'store', 'online') AS touch_world,
    r.channel AS channel,
    sum(r.credit) AS conversions, sum(r.revenue_credit) AS revenue,
    sum(r.revenue_adjustment) AS returns,
    sum(r.revenue_credit) + sum(r.revenue_adjustment) AS net_revenue
FROM
(
    SELECT conversion_id, model, channel, credit, revenue_credit, toFloat64(0) AS revenue_adjustment
    FROM {db}.attribution
    UNION ALL
    SELECT conversion_id, model, channel, toFloat64(0), toFloat64(0), revenue_adjustment
    FROM {db}.attribution_adjustments
) AS r
INNER JOIN {db}.conversions AS c ON c.conversion_id = r.conversion_id
GROUP BY day, model, conversion_world, touch_world, channel;
