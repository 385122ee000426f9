-- Named query blocks for the SQLite backend. `{placeholders}` are filled with identifiers
-- and expressions built by the backend (never with values); values are always bound.

-- name: create_migrations_table
CREATE TABLE IF NOT EXISTS gateway_migrations (
    name       TEXT PRIMARY KEY,
    applied_at TEXT NOT NULL
);

-- name: applied_migrations
SELECT name FROM gateway_migrations ORDER BY name;

-- name: record_migration
INSERT INTO gateway_migrations (name, applied_at) VALUES (?, ?);

-- name: ping
-- A read of our own smallest table: the file is there, readable, and ours.
SELECT count(*) FROM gateway_migrations;

-- name: create_record
INSERT INTO gateway_records (id, type, data, created_at, modified_at, created_by)
VALUES (?, ?, ?, ?, ?, ?);

-- name: get_record
SELECT id, type, data, created_at, modified_at, created_by
FROM gateway_records WHERE id = ? AND type = ?;

-- name: update_record
UPDATE gateway_records SET data = ?, modified_at = ? WHERE id = ?;

-- name: delete_record
DELETE FROM gateway_records WHERE id = ? AND type = ?
RETURNING id, type, data, created_at, modified_at, created_by;

-- name: search_records
SELECT id, type, data, created_at, modified_at, created_by
FROM gateway_records WHERE {where} ORDER BY {order} LIMIT ? OFFSET ?;

-- name: count_records
SELECT count(*) FROM gateway_records WHERE {where};

-- name: count_records_capped
-- Counts at most the last parameter's number of matches: a bounded read for the event loop.
SELECT count(*) FROM (SELECT 1 FROM gateway_records WHERE {where} LIMIT ?);

-- name: list_indexes
SELECT name FROM sqlite_master
WHERE type = 'index' AND tbl_name = 'gateway_records' AND (name LIKE 'gateway\_ix\_%' ESCAPE '\' OR name LIKE 'gateway\_ux\_%' ESCAPE '\');

-- name: create_index
CREATE {unique} INDEX IF NOT EXISTS {name} ON gateway_records ({expression}) WHERE type = {type};

-- name: drop_index
DROP INDEX IF EXISTS {name};

-- name: upsert_runs
-- A whole batch of runs in one statement ({values} is one `(?, ?, ?, ?, ?)` per run): one
-- call into SQLite instead of one per run, each of which would have to win the interpreter
-- lock back from a busy event loop.
INSERT INTO gateway_runs (id, workflow, status, started_at, data) VALUES {values}
ON CONFLICT (id) DO UPDATE SET
    workflow = excluded.workflow, status = excluded.status,
    started_at = excluded.started_at, data = excluded.data;

-- name: get_run
SELECT data FROM gateway_runs WHERE id = ?;

-- name: list_runs
-- `text` matches anywhere in the run's JSON (parameters, result, error, steps), ignoring
-- ASCII case: a scan of the runs the other filters select, newest first, up to the limit.
SELECT data FROM gateway_runs
WHERE (?1 IS NULL OR workflow = ?1) AND (?2 IS NULL OR status = ?2) AND (?3 IS NULL OR started_at >= ?3)
  AND (?5 IS NULL OR json_extract(data, '$.source') = ?5) AND (?6 IS NULL OR started_at < ?6)
  AND (?7 IS NULL OR instr(lower(data), lower(?7)) > 0)
  AND (?8 IS NULL OR json_extract(data, '$.identity.user_id') = ?8
       OR json_extract(data, '$.identity.email') = lower(?8))
ORDER BY started_at DESC, id DESC LIMIT ?4;

-- name: purge_runs
-- One chunk at a time, each its own commit, so that requests' writes never wait long.
DELETE FROM gateway_runs WHERE id IN (
    SELECT id FROM gateway_runs
    WHERE (status <> 'failed' AND started_at < ?1) OR (status = 'failed' AND started_at < ?2)
    LIMIT ?3
);

-- name: create_key
INSERT INTO gateway_keys (label, hash, created_at) VALUES (?, ?, ?) ON CONFLICT DO NOTHING;

-- name: list_keys
SELECT label, created_at, last_used_at, revoked_at FROM gateway_keys ORDER BY created_at, label;

-- name: revoke_key
UPDATE gateway_keys SET revoked_at = ? WHERE label = ? AND revoked_at IS NULL;

-- name: find_key
SELECT label, created_at, last_used_at, revoked_at FROM gateway_keys
WHERE hash = ? AND revoked_at IS NULL;

-- name: touch_key
UPDATE gateway_keys SET last_used_at = ? WHERE hash = ?;

-- name: create_credential
INSERT INTO gateway_credentials (email, user_id, password_hash) VALUES (?, ?, ?)
ON CONFLICT DO NOTHING;

-- name: drop_stale_credential
-- The credential of a user whose record was deleted: its e-mail is free again.
DELETE FROM gateway_credentials WHERE email = ? AND NOT EXISTS (
    SELECT 1 FROM gateway_records AS r
    WHERE r.id = gateway_credentials.user_id AND r.type = 'user');

-- name: find_credential
-- Only a user whose record still exists, and who is not disabled, can log in.
SELECT c.user_id, c.password_hash FROM gateway_credentials AS c
JOIN gateway_records AS r ON r.id = c.user_id AND r.type = 'user'
WHERE c.email = ?
    AND NOT EXISTS (SELECT 1 FROM gateway_disabled_users AS d WHERE d.user_id = c.user_id);

-- name: move_credential
-- A user's log-in follows the e-mail its record shows (?1: the new address, ?2: the user).
UPDATE gateway_credentials SET email = ?1 WHERE user_id = ?2 AND email <> ?1;

-- name: has_credential
SELECT 1 FROM gateway_credentials WHERE user_id = ?;

-- name: create_token
INSERT INTO gateway_tokens (hash, user_id, created_at, expires_at, last_used_at)
VALUES (?, ?, ?, ?, ?);

-- name: find_token
-- A disabled user's tokens stop working.
SELECT t.user_id, t.created_at, t.expires_at, t.last_used_at FROM gateway_tokens AS t
WHERE t.hash = ?
    AND NOT EXISTS (SELECT 1 FROM gateway_disabled_users AS d WHERE d.user_id = t.user_id);

-- name: user_credential
-- The e-mail and password hash of a user who may log in.
SELECT c.email, c.password_hash FROM gateway_credentials AS c
JOIN gateway_records AS r ON r.id = c.user_id AND r.type = 'user'
WHERE c.user_id = ?
    AND NOT EXISTS (SELECT 1 FROM gateway_disabled_users AS d WHERE d.user_id = c.user_id);

-- name: set_password
UPDATE gateway_credentials SET password_hash = ? WHERE user_id = ?;

-- name: revoke_user_tokens
-- Every token of a user (the first parameter) but one (the second; NULL: none kept).
DELETE FROM gateway_tokens WHERE user_id = ? AND hash IS NOT ? RETURNING hash;

-- name: create_reset_token
INSERT INTO gateway_reset_tokens (hash, user_id, created_at, expires_at)
VALUES (?, ?, ?, ?);

-- name: use_reset_token
-- A reset token is used once: it goes as it is read, expired or not.
DELETE FROM gateway_reset_tokens WHERE hash = ? RETURNING user_id, expires_at;

-- name: drop_reset_tokens
DELETE FROM gateway_reset_tokens WHERE user_id = ?;

-- name: purge_reset_tokens
DELETE FROM gateway_reset_tokens WHERE expires_at <= ?;

-- name: disable_user
INSERT INTO gateway_disabled_users (user_id, disabled_at) VALUES (?, ?)
ON CONFLICT DO NOTHING;

-- name: enable_user
DELETE FROM gateway_disabled_users WHERE user_id = ?;

-- name: list_accounts
-- Users, oldest first, with whether each has a password and when it was disabled (the parameter: how many).
SELECT r.id, json_extract(r.data, '$.email'), c.user_id IS NOT NULL, d.disabled_at, r.created_at
FROM gateway_records AS r
LEFT JOIN gateway_credentials AS c ON c.user_id = r.id
LEFT JOIN gateway_disabled_users AS d ON d.user_id = r.id
WHERE r.type = 'user'
ORDER BY r.created_at, r.id LIMIT ?;

-- name: find_account
-- A user by id or by e-mail (folded), as `list_accounts` shows it.
SELECT r.id, json_extract(r.data, '$.email'), c.user_id IS NOT NULL, d.disabled_at, r.created_at
FROM gateway_records AS r
LEFT JOIN gateway_credentials AS c ON c.user_id = r.id
LEFT JOIN gateway_disabled_users AS d ON d.user_id = r.id
WHERE r.type = 'user' AND (r.id = ? OR lower(json_extract(r.data, '$.email')) = ?)
ORDER BY r.created_at LIMIT 1;

-- name: touch_token
UPDATE gateway_tokens SET last_used_at = ? WHERE hash = ?;

-- name: revoke_token
DELETE FROM gateway_tokens WHERE hash = ?;

-- name: run_size
-- The average bytes of the JSON text of the newest ?1 runs.
SELECT avg(length(CAST(data AS BLOB))) FROM (
    SELECT data FROM gateway_runs ORDER BY started_at DESC LIMIT ?1
);

-- name: runs_at_most
-- At least as many as the runs kept, read from the two ends of the rowid's b-tree (rowids
-- only grow, and the oldest runs are the ones deleted): no walk over the log.
SELECT coalesce(max(rowid) - min(rowid) + 1, 0) FROM gateway_runs;

-- name: trim_cutoff
-- The newest run past the first ?1: it and every older run go.
SELECT started_at, id FROM gateway_runs ORDER BY started_at DESC, id DESC LIMIT 1 OFFSET ?1;

-- name: trim_runs
-- One chunk of the oldest runs up to the cutoff (?1, ?2), each chunk its own commit.
DELETE FROM gateway_runs WHERE id IN (
    SELECT id FROM gateway_runs
    WHERE started_at < ?1 OR (started_at = ?1 AND id <= ?2)
    ORDER BY started_at, id LIMIT ?3
);

-- name: purge_tokens
DELETE FROM gateway_tokens WHERE expires_at <= ? OR last_used_at <= ?;

-- name: put_key
-- An answer, stored once its run is over: the gateway process decided the claims in its
-- memory (see sqlite_idempotency.py), and the database keeps what it answered, appended.
INSERT INTO gateway_idempotency_answers (scope, key, expires_at, status, headers, body)
VALUES (?, ?, ?, ?, ?, ?);

-- name: read_key
-- The latest answer of a key, found through the slots (a key answered again, after its
-- first answer expired, has two).
SELECT a.expires_at, a.status, a.headers, a.body
FROM gateway_idempotency_slots AS s JOIN gateway_idempotency_answers AS a ON a.id = s.id
WHERE s.slot = substr(?2, 1, 16) AND a.scope = ?1 AND a.key = ?2
ORDER BY a.id DESC LIMIT 1;

-- name: index_keys
-- The slots of the answers added since the last batch, sorted: a batch of thousands of
-- keys dirties each page of the slots once.
INSERT INTO gateway_idempotency_slots (slot, id)
SELECT substr(key, 1, 16), id FROM gateway_idempotency_answers
WHERE id > (SELECT id FROM gateway_idempotency_indexed) ORDER BY 1, 2;

-- name: indexed_keys
UPDATE gateway_idempotency_indexed
SET id = coalesce((SELECT max(id) FROM gateway_idempotency_answers), id);

-- name: latest_key
SELECT max(expires_at) FROM gateway_idempotency_answers;

-- name: purge_keys
-- Not the newest answer, expired or not: a new answer's id is one more than the largest
-- left, and an id at or below the last one indexed would never be.
DELETE FROM gateway_idempotency_answers WHERE expires_at <= ?
AND id < (SELECT max(id) FROM gateway_idempotency_answers);

-- name: purge_slots
-- The slots of answers older than the oldest one kept (a scan of the slots, once a purge);
-- a slot of a purged answer between kept ones finds nothing until those go too.
DELETE FROM gateway_idempotency_slots
WHERE id < coalesce((SELECT min(id) FROM gateway_idempotency_answers),
                    (SELECT id + 1 FROM gateway_idempotency_indexed));

-- name: hit_rate
INSERT INTO gateway_rate_limits (scope, who, bucket, count, expires_at) VALUES (?, ?, ?, 1, ?)
ON CONFLICT (scope, who) DO UPDATE SET
    count = CASE WHEN gateway_rate_limits.bucket = excluded.bucket
                 THEN gateway_rate_limits.count + 1 ELSE 1 END,
    bucket = excluded.bucket, expires_at = excluded.expires_at
RETURNING count;

-- name: purge_rates
DELETE FROM gateway_rate_limits WHERE expires_at <= ?;
-- name: enqueue_job
-- A tick of a per-record series (?9, its series) only while its series is its record's
-- current one (0011_job_series.sql). A job whose `unique_key` is taken, or whose singleton
-- key (?16) is waiting or running already, is not written.
INSERT INTO gateway_jobs (id, workflow, source, status, due_at, attempt, unique_key, subject,
                          created_at, data, flow_key, flow_limit, throttle_key,
                          throttle_limit, throttle_ms, debounce_key, single_key)
SELECT ?1, ?2, ?3, 'pending', ?4, 0, ?5, ?6, ?7, ?8, ?10, ?11, ?12, ?13, ?14, ?15, ?16
WHERE ?9 IS NULL OR EXISTS (SELECT 1 FROM gateway_series
                            WHERE workflow = ?2 AND subject = ?6 AND series = ?9)
ON CONFLICT DO NOTHING;

-- name: enqueue_debounced
-- A job of a debounced workflow: while a job with its debounce key (?15) waits unstarted,
-- that job takes this one's params, due time and keys instead (the id returned is then
-- that job's); otherwise it is written.
INSERT INTO gateway_jobs (id, workflow, source, status, due_at, attempt, unique_key, subject,
                          created_at, data, flow_key, flow_limit, throttle_key,
                          throttle_limit, throttle_ms, debounce_key, single_key)
VALUES (?1, ?2, ?3, 'pending', ?4, 0, ?5, ?6, ?7, ?8, ?10, ?11, ?12, ?13, ?14, ?15, ?16)
ON CONFLICT (debounce_key)
    WHERE status = 'pending' AND started_ms IS NULL AND debounce_key IS NOT NULL
DO UPDATE SET data = excluded.data, due_at = excluded.due_at, flow_key = excluded.flow_key,
    flow_limit = excluded.flow_limit, throttle_key = excluded.throttle_key,
    throttle_limit = excluded.throttle_limit, throttle_ms = excluded.throttle_ms,
    deferred = NULL
RETURNING id;

-- name: pending_counts
-- Pending jobs per workflow, as 0010_job_counts.sql keeps them.
SELECT workflow, pending FROM gateway_job_counts WHERE pending <> 0;

-- name: add_pending
-- New pending jobs of a workflow (?2 of them), counted by the enqueue that wrote them.
INSERT INTO gateway_job_counts (workflow, pending) VALUES (?1, ?2)
ON CONFLICT (workflow) DO UPDATE SET pending = pending + excluded.pending;

-- name: cancel_jobs
-- {ids} is a list of placeholders, one per id.
UPDATE gateway_jobs SET status = 'cancelled', finished_at = ?
WHERE status = 'pending' AND id IN ({ids});

-- name: cancel_workflow
-- Through gateway_jobs_workflow (workflow, due_at).
UPDATE gateway_jobs SET status = 'cancelled', finished_at = ?
WHERE status = 'pending' AND source = 'schedule' AND workflow = ?;

-- name: cancel_subject
UPDATE gateway_jobs SET status = 'cancelled', finished_at = ?
WHERE status = 'pending' AND workflow = ? AND subject = ?;

-- name: current_series
SELECT series FROM gateway_series WHERE workflow = ? AND subject = ?;

-- name: set_series
INSERT INTO gateway_series (workflow, subject, series) VALUES (?, ?, ?)
ON CONFLICT (workflow, subject) DO UPDATE SET series = excluded.series;

-- name: clear_series
DELETE FROM gateway_series WHERE workflow = ? AND subject = ?;

-- name: claim_jobs
-- One statement, run by the writer: the due jobs without a concurrency key (and those whose
-- lease expired) become this worker's, oldest due first, leaving paused workflows alone.
-- Keyed jobs are `claim_keyed_jobs`'s (a keyed job whose lease expired is claimed here: its
-- key's running jobs stay as many).
UPDATE gateway_jobs SET status = 'running', attempt = attempt + 1, claims = claims + 1,
                        lease_until = ?, worker = ?, started_ms = ?
WHERE id IN (
    SELECT id FROM gateway_jobs
    WHERE status = 'pending' AND due_at <= ? AND flow_key IS NULL
      AND NOT EXISTS (SELECT 1 FROM gateway_paused p WHERE p.workflow IN ('*', gateway_jobs.workflow))
    UNION ALL
    SELECT id FROM gateway_jobs
    WHERE status = 'running' AND lease_until < ?
      AND NOT EXISTS (SELECT 1 FROM gateway_paused p WHERE p.workflow IN ('*', gateway_jobs.workflow))
    LIMIT ?
)
RETURNING id, workflow, source, status, due_at, attempt, lease_until, worker, unique_key,
          subject, created_at, finished_at, run_id, error, data, claims, flow_key, flow_limit,
          throttle_key, throttle_limit, throttle_ms, debounce_key, single_key;

-- name: key_running
-- How many jobs and HTTP calls of a concurrency key run now (?2: now, epoch milliseconds).
SELECT (SELECT count(*) FROM gateway_jobs WHERE status = 'running' AND flow_key = ?1)
       + (SELECT count(*) FROM gateway_flow_calls
          WHERE running = 1 AND flow_key = ?1 AND until_ms > ?2);

-- name: key_started
-- How many jobs and HTTP calls of a throttle key started since ?2 (epoch milliseconds),
-- and the first of each.
SELECT (SELECT count(*) FROM gateway_jobs WHERE throttle_key = ?1 AND started_ms > ?2)
       + (SELECT count(*) FROM gateway_flow_calls WHERE throttle_key = ?1 AND started_ms > ?2),
       (SELECT min(started_ms) FROM gateway_jobs WHERE throttle_key = ?1 AND started_ms > ?2),
       (SELECT min(started_ms) FROM gateway_flow_calls
        WHERE throttle_key = ?1 AND started_ms > ?2);

-- name: deferred_jobs
-- Which of some jobs a throttle made due later, at their turns. {ids}: a placeholder each.
SELECT id FROM gateway_jobs WHERE deferred = 1 AND id IN ({ids});

-- name: purge_flow_calls
-- Calls that no longer hold a key: ended, and past their throttle's period if any; or
-- running past their time (the process that ran them died).
DELETE FROM gateway_flow_calls WHERE until_ms <= ?;

-- name: add_flow_call
INSERT INTO gateway_flow_calls (id, workflow, flow_key, throttle_key, started_ms, until_ms,
                                running)
VALUES (?, ?, ?, ?, ?, ?, 1);

-- name: end_flow_call
-- A call that ended: it keeps its start while its throttle's period lasts (?2, the end of
-- it; no throttle: now), and holds its concurrency key no longer.
UPDATE gateway_flow_calls SET running = 0, until_ms = ?2 WHERE id = ?1;

-- name: flow_waiting
-- Jobs under flow control waiting for their keys at ?1, by workflow: those due, and those a
-- throttle made due later (`deferred`).
SELECT workflow, count(*) FROM gateway_jobs
WHERE status = 'pending' AND flow_key IS NOT NULL AND (due_at <= ?1 OR deferred = 1)
GROUP BY workflow;

-- name: keyed_due
-- Whether a keyed job is due (gateway_jobs_flow_pending).
SELECT EXISTS (SELECT 1 FROM gateway_jobs
               WHERE status = 'pending' AND flow_key IS NOT NULL AND due_at <= ?);

-- name: claim_keyed_jobs
-- In the writer's transaction, after `claim_jobs` (the writer serializes claims, and a
-- write transaction on the file those of other processes): the due jobs under flow
-- control that their keys have room for, oldest due first. The first :window of them are
-- ranked within their concurrency key and within their throttle key; a job is taken only
-- while its rank is within its `flow_limit` less its key's running jobs (no `flow_limit`:
-- no bound), and within its `throttle_limit` less the jobs of its throttle key started in
-- the last `throttle_ms`, so that one claim never takes more than the room left. (A job
-- one key holds back still counts in the other's rank: a claim may take fewer than it
-- could, never more.) A backlog of one key longer than the window holds back the keys
-- behind it until it shrinks.
WITH due AS (
    SELECT id, due_at, flow_key, flow_limit, throttle_key, throttle_limit, throttle_ms
    FROM gateway_jobs
    WHERE status = 'pending' AND flow_key IS NOT NULL AND due_at <= :now
      AND NOT EXISTS (SELECT 1 FROM gateway_paused p
                      WHERE p.workflow IN ('*', gateway_jobs.workflow))
    ORDER BY due_at LIMIT :window
), busy AS (
    SELECT flow_key, count(*) AS running FROM (
        SELECT flow_key FROM gateway_jobs WHERE status = 'running' AND flow_key IS NOT NULL
        UNION ALL
        SELECT flow_key FROM gateway_flow_calls
        WHERE running = 1 AND flow_key IS NOT NULL AND until_ms > :now_ms
    ) GROUP BY flow_key
), throttles AS (
    SELECT throttle_key, max(throttle_ms) AS throttle_ms FROM due
    WHERE throttle_key IS NOT NULL GROUP BY throttle_key
), throttled AS (
    -- (ranked apart: most windows hold no throttled job, and then this costs nothing)
    SELECT id, row_number() OVER (PARTITION BY throttle_key ORDER BY due_at, id) AS tplace
    FROM due WHERE throttle_key IS NOT NULL
), recent AS (
    SELECT t.throttle_key,
           (SELECT count(*) FROM gateway_jobs s
            WHERE s.throttle_key = t.throttle_key AND s.started_ms > :now_ms - t.throttle_ms)
           + (SELECT count(*) FROM gateway_flow_calls c
              WHERE c.throttle_key = t.throttle_key AND c.started_ms > :now_ms - t.throttle_ms)
           AS started
    FROM throttles t
)
UPDATE gateway_jobs SET status = 'running', attempt = attempt + 1, claims = claims + 1,
                        lease_until = :lease, worker = :worker, started_ms = :now_ms,
                        deferred = NULL
WHERE id IN (
    SELECT r.id FROM (
        SELECT id, due_at, flow_key, flow_limit, throttle_key, throttle_limit,
               row_number() OVER (PARTITION BY flow_key ORDER BY due_at, id) AS place
        FROM due
    ) AS r LEFT JOIN busy b ON b.flow_key = r.flow_key
      LEFT JOIN recent t ON t.throttle_key = r.throttle_key
      LEFT JOIN throttled q ON q.id = r.id
    WHERE (r.flow_limit IS NULL OR r.place <= r.flow_limit - coalesce(b.running, 0))
      AND (r.throttle_key IS NULL OR q.tplace <= r.throttle_limit - coalesce(t.started, 0))
    ORDER BY r.due_at, r.id LIMIT :limit
)
RETURNING id, workflow, source, status, due_at, attempt, lease_until, worker, unique_key,
          subject, created_at, finished_at, run_id, error, data, claims, flow_key, flow_limit,
          throttle_key, throttle_limit, throttle_ms, debounce_key, single_key;

-- name: full_throttles
-- The throttle keys of the first ?3 due throttled jobs that have no start left in their
-- period at ?2 (epoch milliseconds; ?1 the same as a time): each with its period, its
-- limit, and the first start of its jobs and of its calls within the period.
WITH due AS (
    SELECT throttle_key, throttle_limit, throttle_ms FROM gateway_jobs
    WHERE status = 'pending' AND throttle_key IS NOT NULL AND due_at <= ?1
    ORDER BY due_at LIMIT ?3
), t AS (
    SELECT throttle_key, max(throttle_ms) AS throttle_ms, max(throttle_limit) AS throttle_limit
    FROM due GROUP BY throttle_key
), used AS (
    SELECT t.throttle_key, t.throttle_ms, t.throttle_limit,
           (SELECT count(*) FROM gateway_jobs s
            WHERE s.throttle_key = t.throttle_key AND s.started_ms > ?2 - t.throttle_ms)
           + (SELECT count(*) FROM gateway_flow_calls c
              WHERE c.throttle_key = t.throttle_key AND c.started_ms > ?2 - t.throttle_ms)
           AS started,
           (SELECT min(started_ms) FROM gateway_jobs s
            WHERE s.throttle_key = t.throttle_key AND s.started_ms > ?2 - t.throttle_ms)
           AS first_job,
           (SELECT min(started_ms) FROM gateway_flow_calls c
            WHERE c.throttle_key = t.throttle_key AND c.started_ms > ?2 - t.throttle_ms)
           AS first_call
    FROM t
)
SELECT throttle_key, throttle_ms, throttle_limit, first_job, first_call FROM used
WHERE started >= throttle_limit;

-- name: throttled_due
-- The first ?3 due jobs of one throttle key (?1) at ?2 (a time), in the order they start.
SELECT id FROM gateway_jobs
WHERE status = 'pending' AND throttle_key = ?1 AND due_at <= ?2
ORDER BY due_at, id LIMIT ?3;

-- name: defer_job
-- A throttled job due again when its turn opens.
-- (Still due: a job a debounce made due later meanwhile keeps its time.)
UPDATE gateway_jobs SET due_at = ?, deferred = 1
WHERE id = ? AND status = 'pending' AND due_at <= ?;

-- name: renew_jobs
-- {ids} is a list of placeholders, one per id.
UPDATE gateway_jobs SET lease_until = ?
WHERE status = 'running' AND worker = ? AND id IN ({ids});

-- name: finish_job
-- The claim's count, when given, must be the job's still (see `settle_job`).
UPDATE gateway_jobs
SET status = ?, finished_at = ?, run_id = ?, error = ?, due_at = coalesce(?, due_at),
    lease_until = NULL, worker = NULL
WHERE id = ? AND worker = ? AND status = 'running' AND coalesce(?, claims) = claims;

-- name: settle_job
-- A job's run that wrote ends its job in its own transaction, if the job is still the claim
-- the run was started by (its count of claims), not one made after its lease expired.
UPDATE gateway_jobs
SET status = 'done', finished_at = ?, run_id = ?, error = NULL, lease_until = NULL,
    worker = NULL
WHERE id = ? AND claims = ? AND status = 'running';

-- name: release_jobs
-- {ids} is a list of placeholders, one per id.
UPDATE gateway_jobs SET status = 'pending', attempt = attempt - 1, lease_until = NULL,
                        worker = NULL
WHERE status = 'running' AND worker = ? AND id IN ({ids});

-- name: get_job
SELECT id, workflow, source, status, due_at, attempt, lease_until, worker, unique_key,
       subject, created_at, finished_at, run_id, error, data, claims, flow_key, flow_limit,
       throttle_key, throttle_limit, throttle_ms, debounce_key, single_key
FROM gateway_jobs WHERE id = ?;

-- name: list_jobs
SELECT id, workflow, source, status, due_at, attempt, lease_until, worker, unique_key,
       subject, created_at, finished_at, run_id, error, data, claims, flow_key, flow_limit,
       throttle_key, throttle_limit, throttle_ms, debounce_key, single_key
FROM gateway_jobs
WHERE (? IS NULL OR status = ?) AND (? IS NULL OR workflow = ?)
ORDER BY due_at DESC, id DESC LIMIT ?;

-- name: retry_job
-- Not while another job waits with its debounce key, or waits or runs with its singleton
-- key: it would be a second one.
UPDATE gateway_jobs SET status = 'pending', due_at = ?, attempt = 0, finished_at = NULL,
                        lease_until = NULL, worker = NULL, deferred = NULL
WHERE id = ? AND status IN ('failed', 'cancelled')
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
FROM gateway_jobs WHERE workflow = ? AND source = 'recurring' AND subject IS NULL
ORDER BY due_at DESC LIMIT 1;

-- name: series_ticks
-- Pending ticks of per-record events after (?1, ?2), soonest first: the pending index's order.
SELECT id, workflow, source, status, due_at, attempt, lease_until, worker, unique_key,
       subject, created_at, finished_at, run_id, error, data, claims, flow_key, flow_limit,
       throttle_key, throttle_limit, throttle_ms, debounce_key, single_key
FROM gateway_jobs
WHERE status = 'pending' AND source = 'recurring' AND subject IS NOT NULL AND flow_key IS NULL
  AND (due_at > ?1 OR (due_at = ?1 AND id > ?2))
ORDER BY due_at, id LIMIT ?3;

-- name: pause
INSERT INTO gateway_paused (workflow, paused_at) VALUES (?, ?) ON CONFLICT DO NOTHING;

-- name: resume
DELETE FROM gateway_paused WHERE workflow = ?;

-- name: resume_all
DELETE FROM gateway_paused;

-- name: paused
SELECT workflow FROM gateway_paused ORDER BY workflow;

-- name: next_due
-- A keyed job due by ?1 waits for its key, not for its time: left out (the end of a job
-- of its key wakes the workers).
-- One pending index each (gateway_jobs_pending: without a key; gateway_jobs_flow_pending).
SELECT min(due) FROM (
    SELECT min(due_at) AS due FROM gateway_jobs
    WHERE status = 'pending' AND flow_key IS NULL
      AND NOT EXISTS (SELECT 1 FROM gateway_paused p WHERE p.workflow IN ('*', gateway_jobs.workflow))
    UNION ALL
    SELECT min(due_at) FROM gateway_jobs
    WHERE status = 'pending' AND flow_key IS NOT NULL AND (?1 IS NULL OR due_at > ?1)
      AND NOT EXISTS (SELECT 1 FROM gateway_paused p WHERE p.workflow IN ('*', gateway_jobs.workflow))
);

-- name: page_runs
-- `list_runs` for the console, without a text (`search_runs` searches): one page older
-- than the run (?7, ?8) (its `started_at`, `id`), of one job's runs with ?9.
SELECT data FROM gateway_runs
WHERE (?1 IS NULL OR workflow = ?1) AND (?2 IS NULL OR status = ?2) AND (?3 IS NULL OR started_at >= ?3)
  AND (?5 IS NULL OR json_extract(data, '$.source') = ?5) AND (?6 IS NULL OR started_at < ?6)
  AND (?7 IS NULL OR (started_at <= ?7 AND (started_at < ?7 OR id < ?8)))
  AND (?9 IS NULL OR json_extract(data, '$.job') = ?9)
  AND (?10 IS NULL OR json_extract(data, '$.identity.user_id') = ?10
       OR json_extract(data, '$.identity.email') = lower(?10))
ORDER BY started_at DESC, id DESC LIMIT ?4;

-- name: search_runs
-- `page_runs` with a text, over one stretch of the log: the runs the other filters select
-- older than the run ?8, ?9 and no older than the run ?12, ?13 (the stretch's end, found
-- first by `search_reach`), those whose JSON matches the LIKE pattern ?7 (`%text%`, escaped
-- with a backslash; LIKE ignores ASCII case, as lower() would, without copying each
-- document). The two plain bounds on started_at keep it a range of the index on it.
SELECT data FROM gateway_runs
WHERE started_at >= coalesce(?12, '') AND started_at <= coalesce(?8, '9999')
  AND (?12 IS NULL OR started_at > ?12 OR id >= ?13)
  AND (?8 IS NULL OR started_at < ?8 OR id < ?9)
  AND (?1 IS NULL OR workflow = ?1) AND (?2 IS NULL OR status = ?2)
  AND (?3 IS NULL OR started_at >= ?3)
  AND (?5 IS NULL OR json_extract(data, '$.source') = ?5) AND (?6 IS NULL OR started_at < ?6)
  AND data LIKE ?7 ESCAPE '\'
  AND (?11 IS NULL OR json_extract(data, '$.identity.user_id') = ?11
       OR json_extract(data, '$.identity.email') = lower(?11))
ORDER BY started_at DESC, id DESC LIMIT ?4;

-- name: search_reach
-- Where a stretch of the search ends: the ?10th of the runs the other filters select older
-- than the run ?8, ?9, if there are that many (?4 and ?7 are not read). Found before the
-- stretch is searched, so that runs written meanwhile cannot shift it.
-- The stretch is taken as `search_runs` takes it, through the index on started_at: an
-- OFFSET on the table itself is planned as a scan and sort of every run.
SELECT started_at, id FROM (
    SELECT started_at, id FROM gateway_runs
    WHERE (?1 IS NULL OR workflow = ?1) AND (?2 IS NULL OR status = ?2)
      AND (?3 IS NULL OR started_at >= ?3)
      AND (?5 IS NULL OR json_extract(data, '$.source') = ?5) AND (?6 IS NULL OR started_at < ?6)
      AND (?8 IS NULL OR (started_at <= ?8 AND (started_at < ?8 OR id < ?9)))
      AND (?11 IS NULL OR json_extract(data, '$.identity.user_id') = ?11
           OR json_extract(data, '$.identity.email') = lower(?11))
    ORDER BY started_at DESC, id DESC LIMIT ?10)
ORDER BY started_at DESC, id DESC LIMIT 1 OFFSET ?10 - 1;

-- name: count_runs
-- Runs started in [?1, ?2) by status, in buckets of ?3 seconds counted from ?1 (in whole
-- seconds: julianday's fractions put a run at a bucket's first instant in the one before),
-- from the rollup: by the minute each run started in.
SELECT (CAST(strftime('%s', minute) AS INTEGER) - CAST(strftime('%s', ?1) AS INTEGER))
           / CAST(?3 AS INTEGER) AS bucket,
       status, sum(runs)
FROM gateway_run_minutes WHERE minute >= ?1 AND minute < ?2
GROUP BY bucket, status;

-- name: run_counts
-- Per workflow, its runs started in the minutes from ?1 on, and how many of them failed.
SELECT workflow, sum(runs), sum(CASE WHEN status = 'failed' THEN runs ELSE 0 END)
FROM gateway_run_minutes WHERE minute >= ?1 GROUP BY workflow;

-- name: run_durations
-- Per workflow, its timed runs in the ten-minute periods from ?1 on, by histogram bucket.
SELECT workflow, bucket, sum(runs) FROM gateway_run_durations WHERE period >= ?1
GROUP BY workflow, bucket;

-- name: add_run_minutes
INSERT INTO gateway_run_minutes (minute, workflow, status, runs) VALUES (?, ?, ?, ?)
ON CONFLICT (minute, workflow, status) DO UPDATE SET runs = runs + excluded.runs;

-- name: add_run_durations
INSERT INTO gateway_run_durations (period, workflow, bucket, runs) VALUES (?, ?, ?, ?)
ON CONFLICT (period, workflow, bucket) DO UPDATE SET runs = runs + excluded.runs;

-- name: purge_run_minutes
DELETE FROM gateway_run_minutes WHERE minute < ?;

-- name: purge_run_durations
DELETE FROM gateway_run_durations WHERE period < ?;

-- name: last_runs
-- ?1 is a JSON array of names: one index lookup each (workflow, started_at).
SELECT names.value, (SELECT max(started_at) FROM gateway_runs WHERE workflow = names.value)
FROM json_each(?1) AS names;

-- name: page_jobs
-- `list_jobs` for the console: one page older than the job (due_at, id) (?4, ?5).
SELECT id, workflow, source, status, due_at, attempt, lease_until, worker, unique_key,
       subject, created_at, finished_at, run_id, error, data, claims, flow_key, flow_limit,
       throttle_key, throttle_limit, throttle_ms, debounce_key, single_key
FROM gateway_jobs
WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR workflow = ?2)
  AND (?4 IS NULL OR (due_at <= ?4 AND (due_at < ?4 OR id < ?5)))
ORDER BY due_at DESC, id DESC LIMIT ?3;

-- name: open_detection
INSERT INTO gateway_detections (name, opened_at, until, headers, sample, sampled_at)
VALUES (?1, ?2, ?3, ?4, NULL, NULL)
ON CONFLICT (name) DO UPDATE SET opened_at = ?2, until = ?3, headers = ?4, sample = NULL,
                                 sampled_at = NULL;

-- name: find_detection
SELECT name, opened_at, until, headers, sample, sampled_at FROM gateway_detections
WHERE name = ?1;

-- name: take_sample
UPDATE gateway_detections SET sample = ?2, sampled_at = ?3
WHERE name = ?1 AND sample IS NULL AND until > ?3;

-- name: put_checkpoint
INSERT INTO gateway_job_steps (job_id, place, action, step_id, run_id, at, kept, result)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (job_id, place) DO UPDATE SET
    action = excluded.action, step_id = excluded.step_id, run_id = excluded.run_id,
    at = excluded.at, kept = excluded.kept, result = excluded.result;

-- name: job_checkpoints
SELECT place, action, step_id, run_id, at, kept, result
FROM gateway_job_steps WHERE job_id = ? ORDER BY at, place;

-- name: forget_checkpoints
-- A step's number is the first part of its place (`3` of `3.2`).
DELETE FROM gateway_job_steps WHERE job_id = ? AND CAST(place AS INTEGER) >= ?;

-- name: purge_checkpoints
-- Those older than the run log keeps runs, and those of jobs that are done (or gone):
-- only a failed, cancelled, pending or running job can be run again.
DELETE FROM gateway_job_steps
WHERE at < ? OR NOT EXISTS (
    SELECT 1 FROM gateway_jobs j
    WHERE j.id = gateway_job_steps.job_id AND j.status <> 'done');
