-- Named query blocks for the PostgreSQL backend. `{placeholders}` are filled with
-- identifiers and expressions built by the backend (never with values); values are bound.

-- name: lock_migrations
SELECT pg_advisory_xact_lock(7245623001);

-- name: create_migrations_table
CREATE TABLE IF NOT EXISTS gateway_migrations (
    name       text PRIMARY KEY,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- name: applied_migrations
SELECT name FROM gateway_migrations ORDER BY name;

-- name: record_migration
INSERT INTO gateway_migrations (name) VALUES (%s);

-- name: ping
SELECT 1;

-- name: create_record
INSERT INTO gateway_records (id, type, data, created_at, modified_at, created_by)
VALUES (%s, %s, %s, %s, %s, %s);

-- name: get_record
SELECT id, type, data, created_at, modified_at, created_by
FROM gateway_records WHERE id = %s AND type = %s;

-- name: update_records
-- The rows are read and locked by the statement that writes them (`old`): the before and
-- after of each change come from the one transaction of the write, whatever else is
-- writing to the same records at the same time. {data} is the new document: the changes
-- merged in (`r.data || %(changes)s`), then each incremented field added up, from the
-- row's latest version, so concurrent increments never lose one another.
WITH old AS (
    SELECT id, type, data, created_at, modified_at, created_by
    FROM gateway_records WHERE id = ANY(%(ids)s) AND type = %(type)s
    FOR UPDATE
)
UPDATE gateway_records AS r SET data = {data}, modified_at = %(now)s
FROM old WHERE r.id = old.id
RETURNING old.id, old.type, old.data, old.created_at, old.modified_at, old.created_by,
          r.data, r.modified_at;

-- name: delete_records
DELETE FROM gateway_records WHERE id = ANY(%s) AND type = %s
RETURNING id, type, data, created_at, modified_at, created_by;

-- name: search_records
-- The total rides along as an uncorrelated subquery (evaluated once): one statement, one
-- snapshot, one round trip. An empty page falls back to count_records.
SELECT (SELECT count(*) FROM gateway_records WHERE {where}) AS total,
       id, type, data, created_at, modified_at, created_by
FROM gateway_records WHERE {where} ORDER BY {order} LIMIT %s OFFSET %s;

-- name: count_records
SELECT count(*) FROM gateway_records WHERE {where};

-- name: list_indexes
SELECT indexname FROM pg_indexes
WHERE schemaname = current_schema() AND tablename = 'gateway_records'
  AND (indexname LIKE 'gateway\_ix\_%%' OR indexname LIKE 'gateway\_ux\_%%');

-- name: create_index
CREATE {unique} INDEX IF NOT EXISTS {name} ON gateway_records ({expression}) WHERE type = {type};

-- name: drop_index
DROP INDEX IF EXISTS {name};

-- name: upsert_runs
-- A batch of runs, each id at most once, as one JSON array of `{id, workflow, status,
-- started_at, data}`: one parameter and one statement, rather than a statement per run.
INSERT INTO gateway_runs (id, workflow, status, started_at, data)
SELECT r.id, r.workflow, r.status, r.started_at, r.data
FROM jsonb_to_recordset(%s::jsonb)
    AS r(id text, workflow text, status text, started_at timestamptz, data jsonb)
ON CONFLICT (id) DO UPDATE SET
    workflow = excluded.workflow, status = excluded.status,
    started_at = excluded.started_at, data = excluded.data;

-- name: get_run
SELECT data FROM gateway_runs WHERE id = %s;

-- name: list_runs
SELECT data FROM gateway_runs
WHERE (%(workflow)s::text IS NULL OR workflow = %(workflow)s)
  AND (%(status)s::text IS NULL OR status = %(status)s)
  AND (%(since)s::timestamptz IS NULL OR started_at >= %(since)s)
  AND (%(source)s::text IS NULL OR data->>'source' = %(source)s)
  AND (%(until)s::timestamptz IS NULL OR started_at < %(until)s)
  AND (%(text)s::text IS NULL OR strpos(lower(data::text), lower(%(text)s)) > 0)
  AND (%(user)s::text IS NULL OR data->'identity'->>'user_id' = %(user)s
       OR data->'identity'->>'email' = lower(%(user)s))
ORDER BY started_at DESC, id DESC LIMIT %(limit)s;

-- name: purge_runs
DELETE FROM gateway_runs
WHERE (status <> 'failed' AND started_at < %s) OR (status = 'failed' AND started_at < %s);

-- name: create_key
INSERT INTO gateway_keys (label, hash, created_at) VALUES (%s, %s, %s) ON CONFLICT DO NOTHING;

-- name: list_keys
SELECT label, created_at, last_used_at, revoked_at FROM gateway_keys ORDER BY created_at, label;

-- name: revoke_key
UPDATE gateway_keys SET revoked_at = %s WHERE label = %s AND revoked_at IS NULL;

-- name: find_key
SELECT label, created_at, last_used_at, revoked_at FROM gateway_keys
WHERE hash = %s AND revoked_at IS NULL;

-- name: touch_key
UPDATE gateway_keys SET last_used_at = %s WHERE hash = %s;

-- name: create_credential
INSERT INTO gateway_credentials (email, user_id, password_hash) VALUES (%s, %s, %s)
ON CONFLICT DO NOTHING;

-- name: drop_stale_credential
-- The credential of a user whose record was deleted: its e-mail is free again.
DELETE FROM gateway_credentials WHERE email = %s AND NOT EXISTS (
    SELECT 1 FROM gateway_records AS r
    WHERE r.id = gateway_credentials.user_id AND r.type = 'user');

-- name: find_credential
-- Only a user whose record still exists, and who is not disabled, can log in.
SELECT c.user_id, c.password_hash FROM gateway_credentials AS c
JOIN gateway_records AS r ON r.id = c.user_id AND r.type = 'user'
WHERE c.email = %s
    AND NOT EXISTS (SELECT 1 FROM gateway_disabled_users AS d WHERE d.user_id = c.user_id);

-- name: move_credential
-- A user's log-in follows the e-mail its record shows.
UPDATE gateway_credentials SET email = %(email)s
WHERE user_id = %(user)s AND email <> %(email)s;

-- name: has_credential
SELECT 1 FROM gateway_credentials WHERE user_id = %s;

-- name: create_token
INSERT INTO gateway_tokens (hash, user_id, created_at, expires_at, last_used_at)
VALUES (%s, %s, %s, %s, %s);

-- name: find_token
-- A disabled user's tokens stop working.
SELECT t.user_id, t.created_at, t.expires_at, t.last_used_at FROM gateway_tokens AS t
WHERE t.hash = %s
    AND NOT EXISTS (SELECT 1 FROM gateway_disabled_users AS d WHERE d.user_id = t.user_id);

-- name: user_credential
-- The e-mail and password hash of a user who may log in.
SELECT c.email, c.password_hash FROM gateway_credentials AS c
JOIN gateway_records AS r ON r.id = c.user_id AND r.type = 'user'
WHERE c.user_id = %s
    AND NOT EXISTS (SELECT 1 FROM gateway_disabled_users AS d WHERE d.user_id = c.user_id);

-- name: set_password
UPDATE gateway_credentials SET password_hash = %s WHERE user_id = %s;

-- name: revoke_user_tokens
-- Every token of a user (the first parameter) but one (the second; NULL: none kept).
DELETE FROM gateway_tokens WHERE user_id = %s AND hash IS DISTINCT FROM %s RETURNING hash;

-- name: create_reset_token
INSERT INTO gateway_reset_tokens (hash, user_id, created_at, expires_at)
VALUES (%s, %s, %s, %s);

-- name: use_reset_token
-- A reset token is used once: it goes as it is read, expired or not.
DELETE FROM gateway_reset_tokens WHERE hash = %s RETURNING user_id, expires_at;

-- name: drop_reset_tokens
DELETE FROM gateway_reset_tokens WHERE user_id = %s;

-- name: purge_reset_tokens
DELETE FROM gateway_reset_tokens WHERE expires_at <= %s;

-- name: disable_user
INSERT INTO gateway_disabled_users (user_id, disabled_at) VALUES (%s, %s)
ON CONFLICT DO NOTHING;

-- name: enable_user
DELETE FROM gateway_disabled_users WHERE user_id = %s;

-- name: list_accounts
-- Users, oldest first, with whether each has a password and when it was disabled (the parameter: how many).
SELECT r.id, r.data->>'email', c.user_id IS NOT NULL, d.disabled_at, r.created_at
FROM gateway_records AS r
LEFT JOIN gateway_credentials AS c ON c.user_id = r.id
LEFT JOIN gateway_disabled_users AS d ON d.user_id = r.id
WHERE r.type = 'user'
ORDER BY r.created_at, r.id LIMIT %s;

-- name: find_account
-- A user by id or by e-mail (folded), as `list_accounts` shows it.
SELECT r.id, r.data->>'email', c.user_id IS NOT NULL, d.disabled_at, r.created_at
FROM gateway_records AS r
LEFT JOIN gateway_credentials AS c ON c.user_id = r.id
LEFT JOIN gateway_disabled_users AS d ON d.user_id = r.id
WHERE r.type = 'user' AND (r.id = %s OR lower(r.data->>'email') = %s)
ORDER BY r.created_at LIMIT 1;

-- name: touch_token
UPDATE gateway_tokens SET last_used_at = %s WHERE hash = %s;

-- name: revoke_token
DELETE FROM gateway_tokens WHERE hash = %s;

-- name: run_size
-- The average stored bytes (after compression) of the documents of the newest runs.
SELECT avg(pg_column_size(data))::bigint FROM (
    SELECT data FROM gateway_runs ORDER BY started_at DESC LIMIT %s
) AS newest;

-- name: trim_cutoff
-- The newest run past the budget (the parameter): it and every older run go.
SELECT started_at, id FROM gateway_runs ORDER BY started_at DESC, id DESC LIMIT 1 OFFSET %s;

-- name: trim_runs
-- One chunk of the oldest runs up to the cutoff, each chunk its own statement (and commit).
DELETE FROM gateway_runs WHERE id IN (
    SELECT id FROM gateway_runs
    WHERE started_at < %(at)s OR (started_at = %(at)s AND id <= %(id)s)
    ORDER BY started_at, id LIMIT %(chunk)s
);

-- name: purge_tokens
DELETE FROM gateway_tokens WHERE expires_at <= %s OR last_used_at <= %s;

-- name: claim_keys
-- A batch of claims, each key at most once: a new key, or one whose claim lapsed (its lease
-- ended while running) or whose answer expired, is claimed by its owner and returned; the
-- others are not returned, and `find_key_claims` says why. The batch is one JSON array of
-- `{scope, key, owner, lease, expires}` (one parameter, written in one go). Committed
-- without waiting for the WAL to reach the disk (`synchronous_commit` off for this
-- statement's transaction only): other instances see the claim at once, and a database
-- crash in the next few hundred milliseconds could lose it, which costs a redelivery that
-- runs again, as a gateway crash does. A later durable commit (the run's writes) makes it
-- durable too.
INSERT INTO gateway_idempotency (scope, key, owner, state, lease_until, expires_at)
SELECT c.scope, c.key, c.owner, 'running', c.lease, c.expires
FROM jsonb_to_recordset(%(claims)s::jsonb)
    AS c(scope text, key text, owner text, lease timestamptz, expires timestamptz),
    set_config('synchronous_commit', 'off', true) AS quick
ON CONFLICT (scope, key) DO UPDATE SET owner = excluded.owner, state = 'running',
    lease_until = excluded.lease_until, expires_at = excluded.expires_at,
    status = NULL, headers = NULL, body = NULL
WHERE (gateway_idempotency.state = 'running' AND gateway_idempotency.lease_until <= %(now)s)
    OR gateway_idempotency.expires_at <= %(now)s
RETURNING scope, key;

-- name: find_key_claims
SELECT i.scope, i.key, i.state, i.status, i.headers, i.body
FROM gateway_idempotency AS i
JOIN unnest(%b::text[], %b::text[]) AS c(scope, key) ON i.scope = c.scope AND i.key = c.key;

-- name: finish_keys
-- A batch of answers (one JSON array of `{scope, key, owner, status, headers, body}`, the
-- body in base64), each stored only if its owner still holds the key; committed as
-- `claim_keys` is (a database crash could lose the answers of its last few hundred
-- milliseconds: their redeliveries run again).
UPDATE gateway_idempotency AS i SET state = 'done', status = c.status, headers = c.headers,
    body = decode(c.body, 'base64')
FROM jsonb_to_recordset(%s::jsonb)
    AS c(scope text, key text, owner text, status integer, headers jsonb, body text),
    set_config('synchronous_commit', 'off', true) AS quick
WHERE i.scope = c.scope AND i.key = c.key AND i.owner = c.owner AND i.state = 'running';

-- name: fence_key
-- In an idempotent run's transaction, as it commits: the claim still its owner's (else the
-- run's writes roll back), held longer, until its answer is stored. Durable with the run's
-- writes, which makes the claim durable too.
UPDATE gateway_idempotency SET lease_until = greatest(lease_until, %s)
WHERE scope = %s AND key = %s AND owner = %s AND state = 'running';

-- name: release_key
DELETE FROM gateway_idempotency
WHERE scope = %s AND key = %s AND owner = %s AND state = 'running';

-- name: purge_keys
DELETE FROM gateway_idempotency WHERE expires_at <= %s;

-- name: hit_rate
INSERT INTO gateway_rate_limits (scope, who, bucket, count, expires_at)
VALUES (%s, %s, %s, 1, %s)
ON CONFLICT (scope, who) DO UPDATE SET
    count = CASE WHEN gateway_rate_limits.bucket = excluded.bucket
                 THEN gateway_rate_limits.count + 1 ELSE 1 END,
    bucket = excluded.bucket, expires_at = excluded.expires_at
RETURNING count;

-- name: purge_rates
DELETE FROM gateway_rate_limits WHERE expires_at <= %s;
-- name: enqueue_jobs
-- Many jobs in one statement, one array per column; a tick of a per-record series (its
-- `series` not null) only while its series is its record's current one as the statement
-- reads it; one written while its series is being replaced is cancelled by the worker that
-- claims it (`current_series`; 0009_job_series.sql).
-- A job whose `unique_key` is taken, or whose singleton key is waiting or running already,
-- is not written (jobs of debounced workflows are `enqueue_debounced`'s).
INSERT INTO gateway_jobs (id, workflow, source, status, due_at, attempt, unique_key, subject,
                          created_at, data, flow_key, flow_limit, throttle_key,
                          throttle_limit, throttle_ms, debounce_key, single_key)
SELECT id, workflow, source, 'pending', due_at, 0, unique_key, subject, created_at, data,
       flow_key, flow_limit, throttle_key, throttle_limit, throttle_ms, debounce_key,
       single_key
FROM unnest(%s::text[], %s::text[], %s::text[], %s::timestamptz[], %s::text[], %s::text[],
            %s::timestamptz[], %s::jsonb[], %s::text[], %s::text[], %s::integer[],
            %s::text[], %s::integer[], %s::bigint[], %s::text[], %s::text[])
    AS job (id, workflow, source, due_at, unique_key, subject, created_at, data, series,
            flow_key, flow_limit, throttle_key, throttle_limit, throttle_ms, debounce_key,
            single_key)
WHERE job.series IS NULL OR EXISTS (
    SELECT 1 FROM gateway_series s
    WHERE s.workflow = job.workflow AND s.subject = job.subject AND s.series = job.series)
ON CONFLICT DO NOTHING
RETURNING id;

-- name: enqueue_debounced
-- A job of a debounced workflow: while a job with its debounce key waits unstarted, that
-- job takes this one's params, due time and keys instead (the id returned is then that
-- job's); otherwise it is written. Two at once on one key: the second waits for the first's
-- transaction, then replaces what it wrote.
INSERT INTO gateway_jobs (id, workflow, source, status, due_at, attempt, unique_key, subject,
                          created_at, data, flow_key, flow_limit, throttle_key,
                          throttle_limit, throttle_ms, debounce_key, single_key)
VALUES (%s, %s, %s, 'pending', %s, 0, %s, %s, %s, %s::jsonb, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (debounce_key)
    WHERE status = 'pending' AND started_ms IS NULL AND debounce_key IS NOT NULL
DO UPDATE SET data = excluded.data, due_at = excluded.due_at, flow_key = excluded.flow_key,
    flow_limit = excluded.flow_limit, throttle_key = excluded.throttle_key,
    throttle_limit = excluded.throttle_limit, throttle_ms = excluded.throttle_ms,
    deferred = NULL
RETURNING id;

-- name: add_pending
-- New pending jobs, counted by the enqueue that wrote them: a workflow's name and how many
-- of its jobs, as two arrays (see 0008_job_tally.sql).
INSERT INTO gateway_job_tally (workflow, pending)
SELECT * FROM unnest(%s::text[], %s::bigint[]);

-- name: pending_tally
-- Pending jobs per workflow (those with none may be left out), and the tally rows behind
-- each count.
SELECT workflow, sum(pending)::bigint, count(*) FROM gateway_job_tally GROUP BY workflow;

-- name: compact_job_tally
-- The tally folded into one row per workflow, by one transaction at a time (another that
-- finds the lock taken leaves it). Rows a transaction not yet committed appended are not
-- seen, so not deleted: they count once they commit.
WITH turn AS (SELECT pg_try_advisory_xact_lock(7245623003) AS mine),
gone AS (
    DELETE FROM gateway_job_tally WHERE (SELECT mine FROM turn) RETURNING workflow, pending
)
INSERT INTO gateway_job_tally (workflow, pending)
SELECT workflow, sum(pending) FROM gone GROUP BY workflow HAVING sum(pending) <> 0;

-- name: notify_jobs
SELECT pg_notify('gateway_jobs', '');

-- name: listen_jobs
LISTEN gateway_jobs;

-- name: cancel_jobs
UPDATE gateway_jobs SET status = 'cancelled', finished_at = %s
WHERE status = 'pending' AND id = ANY(%s);

-- name: cancel_workflow
-- Through gateway_jobs_workflow (workflow, due_at).
UPDATE gateway_jobs SET status = 'cancelled', finished_at = %s
WHERE status = 'pending' AND source = 'schedule' AND workflow = %s;

-- name: cancel_subject
UPDATE gateway_jobs SET status = 'cancelled', finished_at = %s
WHERE status = 'pending' AND workflow = %s AND subject = %s;

-- name: current_series
SELECT series FROM gateway_series WHERE workflow = %s AND subject = %s;

-- name: set_series
INSERT INTO gateway_series (workflow, subject, series) VALUES (%s, %s, %s)
ON CONFLICT (workflow, subject) DO UPDATE SET series = excluded.series;

-- name: clear_series
DELETE FROM gateway_series WHERE workflow = %s AND subject = %s;

-- name: claim_jobs
-- The due jobs without a concurrency key (and those whose lease expired), oldest due first,
-- locked by this statement and skipped by every other worker's; paused workflows are left
-- alone. Every row says too whether a keyed job is due (`keyed`; one row of nulls when
-- none was claimed): then `claim_keyed_jobs` claims what room is left. A keyed job whose
-- lease expired is claimed here: its key's running jobs stay as many.
WITH due AS (
    SELECT id, due_at FROM gateway_jobs
    WHERE status = 'pending' AND due_at <= %(now)s AND flow_key IS NULL
      AND NOT EXISTS (SELECT 1 FROM gateway_paused p
                      WHERE p.workflow IN ('*', gateway_jobs.workflow))
    ORDER BY due_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED
), expired AS (
    SELECT id, due_at FROM gateway_jobs
    WHERE status = 'running' AND lease_until < %(now)s
      AND NOT EXISTS (SELECT 1 FROM gateway_paused p
                      WHERE p.workflow IN ('*', gateway_jobs.workflow))
    LIMIT %(limit)s FOR UPDATE SKIP LOCKED
), next AS (
    SELECT id, due_at FROM due UNION ALL SELECT id, due_at FROM expired
), claimed AS (
    UPDATE gateway_jobs j
    SET status = 'running', attempt = j.attempt + 1, claims = j.claims + 1,
        lease_until = %(lease)s, worker = %(worker)s, started_ms = %(now_ms)s
    FROM (SELECT id FROM next ORDER BY due_at LIMIT %(limit)s) n
    WHERE j.id = n.id
    RETURNING j.id, j.workflow, j.source, j.status, j.due_at, j.attempt, j.lease_until,
              j.worker, j.unique_key, j.subject, j.created_at, j.finished_at, j.run_id,
              j.error, j.data, j.claims, j.flow_key, j.flow_limit, j.throttle_key,
              j.throttle_limit, j.throttle_ms, j.debounce_key, j.single_key
)
SELECT c.*, EXISTS (SELECT 1 FROM gateway_jobs
                    WHERE status = 'pending' AND flow_key IS NOT NULL AND due_at <= %(now)s)
FROM (SELECT 1) AS one LEFT JOIN claimed c ON true;

-- name: key_running
-- How many jobs and HTTP calls of a concurrency key run now (`now_ms`: epoch milliseconds).
SELECT (SELECT count(*) FROM gateway_jobs WHERE status = 'running' AND flow_key = %(key)s)
       + (SELECT count(*) FROM gateway_flow_calls
          WHERE running = 1 AND flow_key = %(key)s AND until_ms > %(now_ms)s);

-- name: key_started
-- How many jobs and HTTP calls of a throttle key started since `since` (epoch
-- milliseconds), and the first of each.
SELECT (SELECT count(*) FROM gateway_jobs WHERE throttle_key = %(key)s AND started_ms > %(since)s)
       + (SELECT count(*) FROM gateway_flow_calls
          WHERE throttle_key = %(key)s AND started_ms > %(since)s),
       (SELECT min(started_ms) FROM gateway_jobs
        WHERE throttle_key = %(key)s AND started_ms > %(since)s),
       (SELECT min(started_ms) FROM gateway_flow_calls
        WHERE throttle_key = %(key)s AND started_ms > %(since)s);

-- name: deferred_jobs
-- Which of some jobs (an array of ids) a throttle made due later, at their turns.
SELECT id FROM gateway_jobs WHERE deferred = 1 AND id = ANY(%s);

-- name: purge_flow_calls
-- Calls that no longer hold a key: ended, and past their throttle's period if any; or
-- running past their time (the process that ran them died).
DELETE FROM gateway_flow_calls WHERE until_ms <= %s;

-- name: add_flow_call
INSERT INTO gateway_flow_calls (id, workflow, flow_key, throttle_key, started_ms, until_ms,
                                running)
VALUES (%s, %s, %s, %s, %s, %s, 1);

-- name: end_flow_call
-- A call that ended: it keeps its start while its throttle's period lasts (the end of it;
-- no throttle: now), and holds its concurrency key no longer. The workers are woken: a
-- job of its key may start now.
WITH ended AS (UPDATE gateway_flow_calls SET running = 0, until_ms = %s WHERE id = %s)
SELECT pg_notify('gateway_jobs', '');

-- name: flow_waiting
-- Jobs under flow control waiting for their keys at `now`, by workflow: those due, and
-- those a throttle made due later (`deferred`).
SELECT workflow, count(*) FROM gateway_jobs
WHERE status = 'pending' AND flow_key IS NOT NULL AND (due_at <= %s OR deferred = 1)
GROUP BY workflow;

-- name: lock_keyed_claims
-- Keyed claims one at a time, across every instance: taken first in the claim's own
-- transaction, so that the claim's snapshot (the next statement's) sees every keyed claim
-- before it committed. Claims of jobs without a key never take it.
SELECT pg_advisory_xact_lock(7245623012);

-- name: claim_keyed_jobs
-- The due jobs under flow control that their keys have room for, oldest due first: the
-- first `window` of them (gateway_jobs_flow_pending) ranked within their concurrency key
-- and within their throttle key; a job is taken only while its rank is within its
-- `flow_limit` less its key's running jobs (no `flow_limit`: no bound), and within its
-- `throttle_limit` less the jobs of its throttle key started in the last `throttle_ms`, so
-- that one claim never takes more than the room left. (A job one key holds back still
-- counts in the other's rank: a claim may take fewer than it could, never more.) Run after
-- `lock_keyed_claims`. A backlog of one key longer than the window holds back the keys
-- behind it until it shrinks.
WITH due AS (
    SELECT id, due_at, flow_key, flow_limit, throttle_key, throttle_limit, throttle_ms
    FROM gateway_jobs
    WHERE status = 'pending' AND flow_key IS NOT NULL AND due_at <= %(now)s
      AND NOT EXISTS (SELECT 1 FROM gateway_paused p
                      WHERE p.workflow IN ('*', gateway_jobs.workflow))
    ORDER BY due_at LIMIT %(window)s
), ranked AS (
    SELECT id, due_at, flow_key, flow_limit, throttle_key, throttle_limit,
           row_number() OVER (PARTITION BY flow_key ORDER BY due_at, id) AS place
    FROM due
), throttled AS (
    -- (ranked apart: most windows hold no throttled job, and then this costs nothing)
    SELECT id, row_number() OVER (PARTITION BY throttle_key ORDER BY due_at, id) AS tplace
    FROM due WHERE throttle_key IS NOT NULL
), busy AS (
    SELECT flow_key, count(*) AS running FROM (
        SELECT flow_key FROM gateway_jobs
        WHERE status = 'running' AND flow_key IS NOT NULL
          AND flow_key IN (SELECT flow_key FROM due)
        UNION ALL
        SELECT flow_key FROM gateway_flow_calls
        WHERE running = 1 AND until_ms > %(now_ms)s AND flow_key IN (SELECT flow_key FROM due)
    ) AS holding
    GROUP BY flow_key
), throttles AS (
    SELECT throttle_key, max(throttle_ms) AS throttle_ms FROM due
    WHERE throttle_key IS NOT NULL GROUP BY throttle_key
), recent AS (
    SELECT t.throttle_key,
           (SELECT count(*) FROM gateway_jobs s WHERE s.throttle_key = t.throttle_key
              AND s.started_ms > %(now_ms)s - t.throttle_ms)
           + (SELECT count(*) FROM gateway_flow_calls c WHERE c.throttle_key = t.throttle_key
              AND c.started_ms > %(now_ms)s - t.throttle_ms) AS started
    FROM throttles t
), chosen AS (
    SELECT r.id FROM ranked r
    LEFT JOIN busy b ON b.flow_key = r.flow_key
    LEFT JOIN recent t ON t.throttle_key = r.throttle_key
    LEFT JOIN throttled q ON q.id = r.id
    WHERE (r.flow_limit IS NULL OR r.place <= r.flow_limit - coalesce(b.running, 0))
      AND (r.throttle_key IS NULL OR q.tplace <= r.throttle_limit - coalesce(t.started, 0))
    ORDER BY r.due_at, r.id LIMIT %(limit)s
), locked AS (
    SELECT id FROM gateway_jobs
    WHERE id IN (SELECT id FROM chosen) AND status = 'pending'
    FOR UPDATE SKIP LOCKED
)
UPDATE gateway_jobs j
SET status = 'running', attempt = j.attempt + 1, claims = j.claims + 1, lease_until = %(lease)s,
    worker = %(worker)s, started_ms = %(now_ms)s, deferred = NULL
FROM locked n
WHERE j.id = n.id
RETURNING j.id, j.workflow, j.source, j.status, j.due_at, j.attempt, j.lease_until, j.worker,
          j.unique_key, j.subject, j.created_at, j.finished_at, j.run_id, j.error, j.data,
          j.claims, j.flow_key, j.flow_limit, j.throttle_key, j.throttle_limit, j.throttle_ms,
          j.debounce_key, j.single_key;

-- name: full_throttles
-- The throttle keys of the first `window` due throttled jobs that have no start left in
-- their period at `now_ms` (epoch milliseconds; `now` the same as a time): each with its
-- period, its limit, and the first start of its jobs and of its calls within the period.
WITH due AS (
    SELECT throttle_key, throttle_limit, throttle_ms FROM gateway_jobs
    WHERE status = 'pending' AND throttle_key IS NOT NULL AND due_at <= %(now)s
    ORDER BY due_at LIMIT %(window)s
), t AS (
    SELECT throttle_key, max(throttle_ms) AS throttle_ms, max(throttle_limit) AS throttle_limit
    FROM due GROUP BY throttle_key
), used AS (
    SELECT t.throttle_key, t.throttle_ms, t.throttle_limit,
           (SELECT count(*) FROM gateway_jobs s
            WHERE s.throttle_key = t.throttle_key AND s.started_ms > %(now_ms)s - t.throttle_ms)
           + (SELECT count(*) FROM gateway_flow_calls c
              WHERE c.throttle_key = t.throttle_key AND c.started_ms > %(now_ms)s - t.throttle_ms)
           AS started,
           (SELECT min(started_ms) FROM gateway_jobs s
            WHERE s.throttle_key = t.throttle_key AND s.started_ms > %(now_ms)s - t.throttle_ms)
           AS first_job,
           (SELECT min(started_ms) FROM gateway_flow_calls c
            WHERE c.throttle_key = t.throttle_key AND c.started_ms > %(now_ms)s - t.throttle_ms)
           AS first_call
    FROM t
)
SELECT throttle_key, throttle_ms, throttle_limit, first_job, first_call FROM used
WHERE started >= throttle_limit;

-- name: throttled_due
-- The first `window` due jobs of one throttle key at `now`, in the order they start; a row
-- another transaction holds (a debounce writing over it, a cancel) is left to it, not
-- waited for: the claim runs under the keyed-claim lock, which every keyed claim waits on.
SELECT id FROM gateway_jobs
WHERE status = 'pending' AND throttle_key = %(key)s AND due_at <= %(now)s
ORDER BY due_at, id LIMIT %(window)s
FOR UPDATE SKIP LOCKED;

-- name: defer_job
-- A throttled job due again when its turn opens.
-- (Still due: a job a debounce made due later meanwhile keeps its time.)
UPDATE gateway_jobs SET due_at = %s, deferred = 1
WHERE id = %s AND status = 'pending' AND due_at <= %s;

-- name: renew_jobs
-- Rows another statement holds are skipped, not waited for: they are ending (this worker's
-- batch of ends, a run's settle), and waiting for them in another order could deadlock.
UPDATE gateway_jobs SET lease_until = %s
WHERE id IN (SELECT id FROM gateway_jobs
             WHERE status = 'running' AND worker = %s AND id = ANY(%s)
             FOR UPDATE SKIP LOCKED);

-- name: finish_job
UPDATE gateway_jobs
SET status = %s, finished_at = %s, run_id = %s, error = %s, due_at = coalesce(%s, due_at),
    lease_until = NULL, worker = NULL
WHERE id = %s AND worker = %s AND status = 'running';

-- name: finish_jobs
-- Many jobs ended at once, in one statement: one commit for all of them. The claim's count,
-- when given, must be the job's still (see `settle_job`).
UPDATE gateway_jobs j
SET status = v.status, finished_at = v.at, run_id = v.run_id, error = v.error,
    due_at = coalesce(v.retry_at, j.due_at), lease_until = NULL, worker = NULL
FROM unnest(%(ids)s::text[], %(statuses)s::text[], %(ats)s::timestamptz[], %(runs)s::text[],
            %(errors)s::text[], %(retries)s::timestamptz[], %(claims)s::integer[])
     AS v(id, status, at, run_id, error, retry_at, claims)
WHERE j.id = v.id AND j.worker = %(worker)s AND j.status = 'running'
  AND coalesce(v.claims, j.claims) = j.claims
RETURNING j.id;

-- name: settle_job
-- A job's run that wrote ends its job in its own transaction, if the job is still the claim
-- the run was started by (its count of claims), not one made after its lease expired.
UPDATE gateway_jobs
SET status = 'done', finished_at = %s, run_id = %s, error = NULL, lease_until = NULL,
    worker = NULL
WHERE id = %s AND claims = %s AND status = 'running';

-- name: release_jobs
UPDATE gateway_jobs SET status = 'pending', attempt = attempt - 1, lease_until = NULL,
                        worker = NULL
WHERE status = 'running' AND worker = %s AND id = ANY(%s);

-- name: get_job
SELECT id, workflow, source, status, due_at, attempt, lease_until, worker, unique_key,
       subject, created_at, finished_at, run_id, error, data, claims, flow_key, flow_limit,
       throttle_key, throttle_limit, throttle_ms, debounce_key, single_key
FROM gateway_jobs WHERE id = %s;

-- name: list_jobs
SELECT id, workflow, source, status, due_at, attempt, lease_until, worker, unique_key,
       subject, created_at, finished_at, run_id, error, data, claims, flow_key, flow_limit,
       throttle_key, throttle_limit, throttle_ms, debounce_key, single_key
FROM gateway_jobs
WHERE (%(status)s::text IS NULL OR status = %(status)s)
  AND (%(workflow)s::text IS NULL OR workflow = %(workflow)s)
ORDER BY due_at DESC, id DESC LIMIT %(limit)s;

-- name: retry_job
-- Not while another job waits with its debounce key, or waits or runs with its singleton
-- key: it would be a second one.
UPDATE gateway_jobs SET status = 'pending', due_at = %s, attempt = 0, finished_at = NULL,
                        lease_until = NULL, worker = NULL, deferred = NULL
WHERE id = %s AND status IN ('failed', 'cancelled')
  AND (debounce_key IS NULL OR started_ms IS NOT NULL OR NOT EXISTS (
      SELECT 1 FROM gateway_jobs o WHERE o.debounce_key = gateway_jobs.debounce_key
        AND o.status = 'pending' AND o.started_ms IS NULL))
  AND (single_key IS NULL OR NOT EXISTS (
      SELECT 1 FROM gateway_jobs o WHERE o.single_key = gateway_jobs.single_key
        AND o.status IN ('pending', 'running')));

-- name: last_tick
SELECT id, workflow, source, status, due_at, attempt, lease_until, worker, unique_key,
       subject, created_at, finished_at, run_id, error, data, claims, flow_key, flow_limit,
       throttle_key, throttle_limit, throttle_ms, debounce_key, single_key
FROM gateway_jobs WHERE workflow = %s AND source = 'recurring' AND subject IS NULL
ORDER BY due_at DESC LIMIT 1;

-- name: series_ticks
-- Pending ticks of per-record events after (due_at, id), soonest first.
SELECT id, workflow, source, status, due_at, attempt, lease_until, worker, unique_key,
       subject, created_at, finished_at, run_id, error, data, claims, flow_key, flow_limit,
       throttle_key, throttle_limit, throttle_ms, debounce_key, single_key
FROM gateway_jobs
WHERE status = 'pending' AND source = 'recurring' AND subject IS NOT NULL
  AND (due_at, id) > (%s, %s)
ORDER BY due_at, id LIMIT %s;

-- name: pause
INSERT INTO gateway_paused (workflow, paused_at) VALUES (%s, %s) ON CONFLICT DO NOTHING;

-- name: resume
DELETE FROM gateway_paused WHERE workflow = %s;

-- name: resume_all
DELETE FROM gateway_paused;

-- name: paused
SELECT workflow FROM gateway_paused ORDER BY workflow;

-- name: next_due
-- A keyed job due by `now` waits for its key, not for its time: left out (the end of a
-- job of its key wakes the workers: gateway_jobs_flow_freed).
SELECT min(due_at) FROM gateway_jobs
WHERE status = 'pending'
  AND (flow_key IS NULL OR %(now)s::timestamptz IS NULL OR due_at > %(now)s)
  AND NOT EXISTS (SELECT 1 FROM gateway_paused p WHERE p.workflow IN ('*', gateway_jobs.workflow));

-- name: page_runs
-- `list_runs` for the console, without a text (`search_runs` searches): one page older
-- than the run (`before_at`, `before_id`), of one job's runs with `job`.
SELECT data FROM gateway_runs
WHERE (%(workflow)s::text IS NULL OR workflow = %(workflow)s)
  AND (%(status)s::text IS NULL OR status = %(status)s)
  AND (%(since)s::timestamptz IS NULL OR started_at >= %(since)s)
  AND (%(source)s::text IS NULL OR data->>'source' = %(source)s)
  AND (%(until)s::timestamptz IS NULL OR started_at < %(until)s)
  AND (%(before_at)s::timestamptz IS NULL
       OR (started_at, id) < (%(before_at)s::timestamptz, %(before_id)s::text))
  AND (%(job)s::text IS NULL OR data->>'job' = %(job)s)
  AND (%(user)s::text IS NULL OR data->'identity'->>'user_id' = %(user)s
       OR data->'identity'->>'email' = lower(%(user)s))
ORDER BY started_at DESC, id DESC LIMIT %(limit)s;

-- name: search_runs
-- `page_runs` with a text, over one stretch of the log: the runs the other filters select
-- older than the run `before_at`, `before_id` and no older than the run `reach_at`,
-- `reach_id` (the stretch's end, found first by `search_reach`), those whose JSON holds the
-- text, ignoring case. The two plain bounds on started_at keep it a range of the index.
SELECT data FROM gateway_runs
WHERE started_at >= coalesce(%(reach_at)s::timestamptz, '-infinity')
  AND started_at <= coalesce(%(before_at)s::timestamptz, 'infinity')
  AND (%(reach_at)s::timestamptz IS NULL
       OR (started_at, id) >= (%(reach_at)s::timestamptz, %(reach_id)s::text))
  AND (%(before_at)s::timestamptz IS NULL
       OR (started_at, id) < (%(before_at)s::timestamptz, %(before_id)s::text))
  AND (%(workflow)s::text IS NULL OR workflow = %(workflow)s)
  AND (%(status)s::text IS NULL OR status = %(status)s)
  AND (%(since)s::timestamptz IS NULL OR started_at >= %(since)s)
  AND (%(source)s::text IS NULL OR data->>'source' = %(source)s)
  AND (%(until)s::timestamptz IS NULL OR started_at < %(until)s)
  AND (%(user)s::text IS NULL OR data->'identity'->>'user_id' = %(user)s
       OR data->'identity'->>'email' = lower(%(user)s))
  AND strpos(lower(data::text), lower(%(text)s)) > 0
ORDER BY started_at DESC, id DESC LIMIT %(limit)s;

-- name: search_reach
-- Where a stretch of the search ends: the `scan`th of the runs the other filters select
-- older than the run `before_at`, `before_id`, if there are that many. Found before the
-- stretch is searched, so that runs written meanwhile cannot shift it.
SELECT started_at, id FROM gateway_runs
WHERE (%(workflow)s::text IS NULL OR workflow = %(workflow)s)
  AND (%(status)s::text IS NULL OR status = %(status)s)
  AND (%(since)s::timestamptz IS NULL OR started_at >= %(since)s)
  AND (%(source)s::text IS NULL OR data->>'source' = %(source)s)
  AND (%(until)s::timestamptz IS NULL OR started_at < %(until)s)
  AND (%(user)s::text IS NULL OR data->'identity'->>'user_id' = %(user)s
       OR data->'identity'->>'email' = lower(%(user)s))
  AND (%(before_at)s::timestamptz IS NULL
       OR (started_at, id) < (%(before_at)s::timestamptz, %(before_id)s::text))
ORDER BY started_at DESC, id DESC LIMIT 1 OFFSET %(scan)s - 1;

-- name: count_runs
-- Runs started in [since, until) by status, in buckets of `seconds` counted from `since`,
-- from the rollup: by the minute each run started in.
SELECT floor(extract(epoch FROM minute - %(since)s::timestamptz) / %(seconds)s)::int
           AS bucket,
       status, sum(runs)
FROM gateway_run_minutes WHERE minute >= %(since)s AND minute < %(until)s
GROUP BY bucket, status;

-- name: run_counts
-- Per workflow, its runs started in the minutes from `since` on, and how many failed.
SELECT workflow, sum(runs), sum(runs) FILTER (WHERE status = 'failed')
FROM gateway_run_minutes WHERE minute >= %(since)s GROUP BY workflow;

-- name: run_durations
-- Per workflow, its timed runs in the ten-minute periods from `since` on, by bucket.
SELECT workflow, bucket, sum(runs) FROM gateway_run_durations WHERE period >= %(since)s
GROUP BY workflow, bucket;

-- name: add_run_minutes
-- A batch's tally (`rollup.tally`: one row a key) as four arrays, in one statement.
INSERT INTO gateway_run_minutes AS m (minute, workflow, status, runs)
SELECT * FROM unnest(%s::text[]::timestamptz[], %s::text[], %s::text[], %s::bigint[])
ON CONFLICT (minute, workflow, status) DO UPDATE SET runs = m.runs + excluded.runs;

-- name: add_run_durations
INSERT INTO gateway_run_durations AS d (period, workflow, bucket, runs)
SELECT * FROM unnest(%s::text[]::timestamptz[], %s::text[], %s::integer[], %s::bigint[])
ON CONFLICT (period, workflow, bucket) DO UPDATE SET runs = d.runs + excluded.runs;

-- name: purge_rollup
WITH minutes AS (DELETE FROM gateway_run_minutes WHERE minute < %(before)s)
DELETE FROM gateway_run_durations WHERE period < %(before)s;

-- name: last_runs
-- One index lookup (workflow, started_at) per name.
SELECT name, (SELECT max(started_at) FROM gateway_runs WHERE workflow = name)
FROM unnest(%(names)s::text[]) AS name;

-- name: page_jobs
-- `list_jobs` for the console: one page older than the job (`before_at`, `before_id`).
SELECT id, workflow, source, status, due_at, attempt, lease_until, worker, unique_key,
       subject, created_at, finished_at, run_id, error, data, claims, flow_key, flow_limit,
       throttle_key, throttle_limit, throttle_ms, debounce_key, single_key
FROM gateway_jobs
WHERE (%(status)s::text IS NULL OR status = %(status)s)
  AND (%(workflow)s::text IS NULL OR workflow = %(workflow)s)
  AND (%(before_at)s::timestamptz IS NULL
       OR (due_at, id) < (%(before_at)s::timestamptz, %(before_id)s::text))
ORDER BY due_at DESC, id DESC LIMIT %(limit)s;

-- name: open_detection
INSERT INTO gateway_detections (name, opened_at, until, headers, sample, sampled_at)
VALUES (%(name)s, %(at)s, %(until)s, %(headers)s, NULL, NULL)
ON CONFLICT (name) DO UPDATE SET opened_at = %(at)s, until = %(until)s,
                                 headers = %(headers)s, sample = NULL, sampled_at = NULL;

-- name: find_detection
SELECT name, opened_at, until, headers, sample, sampled_at FROM gateway_detections
WHERE name = %s;

-- name: take_sample
UPDATE gateway_detections SET sample = %(sample)s, sampled_at = %(at)s
WHERE name = %(name)s AND sample IS NULL AND until > %(at)s;

-- name: put_checkpoint
INSERT INTO gateway_job_steps (job_id, place, action, step_id, run_id, at, kept, result)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (job_id, place) DO UPDATE SET
    action = excluded.action, step_id = excluded.step_id, run_id = excluded.run_id,
    at = excluded.at, kept = excluded.kept, result = excluded.result;

-- name: job_checkpoints
SELECT place, action, step_id, run_id, at, kept, result
FROM gateway_job_steps WHERE job_id = %s ORDER BY at, place;

-- name: forget_checkpoints
-- A step's number is the first part of its place (`3` of `3.2`).
DELETE FROM gateway_job_steps
WHERE job_id = %s AND split_part(place, '.', 1)::integer >= %s;

-- name: purge_checkpoints
-- Those older than the run log keeps runs, and those of jobs that are done (or gone):
-- only a failed, cancelled, pending or running job can be run again.
DELETE FROM gateway_job_steps s
WHERE s.at < %s OR NOT EXISTS (
    SELECT 1 FROM gateway_jobs j WHERE j.id = s.job_id AND j.status <> 'done');
