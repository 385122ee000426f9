-- The run log's rollup (see gateway/storage/rollup.py), added to as runs are written: runs
-- per minute by workflow and status, and durations per ten minutes by workflow as a
-- histogram (bucket b: from 2^(b/4) ms up to 2^((b+1)/4) ms). The console's figures for a
-- day read these, not the day's runs.
CREATE TABLE gateway_run_minutes (
    minute   TEXT NOT NULL,
    workflow TEXT NOT NULL,
    status   TEXT NOT NULL,
    runs     INTEGER NOT NULL,
    PRIMARY KEY (minute, workflow, status)
) WITHOUT ROWID;
CREATE TABLE gateway_run_durations (
    period   TEXT NOT NULL,
    workflow TEXT NOT NULL,
    bucket   INTEGER NOT NULL,
    runs     INTEGER NOT NULL,
    PRIMARY KEY (period, workflow, bucket)
) WITHOUT ROWID;
-- The last two days of a log written before the rollup, counted once.
INSERT INTO gateway_run_minutes (minute, workflow, status, runs)
SELECT substr(started_at, 1, 17) || '00.000000Z', workflow, status, count(*)
FROM gateway_runs WHERE started_at >= strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-2 days')
GROUP BY 1, 2, 3;
INSERT INTO gateway_run_durations (period, workflow, bucket, runs)
SELECT substr(started_at, 1, 15) || '0:00.000000Z', workflow,
       gateway_duration_bucket(json_extract(data, '$.duration_ms')), count(*)
FROM gateway_runs
WHERE started_at >= strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-2 days')
  AND json_type(data, '$.duration_ms') IN ('integer', 'real')
GROUP BY 1, 2, 3;
