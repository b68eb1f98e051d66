-- DuckDB reference for the benchmark (bench/run.py): the per-merchant window aggregation of
-- transforms/scoring.py (compute_evidence's counts), written in plain SQL.
--
-- It is what a competent analyst would write to get the same evidence counts straight from the
-- files; it does NOT validate, quarantine, pseudonymise, detect campaigns, score, enforce or
-- publish. It is the yardstick for "how fast could the aggregation itself be".
--
-- bench/child.py runs one `views_*` section, then `reference`. Variables (SET VARIABLE):
--   <source>_csv / _jsonl / _parquet  lists of landing files (landing variant; UTF-8 CSV only:
--                                     DuckDB 2.0 cannot decode GB18030, so those files are excluded
--                                     and counted in docs/benchmarks.md)
--   <source>_staged                   lists of staged Parquet files (staged variant)
--   score_date DATE, as_of_end TIMESTAMPTZ (end of the business day, UTC),
--   short_days, extended_days, volume_threshold, response_deadline_hours,
--   resolution_deadline_days, return_deadline_days, mismatch_max_rating, mismatch_pattern
-- Session: SET TimeZone = 'UTC' (naive timestamps are UTC, per the contract).
--
-- Per-source semantics mirror the pipeline: deliveries dt <= score_date; sales, reviews,
-- complaints and returns read from deliveries inside the extended window (as load_inputs does);
-- the newest version wins for merchants and sales (delivery order) and for complaints and
-- returns (updated_at, then delivery order); the first delivery of a review id wins. Rows
-- whose required values do not cast are dropped (the pipeline quarantines them).

-- @section views_landing
-- CSV headers were checked by the runner to be the contract's column order, so the files are
-- read without sniffing (auto_detect=false, every column VARCHAR, then TRY_CAST); JSONL with an
-- explicit VARCHAR schema; Parquet with union_by_name. Every branch names every column.
CREATE OR REPLACE TEMP VIEW src_merchants AS
SELECT merchant_id, category, status, dt, filename AS file
FROM read_csv(getvariable('merchants_csv'), header = true, auto_detect = false, delim = ',', quote = '"',
              escape = '"', hive_partitioning = true, filename = true,
              columns = {merchant_id: 'VARCHAR', name: 'VARCHAR', category: 'VARCHAR', registered_on: 'VARCHAR',
                         license_expires_on: 'VARCHAR', status: 'VARCHAR'})
UNION ALL BY NAME
SELECT merchant_id, category, status, dt, filename AS file
FROM read_json(getvariable('merchants_jsonl'), format = 'newline_delimited', hive_partitioning = true, filename = true,
               columns = {merchant_id: 'VARCHAR', category: 'VARCHAR', status: 'VARCHAR'})
UNION ALL BY NAME
SELECT CAST(merchant_id AS VARCHAR) AS merchant_id, CAST(category AS VARCHAR) AS category,
       CAST(status AS VARCHAR) AS status, dt, filename AS file
FROM read_parquet(getvariable('merchants_parquet'), union_by_name = true, hive_partitioning = true, filename = true);

CREATE OR REPLACE TEMP VIEW src_sales AS
WITH raw AS (
    SELECT merchant_id, date, orders, late_shipments, cancellations, dt, filename
    FROM read_csv(getvariable('sales_csv'), header = true, auto_detect = false, delim = ',', quote = '"',
                  escape = '"', hive_partitioning = true, filename = true,
                  columns = {merchant_id: 'VARCHAR', date: 'VARCHAR', orders: 'VARCHAR', late_shipments: 'VARCHAR',
                             cancellations: 'VARCHAR'})
    UNION ALL BY NAME
    SELECT merchant_id, date, orders, late_shipments, cancellations, dt, filename
    FROM read_json(getvariable('sales_jsonl'), format = 'newline_delimited', hive_partitioning = true,
                   filename = true,
                   columns = {merchant_id: 'VARCHAR', date: 'VARCHAR', orders: 'VARCHAR', late_shipments: 'VARCHAR',
                              cancellations: 'VARCHAR'})
    UNION ALL BY NAME
    SELECT CAST(merchant_id AS VARCHAR) AS merchant_id, CAST(date AS VARCHAR) AS date,
           CAST(orders AS VARCHAR) AS orders, CAST(late_shipments AS VARCHAR) AS late_shipments,
           CAST(cancellations AS VARCHAR) AS cancellations, dt, filename
    FROM read_parquet(getvariable('sales_parquet'), union_by_name = true, hive_partitioning = true, filename = true)
)
SELECT merchant_id, TRY_CAST(date AS DATE) AS date, TRY_CAST(orders AS BIGINT) AS orders,
       TRY_CAST(late_shipments AS BIGINT) AS late_shipments, TRY_CAST(cancellations AS BIGINT) AS cancellations,
       dt, filename AS file
FROM raw;

CREATE OR REPLACE TEMP VIEW src_reviews AS
WITH raw AS (
    SELECT review_id, merchant_id, rating, text, created_at, verified_purchase, dt, filename
    FROM read_csv(getvariable('reviews_csv'), header = true, auto_detect = false, delim = ',', quote = '"',
                  escape = '"', hive_partitioning = true, filename = true,
                  columns = {review_id: 'VARCHAR', merchant_id: 'VARCHAR', order_id: 'VARCHAR',
                             reviewer_id: 'VARCHAR', rating: 'VARCHAR', text: 'VARCHAR', created_at: 'VARCHAR',
                             verified_purchase: 'VARCHAR'})
    UNION ALL BY NAME
    SELECT review_id, merchant_id, rating, text, created_at, verified_purchase, dt, filename
    FROM read_json(getvariable('reviews_jsonl'), format = 'newline_delimited', hive_partitioning = true,
                   filename = true,
                   columns = {review_id: 'VARCHAR', merchant_id: 'VARCHAR', rating: 'VARCHAR', text: 'VARCHAR',
                              created_at: 'VARCHAR', verified_purchase: 'VARCHAR'})
)
SELECT review_id, merchant_id, TRY_CAST(rating AS INTEGER) AS rating, text,
       TRY_CAST(created_at AS TIMESTAMPTZ) AS created_at,
       TRY_CAST(verified_purchase AS BOOLEAN) AS verified_purchase, dt, filename AS file
FROM raw
UNION ALL BY NAME
SELECT CAST(review_id AS VARCHAR) AS review_id, CAST(merchant_id AS VARCHAR) AS merchant_id,
       TRY_CAST(rating AS INTEGER) AS rating, CAST(text AS VARCHAR) AS text,
       TRY_CAST(created_at AS TIMESTAMPTZ) AS created_at, TRY_CAST(verified_purchase AS BOOLEAN) AS verified_purchase,
       dt, filename AS file
FROM read_parquet(getvariable('reviews_parquet'), union_by_name = true, hive_partitioning = true, filename = true);

CREATE OR REPLACE TEMP VIEW src_complaints AS
WITH raw AS (
    SELECT complaint_id, merchant_id, category, channel, status, opened_at, first_response_at, resolved_at,
           updated_at, dt, filename
    FROM read_csv(getvariable('complaints_csv'), header = true, auto_detect = false, delim = ',', quote = '"',
                  escape = '"', hive_partitioning = true, filename = true,
                  columns = {complaint_id: 'VARCHAR', merchant_id: 'VARCHAR', order_id: 'VARCHAR',
                             complainant_id: 'VARCHAR', category: 'VARCHAR', channel: 'VARCHAR',
                             opened_at: 'VARCHAR', first_response_at: 'VARCHAR', resolved_at: 'VARCHAR',
                             status: 'VARCHAR', text: 'VARCHAR', updated_at: 'VARCHAR'})
    UNION ALL BY NAME
    SELECT complaint_id, merchant_id, category, channel, status, opened_at, first_response_at, resolved_at,
           updated_at, dt, filename
    FROM read_json(getvariable('complaints_jsonl'), format = 'newline_delimited', hive_partitioning = true,
                   filename = true,
                   columns = {complaint_id: 'VARCHAR', merchant_id: 'VARCHAR', category: 'VARCHAR',
                              channel: 'VARCHAR', status: 'VARCHAR', opened_at: 'VARCHAR',
                              first_response_at: 'VARCHAR', resolved_at: 'VARCHAR', updated_at: 'VARCHAR'})
)
SELECT complaint_id, merchant_id, category, channel, status,
       TRY_CAST(opened_at AS TIMESTAMPTZ) AS opened_at, TRY_CAST(first_response_at AS TIMESTAMPTZ) AS first_response_at,
       TRY_CAST(resolved_at AS TIMESTAMPTZ) AS resolved_at, TRY_CAST(updated_at AS TIMESTAMPTZ) AS updated_at,
       dt, filename AS file
FROM raw
UNION ALL BY NAME
SELECT CAST(complaint_id AS VARCHAR) AS complaint_id, CAST(merchant_id AS VARCHAR) AS merchant_id,
       CAST(category AS VARCHAR) AS category, CAST(channel AS VARCHAR) AS channel, CAST(status AS VARCHAR) AS status,
       TRY_CAST(opened_at AS TIMESTAMPTZ) AS opened_at, TRY_CAST(first_response_at AS TIMESTAMPTZ) AS first_response_at,
       TRY_CAST(resolved_at AS TIMESTAMPTZ) AS resolved_at, TRY_CAST(updated_at AS TIMESTAMPTZ) AS updated_at,
       dt, filename AS file
FROM read_parquet(getvariable('complaints_parquet'), union_by_name = true, hive_partitioning = true, filename = true);

CREATE OR REPLACE TEMP VIEW src_returns AS
WITH raw AS (
    SELECT return_id, merchant_id, reason, status, requested_at, resolved_at, updated_at, dt, filename
    FROM read_csv(getvariable('returns_csv'), header = true, auto_detect = false, delim = ',', quote = '"',
                  escape = '"', hive_partitioning = true, filename = true,
                  columns = {return_id: 'VARCHAR', merchant_id: 'VARCHAR', order_id: 'VARCHAR',
                             requested_at: 'VARCHAR', reason: 'VARCHAR', status: 'VARCHAR', refund_amount: 'VARCHAR',
                             resolved_at: 'VARCHAR', updated_at: 'VARCHAR'})
    UNION ALL BY NAME
    SELECT return_id, merchant_id, reason, status, requested_at, resolved_at, updated_at, dt, filename
    FROM read_json(getvariable('returns_jsonl'), format = 'newline_delimited', hive_partitioning = true,
                   filename = true,
                   columns = {return_id: 'VARCHAR', merchant_id: 'VARCHAR', reason: 'VARCHAR', status: 'VARCHAR',
                              requested_at: 'VARCHAR', resolved_at: 'VARCHAR', updated_at: 'VARCHAR'})
)
SELECT return_id, merchant_id, reason, status, TRY_CAST(requested_at AS TIMESTAMPTZ) AS requested_at,
       TRY_CAST(resolved_at AS TIMESTAMPTZ) AS resolved_at, TRY_CAST(updated_at AS TIMESTAMPTZ) AS updated_at,
       dt, filename AS file
FROM raw
UNION ALL BY NAME
SELECT CAST(return_id AS VARCHAR) AS return_id, CAST(merchant_id AS VARCHAR) AS merchant_id,
       CAST(reason AS VARCHAR) AS reason, CAST(status AS VARCHAR) AS status,
       TRY_CAST(requested_at AS TIMESTAMPTZ) AS requested_at, TRY_CAST(resolved_at AS TIMESTAMPTZ) AS resolved_at,
       TRY_CAST(updated_at AS TIMESTAMPTZ) AS updated_at, dt, filename AS file
FROM read_parquet(getvariable('returns_parquet'), union_by_name = true, hive_partitioning = true, filename = true);

-- @section views_staged
-- The pipeline's own staged Parquet (typed, validated, deduplicated at staging): the same
-- input the score stage reads, except that the score stage reads reviews as daily aggregates.
CREATE OR REPLACE TEMP VIEW src_merchants AS
SELECT merchant_id, category, status, _dt AS dt, _file || ':' || lpad(CAST(_row_number AS VARCHAR), 12, '0') AS file
FROM read_parquet(getvariable('merchants_staged'));
CREATE OR REPLACE TEMP VIEW src_sales AS
SELECT merchant_id, date, orders, late_shipments, cancellations, _dt AS dt,
       _file || ':' || lpad(CAST(_row_number AS VARCHAR), 12, '0') AS file
FROM read_parquet(getvariable('sales_staged'));
CREATE OR REPLACE TEMP VIEW src_reviews AS
SELECT review_id, merchant_id, CAST(rating AS INTEGER) AS rating, text, created_at, verified_purchase, _dt AS dt,
       _file || ':' || lpad(CAST(_row_number AS VARCHAR), 12, '0') AS file
FROM read_parquet(getvariable('reviews_staged'));
CREATE OR REPLACE TEMP VIEW src_complaints AS
SELECT complaint_id, merchant_id, category, channel, status, opened_at, first_response_at, resolved_at, updated_at,
       _dt AS dt, _file || ':' || lpad(CAST(_row_number AS VARCHAR), 12, '0') AS file
FROM read_parquet(getvariable('complaints_staged'));
CREATE OR REPLACE TEMP VIEW src_returns AS
SELECT return_id, merchant_id, reason, status, requested_at, resolved_at, updated_at, _dt AS dt,
       _file || ':' || lpad(CAST(_row_number AS VARCHAR), 12, '0') AS file
FROM read_parquet(getvariable('returns_staged'));

-- @section reference
CREATE OR REPLACE TEMP TABLE reference AS
WITH
params AS (
    SELECT getvariable('score_date')::DATE AS d,
           getvariable('score_date')::DATE - (getvariable('extended_days')::INTEGER - 1) AS ws,
           getvariable('score_date')::DATE - (getvariable('short_days')::INTEGER - 1) AS short_start,
           getvariable('as_of_end')::TIMESTAMPTZ AS now_
),
registry AS (
    SELECT merchant_id, category, status
    FROM src_merchants, params
    WHERE merchant_id IS NOT NULL AND dt <= params.d
    QUALIFY row_number() OVER (PARTITION BY merchant_id ORDER BY dt DESC, file DESC) = 1
),
sales AS (
    SELECT s.merchant_id, s.date, s.orders, s.late_shipments, s.cancellations
    FROM src_sales s, params
    WHERE s.dt BETWEEN params.ws AND params.d AND s.merchant_id IS NOT NULL AND s.date IS NOT NULL
      AND s.date <= s.dt AND s.orders >= 0 AND s.late_shipments BETWEEN 0 AND s.orders
      AND s.cancellations BETWEEN 0 AND s.orders
    QUALIFY row_number() OVER (PARTITION BY s.merchant_id, s.date ORDER BY s.dt DESC, s.file DESC) = 1
),
windows AS (
    SELECT r.merchant_id,
           CASE WHEN coalesce(x.short_orders, 0) >= getvariable('volume_threshold')::BIGINT
                THEN getvariable('short_days')::INTEGER ELSE getvariable('extended_days')::INTEGER END AS window_days
    FROM registry r
    LEFT JOIN (SELECT merchant_id, sum(orders) AS short_orders FROM sales, params
               WHERE date >= params.short_start GROUP BY merchant_id) x USING (merchant_id)
),
win AS (
    SELECT merchant_id, window_days, params.d - (window_days - 1) AS window_start, params.d AS d, params.now_ AS now_
    FROM windows, params
),
s_agg AS (
    SELECT s.merchant_id, sum(s.orders) AS orders_count, sum(s.late_shipments) AS late_shipment_count,
           sum(s.cancellations) AS cancellation_count
    FROM sales s JOIN win w USING (merchant_id)
    WHERE s.date BETWEEN w.window_start AND w.d
    GROUP BY s.merchant_id
),
returns AS (
    SELECT r.*
    FROM src_returns r, params
    WHERE r.dt BETWEEN params.ws AND params.d AND r.return_id IS NOT NULL AND r.merchant_id IS NOT NULL
      AND r.requested_at IS NOT NULL
    QUALIFY row_number() OVER (PARTITION BY r.return_id
                               ORDER BY r.updated_at DESC NULLS LAST, r.dt DESC, r.file DESC) = 1
),
r_agg AS (
    SELECT r.merchant_id,
           count(*) AS return_count,
           count(*) FILTER (WHERE r.reason IN ('quality_defect', 'damaged')) AS defect_return_count,
           count(*) FILTER (WHERE r.reason = 'not_as_described') AS nad_return_count,
           count(*) FILTER (WHERE
               (r.status = 'rejected' AND r.reason IN ('quality_defect', 'not_as_described', 'damaged', 'wrong_item'))
               OR (r.resolved_at IS NULL AND r.status IN ('requested', 'approved')
                   AND w.now_ - r.requested_at > to_days(getvariable('return_deadline_days')::INTEGER))
               OR coalesce(r.resolved_at - r.requested_at > to_days(getvariable('return_deadline_days')::INTEGER),
                           false)) AS return_failure_count
    FROM returns r JOIN win w USING (merchant_id)
    WHERE CAST(r.requested_at AS DATE) BETWEEN w.window_start AND w.d
    GROUP BY r.merchant_id
),
complaints AS (
    SELECT c.*
    FROM src_complaints c, params
    WHERE c.dt BETWEEN params.ws AND params.d AND c.complaint_id IS NOT NULL AND c.merchant_id IS NOT NULL
      AND c.opened_at IS NOT NULL
    QUALIFY row_number() OVER (PARTITION BY c.complaint_id
                               ORDER BY c.updated_at DESC NULLS LAST, c.dt DESC, c.file DESC) = 1
),
c_agg AS (
    SELECT c.merchant_id,
           count(*) AS complaint_count,
           count(*) FILTER (WHERE c.category IN ('quality', 'counterfeit')) AS quality_complaint_count,
           count(*) FILTER (WHERE c.category = 'not_as_described') AS nad_complaint_count,
           count(*) FILTER (WHERE
               c.status = 'escalated' OR c.channel IN ('regulator', 'court')
               OR coalesce((c.first_response_at IS NULL
                            AND w.now_ - c.opened_at > to_hours(getvariable('response_deadline_hours')::INTEGER))
                           OR c.first_response_at - c.opened_at
                              > to_hours(getvariable('response_deadline_hours')::INTEGER), false)
               OR coalesce((c.status IN ('open', 'escalated')
                            AND w.now_ - c.opened_at > to_days(getvariable('resolution_deadline_days')::INTEGER))
                           OR c.resolved_at - c.opened_at
                              > to_days(getvariable('resolution_deadline_days')::INTEGER), false)
           ) AS complaint_failure_count
    FROM complaints c JOIN win w USING (merchant_id)
    WHERE CAST(c.opened_at AS DATE) BETWEEN w.window_start AND w.d
    GROUP BY c.merchant_id
),
reviews AS (
    SELECT v.merchant_id, v.rating, v.text, v.created_at, v.verified_purchase
    FROM src_reviews v, params
    WHERE v.dt BETWEEN params.ws AND params.d AND v.review_id IS NOT NULL AND v.merchant_id IS NOT NULL
      AND v.rating BETWEEN 1 AND 5 AND v.created_at IS NOT NULL AND v.verified_purchase IS NOT NULL
      AND v.created_at < CAST(v.dt + 1 AS TIMESTAMPTZ)
    QUALIFY row_number() OVER (PARTITION BY v.review_id ORDER BY v.dt, v.file) = 1
),
v_agg AS (
    SELECT v.merchant_id,
           count(*) AS review_count,
           count(*) FILTER (WHERE v.verified_purchase) AS verified_review_count,
           avg(v.rating) AS rating_mean_raw,
           count(*) FILTER (WHERE v.rating <= 2) AS low_rating_count,
           count(*) FILTER (WHERE v.rating <= getvariable('mismatch_max_rating')::INTEGER
                            AND regexp_matches(coalesce(v.text, ''), getvariable('mismatch_pattern')))
               AS mismatch_review_count
    FROM reviews v JOIN win w USING (merchant_id)
    WHERE CAST(v.created_at AS DATE) BETWEEN w.window_start AND w.d
    GROUP BY v.merchant_id
)
SELECT g.merchant_id, g.category, w.window_days,
       coalesce(s.orders_count, 0) AS orders_count,
       coalesce(s.late_shipment_count, 0) AS late_shipment_count,
       coalesce(s.cancellation_count, 0) AS cancellation_count,
       coalesce(r.return_count, 0) AS return_count,
       coalesce(r.defect_return_count, 0) AS defect_return_count,
       coalesce(r.nad_return_count, 0) AS nad_return_count,
       coalesce(c.complaint_count, 0) AS complaint_count,
       coalesce(c.quality_complaint_count, 0) AS quality_complaint_count,
       coalesce(c.nad_complaint_count, 0) AS nad_complaint_count,
       coalesce(r.return_failure_count, 0) + coalesce(c.complaint_failure_count, 0) AS after_sales_failure_count,
       coalesce(v.review_count, 0) AS review_count,
       coalesce(v.verified_review_count, 0) AS verified_review_count,
       coalesce(v.low_rating_count, 0) AS low_rating_count,
       coalesce(v.mismatch_review_count, 0) AS mismatch_review_count,
       v.rating_mean_raw
FROM registry g
JOIN win w USING (merchant_id)
LEFT JOIN s_agg s USING (merchant_id)
LEFT JOIN r_agg r USING (merchant_id)
LEFT JOIN c_agg c USING (merchant_id)
LEFT JOIN v_agg v USING (merchant_id);
