-- Concurrency keys (an API workflow's or custom event's `concurrency`): a job may carry a
-- key (its workflow's name and its rendered template) and the most jobs of that key that
-- may run at once. A pending job with a key is claimed only while fewer than its limit of
-- its key's jobs are running (`claim_keyed_jobs`, in the writer's transaction, which
-- serializes claims); one without is claimed as before.
ALTER TABLE gateway_jobs ADD COLUMN flow_key TEXT;
ALTER TABLE gateway_jobs ADD COLUMN flow_limit INTEGER;

-- The running jobs of a key, counted by every keyed claim.
CREATE INDEX gateway_jobs_flow_running ON gateway_jobs (flow_key)
WHERE status = 'running' AND flow_key IS NOT NULL;
-- The keyed pending jobs, soonest due first: whether any is due (every claim asks), and
-- the window a keyed claim ranks. Jobs without a key are not in it.
CREATE INDEX gateway_jobs_flow_pending ON gateway_jobs (due_at)
WHERE status = 'pending' AND flow_key IS NOT NULL;

-- The pending jobs without a key, soonest due first (what `claim_jobs` takes): the keyed
-- ones, however many wait for their key, are no longer in it, so that claiming jobs without
-- a key never steps over them.
DROP INDEX gateway_jobs_pending;
CREATE INDEX gateway_jobs_pending ON gateway_jobs (due_at)
WHERE status = 'pending' AND flow_key IS NULL;
