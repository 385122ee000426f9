-- Flow control beyond concurrency keys (an API workflow's or custom event's `throttle`,
-- `debounce` and `singleton`). Every job under flow control keeps a `flow_key` (its
-- concurrency key, or else its throttle key, with no `flow_limit`: no bound on how many
-- run at once), so that `claim_keyed_jobs` is the one claim that weighs them.
--
-- `started_ms`: when the job's latest claim started it, in milliseconds since the epoch
-- (every claim writes it), which a throttle counts: at most `throttle_limit` jobs of a
-- `throttle_key` started in the last `throttle_ms`.
-- `debounce_key`: while the job waits unstarted, a job scheduled with the same key takes
-- its place (its params, its due time) rather than being written beside it.
-- `single_key`: while the job waits or runs, a job with the same key is not written (the
-- scheduling run says so). Nullable, no default: adding them rewrites no row.
ALTER TABLE gateway_jobs ADD COLUMN throttle_key text, ADD COLUMN throttle_limit integer,
    ADD COLUMN throttle_ms bigint, ADD COLUMN started_ms bigint, ADD COLUMN debounce_key text,
    ADD COLUMN single_key text;

-- The starts of a throttle key, newest last: what a throttled claim counts.
CREATE INDEX gateway_jobs_throttle_starts ON gateway_jobs (throttle_key, started_ms)
WHERE throttle_key IS NOT NULL;
-- One unstarted pending job per debounce key (the one later schedulings replace).
CREATE UNIQUE INDEX gateway_jobs_debounce ON gateway_jobs (debounce_key)
WHERE status = 'pending' AND started_ms IS NULL AND debounce_key IS NOT NULL;
-- One waiting or running job per singleton key.
CREATE UNIQUE INDEX gateway_jobs_single ON gateway_jobs (single_key)
WHERE status IN ('pending', 'running') AND single_key IS NOT NULL;
