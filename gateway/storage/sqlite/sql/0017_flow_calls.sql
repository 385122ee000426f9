-- HTTP calls to a workflow with `concurrency` or `throttle`: each call admitted holds a
-- row while it runs (`running`, until `until_ms` at the latest: a process that died
-- mid-call holds its key no longer), and a call under a throttle keeps its start until
-- its period is over. Keyed claims of jobs count these beside the jobs of the same keys,
-- and calls count the jobs: one limit for both. Times are milliseconds since the epoch.
CREATE TABLE gateway_flow_calls (
    id TEXT PRIMARY KEY,
    workflow TEXT NOT NULL,
    flow_key TEXT,
    throttle_key TEXT,
    started_ms INTEGER NOT NULL,
    until_ms INTEGER NOT NULL,
    running INTEGER NOT NULL
);
CREATE INDEX gateway_flow_calls_running ON gateway_flow_calls (flow_key, until_ms)
WHERE running = 1;
CREATE INDEX gateway_flow_calls_starts ON gateway_flow_calls (throttle_key, started_ms)
WHERE throttle_key IS NOT NULL;
CREATE INDEX gateway_flow_calls_until ON gateway_flow_calls (until_ms);

-- A throttled job that a claim made due later, at its turn (`defer_throttled`): it waits
-- for its throttle, not for its time (what /metrics counts as waiting), until claimed.
ALTER TABLE gateway_jobs ADD COLUMN deferred INTEGER;

-- Due jobs under a throttle, soonest first: whether any waits, and which keys are full (a
-- full key's due jobs are made due again when its next starts open: `defer_throttled`).
CREATE INDEX gateway_jobs_throttle_due ON gateway_jobs (due_at)
WHERE status = 'pending' AND throttle_key IS NOT NULL;
-- The pending jobs of one throttle key, soonest due first.
CREATE INDEX gateway_jobs_throttle_pending ON gateway_jobs (throttle_key, due_at)
WHERE status = 'pending' AND throttle_key IS NOT NULL;
