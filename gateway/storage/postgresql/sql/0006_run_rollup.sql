-- The run log's rollup (see gateway/storage/rollup.py), added to as runs are written: runs
-- per minute by workflow and status, and durations per ten minutes by workflow as a
-- histogram (bucket b: from 2^(b/4) ms up to 2^((b+1)/4) ms). The console's figures for a
-- day read these, not the day's runs.
CREATE TABLE gateway_run_minutes (
    minute   timestamptz NOT NULL,
    workflow text NOT NULL,
    status   text NOT NULL,
    runs     bigint NOT NULL,
    PRIMARY KEY (minute, workflow, status)
);
CREATE TABLE gateway_run_durations (
    period   timestamptz NOT NULL,
    workflow text NOT NULL,
    bucket   integer NOT NULL,
    runs     bigint NOT NULL,
    PRIMARY KEY (period, workflow, bucket)
);
-- The last two days of a log written before the rollup, counted once.
INSERT INTO gateway_run_minutes (minute, workflow, status, runs)
-- (cut in UTC, as the gateway's own tally cuts: date_trunc would cut in the session's zone)
SELECT to_timestamp(floor(extract(epoch FROM started_at) / 60) * 60), workflow, status, count(*)
FROM gateway_runs WHERE started_at >= now() - interval '2 days'
GROUP BY 1, 2, 3;
INSERT INTO gateway_run_durations (period, workflow, bucket, runs)
SELECT to_timestamp(floor(extract(epoch FROM started_at) / 600) * 600),
       workflow,
       CASE WHEN took <= power(2, -10) THEN -40
            WHEN took >= power(2, 27) THEN 108
            ELSE floor(log(2, took::numeric) * 4)::int END,
       count(*)
FROM (SELECT started_at, workflow, (data->>'duration_ms')::float8 AS took
      FROM gateway_runs
      WHERE started_at >= now() - interval '2 days'
        AND jsonb_typeof(data->'duration_ms') = 'number') AS timed
GROUP BY 1, 2, 3;
